"""Checks the artifact's weights file moe-compile wrote for an ONNX model
against the model's own initializers, read by onnx (not by moe-compile):

    check_artifact.py MODEL.onnx WEIGHTS.safetensors [--quantize FMT]
    check_artifact.py --build-id WEIGHTS.safetensors    (prints its moe.build)

Each tensor of the file must be, byte for byte:
  * an initializer W that a MatMul takes as B ([in, out]): W transposed;
  * `FC1[e].gate` / `FC1[e].up` of a com.microsoft.MoE with swiglu_fusion 1:
    rows 0, 2, 4, ... / 1, 3, 5, ... of FC1[e];
  * `FC[e]` (an expert's slice, quantised only): FC[e]; any other
    initializer (quantised only): itself;
  * of a com.microsoft.QMoE (UINT8 values, FC.scales): the same rows as
    q8_0 / q4_0 blocks, rebuilt here from ONNX Runtime's layout (the f16
    scale; q8_0 values u - 128; q4_0 nibbles c in byte c / 2, low first,
    become byte j = values j | j + 16 << 4);
and a U8 tensor (with --quantize FMT) that matrix quantised by moe_ref.quant
(llama.cpp's blocks). Prints one line with the counts.
"""

import argparse
import json
import os
import re
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "python"))
from moe_ref import quant, safetensors  # noqa: E402


def main():
    import onnx
    from onnx import numpy_helper

    if sys.argv[1:2] == ["--build-id"]:
        with open(sys.argv[2], "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            print(json.loads(f.read(n))["__metadata__"]["moe.build"])
        return
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("weights")
    p.add_argument("--quantize")
    a = p.parse_args()
    m = onnx.load(a.model, load_external_data=True)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    matmul_b = {n.input[1] for n in m.graph.node if n.op_type == "MatMul"}
    interleaved = {n.input[2] for n in m.graph.node if n.op_type in ("MoE", "QMoE") and any(
        x.name == "swiglu_fusion" and x.i == 1 for x in n.attribute)}
    qmoe = {}  # values -> (scales, bits)
    for n in m.graph.node:
        if n.op_type == "QMoE":
            bits = next((x.i for x in n.attribute if x.name == "expert_weight_bits"), 4)
            for i in (2, 5, 8):
                if i < len(n.input) and n.input[i]:
                    qmoe[n.input[i]] = (n.input[i + 1], bits)

    header, base = safetensors.read_header(a.weights)
    raw = np.fromfile(a.weights, dtype=np.uint8)
    counts = {"transposed": 0, "interleaved rows": 0, "as stored": 0, "quantised": 0,
              "QMoE": 0}
    for name, info in header.items():
        g = re.fullmatch(r"(.*)\[(\d+)\](\.gate|\.up)?", name)
        if g and g[1] in qmoe:
            scales, bits = qmoe[g[1]]
            e, part = int(g[2]), g[3]
            u, d = inits[g[1]][e], inits[scales][e]  # [N, K * bits / 8], [N, B]
            if part:
                rows = slice(0 if part == ".gate" else 1, None, 2) if g[1] in interleaved \
                    else slice(0, u.shape[0] // 2) if part == ".gate" else slice(u.shape[0] // 2, None)
                u, d = u[rows], d[rows]
            n = u.shape[0]
            k = u.shape[1] * 8 // bits
            if d.ndim == 1:
                d = d[:, None]
            block_scale = np.repeat(d.astype(np.float32), k // 32 // d.shape[1], axis=1)
            h = block_scale.astype(np.float16)
            if not np.array_equal(h.astype(np.float32), block_scale):
                sys.exit(f"{name}: a scale is not an f16 value")
            if bits == 8:
                vals = (u.astype(np.int16) - 128).astype(np.int8).view(np.uint8).reshape(n, -1, 32)
            else:
                nib = np.stack([u & 0xF, u >> 4], axis=-1).reshape(n, -1, 32)  # value c
                vals = (nib[..., :16] | (nib[..., 16:] << 4)).astype(np.uint8)
            want = np.concatenate([h.view(np.uint8).reshape(n, -1, 2), vals], axis=-1).reshape(n, -1)
            begin, end = info["data_offsets"]
            if info["dtype"] != "U8" or list(info["shape"]) != list(want.shape):
                sys.exit(f"{name}: {info['dtype']} {info['shape']} in the file, expected U8 "
                         f"{list(want.shape)}")
            if not np.array_equal(raw[base + begin: base + end], want.reshape(-1)):
                sys.exit(f"{name}: the bytes differ from the QMoE blocks'")
            counts["QMoE"] += 1
            continue
        if name in inits:
            w = inits[name]
            kind = "transposed" if name in matmul_b else "as stored"
            if kind == "transposed":
                w = w.T
        elif (g := re.fullmatch(r"(.*)\[(\d+)\]\.(gate|up)", name)) and g[1] in interleaved:
            w = inits[g[1]][int(g[2])][0 if g[3] == "gate" else 1::2]
            kind = "interleaved rows"
        elif (g := re.fullmatch(r"(.*)\[(\d+)\]", name)) and g[1] in inits:
            w, kind = inits[g[1]][int(g[2])], "as stored"
        else:
            sys.exit(f"{name}: not an initializer, a transposed one or an expert's rows")
        quantised = info["dtype"] == "U8"
        if quantised and not a.quantize:
            sys.exit(f"{name}: quantised, without --quantize")
        if kind == "as stored" and not quantised:
            sys.exit(f"{name}: stored as it is in the model, yet copied into the artifact")
        begin, end = info["data_offsets"]
        got = raw[base + begin: base + end]
        if quantised:
            want = quant.quantize(np.asarray(w, np.float32), a.quantize, name)
            dtype = "U8"
        else:
            want = np.ascontiguousarray(w)
            dtype = {np.float32: "F32", np.float16: "F16"}[want.dtype.type]
        if info["dtype"] != dtype or list(info["shape"]) != list(want.shape):
            sys.exit(f"{name}: {info['dtype']} {info['shape']} in the file, expected "
                     f"{dtype} {list(want.shape)}")
        if not np.array_equal(got, want.view(np.uint8).reshape(-1)):
            sys.exit(f"{name}: the bytes differ from the model's ({kind})")
        counts[kind] += 1
        counts["quantised"] += quantised
    print("artifact OK: " + ", ".join(f"{v} {k}" for k, v in counts.items()) +
          (f" ({a.quantize})" if a.quantize else ""))


if __name__ == "__main__":
    main()
