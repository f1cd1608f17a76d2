"""Rebuilds the external data file of a graph that moe_ref.torch_export wrote
(torch.onnx.export's decomposed Mixtral), from the generator's weights and
the sidecar JSON saved beside the graph; numpy only (CI has no torch).

    python -m moe_ref.torch_weights --sidecar G.json --model DIR --out G.onnx.data

Each entry of the sidecar names a weight initializer of the graph, its dtype,
shape, byte range in the data file, and how it is made from the generator's
tensors: `identity`, `transpose` (a [in, out] MatMul weight), `stack_gate_up`
(per expert, w1's rows then w3's rows: transformers 5's gate_up_proj
[E, 2I, H]) or `stack_down` (the experts' w2: down_proj [E, H, I]).
"""

import argparse
import json
import os
import sys

import numpy as np

from . import safetensors

DTYPES = {"f32": np.float32, "f16": np.float16}


def build(entry, gen):
    kind, src = entry["kind"], entry["sources"]
    if kind == "identity":
        a = gen[src[0]]
    elif kind == "transpose":
        a = gen[src[0]].T
    elif kind == "stack_gate_up":
        a = np.stack([np.concatenate([gen[w1], gen[w3]]) for w1, w3 in src])
    elif kind == "stack_down":
        a = np.stack([gen[w2] for w2 in src])
    else:
        raise ValueError(f"{entry['name']}: unknown kind '{kind}'")
    a = np.ascontiguousarray(a.astype(DTYPES[entry["dtype"]]))
    if list(a.shape) != entry["shape"]:
        raise ValueError(f"{entry['name']}: built {list(a.shape)}, the sidecar "
                         f"says {entry['shape']}")
    return a


def write(sidecar, model_dir, out):
    with open(sidecar) as f:
        side = json.load(f)
    gen = safetensors.load_model_dir(model_dir)
    end = max(e["offset"] + e["length"] for e in side["weights"])
    buf = bytearray(end)
    for e in side["weights"]:
        raw = build(e, gen).tobytes()
        if len(raw) != e["length"]:
            raise ValueError(f"{e['name']}: {len(raw)} bytes, the sidecar says "
                             f"{e['length']}")
        buf[e["offset"]:e["offset"] + len(raw)] = raw
    with open(out, "wb") as f:
        f.write(buf)
    return side


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sidecar", required=True)
    p.add_argument("--model", required=True, help="moe_ref.generate's directory")
    p.add_argument("--out", required=True, help="the data file to write")
    args = p.parse_args(argv)
    side = write(args.sidecar, args.model, args.out)
    print(f"wrote {args.out}: {len(side['weights'])} weights")


if __name__ == "__main__":
    sys.exit(main())
