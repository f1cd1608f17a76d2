#!/usr/bin/env python3
# ===- make_gguf_corpus.py - seed files for moert-gguf-fuzzer -------------===#
#
# Part of moe-compile.
#
# ===----------------------------------------------------------------------===#
#
# Writes small valid GGUF files (each under the smoke run's 4096-byte input
# limit) into runtime/fuzz/gguf-corpus, with the standard library only (no
# `gguf` package): every value type, arrays of strings and of arrays, one
# tensor of each ggml type the parser accepts, version 2 and 3, a custom
# alignment and an empty tensor. Run it again after changing it:
#
#   python3 runtime/fuzz/make_gguf_corpus.py
#
# ===----------------------------------------------------------------------===#

import os
import struct
import sys

UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, \
    UINT64, INT64, FLOAT64 = range(13)

SCALAR = {UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I",
          INT32: "<i", FLOAT32: "<f", BOOL: "<?", UINT64: "<Q", INT64: "<q",
          FLOAT64: "<d"}

# ggml type id: (block elements, block bytes), the types the parser accepts.
F32, F16, Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K, BF16 = 0, 1, 2, 3, 8, 12, 13, 14, 30
LAYOUT = {F32: (1, 4), F16: (1, 2), Q4_0: (32, 18), Q4_1: (32, 20),
          Q8_0: (32, 34), Q4_K: (256, 144), Q5_K: (256, 176), Q6_K: (256, 210),
          BF16: (1, 2)}


def string(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def value(vtype, v):
    """The encoding of a value of type `vtype`; an array is (elem_type,
    [elements])."""
    if vtype == STRING:
        return string(v)
    if vtype == ARRAY:
        elem, items = v
        return (struct.pack("<IQ", elem, len(items)) +
                b"".join(value(elem, x) for x in items))
    return struct.pack(SCALAR[vtype], v)


def gguf(kvs, tensors, version=3, alignment=32):
    """kvs: [(key, type, value)]; tensors: [(name, dims, ggml type)], dims
    innermost first. Tensors are laid out in order, each padded."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, vtype, v in kvs:
        out += string(key) + struct.pack("<I", vtype) + value(vtype, v)
    data = b""
    for name, dims, gtype in tensors:
        elems, nbytes = LAYOUT[gtype]
        count = 1
        for d in dims:
            count *= d
        size = count // elems * nbytes
        data += b"\0" * (-len(data) % alignment)
        out += string(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", gtype, len(data))
        data += bytes((i * 37 + len(name)) & 0xFF for i in range(size))
    out += b"\0" * (-len(out) % alignment)
    return out + data


def corpus():
    files = {}
    files["minimal.gguf"] = gguf([], [])
    files["v2-small.gguf"] = gguf(
        [("general.architecture", STRING, "llama"),
         ("llama.block_count", UINT32, 1)],
        [("token_embd.weight", [4, 2], F32)], version=2)
    files["all-values.gguf"] = gguf([
        ("u8", UINT8, 200), ("i8", INT8, -100), ("u16", UINT16, 60000),
        ("i16", INT16, -30000), ("u32", UINT32, 4000000000),
        ("i32", INT32, -2000000000), ("f32", FLOAT32, 1.5),
        ("bool", BOOL, True), ("str", STRING, "h\u00e9llo"),
        ("u64", UINT64, 2**63 + 5), ("i64", INT64, -2**62),
        ("f64", FLOAT64, -0.25),
        ("arr.u8", ARRAY, (UINT8, [1, 2, 3])),
        ("arr.i32", ARRAY, (INT32, [-1, 0, 1])),
        ("arr.f32", ARRAY, (FLOAT32, [0.5, -2.0])),
        ("arr.bool", ARRAY, (BOOL, [True, False])),
        ("arr.str", ARRAY, (STRING, ["a", "", "\u00fcber"])),
        ("arr.arr", ARRAY, (ARRAY, [(INT16, [1, 2]), (STRING, ["x"])])),
        ("arr.empty", ARRAY, (UINT64, [])),
    ], [("t", [8], F16)])
    files["tensors.gguf"] = gguf(
        [("general.architecture", STRING, "llama")],
        [("f32", [4, 2], F32), ("f16", [4], F16), ("bf16", [2, 2], BF16),
         ("q4_0", [32], Q4_0), ("q4_1", [32], Q4_1), ("q8_0", [32, 2], Q8_0),
         ("q4_k", [256], Q4_K), ("q5_k", [256], Q5_K), ("q6_k", [256], Q6_K)])
    files["aligned.gguf"] = gguf(
        [("general.alignment", UINT32, 64)],
        [("blk.0.ffn_up.weight", [32, 1, 1, 2], Q8_0),
         ("empty", [0, 3], F32), ("blk.0.attn_norm.weight", [8], F32)],
        alignment=64)
    tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % i for i in range(16)]
    tokens += ["\u2581the", "\u2581a", "in", "er"]
    files["vocab.gguf"] = gguf([
        ("general.architecture", STRING, "llama"),
        ("tokenizer.ggml.model", STRING, "llama"),
        ("tokenizer.ggml.tokens", ARRAY, (STRING, tokens)),
        ("tokenizer.ggml.scores", ARRAY,
         (FLOAT32, [-float(i) for i in range(len(tokens))])),
        ("tokenizer.ggml.token_type", ARRAY,
         (INT32, [2, 3, 3] + [6] * 16 + [1] * 4)),
        ("tokenizer.ggml.merges", ARRAY, (STRING, ["\u2581 t", "i n"])),
        ("tokenizer.ggml.bos_token_id", UINT32, 1),
    ], [])
    return files


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        here, "gguf-corpus")
    os.makedirs(outdir, exist_ok=True)
    for name, data in sorted(corpus().items()):
        assert len(data) <= 4096, (name, len(data))
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(data)
        print("%s: %d bytes" % (name, len(data)))


if __name__ == "__main__":
    main()
