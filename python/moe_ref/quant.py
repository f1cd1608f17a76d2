"""Block-quantised weight formats in numpy: q8_0, q4_0 and q4_1.

An implementation independent of the compiler's (C++) of the three formats of
runtime/include/moert/quant.h, which are llama.cpp's byte for byte. A weight
[rows, cols] (cols a multiple of 32) is stored as `rows` rows of cols / 32
blocks, no padding; each block covers 32 consecutive elements of one row:

    q8_0  34 bytes: f16 d, int8 qs[32]          x[i] = d * qs[i]
    q4_0  18 bytes: f16 d, uint8 qs[16]         x[i] = d * (nibble(i) - 8)
    q4_1  20 bytes: f16 d, f16 m, uint8 qs[16]  x[i] = d * nibble(i) + m

nibble(i) is the low nibble of qs[i] for i < 16, the high nibble of
qs[i - 16] otherwise; all fields little-endian.

The quantisers round exactly as llama.cpp's reference quantisers
(quantize_row_*_ref in ggml-quants.c), every operation in float32 and
rounded on its own (no fused multiply-add), f16 by round-to-nearest-even:

    q8_0  amax = max |x|; d = amax / 127; id = d ? 1/d : 0;
          q = roundf(x * id)                    (halves away from zero)
    q4_0  max = the x of largest |x| (the first on ties; +0 if all are 0);
          d = max / -8; id = d ? 1/d : 0;
          q = min(15, trunc(x * id + 8.5))
    q4_1  mn = min x, mx = max x; d = (mx - mn) / 15; id = d ? 1/d : 0;
          q = min(15, trunc((x - mn) * id + 0.5)); m = mn

The scale is stored as f16(d) but q is computed from the f32 d, as in C.
Dequantising multiplies (and for q4_1 adds) in float32, one rounding each.

    quantize(w, "q4_0") -> uint8 [rows, cols / 32 * 18]
    dequantize(blocks, "q4_0", cols) -> float32 [rows, cols]
"""

import re

import numpy as np

BLOCK = 32

# Bytes of one block of each format.
BLOCK_BYTES = {"q8_0": 34, "q4_0": 18, "q4_1": 20}

FORMATS = tuple(BLOCK_BYTES)

# Which weights `--quantize-only` selects (see is_quantized).
SELECTIONS = ("all", "experts")

_EXPERT = re.compile(r"model\.layers\.\d+\.block_sparse_moe\.experts\.\d+\.w[123]\.weight")

# Elements quantised per numpy step: bounds the temporaries (a few times
# this many float64 values) whatever the tensor's size.
_CHUNK = 1 << 22


def _check_format(fmt):
    if fmt not in BLOCK_BYTES:
        raise ValueError(f"unknown quantisation format '{fmt}' (have: {', '.join(FORMATS)})")


def quantized_shape(shape, fmt, name="weight"):
    """[rows, cols] -> [rows, cols / 32 * block bytes] of the stored blocks."""
    _check_format(fmt)
    if len(shape) != 2:
        raise ValueError(f"{name}: only rank-2 weights are quantised, got shape {list(shape)}")
    rows, cols = shape
    if cols % BLOCK:
        raise ValueError(f"{name}: {cols} columns are not a multiple of the "
                         f"{BLOCK}-element blocks of {fmt}")
    return (rows, cols // BLOCK * BLOCK_BYTES[fmt])


def is_quantized(name, shape, which="all"):
    """Whether `--quantize-only WHICH` quantises the weight `name` of `shape`:
    "experts": the expert weights (block_sparse_moe.experts.E.w1/w2/w3);
    "all": every rank-2 weight but the router gates (block_sparse_moe.gate),
    i.e. embed_tokens, q/k/v/o_proj, the experts and lm_head. Rank-1 norms
    never are."""
    if which not in SELECTIONS:
        raise ValueError(f"unknown weight selection '{which}' (have: {', '.join(SELECTIONS)})")
    if len(shape) != 2:
        return False
    if which == "experts":
        return _EXPERT.fullmatch(name) is not None
    return not name.endswith("block_sparse_moe.gate.weight")


def _f16_bytes(v):
    """float32 [n, 1] -> uint8 [n, 2]: the little-endian f16 bits, rounded to
    nearest even (as GGML_FP32_TO_FP16)."""
    return np.ascontiguousarray(v.astype("<f2")).view(np.uint8).reshape(-1, 2)


def _reciprocal(d):
    """id = d ? 1/d : 0, in float32; also 0 where 1/d overflows (a block
    below ~1.5e-36, whose f16 scale is 0 anyway: llama.cpp's C converts NaN
    to an integer there, which is undefined; moert/quant.h does the same as
    this)."""
    out = np.zeros_like(d)
    with np.errstate(divide="ignore", over="ignore"):
        np.divide(np.float32(1), d, out=out, where=d != 0)
    out[~np.isfinite(out)] = 0
    return out


def _roundf(v):
    """C roundf of float32 values (halves away from zero), exactly: |v| + 0.5
    is exact in float64 for any float32 |v| < 2^29."""
    w = v.astype(np.float64)
    return np.sign(w) * np.floor(np.abs(w) + 0.5)


def _pack_nibbles(q):
    """uint8 [n, 32] of values 0..15 -> [n, 16]: qs[j] = q[j] | q[j + 16] << 4."""
    return (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)


def _quantize_blocks(x, fmt):
    """float32 [n, 32] -> uint8 [n, block bytes]."""
    n = x.shape[0]
    if fmt == "q8_0":
        amax = np.max(np.abs(x), axis=1, keepdims=True)
        d = amax / np.float32(127)
        q = _roundf(x * _reciprocal(d)).astype(np.int8)
        return np.concatenate([_f16_bytes(d), q.view(np.uint8)], axis=1)
    if fmt == "q4_0":
        # The signed value of largest |x|, the first one on ties (argmax
        # returns the first maximum, as C's strict `amax < |v|` scan keeps
        # it); C starts from max = +0, which an all-zero block keeps.
        first = np.argmax(np.abs(x), axis=1)[:, None]
        mx = np.take_along_axis(x, first, axis=1)
        mx = np.where(mx == 0, np.float32(0), mx)
        d = mx / np.float32(-8)
        v = x * _reciprocal(d) + np.float32(8.5)
        q = np.minimum(np.trunc(v), np.float32(15)).astype(np.uint8)
        return np.concatenate([_f16_bytes(d), _pack_nibbles(q)], axis=1)
    # q4_1: C's `v < min` / `v > max` scans keep the first of equal values
    # (which matters only for the sign of a zero), as argmin/argmax do.
    mn = np.take_along_axis(x, np.argmin(x, axis=1)[:, None], axis=1)
    mx = np.take_along_axis(x, np.argmax(x, axis=1)[:, None], axis=1)
    d = (mx - mn) / np.float32(15)
    v = (x - mn) * _reciprocal(d) + np.float32(0.5)
    q = np.minimum(np.trunc(v), np.float32(15)).astype(np.uint8)
    assert q.shape == (n, BLOCK)
    return np.concatenate([_f16_bytes(d), _f16_bytes(mn), _pack_nibbles(q)], axis=1)


def quantize(w, fmt, name="weight"):
    """float32 [rows, cols] -> uint8 [rows, cols / 32 * block bytes], the blocks
    of format `fmt` ("q8_0", "q4_0" or "q4_1"), llama.cpp's bytes. `w` is
    converted to float32 first; `name` only labels errors."""
    w = np.asarray(w)
    rows, nbytes = quantized_shape(w.shape, fmt, name)
    blocks = np.ascontiguousarray(w, dtype=np.float32).reshape(-1, BLOCK)
    out = np.empty((blocks.shape[0], BLOCK_BYTES[fmt]), np.uint8)
    step = max(1, _CHUNK // BLOCK)
    with np.errstate(over="ignore", invalid="ignore"):
        for b in range(0, blocks.shape[0], step):
            out[b:b + step] = _quantize_blocks(blocks[b:b + step], fmt)
    return out.reshape(rows, nbytes)


def _unpack_nibbles(qs):
    """uint8 [n, 16] -> [n, 32]: low nibbles, then high nibbles."""
    return np.concatenate([qs & 0xF, qs >> 4], axis=1)


def _half(b):
    """uint8 [n, 2] little-endian f16 bits -> float32 [n, 1]."""
    return np.ascontiguousarray(b).view("<f2").astype(np.float32)


def dequantize(blocks, fmt, cols, name="weight"):
    """uint8 [rows, cols / 32 * block bytes] of format `fmt` -> float32
    [rows, cols], each element as quant.h's dequant() computes it."""
    _check_format(fmt)
    blocks = np.asarray(blocks)
    if blocks.dtype != np.uint8 or blocks.ndim != 2:
        raise ValueError(f"{name}: expected a rank-2 uint8 array of {fmt} blocks, "
                         f"got {blocks.dtype} {list(blocks.shape)}")
    rows = blocks.shape[0]
    if quantized_shape((rows, cols), fmt, name) != blocks.shape:
        raise ValueError(f"{name}: {list(blocks.shape)} bytes are not [{rows}, {cols}] "
                         f"elements of {fmt} ({BLOCK_BYTES[fmt]} bytes per {BLOCK})")
    b = blocks.reshape(-1, BLOCK_BYTES[fmt])
    out = np.empty((b.shape[0], BLOCK), np.float32)
    step = max(1, _CHUNK // BLOCK)
    for s in range(0, b.shape[0], step):
        c = b[s:s + step]
        d = _half(c[:, 0:2])
        if fmt == "q8_0":
            out[s:s + step] = d * c[:, 2:].view(np.int8).astype(np.float32)
        elif fmt == "q4_0":
            q = _unpack_nibbles(c[:, 2:]).astype(np.float32) - np.float32(8)
            out[s:s + step] = d * q
        else:
            q = _unpack_nibbles(c[:, 4:]).astype(np.float32)
            out[s:s + step] = d * q + _half(c[:, 2:4])
    return out.reshape(rows, cols)


def int8_activations(x):
    """Rows of activations [T, K] (K a multiple of 32) as the CPU kernels'
    decode path (fewer than 4 tokens per call) feeds them to a quantised
    weight: per block of 32, d = amax / 127 and q = x / d rounded half to
    even (in float32), then d * q. Returns float64 [T, K]."""
    x32 = np.asarray(x, np.float32).reshape(x.shape[0], -1, BLOCK)
    d = np.max(np.abs(x32), axis=2, keepdims=True) / np.float32(127)
    q = np.round(x32 * _reciprocal(d))
    return (q * d).reshape(x.shape).astype(np.float64)


def round_trip(w, fmt, name="weight"):
    """dequantize(quantize(w)): the values a model with `fmt` weights computes with."""
    w = np.asarray(w)
    return dequantize(quantize(w, fmt, name), fmt, w.shape[1], name)
