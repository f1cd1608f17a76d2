"""Block-quantised weight formats in numpy: q8_0, q4_0, q4_1, q4_K, q5_K and
q6_K.

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

The k-quants take super-blocks of 256 (BLOCK_ELEMS), llama.cpp's
block_q4_K (144 bytes: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins,
128 bytes of nibbles), block_q5_K (176 bytes: q4_K's d, dmin and scales,
then qh[32], the fifth bits, bit j of qh[l] for element 32 j + l, then the
128 bytes of nibbles) and block_q6_K (210 bytes: ql[128], qh[64], int8
scales[16], f16 d); quant.h documents the layouts. Their quantisers are not
llama.cpp's (which search for the best scales) but quant.h's simple
deterministic ones, bit for bit (float32, rint = round half to even):

    q4_K  per sub-block j of 32: lo = min(0, min x), scale_j = (max x - lo)
          / 15, min_j = -lo; d = f16(max scale / 63), dmin = f16(max min /
          63); sc_j = min(63, rint(scale_j * (63 / max scale))) (0 where
          the ratio is 0 or overflows), m_j likewise; with the stored d,
          dmin: dl = d * sc_j, ml = dmin * m_j, q = clamp(rint((x + ml) /
          dl), 0, 15) (0 where dl is 0)
    q5_K  q4_K's with 31 levels: scale_j = (max x - lo) / 31, and q =
          clamp(rint((x + ml) / dl), 0, 31)
    q6_K  per sub-block i of 16: scale_i = max / -32 (max: the x of largest
          |x|, the first on ties, +0 if all are 0); S = the scale_i of
          largest magnitude (the first on ties, +0 if all are 0);
          d = f16(S / -128); sc_i = clamp(rint(scale_i * (-128 / S)), -128,
          127); with ds = d * sc_i: q = clamp(rint(x / ds), -32, 31) + 32
          (32 where ds is 0)

Dequantising: q4_K (and q5_K) d1 = d * sc, m1 = dmin * m, x = d1 * q - m1; q6_K
x = (d * sc) * (q - 32); float32, one rounding each (llama.cpp's order).
"""

import re

import numpy as np

BLOCK = 32

# Bytes of one block of each format.
BLOCK_BYTES = {"q8_0": 34, "q4_0": 18, "q4_1": 20, "q4_K": 144, "q5_K": 176,
               "q6_K": 210}

# Elements of one block of each format (the k-quants' super-blocks: 256).
BLOCK_ELEMS = {"q8_0": 32, "q4_0": 32, "q4_1": 32, "q4_K": 256, "q5_K": 256,
               "q6_K": 256}

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
    """[rows, cols] -> [rows, cols / block * block bytes] of the stored blocks."""
    _check_format(fmt)
    if len(shape) != 2:
        raise ValueError(f"{name}: only rank-2 weights are quantised, got shape {list(shape)}")
    rows, cols = shape
    block = BLOCK_ELEMS[fmt]
    if cols % block:
        raise ValueError(f"{name}: {cols} columns are not a multiple of the "
                         f"{block}-element blocks of {fmt}")
    return (rows, cols // block * BLOCK_BYTES[fmt])


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


def _ratio(num, v):
    """num / v in float32, 0 where v is 0 or the quotient overflows."""
    out = np.zeros_like(v)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        np.divide(np.float32(num), v, out=out, where=v != 0)
    out[~np.isfinite(out)] = 0
    return out


def _quantize_q4_K(x, levels=15):
    """float32 [n, 256] -> uint8 [n, 144], quant.h's quantizeBlock(q4_K);
    with levels=31, [n, 176], quantizeBlock(q5_K)."""
    n = x.shape[0]
    xs = x.reshape(n, 8, 32)
    lo = np.min(xs, axis=2)
    lo = np.where(lo < 0, lo, np.float32(0)).astype(np.float32)
    hi = np.max(xs, axis=2)
    scale = (hi - lo) / np.float32(levels)
    mins = -lo
    max_scale = np.max(scale, axis=1, keepdims=True)
    max_scale = np.where(max_scale > 0, max_scale, np.float32(0)).astype(np.float32)
    max_min = np.max(mins, axis=1, keepdims=True)
    max_min = np.where(max_min > 0, max_min, np.float32(0)).astype(np.float32)
    ls = np.minimum(np.rint(_ratio(63, max_scale) * scale), np.float32(63)).astype(np.uint8)
    lm = np.minimum(np.rint(_ratio(63, max_min) * mins), np.float32(63)).astype(np.uint8)
    dh = _f16_bytes(max_scale / np.float32(63))
    mh = _f16_bytes(max_min / np.float32(63))
    sc = np.zeros((n, 12), np.uint8)
    sc[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    sc[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    sc[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    d, dmin = _half(dh), _half(mh)
    dl = (d * ls.astype(np.float32))[:, :, None]
    ml = (dmin * lm.astype(np.float32))[:, :, None]
    v = np.zeros_like(xs)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(xs + ml, np.broadcast_to(dl, xs.shape), out=v,
                  where=np.broadcast_to(dl != 0, xs.shape))
    q = np.clip(np.rint(v), 0, levels).astype(np.uint8)  # [n, 8, 32]
    if levels == 31:
        qh = np.zeros((n, 32), np.uint8)
        for j in range(8):
            qh |= (q[:, j, :] >> 4) << j
        q = q & 0xF
    q = q.reshape(n, 4, 2, 32)
    qs = (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(n, 128)
    if levels == 31:
        return np.concatenate([dh, mh, sc, qh, qs], axis=1)
    return np.concatenate([dh, mh, sc, qs], axis=1)


def _quantize_q6_K(x):
    """float32 [n, 256] -> uint8 [n, 210], quant.h's quantizeBlock(q6_K)."""
    n = x.shape[0]
    xs = x.reshape(n, 16, 16)
    first = np.argmax(np.abs(xs), axis=2)[:, :, None]
    mx = np.take_along_axis(xs, first, axis=2)[:, :, 0]
    mx = np.where(mx == 0, np.float32(0), mx).astype(np.float32)
    scale = mx / np.float32(-32)
    big = np.argmax(np.abs(scale), axis=1)[:, None]
    max_scale = np.take_along_axis(scale, big, axis=1)
    max_scale = np.where(max_scale == 0, np.float32(0), max_scale).astype(np.float32)
    sc = np.clip(np.rint(_ratio(-128, max_scale) * scale), -128, 127).astype(np.int8)
    dh = _f16_bytes(max_scale / np.float32(-128))
    ds = (_half(dh) * sc.astype(np.float32))[:, :, None]
    v = np.zeros_like(xs)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(xs, np.broadcast_to(ds, xs.shape), out=v,
                  where=np.broadcast_to(ds != 0, xs.shape))
    L = (np.clip(np.rint(v), -32, 31) + 32).astype(np.uint8).reshape(n, 2, 4, 32)
    lo = L & 0xF
    ql = np.concatenate([lo[:, :, 0] | (lo[:, :, 2] << 4), lo[:, :, 1] | (lo[:, :, 3] << 4)],
                        axis=2).reshape(n, 128)
    qh = ((L[:, :, 0] >> 4) | ((L[:, :, 1] >> 4) << 2) | ((L[:, :, 2] >> 4) << 4)
          | ((L[:, :, 3] >> 4) << 6)).reshape(n, 64)
    return np.concatenate([ql, qh, sc.view(np.uint8), dh], axis=1)


def _quantize_blocks(x, fmt):
    """float32 [n, block] -> uint8 [n, block bytes]."""
    if fmt == "q4_K":
        return _quantize_q4_K(x)
    if fmt == "q5_K":
        return _quantize_q4_K(x, levels=31)
    if fmt == "q6_K":
        return _quantize_q6_K(x)
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
    of format `fmt` (FORMATS), llama.cpp's bytes. `w` is
    converted to float32 first; `name` only labels errors."""
    w = np.asarray(w)
    rows, nbytes = quantized_shape(w.shape, fmt, name)
    block = BLOCK_ELEMS[fmt]
    blocks = np.ascontiguousarray(w, dtype=np.float32).reshape(-1, block)
    out = np.empty((blocks.shape[0], BLOCK_BYTES[fmt]), np.uint8)
    step = max(1, _CHUNK // block)
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
                         f"elements of {fmt} ({BLOCK_BYTES[fmt]} bytes per {BLOCK_ELEMS[fmt]})")
    block = BLOCK_ELEMS[fmt]
    b = blocks.reshape(-1, BLOCK_BYTES[fmt])
    out = np.empty((b.shape[0], block), np.float32)
    step = max(1, _CHUNK // block)
    for s in range(0, b.shape[0], step):
        c = b[s:s + step]
        d = _half(c[:, 0:2])
        if fmt == "q4_K":
            out[s:s + step] = _dequantize_q4_K(c)
        elif fmt == "q5_K":
            out[s:s + step] = _dequantize_q4_K(c)
        elif fmt == "q6_K":
            out[s:s + step] = _dequantize_q6_K(c)
        elif fmt == "q8_0":
            out[s:s + step] = d * c[:, 2:].view(np.int8).astype(np.float32)
        elif fmt == "q4_0":
            q = _unpack_nibbles(c[:, 2:]).astype(np.float32) - np.float32(8)
            out[s:s + step] = d * q
        else:
            q = _unpack_nibbles(c[:, 4:]).astype(np.float32)
            out[s:s + step] = d * q + _half(c[:, 2:4])
    return out.reshape(rows, cols)


def _dequantize_q4_K(c):
    """uint8 [n, 144] (q4_K) or [n, 176] (q5_K) -> float32 [n, 256]."""
    n = c.shape[0]
    d, dmin = _half(c[:, 0:2]), _half(c[:, 2:4])
    q = c[:, 4:16]
    sc = np.concatenate([q[:, 0:4] & 63, (q[:, 8:12] & 0xF) | ((q[:, 0:4] >> 6) << 4)], axis=1)
    m = np.concatenate([q[:, 4:8] & 63, (q[:, 8:12] >> 4) | ((q[:, 4:8] >> 6) << 4)], axis=1)
    d1 = (d * sc.astype(np.float32))[:, :, None]
    m1 = (dmin * m.astype(np.float32))[:, :, None]
    qs = c[:, -128:].reshape(n, 4, 1, 32)
    nib = np.concatenate([qs & 0xF, qs >> 4], axis=2).reshape(n, 8, 32)
    if c.shape[1] == 176:  # q5_K: bit j of qh[l] is bit 4 of element 32 j + l
        qh = c[:, 16:48].reshape(n, 1, 32)
        nib = nib | (((qh >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1) << 4)
    return (d1 * nib.astype(np.float32) - m1).reshape(n, 256)


def _dequantize_q6_K(c):
    """uint8 [n, 210] -> float32 [n, 256]."""
    n = c.shape[0]
    ql = c[:, 0:128].reshape(n, 2, 2, 32)    # [half][ql 0..31, 32..63][l]
    qh = c[:, 128:192].reshape(n, 2, 1, 32)
    sc = c[:, 192:208].view(np.int8).astype(np.float32)
    d = _half(c[:, 208:210])
    lo = np.concatenate([ql & 0xF, ql >> 4], axis=2)  # k = 0, 1, 2, 3
    hi = (qh >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]) & 3
    q = (lo | (hi << 4)).astype(np.float32) - np.float32(32)
    ds = (d * sc)[:, :, None]
    return (ds * q.reshape(n, 16, 16)).reshape(n, 256)


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
