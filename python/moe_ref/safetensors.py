"""Minimal safetensors reader/writer on numpy.

Format: 8-byte little-endian header length N, N bytes of JSON mapping tensor
names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative
to the byte after the header), then the data. bf16 has no numpy dtype, so it
travels as uint16 arrays holding the raw bits (see to_bf16 / from_bf16).
"""

import json
import os
import struct

import numpy as np

# safetensors dtype name -> (numpy dtype of the raw storage, bytes per element)
DTYPES = {
    "F32": (np.float32, 4),
    "F16": (np.float16, 2),
    "BF16": (np.uint16, 2),
    "F64": (np.float64, 8),
    "I64": (np.int64, 8),
    "I32": (np.int32, 4),
    "I16": (np.int16, 2),
    "I8": (np.int8, 1),
    "U8": (np.uint8, 1),
    "BOOL": (np.bool_, 1),
}

NAME_OF_DTYPE = {"f32": "F32", "f16": "F16", "bf16": "BF16"}


def to_bf16(x):
    """float array -> uint16 bf16 bits, round to nearest even."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    return ((bits + rounding) >> 16).astype(np.uint16)


def from_bf16(bits):
    """uint16 bf16 bits -> float32 array."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def encode(array, dtype):
    """float array -> raw storage array for safetensors dtype `dtype`."""
    if dtype == "BF16":
        return to_bf16(array)
    return np.ascontiguousarray(array, dtype=DTYPES[dtype][0])


def decode(raw, dtype):
    """raw storage array -> float32 array."""
    if dtype == "BF16":
        return from_bf16(raw)
    return np.asarray(raw, dtype=np.float32)


def build_header(entries, metadata=None):
    """entries: list of (name, dtype, shape, nbytes) in file order.
    Returns (header bytes including the 8-byte length, total data bytes)."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, dtype, shape, nbytes in entries:
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # pad so the data starts 8-aligned
    return struct.pack("<Q", len(text)) + text, offset


def write(path, tensors, metadata=None):
    """tensors: list of (name, dtype, raw storage array) in file order."""
    entries = [(n, d, a.shape, a.nbytes) for n, d, a in tensors]
    header, _ = build_header(entries, metadata or {"format": "pt"})
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header)
        for _, _, array in tensors:
            f.write(np.ascontiguousarray(array).tobytes())
    os.replace(tmp, path)


def write_sparse(path, entries, metadata=None):
    """A file with a real header and a sparse, all-zero data section of the
    right size: for tests that must never read tensor data."""
    header, total = build_header(entries, metadata or {"format": "pt"})
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + total)


def read_header(path):
    """-> (header dict without __metadata__, byte offset of the data section)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header, 8 + n


def load(path):
    """-> {name: float32 array}, memory-mapped and decoded."""
    header, base = read_header(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, info in header.items():
        storage, size = DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        raw = mm[base + begin: base + end].view(storage).reshape(info["shape"])
        out[name] = decode(raw, info["dtype"])
    return out


def model_files(path):
    """The safetensors files of an HF model directory: model.safetensors, or
    the shards listed by model.safetensors.index.json (sorted)."""
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            return sorted(set(json.load(f)["weight_map"].values()))
    return ["model.safetensors"]


def load_model_dir(path):
    """Loads every tensor of an HF model directory."""
    tensors = {}
    for name in model_files(path):
        tensors.update(load(os.path.join(path, name)))
    return tensors
