"""Checks the weight manifest in imported IR against the safetensors headers,
read independently here:  check_manifest.py MODEL_DIR IR_FILE
Prints 'manifest OK: N weights in M files' or the first mismatch."""

import os
import re
import sys

from moe_ref import safetensors

DTYPE = {"F32": "f32", "F16": "f16", "BF16": "bf16"}
SOURCE = re.compile(r'moe\.weight_source "([^"]+)" in "([^"]+)" at (\d+) : tensor<([0-9x]+)x(f32|f16|bf16)>')


def main(model_dir, ir_file):
    files = safetensors.model_files(model_dir)
    expected = {}
    for name in files:
        header, base = safetensors.read_header(os.path.join(model_dir, name))
        for tensor, info in header.items():
            expected[tensor] = (name, base + info["data_offsets"][0],
                                [int(d) for d in info["shape"]], DTYPE[info["dtype"]])
    with open(ir_file) as f:
        sources = SOURCE.findall(f.read())
    seen = set()
    for name, file, offset, dims, dtype in sources:
        got = (file, int(offset), [int(d) for d in dims.split("x")], dtype)
        if name in seen:
            sys.exit(f"duplicate source for {name}")
        seen.add(name)
        if expected.get(name) != got:
            sys.exit(f"mismatch for {name}: IR has {got}, header has {expected.get(name)}")
    missing = set(expected) - seen
    if missing:
        sys.exit(f"no source for {sorted(missing)[:3]}")
    print(f"manifest OK: {len(seen)} weights in {len(files)} files")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
