#===- test/Frontends/gguf/edit_gguf.py - rewrite GGUF files for tests ----===#
#
# Part of moe-compile.
#
#===----------------------------------------------------------------------===#
"""Writes OUT as a copy of the GGUF file IN with one change, for the tests of
bad GGUF input (the importer's and the runtime's):

Rewrites, through PyPI gguf's GGUFReader and GGUFWriter (a valid GGUF file
comes out, only what was asked for differs):

  edit_gguf.py IN OUT drop-tensor NAME       leave tensor NAME out
  edit_gguf.py IN OUT drop-key KEY           leave key KEY out
  edit_gguf.py IN OUT set-key KEY TYPE VALUE set KEY (added if absent) to
                                             VALUE as TYPE: u8, i8, u16,
                                             i16, u32, i32, u64, i64, f32,
                                             f64, bool or str
  edit_gguf.py IN OUT arch NAME              general.architecture = NAME
  edit_gguf.py IN OUT tensor-type NAME TYPE  store tensor NAME as TYPE (a
                                             GGMLQuantizationType name such
                                             as Q8_0 or Q5_0; its values are
                                             dequantised and re-quantised by
                                             gguf.quants, or zero blocks
                                             where gguf.quants cannot make
                                             the type, e.g. IQ4_XS)
  edit_gguf.py IN OUT tensor-shape NAME D,D  declare tensor NAME with another
                                             row-major shape of the same
                                             element count (same bytes)

Byte patches of a copy, where the format itself must be broken:

  edit_gguf.py IN OUT magic TEXT             the 4-byte magic
  edit_gguf.py IN OUT version N              the version field
  edit_gguf.py IN OUT truncate N             keep the first N bytes (N < 0:
                                             drop the last -N)
  edit_gguf.py IN OUT tensor-offset NAME N   tensor NAME's data offset (in
                                             the data section) = N
  edit_gguf.py IN OUT tensor-type-id NAME N  tensor NAME's ggml type id = N
                                             (any number, no data change)
"""

import logging
import shutil
import struct
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V

VALUE_TYPES = {"u8": V.UINT8, "i8": V.INT8, "u16": V.UINT16, "i16": V.INT16,
               "u32": V.UINT32, "i32": V.INT32, "u64": V.UINT64, "i64": V.INT64,
               "f32": V.FLOAT32, "f64": V.FLOAT64, "bool": V.BOOL, "str": V.STRING}
# The keys GGUFWriter writes itself.
OWN_KEYS = ("GGUF.version", "GGUF.tensor_count", "GGUF.kv_count", "general.architecture")


def fail(message):
    sys.exit(f"edit_gguf.py: {message}")


def tensor_of(reader, name):
    for t in reader.tensors:
        if t.name == name:
            return t
    fail(f"no tensor {name!r} in the file")


def row_major(t):
    return [int(d) for d in reversed(t.shape)]


def byte_shape(shape, qtype):
    """The uint8 array shape GGUFWriter takes for a block-format tensor."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    if shape[-1] % block:
        fail(f"rows of {shape[-1]} are not whole {qtype.name} blocks of {block}")
    return [*shape[:-1], shape[-1] // block * size]


def rewrite(src, dst, op, args):
    reader = gguf.GGUFReader(src)
    arch = reader.get_field("general.architecture").contents()
    drop_key = drop_tensor = None
    new_key = None
    if op == "drop-key":
        (drop_key,) = args
        if reader.get_field(drop_key) is None:
            fail(f"no key {drop_key!r} in the file")
    elif op == "drop-tensor":
        (drop_tensor,) = args
        tensor_of(reader, drop_tensor)
    elif op == "set-key":
        key, vtype, text = args
        if vtype not in VALUE_TYPES:
            fail(f"unknown value type {vtype!r}")
        vt = VALUE_TYPES[vtype]
        value = (text if vt == V.STRING else
                 float(text) if vt in (V.FLOAT32, V.FLOAT64) else
                 text in ("1", "true") if vt == V.BOOL else int(text))
        new_key = (key, value, vt)
    elif op == "arch":
        (arch,) = args
    elif op in ("tensor-type", "tensor-shape"):
        tensor_of(reader, args[0])
    else:
        fail(f"unknown operation {op!r}")

    w = gguf.GGUFWriter(dst, arch)
    for field in reader.fields.values():
        if field.name in OWN_KEYS or field.name == drop_key:
            continue
        if new_key and field.name == new_key[0]:
            w.add_key_value(*new_key)
            new_key = None
            continue
        sub = field.types[-1] if field.types[0] == V.ARRAY else None
        w.add_key_value(field.name, field.contents(), field.types[0], sub)
    if new_key:
        w.add_key_value(*new_key)

    for t in reader.tensors:
        if t.name == drop_tensor:
            continue
        qtype, shape, data = t.tensor_type, row_major(t), np.asarray(t.data)
        if op == "tensor-type" and t.name == args[0]:
            values = gguf.quants.dequantize(data, qtype).reshape(shape)
            qtype = Q[args[1]]
            try:
                data = gguf.quants.quantize(values.astype(np.float32), qtype)
            except NotImplementedError:
                data = np.zeros(byte_shape(shape, qtype), np.uint8)
        elif op == "tensor-shape" and t.name == args[0]:
            shape = [int(d) for d in args[1].split(",")]
            if np.prod(shape) != np.prod(row_major(t)):
                fail(f"shape {shape} does not hold the {np.prod(row_major(t))} elements")
        if qtype in (Q.F32, Q.F16):
            data = data.reshape(shape)
        else:
            data = data.view(np.uint8).reshape(byte_shape(shape, qtype))
        w.add_tensor(t.name, data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def patch(src, dst, op, args):
    shutil.copyfile(src, dst)
    if op in ("tensor-offset", "tensor-type-id"):
        reader = gguf.GGUFReader(dst, "r+")
        t = tensor_of(reader, args[0])
        # The tensor info's parts: name length, name, n_dims, dims, type,
        # offset (views of the file, written through).
        t.field.parts[-1 if op == "tensor-offset" else -2][0] = int(args[1])
        reader.data.flush()
        return
    with open(dst, "r+b") as f:
        if op == "magic":
            magic = args[0].encode()
            if len(magic) != 4:
                fail("the magic is 4 bytes")
            f.write(magic)
        elif op == "version":
            f.seek(4)
            f.write(struct.pack("<I", int(args[0])))
        elif op == "truncate":
            n = int(args[0])
            f.truncate(n if n >= 0 else f.seek(0, 2) + n)


def main(argv):
    # GGUFWriter's notes (e.g. that set-key replaces general.architecture).
    logging.disable(logging.WARNING)
    if len(argv) < 4:
        sys.exit(__doc__)
    src, dst, op, args = argv[1], argv[2], argv[3], argv[4:]
    if op in ("magic", "version", "truncate", "tensor-offset", "tensor-type-id"):
        patch(src, dst, op, args)
    else:
        rewrite(src, dst, op, args)


if __name__ == "__main__":
    main(sys.argv)
