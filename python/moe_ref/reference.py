"""Reference forward pass of a Mixtral model, in numpy: the oracle that every
stage of moe-compile is checked against. It follows DESIGN.md section 4 line
by line, favouring clarity over speed, and computes in float64 by default
(float32 on request) whatever the stored dtype.

With quantize="q8_0"|"q4_0"|"q4_1" it computes with quantised weights: each
weight that quantize_only selects ("all": every rank-2 weight but the router
gates; "experts": the expert weights only; see quant.is_quantized) is
replaced by dequantize(quantize(w as float32)), the values a binary built
with `moe-compile --quantize` multiplies by. int8_activations=True also
rounds the input of every linear on a quantised weight to int8 per block of
32 (quant.int8_activations), as the CPU kernels do when a call has fewer than
4 rows (decode); their prefill path keeps f32 activations.

    python3 -m moe_ref.reference MODEL_DIR --tokens 1,17,42 -n 16 [--dump-logits F.npy]
        [--f32] [--quantize q8_0|q4_0|q4_1 [--quantize-only all|experts]]
        [--capacity-factor C] [--max-batch-tokens N]
"""

import argparse
import json
import math
import os
import sys

import numpy as np

from . import configs, quant, safetensors


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def silu(x):
    return x / (1.0 + np.exp(-x))


def rope_parameters(config):
    """RoPE of a config.json as transformers standardises it
    (RotaryEmbeddingConfigMixin): `rope_scaling` (transformers 4) when it is a
    non-empty dict, else `rope_parameters` (transformers 5); the dict's
    rope_theta wins over the top-level one; rope_type (or legacy `type`)
    defaults to "default"; yarn and llama3 take original_max_position_embeddings
    from the top level, else the dict, else max_position_embeddings.
    -> dict with rope_type, rope_theta and the type's parameters."""
    params = config.get("rope_scaling") or config.get("rope_parameters") or {}
    out = dict(params)
    out.setdefault("rope_theta", config.get("rope_theta"))
    if out["rope_theta"] is None:
        raise ValueError("config.json: missing key 'rope_theta'")
    out["rope_type"] = params.get("rope_type", params.get("type", "default"))
    out.pop("type", None)
    if out["rope_type"] in ("yarn", "llama3"):
        if config.get("original_max_position_embeddings") is not None:
            out["original_max_position_embeddings"] = config["original_max_position_embeddings"]
        out.setdefault("original_max_position_embeddings", config["max_position_embeddings"])
    if out["rope_type"] not in ("default", "linear", "dynamic", "yarn", "llama3"):
        raise ValueError(f"config.json: rope_type '{out['rope_type']}' is not supported")
    return out


def yarn_attention_factor(params):
    """yarn's factor of cos and sin: attention_factor, else get_mscale(factor,
    mscale) / get_mscale(factor, mscale_all_dim) when both are non-zero, else
    get_mscale(factor) = 0.1 ln(factor) + 1 (1 for factor <= 1)."""
    if params.get("attention_factor") is not None:
        return float(params["attention_factor"])
    factor = params["factor"]

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0
    if params.get("mscale") and params.get("mscale_all_dim"):
        return mscale(factor, params["mscale"]) / mscale(factor, params["mscale_all_dim"])
    return mscale(factor)


def inv_freq(d, params, max_positions, seq_len=None):
    """-> (inv_freq [d/2] float64, attention factor) of transformers'
    _compute_<type>_parameters, in float64. seq_len: the forward call's
    max position + 1 (dynamic only: above max_positions, the NTK base
    grows; at or below it the default frequencies, as dynamic_rope_update
    leaves them)."""
    theta = float(params["rope_theta"])
    kind = params["rope_type"]
    exponent = -np.arange(0, d // 2, dtype=np.float64) * 2.0 / d
    base_freq = theta ** exponent
    if kind == "default":
        return base_freq, 1.0
    factor = float(params["factor"])
    if kind == "linear":
        return base_freq / factor, 1.0
    if kind == "dynamic":
        if seq_len is None or seq_len <= max_positions:
            return base_freq, 1.0
        base = theta * (factor * seq_len / max_positions - (factor - 1)) ** (d / (d - 2))
        return base ** exponent, 1.0
    original = params["original_max_position_embeddings"]
    if kind == "yarn":
        beta_fast = params.get("beta_fast") or 32
        beta_slow = params.get("beta_slow") or 1

        def correction_dim(rotations):
            return d * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))
        low, high = correction_dim(beta_fast), correction_dim(beta_slow)
        if params.get("truncate", True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, d - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((np.arange(d // 2, dtype=np.float64) - low) / (high - low), 0, 1)
        # ramp 0: extrapolate (keep the frequency); 1: interpolate (/ factor).
        freq = base_freq / factor * ramp + base_freq * (1 - ramp)
        return freq, yarn_attention_factor(params)
    if kind == "llama3":
        low_ff, high_ff = float(params["low_freq_factor"]), float(params["high_freq_factor"])
        wavelen = 2 * math.pi / base_freq
        smooth = (original / wavelen - low_ff) / (high_ff - low_ff)
        freq = np.where(wavelen < original / high_ff, base_freq,
                        np.where(wavelen > original / low_ff, base_freq / factor,
                                 (1 - smooth) * base_freq / factor + smooth * base_freq))
        return freq, 1.0
    raise ValueError(f"rope_type '{kind}' is not supported")


def rope(x, positions, theta, params=None, max_positions=None):
    """x: [T, heads, d]; rotate-half convention: element i pairs with i + d/2,
    angle pos * inv_freq_i (theta^(-2i/d) for the default RoPE; `params`
    (rope_parameters) picks a scaled type, whose attention factor multiplies
    cos and sin). Dynamic scaling sees this call's max position + 1."""
    d = x.shape[-1]
    if params is None:
        params = {"rope_type": "default", "rope_theta": theta}
    seq_len = int(np.max(positions)) + 1 if len(positions) else 0
    freq, attention = inv_freq(d, params, max_positions, seq_len)
    angles = np.asarray(positions, dtype=np.float64)[:, None] * freq[None, :]
    cos = np.concatenate([np.cos(angles) * attention] * 2, axis=-1)[:, None, :].astype(x.dtype)
    sin = np.concatenate([np.sin(angles) * attention] * 2, axis=-1)[:, None, :].astype(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    rotated = np.concatenate([-x2, x1], axis=-1)
    return x * cos + rotated * sin


class KVCache:
    """Keys (after RoPE) and values of every position seen so far, per layer.
    The reference keeps them all and applies the sliding window as a mask, so
    it never depends on how a rolling buffer is laid out."""

    def __init__(self, layers, kv_heads, head_dim, dtype):
        self.k = [np.zeros((0, kv_heads, head_dim), dtype) for _ in range(layers)]
        self.v = [np.zeros((0, kv_heads, head_dim), dtype) for _ in range(layers)]

    @property
    def length(self):
        return self.k[0].shape[0]


class Reference:
    """model_dir: an HF Mixtral directory; compute_dtype: np.float64 or
    np.float32; quantize: None or a format of quant.FORMATS, applied to the
    weights that quantize_only ("all" or "experts") selects. weights: the
    weights by HF name instead of model_dir's (config.json is still read
    there), with `blocks` the names stored in a block format (what
    int8_activations rounds the inputs of), e.g. a GGUF file's
    (gguf_writer.read_hf_weights)."""

    def __init__(self, model_dir, compute_dtype=np.float64, quantize=None,
                 quantize_only="all", int8_activations=False, weights=None,
                 blocks=(), capacity_factor=0.0):
        with open(os.path.join(model_dir, "config.json")) as f:
            self.config = json.load(f)
        c = self.config
        self.dtype = compute_dtype
        self.H = c["hidden_size"]
        self.nH = c["num_attention_heads"]
        self.nKV = c["num_key_value_heads"]
        self.d = configs.head_dim(c)
        self.E = c["num_local_experts"]
        self.k = c["num_experts_per_tok"]
        self.L = c["num_hidden_layers"]
        self.V = c["vocab_size"]
        self.eps = c["rms_norm_eps"]
        self.rope_params = rope_parameters(c)
        self.theta = self.rope_params["rope_theta"]
        self.max_positions = c["max_position_embeddings"]
        self.window = c.get("sliding_window")
        # transformers' Mixtral always renormalises (it ignores norm_topk_prob).
        self.renormalize = (c.get("model_type") == "mixtral" or
                            c.get("norm_topk_prob", True))
        if quantize is not None:
            quant.quantized_shape((1, quant.BLOCK), quantize)  # checks the format
        quant.is_quantized("", (), quantize_only)  # checks the selection
        self.quantize, self.quantize_only = quantize, quantize_only
        self.w, self.quantized = {}, set(blocks)
        source = weights if weights is not None else safetensors.load_model_dir(model_dir)
        for n, t in source.items():
            if quantize is not None and quant.is_quantized(n, t.shape, quantize_only):
                t = quant.round_trip(t, quantize, f"{model_dir}: {n}")
                self.quantized.add(n)
            self.w[n] = t.astype(compute_dtype)
        self.int8_activations = int8_activations and bool(self.quantized)
        if not (capacity_factor >= 0 and math.isfinite(capacity_factor)):
            raise ValueError(f"capacity factor must be a finite number >= 0, got {capacity_factor}")
        self.capacity_factor = capacity_factor
        # Pairs routed and dropped so far, over all layers and calls.
        self.routed = self.dropped = 0
        if c.get("tie_word_embeddings", False):
            self.w["lm_head.weight"] = self.w["model.embed_tokens.weight"]
            if "model.embed_tokens.weight" in self.quantized:
                self.quantized.add("lm_head.weight")

    def new_cache(self):
        return KVCache(self.L, self.nKV, self.d, self.dtype)

    def linear(self, x, name):
        if self.int8_activations and name in self.quantized:
            x = quant.int8_activations(x).astype(self.dtype)
        return x @ self.w[name].T

    def attention(self, l, a, positions, cache):
        T, p = a.shape[0], f"model.layers.{l}.self_attn."
        q = self.linear(a, p + "q_proj.weight").reshape(T, self.nH, self.d)
        k = self.linear(a, p + "k_proj.weight").reshape(T, self.nKV, self.d)
        v = self.linear(a, p + "v_proj.weight").reshape(T, self.nKV, self.d)
        q = rope(q, positions, self.theta, self.rope_params, self.max_positions)
        k = rope(k, positions, self.theta, self.rope_params, self.max_positions)
        cache.k[l] = np.concatenate([cache.k[l], k])
        cache.v[l] = np.concatenate([cache.v[l], v])
        keys, values = cache.k[l], cache.v[l]
        key_pos = np.arange(keys.shape[0])
        qpos = np.asarray(positions)[:, None]
        visible = key_pos[None, :] <= qpos
        if self.window is not None:
            visible &= key_pos[None, :] > qpos - self.window
        group = self.nH // self.nKV
        out = np.empty((T, self.nH, self.d), self.dtype)
        for h in range(self.nH):
            kv = h // group
            scores = (q[:, h, :] @ keys[:, kv, :].T) / np.sqrt(self.d)
            scores = np.where(visible, scores, -np.inf)
            out[:, h, :] = softmax(scores) @ values[:, kv, :]
        return self.linear(out.reshape(T, self.nH * self.d), p + "o_proj.weight")

    def route(self, l, b):
        """-> (weights [T, k], indices [T, k]): softmax over all E experts,
        top k (ties to the lower index), renormalised."""
        logits = self.linear(b, f"model.layers.{l}.block_sparse_moe.gate.weight")
        probs = softmax(logits.astype(np.float64)).astype(self.dtype)
        indices = np.argsort(-probs, axis=-1, kind="stable")[:, : self.k]
        weights = np.take_along_axis(probs, indices, axis=-1)
        if self.renormalize:
            weights = weights / np.sum(weights, axis=-1, keepdims=True)
        return weights, indices

    def apply_capacity(self, indices):
        """GShard / Switch capacity: in a call of T tokens each expert takes
        at most ceil(factor * T * k / E) (token, choice) pairs (clamped to
        [1, T], as the kernels do), every token's first choice (in token
        order) before any second choice, and so on. -> a [T, k] mask of the
        pairs kept."""
        T = indices.shape[0]
        keep = np.ones(indices.shape, dtype=bool)
        self.routed += indices.size
        if self.capacity_factor <= 0:
            return keep
        # ceil(C * T * k / E), clamped to [1, T] as the kernels do: at least
        # one pair (a product that underflows), at most one a token.
        x = self.capacity_factor * T * self.k / self.E
        capacity = T if x >= T else max(math.ceil(x), 1)
        used = [0] * self.E
        for j in range(self.k):
            for t in range(T):
                e = int(indices[t, j])
                if used[e] >= capacity:
                    keep[t, j] = False
                    self.dropped += 1
                else:
                    used[e] += 1
        return keep

    def expert(self, l, e, x):
        p = f"model.layers.{l}.block_sparse_moe.experts.{e}."
        return self.linear(silu(self.linear(x, p + "w1.weight")) *
                           self.linear(x, p + "w3.weight"), p + "w2.weight")

    def moe_block(self, l, b):
        weights, indices = self.route(l, b)
        keep = self.apply_capacity(indices)
        out = np.zeros_like(b)
        for t in range(b.shape[0]):
            for j in range(self.k):
                if keep[t, j]:
                    out[t] += weights[t, j] * self.expert(l, indices[t, j], b[t:t + 1])[0]
        return out

    def forward(self, tokens, cache):
        """Runs `tokens` at the next positions of `cache` (appending to it);
        returns the logits after each token, [T, vocab]."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim != 1 or np.any(tokens < 0) or np.any(tokens >= self.V):
            raise ValueError(f"token ids must be in [0, {self.V})")
        positions = np.arange(cache.length, cache.length + len(tokens))
        h = self.w["model.embed_tokens.weight"][tokens]
        for l in range(self.L):
            p = f"model.layers.{l}."
            a = rms_norm(h, self.w[p + "input_layernorm.weight"], self.eps)
            h = h + self.attention(l, a, positions, cache)
            b = rms_norm(h, self.w[p + "post_attention_layernorm.weight"], self.eps)
            h = h + self.moe_block(l, b)
        h = rms_norm(h, self.w["model.norm.weight"], self.eps)
        return self.linear(h, "lm_head.weight")

    def prefill(self, tokens, chunk=0):
        """The prompt in one forward call, or (chunk > 0) in calls of at most
        `chunk` tokens, as a binary run with --max-batch-tokens feeds it:
        the same logits unless a call's length matters (dynamic RoPE)."""
        cache = self.new_cache()
        if chunk <= 0:
            return self.forward(tokens, cache), cache
        rows = [self.forward(tokens[i:i + chunk], cache)
                for i in range(0, len(tokens), chunk)]
        return np.concatenate(rows), cache

    def forward_calls(self, prompt, generated, chunk=0):
        """Teacher-forced logits of `prompt` + `generated` with the binary's
        calls: the prompt (prefill's chunks), then one call per token."""
        logits, cache = self.prefill(prompt, chunk)
        rows = [logits] + [self.forward([t], cache) for t in generated]
        return np.concatenate(rows)

    def decode(self, token, cache):
        return self.forward([token], cache)[0]

    def generate(self, prompt, n, chunk=0):
        """Greedy: -> (generated ids, logits [len(prompt) + n, vocab]). Row i
        holds the logits after position i, as the compiled binary dumps them:
        the prompt's rows, then one row per decode step, each step feeding
        the token just chosen (so the last generated token is fed too)."""
        logits, cache = self.prefill(prompt, chunk)
        rows = [logits]
        out = []
        for _ in range(n):
            token = int(np.argmax(rows[-1][-1]))
            out.append(token)
            rows.append(self.forward([token], cache))
        return out, np.concatenate(rows)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m moe_ref.reference",
                                description="Reference forward pass (numpy).")
    p.add_argument("model_dir")
    p.add_argument("--tokens", required=True, help="prompt token ids, e.g. 1,17,42")
    p.add_argument("-n", type=int, default=16, help="tokens to generate (greedy)")
    p.add_argument("--dump-logits", metavar="FILE.npy",
                   help="float32 [len(prompt) + n, vocab] logits")
    p.add_argument("--f32", action="store_true", help="compute in float32, not float64")
    p.add_argument("--quantize", choices=quant.FORMATS,
                   help="compute with these weights quantised and dequantised "
                        "(as moe-compile --quantize stores them)")
    p.add_argument("--quantize-only", choices=quant.SELECTIONS,
                   help="which weights --quantize applies to: all (every rank-2 weight "
                        "but the router gates; the default) or experts (w1/w2/w3)")
    p.add_argument("--capacity-factor", type=float, default=0.0, metavar="C",
                   help="drop the (token, choice) pairs over each expert's capacity "
                        "ceil(C * T * k / E) per call, as moe-compile --capacity-factor "
                        "(0, the default: off)")
    p.add_argument("--max-batch-tokens", type=int, default=0, metavar="N",
                   help="run the prompt in calls of at most N tokens, as the binary "
                        "run with --max-batch-tokens N does (0, the default: one "
                        "call; the binary's default is 512); matters with "
                        "--capacity-factor")
    args = p.parse_args(argv)
    if args.quantize is None and args.quantize_only is not None:
        p.error("--quantize-only needs --quantize")
    try:
        ref = Reference(args.model_dir, np.float32 if args.f32 else np.float64,
                        args.quantize, args.quantize_only or "all",
                        capacity_factor=args.capacity_factor)
    except ValueError as e:
        p.error(str(e))
    prompt = [int(t) for t in args.tokens.split(",")]
    out, logits = ref.generate(prompt, args.n, args.max_batch_tokens)
    print(" ".join(map(str, out)))
    if args.capacity_factor > 0:
        print(f"capacity: factor {args.capacity_factor:g}: {ref.dropped} of {ref.routed} "
              f"routed (token, expert) pairs dropped", file=sys.stderr)
    if args.dump_logits:
        np.save(args.dump_logits, logits.astype(np.float32))


if __name__ == "__main__":
    sys.exit(main())
