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
"""

import argparse
import json
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


def rope(x, positions, theta):
    """x: [T, heads, d]; rotate-half convention: element i pairs with i + d/2,
    angle pos * theta^(-2i/d)."""
    d = x.shape[-1]
    inv_freq = theta ** (-np.arange(0, d // 2, dtype=np.float64) * 2.0 / d)
    angles = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq[None, :]
    cos = np.concatenate([np.cos(angles)] * 2, axis=-1)[:, None, :].astype(x.dtype)
    sin = np.concatenate([np.sin(angles)] * 2, axis=-1)[:, None, :].astype(x.dtype)
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
                 blocks=()):
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
        self.theta = c["rope_theta"]
        self.window = c.get("sliding_window")
        self.renormalize = c.get("norm_topk_prob", True)
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
        q, k = rope(q, positions, self.theta), rope(k, positions, self.theta)
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

    def expert(self, l, e, x):
        p = f"model.layers.{l}.block_sparse_moe.experts.{e}."
        return self.linear(silu(self.linear(x, p + "w1.weight")) *
                           self.linear(x, p + "w3.weight"), p + "w2.weight")

    def moe_block(self, l, b):
        weights, indices = self.route(l, b)
        out = np.zeros_like(b)
        for t in range(b.shape[0]):
            for j in range(self.k):
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

    def prefill(self, tokens):
        cache = self.new_cache()
        return self.forward(tokens, cache), cache

    def decode(self, token, cache):
        return self.forward([token], cache)[0]

    def generate(self, prompt, n):
        """Greedy: -> (generated ids, logits [len(prompt) + n, vocab]). Row i
        holds the logits after position i, as the compiled binary dumps them:
        the prompt's rows, then one row per decode step, each step feeding
        the token just chosen (so the last generated token is fed too)."""
        logits, cache = self.prefill(prompt)
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
    args = p.parse_args(argv)
    if args.quantize is None and args.quantize_only is not None:
        p.error("--quantize-only needs --quantize")
    try:
        ref = Reference(args.model_dir, np.float32 if args.f32 else np.float64,
                        args.quantize, args.quantize_only or "all")
    except ValueError as e:
        p.error(str(e))
    prompt = [int(t) for t in args.tokens.split(",")]
    out, logits = ref.generate(prompt, args.n)
    print(" ".join(map(str, out)))
    if args.dump_logits:
        np.save(args.dump_logits, logits.astype(np.float32))


if __name__ == "__main__":
    sys.exit(main())
