#===- test/runtime/st_edit.py - rewrite safetensors files for tests ------===#
#
# Part of moe-compile.
#
#===----------------------------------------------------------------------===#
"""Changes a safetensors file in place the way a re-save could, for the
runtime's load-time checks:

  st_edit.py FILE swap A B         exchange two same-size tensors (offsets
                                   and bytes): same file, other layout
  st_edit.py FILE shape NAME D,D   declare another shape (same byte count)
  st_edit.py FILE dtype NAME DT    declare another dtype label
  st_edit.py FILE rename OLD NEW   rename a tensor
  st_edit.py FILE fill NAME VALUE  set every element of a tensor (F32, F16
                                   or BF16)
  st_edit.py FILE set NAME I VALUE set element I of a tensor
  st_edit.py FILE header TEXT      replace the header's JSON with TEXT
                                   (@PATH: with the contents of PATH)
  st_edit.py FILE length N         replace the 8-byte header length with N

Header rewrites keep the header's length (padded with spaces) when the new
JSON fits, so only what was asked for changes.
"""

import json
import struct
import sys


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), n, data


def write_header(path, header, old_length, data, text=None):
    if text is None:
        text = json.dumps(header, separators=(",", ":")).encode()
    if len(text) <= old_length:
        text += b" " * (old_length - len(text))
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data[8 + old_length:])


def main(argv):
    path, op, args = argv[1], argv[2], argv[3:]
    header, n, data = read(path)
    body = bytearray(data[8 + n:])
    if op == "swap":
        a, b = header[args[0]], header[args[1]]
        (a0, a1), (b0, b1) = a["data_offsets"], b["data_offsets"]
        assert a1 - a0 == b1 - b0, "swap needs tensors of the same size"
        body[a0:a1], body[b0:b1] = bytes(body[b0:b1]), bytes(body[a0:a1])
        a["data_offsets"], b["data_offsets"] = [b0, b1], [a0, a1]
        data = data[:8 + n] + bytes(body)
    elif op == "shape":
        header[args[0]]["shape"] = [int(d) for d in args[1].split(",") if d]
    elif op == "dtype":
        header[args[0]]["dtype"] = args[1]
    elif op == "rename":
        header = {args[1] if k == args[0] else k: v for k, v in header.items()}
    elif op in ("fill", "set"):
        t = header[args[0]]
        b0, b1 = t["data_offsets"]
        if op == "fill":
            value = float(args[1])
        else:
            value = float(args[2])
        # The value in the tensor's own format: f32, f16, or bf16 (the top
        # half of the f32).
        if t["dtype"] == "F32":
            size, raw = 4, struct.pack("<f", value)
        elif t["dtype"] == "F16":
            size, raw = 2, struct.pack("<e", value)
        else:
            assert t["dtype"] == "BF16"
            size, raw = 2, struct.pack("<f", value)[2:]
        indices = range((b1 - b0) // size) if op == "fill" else [int(args[1])]
        for i in indices:
            body[b0 + size * i:b0 + size * i + size] = raw
        data = data[:8 + n] + bytes(body)
    elif op == "header":
        text = args[0].encode()
        if args[0].startswith("@"):
            with open(args[0][1:], "rb") as f:
                text = f.read()
        write_header(path, None, n, data, text)
        return
    elif op == "length":
        with open(path, "r+b") as f:
            f.write(struct.pack("<Q", int(args[0])))
        return
    else:
        sys.exit(f"unknown operation '{op}'")
    write_header(path, header, n, data)


if __name__ == "__main__":
    main(sys.argv)
