"""Exports a generated model with torch.onnx.export (the dynamo exporter), as
a test input for the ONNX frontend's decomposed path (docs/frontends.md,
ONNX). NOT part of CI: it needs torch, transformers and onnxscript
(checked with torch 2.15, transformers 5.24, onnxscript 0.7.2); CI only
reads what it wrote (the graph and the sidecar, committed under
test/Frontends/onnx/Inputs/) and rebuilds the data file with numpy
(moe_ref.torch_weights).

    python -m moe_ref.torch_export --model DIR --out OUT.onnx
        [--attn sdpa|eager] [--dtype f32|f16] [--check-ids 1,2,3]

DIR is moe_ref.generate's output (config.json + safetensors), which
transformers 5 loads with from_pretrained (it stacks the per-expert w1/w3
into gate_up_proj [E, 2I, H] and w2 into down_proj [E, H, I]). The experts
are exported with `_experts_implementation = "batched_mm"`: transformers 5's
default (grouped_mm) does not export, `eager` fails in torch.export (a
data-dependent loop over the hit experts). The TorchScript exporter
(dynamo=False) fails on transformers 5 (`aten::diff` is unsupported).

Writes OUT.onnx with every weight initializer in OUT.onnx.data (offsets in
the order of the graph), doc strings and metadata stripped, and OUT.json:
for each weight initializer, the generator tensor(s) it is made of and how
(identity, transpose, the experts' w1 then w3 rows stacked, the experts' w2
stacked), found by comparing the arrays exactly. Other initializers (RoPE's
inv_freq, small constants) stay inside the graph.
"""

import argparse
import json
import os
import sys

import numpy as np


def candidates(gen, config):
    """(kind, sources, array) for every form a weight may take."""
    out = []
    for name, a in gen.items():
        out.append(("identity", [name], a))
        if a.ndim == 2:
            out.append(("transpose", [name], a.T))
    E = config["num_local_experts"]
    for l in range(config["num_hidden_layers"]):
        p = f"model.layers.{l}.block_sparse_moe.experts"
        w1 = [f"{p}.{e}.w1.weight" for e in range(E)]
        w3 = [f"{p}.{e}.w3.weight" for e in range(E)]
        w2 = [f"{p}.{e}.w2.weight" for e in range(E)]
        gate_up = np.stack([np.concatenate([gen[a], gen[b]]) for a, b in zip(w1, w3)])
        down = np.stack([gen[n] for n in w2])
        out.append(("stack_gate_up", [[a, b] for a, b in zip(w1, w3)], gate_up))
        out.append(("stack_down", w2, down))
    return out


def find_source(array, cands):
    for kind, sources, c in cands:
        if c.shape == array.shape and np.array_equal(c.astype(array.dtype), array):
            return kind, sources
    return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    p.add_argument("--dtype", default="f32", choices=["f32", "f16"])
    p.add_argument("--max-seq", type=int, default=128)
    p.add_argument("--generator", default="",
                   help="how DIR was generated (recorded in the sidecar)")
    p.add_argument("--check-ids", default="1,17,42,7,99,3,5,8,13,21",
                   help="token ids run by transformers and onnxruntime")
    args = p.parse_args(argv)

    import onnx
    import onnx.numpy_helper as nh
    import torch
    import transformers
    from transformers import MixtralForCausalLM

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from moe_ref import safetensors

    with open(os.path.join(args.model, "config.json")) as f:
        config = json.load(f)
    gen = safetensors.load_model_dir(args.model)

    model = MixtralForCausalLM.from_pretrained(
        args.model, dtype=torch.float32, attn_implementation=args.attn)
    model.config._experts_implementation = "batched_mm"
    if args.dtype == "f16":
        model = model.half()
    model.eval()

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            return self.m(input_ids=input_ids, use_cache=False).logits

    wrapped = Logits(model).eval()
    ids = torch.tensor([[int(t) for t in args.check_ids.split(",")]])
    with torch.no_grad():
        ref = wrapped(ids).float().numpy()
        seq = torch.export.Dim("seq", min=2, max=args.max_seq)
        program = torch.onnx.export(wrapped, (ids,), dynamo=True,
                                    input_names=["input_ids"], output_names=["logits"],
                                    dynamic_shapes=({1: seq},), opset_version=20)
    tmp = args.out + ".tmp.onnx"
    program.save(tmp)
    m = onnx.load(tmp, load_external_data=True)
    os.remove(tmp)
    if os.path.exists(tmp + ".data"):
        os.remove(tmp + ".data")

    cands = candidates(gen, config)
    data_name = os.path.basename(args.out) + ".data"
    sidecar = {"data_file": data_name, "generator": args.generator, "weights": []}
    offset = 0
    chunks = []
    for t in m.graph.initializer:
        if t.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            continue
        a = nh.to_array(t)
        if a.ndim == 0 or a.size < 2:
            continue
        found = find_source(a, cands)
        if not found:
            continue
        kind, sources = found
        raw = np.ascontiguousarray(a).tobytes()
        pad = (-offset) % 64
        chunks.append(b"\0" * pad)
        offset += pad
        sidecar["weights"].append({
            "name": t.name, "kind": kind, "sources": sources,
            "dtype": "f16" if a.dtype == np.float16 else "f32",
            "shape": list(a.shape), "offset": offset, "length": len(raw)})
        chunks.append(raw)
        t.ClearField("raw_data")
        del t.float_data[:]
        t.data_location = onnx.TensorProto.EXTERNAL
        del t.external_data[:]
        for k, v in (("location", data_name), ("offset", str(offset)),
                     ("length", str(len(raw)))):
            e = t.external_data.add()
            e.key, e.value = k, v
        offset += len(raw)
    # Keep the graph small and free of the exporter's notes.
    m.doc_string = ""
    del m.metadata_props[:]
    m.graph.doc_string = ""
    for n in m.graph.node:
        n.doc_string = ""
        del n.metadata_props[:]
    del m.graph.value_info[:]
    with open(args.out + ".data", "wb") as f:
        for c in chunks:
            f.write(c)
    onnx.save_model(m, args.out)
    sidecar["exported_by"] = {"torch": torch.__version__,
                              "transformers": transformers.__version__,
                              "onnx": onnx.__version__, "attn": args.attn,
                              "dtype": args.dtype}
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(sidecar, f, indent=1)
        f.write("\n")

    # The exported graph against transformers itself.
    import onnxruntime as ort
    sess = ort.InferenceSession(args.out, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_ids": ids.numpy()})[0].astype(np.float32)
    diff = float(np.abs(got - ref).max())
    scale = float(np.abs(ref).max())
    print(f"exported {args.out}: {len(sidecar['weights'])} weights; onnxruntime vs "
          f"transformers max |diff| {diff:.3g} (largest logit {scale:.3g}); torch "
          f"{torch.__version__}, transformers {transformers.__version__}, "
          f"onnxruntime {ort.__version__}")
    np.save(os.path.splitext(args.out)[0] + ".transformers.npy", ref)


if __name__ == "__main__":
    main()
