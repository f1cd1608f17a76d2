"""An ONNX model, shaped as ONNX Runtime GenAI's builder writes Mixtral, from
one of our generated Hugging Face models: the test suite's ONNX inputs.

Needs PyPI's `onnx` (python/requirements-test.txt). The graph ("fused"
shape, docs/frontends.md), batch 1:

* inputs `input_ids` [1, S] int64, `seqlens_k` [1] int32 (S - 1 + past),
  `total_sequence_length` [] int32 and per layer `past_key_values.L.key` /
  `.value` [1, kv_heads, P, head_dim]; outputs `logits` [1, S, V] and the
  `present.L.key` / `.value`;
* `Gather(embed_tokens, input_ids)`; per layer
  `SimplifiedLayerNormalization` (ai.onnx domain, as ORT registers it), the
  q/k/v/o projections as linear layers (`layout`: "in-out", the default,
  `MatMul(x, W)` with W stored [in, out] as exporters and ORT GenAI's
  builder write it; "out-in", `MatMul(x, Transpose(W))` with W stored as
  Hugging Face does, [out, in]), `com.microsoft.GroupQueryAttention` (do_rotary = 1
  with the model's cos/sin caches [max_positions, head_dim / 2];
  local_window_size = sliding_window - 1, or -1), the residual `Add`s, the router
  (a linear layer of `Reshape(x, [-1, H])`) and one `com.microsoft.MoE` node; the
  final norm and `lm_head` (a linear layer; a tied one `MatMul(x,
  Transpose(embed_tokens))` whatever the layout).
* `fusion` says how MoE holds the gate (w1) and up (w3) experts:
  "concat" (swiglu_fusion = 2: fc1 [E, 2I, H], gate rows then up rows),
  "fc3" (swiglu_fusion = 0, activation silu: fc1 = w1, fc3 = w3) or
  "interleaved" (swiglu_fusion = 1: rows 2i gate, 2i + 1 up; what ORT's CPU
  kernel runs); fc2 = w2 [E, H, I].
* `qmoe` "q8_0" or "q4_0": the experts as `com.microsoft.QMoE` instead
  (expert_weight_bits 8 or 4, block_size 32): each expert matrix quantised
  by moe_ref.quant (llama.cpp's blocks) and stored as ONNX Runtime holds
  them, UINT8 offset-binary values (4-bit: two per byte, the low nibble
  first) and float32 scales [E, N, K / 32] (f16 values, so that the blocks
  convert back exactly).

Every initializer is saved as external data in one file (`data`, beside
the model), with size_threshold 0, so that nothing is inline.
"""

import json
import os

import numpy as np

from . import configs, safetensors

FUSIONS = ("concat", "fc3", "interleaved")
LAYOUTS = ("in-out", "out-in")


def rope_cache(d, theta, max_positions):
    inv = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = np.arange(max_positions, dtype=np.float64)[:, None] * inv[None, :]
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def ort_blocks(w, fmt):
    """float [N, K] -> ONNX Runtime QMoE's (UINT8 [N, K * bits / 8], float32
    scales [N, K / 32]) of the same blocks as moe_ref.quant's `fmt`."""
    from . import quant

    b = quant.quantize(w, fmt)
    n, nb = w.shape[0], w.shape[1] // 32
    b = b.reshape(n, nb, -1)
    d = np.ascontiguousarray(b[..., :2]).view(np.float16)[..., 0].astype(np.float32)
    if fmt == "q8_0":
        u = (b[..., 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8).reshape(n, -1)
    else:
        qs = b[..., 2:]  # values j (low nibble) and j + 16 (high) in byte j
        vals = np.concatenate([qs & 0xF, qs >> 4], axis=-1).reshape(n, -1)
        u = (vals[:, 0::2] | (vals[:, 1::2] << 4)).astype(np.uint8)
    return u, d


def build_model(model_dir, fusion="concat", ir_version=10, opset=21, wtype="f32",
                rotary="gqa", layout="in-out", qmoe=None):
    """The onnx.ModelProto (initializers inline, not yet saved); weights
    stored as `wtype` (f32 or f16; the RoPE caches stay float32); RoPE in
    GroupQueryAttention (`rotary` "gqa") or in com.microsoft.RotaryEmbedding
    nodes on q and k ("separate", with a `position_ids` input)."""
    import onnx
    from onnx import TensorProto as TP, helper, numpy_helper

    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; one of {', '.join(FUSIONS)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; one of {', '.join(LAYOUTS)}")
    with open(os.path.join(model_dir, "config.json")) as f:
        c = json.load(f)
    H, nH, nKV = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    d, E, L, V = configs.head_dim(c), c["num_local_experts"], c["num_hidden_layers"], c["vocab_size"]
    I, K, eps = c["intermediate_size"], c["num_experts_per_tok"], c["rms_norm_eps"]
    # transformers' sliding_window W is ORT's local_window_size W - 1 (a
    # query sees itself and W - 1 keys before it).
    window = c.get("sliding_window")
    theta = c.get("rope_theta") or c.get("rope_parameters", {}).get("rope_theta", 10000.0)
    w = {n: np.asarray(a, dtype=np.float32) for n, a in safetensors.load_model_dir(model_dir).items()}
    nodes, inits = [], []

    def init(name, array, dtype=np.float16 if wtype == "f16" else np.float32):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype), name))
        return name

    def node(op, inputs, outputs, name, domain="", **attrs):
        nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain, **attrs))
        return outputs[0]

    def weight(name, array):
        """A linear layer's weight (HF's [out, in] `array`) as `layout` stores it."""
        return init(name, array.T if layout == "in-out" else array)

    def linear(x, wname, tag, tied=False):
        if layout == "in-out" and not tied:
            return node("MatMul", [x, wname], [tag + "/out"], tag + "/MatMul")
        t = node("Transpose", [wname], [tag + "/W^T"], tag + "/Transpose", perm=[1, 0])
        return node("MatMul", [x, t], [tag + "/out"], tag + "/MatMul")

    def norm(x, wname, tag):
        return node("SimplifiedLayerNormalization", [x, wname], [tag + "/out"], tag,
                    epsilon=float(eps), axis=-1, stash_type=1)

    cos, sin = rope_cache(d, float(theta), c["max_position_embeddings"])
    init("cos_cache", cos, np.float32)
    init("sin_cache", sin, np.float32)
    init("model.embed_tokens.weight", w["model.embed_tokens.weight"])
    # (a Constant node: ORT's shape inference reads a Reshape's shape inline)
    node("Constant", [], ["shape_rows_hidden"], "/shape_rows_hidden",
         value=numpy_helper.from_array(np.array([-1, H], np.int64)))
    h = node("Gather", ["model.embed_tokens.weight", "input_ids"], ["embed/out"], "embed")
    inputs = [helper.make_tensor_value_info("input_ids", TP.INT64, [1, "S"]),
              helper.make_tensor_value_info("seqlens_k", TP.INT32, [1]),
              helper.make_tensor_value_info("total_sequence_length", TP.INT32, [])]
    if rotary == "separate":
        inputs.append(helper.make_tensor_value_info("position_ids", TP.INT64, [1, "S"]))
    outputs = [helper.make_tensor_value_info("logits", TP.FLOAT, [1, "S", V])]
    for l in range(L):
        p, t = f"model.layers.{l}.", f"/model/layers.{l}"
        for n in ("input_layernorm", "post_attention_layernorm"):
            init(p + n + ".weight", w[p + n + ".weight"])
        for n in "qkvo":
            weight(p + f"self_attn.{n}_proj.weight", w[p + f"self_attn.{n}_proj.weight"])
        a = norm(h, p + "input_layernorm.weight", t + "/input_layernorm")
        q, k, v = (linear(a, p + f"self_attn.{n}_proj.weight", t + f"/attn/{n}_proj")
                   for n in "qkv")
        pk, pv = f"past_key_values.{l}.key", f"past_key_values.{l}.value"
        inputs += [helper.make_tensor_value_info(n, TP.FLOAT, [1, nKV, "P", d]) for n in (pk, pv)]
        outputs += [helper.make_tensor_value_info(f"present.{l}.{n}", TP.FLOAT, [1, nKV, "T", d])
                    for n in ("key", "value")]
        tables = ["cos_cache", "sin_cache"]
        if rotary == "separate":
            q = node("RotaryEmbedding", [q, "position_ids"] + tables, [t + "/attn/q_rotary/out"],
                     t + "/attn/q_rotary", domain="com.microsoft", interleaved=0, num_heads=nH)
            k = node("RotaryEmbedding", [k, "position_ids"] + tables, [t + "/attn/k_rotary/out"],
                     t + "/attn/k_rotary", domain="com.microsoft", interleaved=0, num_heads=nKV)
            tables = []
        attn = node("GroupQueryAttention",
                    [q, k, v, pk, pv, "seqlens_k", "total_sequence_length"] + tables,
                    [t + "/attn/GQA/out", f"present.{l}.key", f"present.{l}.value"],
                    t + "/attn/GroupQueryAttention", domain="com.microsoft", num_heads=nH,
                    kv_num_heads=nKV, do_rotary=int(rotary == "gqa"), rotary_interleaved=0,
                    local_window_size=window - 1 if window else -1)
        o = linear(attn, p + "self_attn.o_proj.weight", t + "/attn/o_proj")
        h = node("Add", [h, o], [t + "/attn_residual/out"], t + "/attn_residual")
        x = norm(h, p + "post_attention_layernorm.weight", t + "/post_attention_layernorm")
        rows = node("Reshape", [x, "shape_rows_hidden"], [t + "/moe/rows"], t + "/moe/Reshape")
        gate = weight(p + "block_sparse_moe.gate.weight", w[p + "block_sparse_moe.gate.weight"])
        logits = linear(rows, gate, t + "/moe/gate")
        ex = p + "block_sparse_moe.experts."
        w1 = np.stack([w[ex + f"{e}.w1.weight"] for e in range(E)])
        w2 = np.stack([w[ex + f"{e}.w2.weight"] for e in range(E)])
        w3 = np.stack([w[ex + f"{e}.w3.weight"] for e in range(E)])
        def experts(name, stacked):
            """The stacked experts as inputs: [weight] or QMoE's [values, scales]."""
            if not qmoe:
                return [init(name, stacked)]
            pairs = [ort_blocks(m, qmoe) for m in stacked]
            return [init(name, np.stack([u for u, _ in pairs]), np.uint8),
                    init(name + ".scales", np.stack([d for _, d in pairs]), np.float32)]

        fc2 = experts(p + "moe.fc2", w2)
        if fusion == "fc3":
            fc1, fc3 = experts(p + "moe.fc1", w1), experts(p + "moe.fc3", w3)
            mats = [fc1, fc2, fc3]
            attrs = dict(activation_type="silu", swiglu_fusion=0)
        else:
            if fusion == "concat":
                both = np.concatenate([w1, w3], axis=1)
            else:
                both = np.empty((E, 2 * I, H), np.float32)
                both[:, 0::2], both[:, 1::2] = w1, w3
            mats = [experts(p + "moe.fc1", both), fc2]
            attrs = dict(activation_type="swiglu", swiglu_fusion=1 if fusion == "interleaved" else 2)
        ins = [x, logits]
        for m in mats:  # each with its (absent) bias
            ins += m + [""]
        ins = ins[:-1]
        if qmoe:
            attrs.update(expert_weight_bits=8 if qmoe == "q8_0" else 4, block_size=32)
        y = node("QMoE" if qmoe else "MoE", ins, [t + "/moe/out"], t + "/moe/MoE",
                 domain="com.microsoft", k=K, normalize_routing_weights=1, **attrs)
        h = node("Add", [h, y], [t + "/moe_residual/out"], t + "/moe_residual")
    init("model.norm.weight", w["model.norm.weight"])
    x = norm(h, "model.norm.weight", "/model/norm")
    tied = bool(c.get("tie_word_embeddings"))
    head = "model.embed_tokens.weight" if tied else weight("lm_head.weight", w["lm_head.weight"])
    logits = linear(x, head, "/lm_head", tied=tied)
    for n in nodes:
        if n.output[0] == logits:
            n.output[0] = "logits"
    graph = helper.make_graph(nodes, "mixtral", inputs, outputs, inits)
    return helper.make_model(graph, ir_version=ir_version,
                             opset_imports=[helper.make_opsetid("", opset),
                                            helper.make_opsetid("com.microsoft", 1)])


def write_onnx(model_dir, out, fusion="concat", data=None, ir_version=10, opset=21,
               wtype="f32", rotary="gqa", layout="in-out", qmoe=None):
    """Writes MODEL_DIR as `out` (an .onnx file) with every initializer in
    one external data file `data` (default: `<out's name>.data`) beside it."""
    import onnx

    m = build_model(model_dir, fusion, ir_version, opset, wtype, rotary, layout, qmoe)
    data = data or os.path.basename(out) + ".data"
    path = os.path.join(os.path.dirname(os.path.abspath(out)), data)
    if os.path.exists(path):
        os.remove(path)  # onnx appends to an existing file
    onnx.save_model(m, out, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data, size_threshold=0)
    return out


def run_ort(path, tokens):
    """Prefill logits [S, V] of the model at `path` run by onnxruntime's CPU
    provider on `tokens` (an empty cache)."""
    import onnx
    import onnxruntime as ort

    m = onnx.load(path, load_external_data=False)
    feeds = {"input_ids": np.array([tokens], np.int64),
             "seqlens_k": np.array([len(tokens) - 1], np.int32),
             "total_sequence_length": np.array(len(tokens), np.int32)}
    for i in m.graph.input:
        if i.name == "position_ids":
            feeds[i.name] = np.arange(len(tokens), dtype=np.int64)[None, :]
        if i.name.startswith("past_key_values."):
            dims = [d.dim_value for d in i.type.tensor_type.shape.dim]
            feeds[i.name] = np.zeros((1, dims[1], 0, dims[3]), np.float32)
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return s.run(["logits"], feeds)[0][0]


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir")
    p.add_argument("out")
    p.add_argument("--fusion", choices=FUSIONS, default="concat")
    p.add_argument("--data", help="external data file name (default OUT's name + .data)")
    p.add_argument("--wtype", choices=["f32", "f16"], default="f32")
    p.add_argument("--rotary", choices=["gqa", "separate"], default="gqa")
    p.add_argument("--linear-layout", choices=LAYOUTS, default="in-out",
                   help="linear weights stored [in, out] (MatMul(x, W), what exporters "
                        "write) or [out, in] (MatMul(x, Transpose(W)))")
    p.add_argument("--qmoe", choices=["q8_0", "q4_0"],
                   help="the experts as com.microsoft.QMoE, 8-bit or 4-bit, block_size 32")
    a = p.parse_args(argv)
    write_onnx(a.model_dir, a.out, a.fusion, a.data, wtype=a.wtype, rotary=a.rotary,
               layout=a.linear_layout, qmoe=a.qmoe)


if __name__ == "__main__":
    main()
