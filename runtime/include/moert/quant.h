//===- quant.h - Block-quantised weight formats -----------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// The quantised weight formats, written once for the compiler (which writes
// them), the CPU kernels (kernels.h) and the CUDA kernels (cuda/kernels.cuh).
// Each is a block of 32 consecutive elements of one weight row, byte for
// byte the block of llama.cpp's format of the same name, so a GGUF tensor of
// that type is a valid tensor of ours:
//
//   q8_0  34 bytes: f16 d, int8 qs[32]          x[i] = d * qs[i]
//   q4_0  18 bytes: f16 d, uint8 qs[16]         x[i] = d * (nibble(i) - 8)
//   q4_1  20 bytes: f16 d, f16 m, uint8 qs[16]  x[i] = d * nibble(i) + m
//
// where nibble(i) is the low nibble of qs[i] for i < 16 and the high nibble
// of qs[i - 16] otherwise. A weight [rows, cols] is `rows` rows of cols / 32
// blocks each, rows one after another, no padding (blocks are not aligned).
// All fields are little-endian.
//
// Three of llama.cpp's k-quant formats take super-blocks of 256 elements
// (QK_K), laid out as ggml-common.h's block_q4_K, block_q5_K and block_q6_K:
//
//   q4_K  144 bytes: f16 d, f16 dmin, uint8 scales[12], uint8 qs[128]
//         eight sub-blocks of 32, each with a 6-bit scale sc and min m
//         (scaleMinK4); x = d * sc * q - dmin * m, q a nibble: qs bytes
//         [32 il, 32 il + 32) hold elements 64 il + 0..31 in their low
//         nibbles (sub-block 2 il) and 64 il + 32..63 in their high ones.
//   q5_K  176 bytes: f16 d, f16 dmin, uint8 scales[12], uint8 qh[32],
//         uint8 qs[128]
//         q4_K's sub-blocks, scales and nibbles, plus a fifth bit per
//         element: bit j of qh[l] is the high bit of element 32 j + l, so
//         x = d * sc * q - dmin * m with q in [0, 31].
//   q6_K  210 bytes: uint8 ql[128], uint8 qh[64], int8 scales[16], f16 d
//         sixteen sub-blocks of 16 (element order), x = d * scales[i / 16] *
//         (q - 32), q a 6-bit value from a nibble of ql and two bits of qh
//         (q6Value).
//
// IsQuant<W>::kBlock is a format's block length in elements (1 for the
// unquantised types); kQuantBlock stays the 32 of the first three.
//
// The quantisers (moe-compile's, and the numpy one in python/moe_ref/quant.py
// that the tests compare it with bit for bit) follow llama.cpp's reference
// rounding; docs/quantisation.md states it.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_QUANT_H
#define MOERT_QUANT_H

#include "moert/kernel_math.h"

#include <stdint.h>

namespace moert {

/// Elements per block of q8_0, q4_0 and q4_1 (the k-quants' super-blocks
/// are kQuantSuperBlock: use IsQuant<W>::kBlock in generic code).
constexpr int64_t kQuantBlock = 32;
/// Elements per super-block of the k-quant formats (llama.cpp's QK_K).
constexpr int64_t kQuantSuperBlock = 256;

struct q8_0 {
  uint16_t d; // f16 bits
  int8_t qs[32];
};
struct q4_0 {
  uint16_t d; // f16 bits
  uint8_t qs[16];
};
struct q4_1 {
  uint16_t d, m; // f16 bits
  uint8_t qs[16];
};
/// llama.cpp's block_q4_K: super-block scale and min scale, eight 6-bit
/// (scale, min) pairs packed in 12 bytes, 256 nibbles.
struct q4_K {
  uint16_t d, dmin; // f16 bits
  uint8_t scales[12];
  uint8_t qs[128];
};
/// llama.cpp's block_q5_K: q4_K's fields plus the 256 fifth bits (qh, one
/// bit plane per sub-block) before the nibbles.
struct q5_K {
  uint16_t d, dmin; // f16 bits
  uint8_t scales[12];
  uint8_t qh[32];
  uint8_t qs[128];
};
/// llama.cpp's block_q6_K: low nibbles, high bit pairs, sixteen int8
/// sub-block scales, the f16 super-block scale last.
struct q6_K {
  uint8_t ql[128];
  uint8_t qh[64];
  int8_t scales[16];
  uint16_t d; // f16 bits
};
static_assert(sizeof(q8_0) == 34 && sizeof(q4_0) == 18 && sizeof(q4_1) == 20,
              "quantised blocks are packed as in llama.cpp");
static_assert(sizeof(q4_K) == 144 && sizeof(q5_K) == 176 &&
                  sizeof(q6_K) == 210 && alignof(q4_K) == 2 &&
                  alignof(q5_K) == 2 && alignof(q6_K) == 2,
              "k-quant super-blocks are packed as in llama.cpp");

/// Whether W is one of the block formats above, and its block length in
/// elements (1 for the unquantised types).
template <typename W> struct IsQuant {
  static constexpr bool value = false;
  static constexpr int64_t kBlock = 1;
};
template <> struct IsQuant<q8_0> {
  static constexpr bool value = true;
  static constexpr int64_t kBlock = kQuantBlock;
};
template <> struct IsQuant<q4_0> {
  static constexpr bool value = true;
  static constexpr int64_t kBlock = kQuantBlock;
};
template <> struct IsQuant<q4_1> {
  static constexpr bool value = true;
  static constexpr int64_t kBlock = kQuantBlock;
};
template <> struct IsQuant<q4_K> {
  static constexpr bool value = true;
  static constexpr int64_t kBlock = kQuantSuperBlock;
};
template <> struct IsQuant<q5_K> {
  static constexpr bool value = true;
  static constexpr int64_t kBlock = kQuantSuperBlock;
};
template <> struct IsQuant<q6_K> {
  static constexpr bool value = true;
  static constexpr int64_t kBlock = kQuantSuperBlock;
};

/// Whether W is a k-quant (256-element super-block) format.
template <typename W> struct IsKQuant {
  static constexpr bool value = IsQuant<W>::kBlock == kQuantSuperBlock;
};

/// Bytes of one weight row of `cols` elements stored as W (cols a multiple
/// of IsQuant<W>::kBlock).
template <typename W>
MOERT_HOST_DEVICE MOERT_INLINE constexpr int64_t rowBytes(int64_t cols) {
  return cols / IsQuant<W>::kBlock * int64_t(sizeof(W));
}

/// Row `r` of a [rows, cols] weight stored as W.
template <typename W>
MOERT_HOST_DEVICE MOERT_INLINE const W *weightRow(const W *w, int64_t r,
                                                  int64_t cols) {
  return reinterpret_cast<const W *>(reinterpret_cast<const char *>(w) +
                                     r * rowBytes<W>(cols));
}

/// f16 bits to float, exactly (subnormals, infinities and NaN included),
/// without any intrinsic, for host and device code alike.
MOERT_HOST_DEVICE MOERT_INLINE float halfBitsToFloat(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
  if (exp == 0) {
    float f = float(man) * 5.9604644775390625e-8f; // 2^-24
    return sign ? -f : f;
  }
  if (exp == 31)
    u = sign | 0x7f800000u | (man << 13);
  else
    u = sign | ((exp + 112) << 23) | (man << 13);
  union {
    uint32_t i;
    float f;
  } v = {u};
  return v.f;
}

/// Element `i` (0 <= i < 32) of a block, as float: the scalar definition the
/// vector kernels are tested against.
MOERT_HOST_DEVICE MOERT_INLINE float dequant(const q8_0 &b, int i) {
  return halfBitsToFloat(b.d) * float(b.qs[i]);
}
MOERT_HOST_DEVICE MOERT_INLINE int nibble(const uint8_t *qs, int i) {
  return i < 16 ? qs[i] & 0xf : qs[i - 16] >> 4;
}
MOERT_HOST_DEVICE MOERT_INLINE float dequant(const q4_0 &b, int i) {
  return halfBitsToFloat(b.d) * float(nibble(b.qs, i) - 8);
}
MOERT_HOST_DEVICE MOERT_INLINE float dequant(const q4_1 &b, int i) {
  return halfBitsToFloat(b.d) * float(nibble(b.qs, i)) + halfBitsToFloat(b.m);
}

/// The 6-bit scale and min of q4_K sub-block j (0 <= j < 8), as llama.cpp's
/// get_scale_min_k4.
MOERT_HOST_DEVICE MOERT_INLINE void scaleMinK4(const uint8_t *q, int j, int &sc,
                                               int &m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}
/// The nibble of q4_K element i (0 <= i < 256).
MOERT_HOST_DEVICE MOERT_INLINE int nibbleK4(const uint8_t *qs, int i) {
  int b = qs[(i >> 6) * 32 + (i & 31)];
  return (i & 32) ? b >> 4 : b & 0xf;
}
/// Element i (0 <= i < 256) of a q4_K super-block: d sc q - dmin m, with
/// the two products rounded to f32 as llama.cpp's dequantize_row_q4_K
/// does (d1 = d * sc, m1 = dmin * m, then d1 * q - m1).
MOERT_HOST_DEVICE MOERT_INLINE float dequant(const q4_K &b, int i) {
  int sc, m;
  scaleMinK4(b.scales, i >> 5, sc, m);
  const float d1 = halfBitsToFloat(b.d) * float(sc);
  const float m1 = halfBitsToFloat(b.dmin) * float(m);
  return d1 * float(nibbleK4(b.qs, i)) - m1;
}
/// The 5-bit value (0..31) of q5_K element i (0 <= i < 256): q4_K's nibble
/// plus 16 times bit i / 32 of qh[i % 32].
MOERT_HOST_DEVICE MOERT_INLINE int q5Value(const q5_K &b, int i) {
  return nibbleK4(b.qs, i) | (((b.qh[i & 31] >> (i >> 5)) & 1) << 4);
}
/// Element i (0 <= i < 256) of a q5_K super-block: d sc q - dmin m, the
/// products rounded as llama.cpp's dequantize_row_q5_K (d1 = d * sc, m1 =
/// dmin * m, then d1 * q - m1).
MOERT_HOST_DEVICE MOERT_INLINE float dequant(const q5_K &b, int i) {
  int sc, m;
  scaleMinK4(b.scales, i >> 5, sc, m);
  const float d1 = halfBitsToFloat(b.d) * float(sc);
  const float m1 = halfBitsToFloat(b.dmin) * float(m);
  return d1 * float(q5Value(b, i)) - m1;
}
/// The 6-bit value (0..63, before the -32) of q6_K element i: within each
/// half of 128, element 32 k + l (k < 4, l < 32) takes the low (k even) or
/// high (k >= 2) nibble of ql[l + 32 (k & 1)] and bits 2k, 2k + 1
/// of qh[l].
MOERT_HOST_DEVICE MOERT_INLINE int q6Value(const q6_K &b, int i) {
  const int n = i >> 7, k = (i >> 5) & 3, l = i & 31;
  const int lo = b.ql[64 * n + l + 32 * (k & 1)];
  const int hi = b.qh[32 * n + l];
  return ((k >= 2 ? lo >> 4 : lo & 0xf) | (((hi >> (2 * k)) & 3) << 4));
}
/// Element i (0 <= i < 256) of a q6_K super-block: d * scales[i / 16] *
/// (q - 32), the first product rounded to f32 (llama.cpp's order).
MOERT_HOST_DEVICE MOERT_INLINE float dequant(const q6_K &b, int i) {
  const float ds = halfBitsToFloat(b.d) * float(b.scales[i >> 4]);
  return ds * float(q6Value(b, i) - 32);
}

/// float to f16 bits, rounded to nearest even (as numpy's float16 and
/// llama.cpp's conversion round), with integer operations only so that no
/// floating-point mode can change it.
MOERT_HOST_DEVICE MOERT_INLINE uint16_t floatToHalfBits(float f) {
  union {
    float f;
    uint32_t i;
  } v = {f};
  uint32_t sign = (v.i >> 16) & 0x8000, abs = v.i & 0x7fffffff;
  if (abs >= 0x7f800000) // infinity, NaN (kept quiet)
    return uint16_t(sign | 0x7c00 | (abs > 0x7f800000 ? 0x200 : 0));
  if (abs >= 0x477ff000) // 65520 and above round to infinity
    return uint16_t(sign | 0x7c00);
  uint32_t exp = abs >> 23;
  if (exp < 113) { // below 2^-14: a subnormal half (or zero)
    if (exp < 102) // below 2^-25: rounds to zero
      return uint16_t(sign);
    uint32_t mant = (abs & 0x7fffff) | 0x800000, shift = 126 - exp;
    uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1),
             half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1)))
      ++q; // may carry into the smallest normal, which is the right code
    return uint16_t(sign | q);
  }
  uint32_t h = ((exp - 112) << 10) | ((abs & 0x7fffff) >> 13);
  uint32_t rem = abs & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
    ++h; // may carry into the exponent, which is the right code
  return uint16_t(sign | h);
}

/// 1 / d, or 0 when d is 0 or so small that 1 / d overflows (llama.cpp's
/// code then multiplies by infinity and converts NaN to an integer, which
/// is undefined; the f16 scale of such a block is 0 either way).
inline float reciprocalOrZero(float d) {
  float r = d != 0 ? 1.0f / d : 0.0f;
  return isfinite(r) ? r : 0.0f;
}

//===----------------------------------------------------------------------===//
// Quantisers: llama.cpp's reference rounding (quantize_row_*_ref), in f32.
// Build them without floating-point contraction (-ffp-contract=off): a
// fused multiply-add would round differently from the reference.
//===----------------------------------------------------------------------===//

/// q = round-half-away(x * 127 / max|x|).
inline void quantizeBlock(const float *x, q8_0 &out) {
  float amax = 0;
  for (int j = 0; j < 32; ++j)
    amax = fmaxf(amax, fabsf(x[j]));
  const float d = amax / 127;
  const float id = reciprocalOrZero(d);
  out.d = floatToHalfBits(d);
  for (int j = 0; j < 32; ++j)
    out.qs[j] = int8_t(roundf(x[j] * id));
}

/// The signed element of largest magnitude maps to -8; q = x / d + 8.5,
/// truncated, at most 15.
inline void quantizeBlock(const float *x, q4_0 &out) {
  float amax = 0, max = 0;
  for (int j = 0; j < 32; ++j)
    if (amax < fabsf(x[j])) {
      amax = fabsf(x[j]);
      max = x[j];
    }
  const float d = max / -8;
  const float id = reciprocalOrZero(d);
  out.d = floatToHalfBits(d);
  for (int j = 0; j < 16; ++j) {
    const float x0 = x[j] * id, x1 = x[16 + j] * id;
    const int q0 = int8_t(x0 + 8.5f), q1 = int8_t(x1 + 8.5f);
    out.qs[j] = uint8_t((q0 < 15 ? q0 : 15) | (q1 < 15 ? q1 : 15) << 4);
  }
}

/// d = (max - min) / 15, m = min; q = (x - min) / d + 0.5, truncated, at
/// most 15.
inline void quantizeBlock(const float *x, q4_1 &out) {
  float min = x[0], max = x[0];
  for (int j = 1; j < 32; ++j) {
    if (x[j] < min)
      min = x[j];
    if (x[j] > max)
      max = x[j];
  }
  const float d = (max - min) / 15;
  const float id = reciprocalOrZero(d);
  out.d = floatToHalfBits(d);
  out.m = floatToHalfBits(min);
  for (int j = 0; j < 16; ++j) {
    const float x0 = (x[j] - min) * id, x1 = (x[16 + j] - min) * id;
    const int q0 = int8_t(x0 + 0.5f), q1 = int8_t(x1 + 0.5f);
    out.qs[j] = uint8_t((q0 < 15 ? q0 : 15) | (q1 < 15 ? q1 : 15) << 4);
  }
}

//===----------------------------------------------------------------------===//
// k-quant quantisers. Not llama.cpp's (whose make_qkx2_quants and
// make_qx_quants search for the scales that minimise a weighted error):
// a simple deterministic encoding, in f32 without fused multiply-adds,
// that python/moe_ref/quant.py reproduces bit for bit. rint is round to
// nearest even (llama.cpp's nearest_int). Any valid encoding decodes with
// the kernels; a GGUF file's blocks carry llama.cpp's.
//===----------------------------------------------------------------------===//

/// 63 / v (or -128 / v for q6_K: `num`), or 0 when v is 0 or the quotient
/// overflows.
inline float ratioOrZero(float num, float v) {
  float r = v != 0 ? num / v : 0.0f;
  return isfinite(r) ? r : 0.0f;
}

/// q4_K (Levels 15) and q5_K (Levels 31): per sub-block j of 32, lo =
/// min(0, min x), scale_j = (max x - lo) / Levels, min_j = -lo. d =
/// f16(max scale_j / 63), dmin = f16(max min_j / 63); sc_j = min(63,
/// rint(scale_j * (63 / max scale))), m_j likewise against the mins. Then
/// with the stored (f16) d and dmin, dl = d * sc_j, ml = dmin * m_j: q =
/// clamp(rint((x + ml) / dl), 0, Levels), 0 where dl is 0. q's low nibble
/// goes to qs; for q5_K its bit 4 goes to bit j of qh[i]. Scales packed as
/// llama.cpp's quantize_row_q4_K_ref / q5_K_ref.
template <int Levels, typename B>
inline void quantizeScaleMinBlock(const float *x, B &out) {
  float scale[8], mins[8], maxScale = 0, maxMin = 0;
  for (int j = 0; j < 8; ++j) {
    float lo = x[32 * j], hi = x[32 * j];
    for (int i = 1; i < 32; ++i) {
      lo = x[32 * j + i] < lo ? x[32 * j + i] : lo;
      hi = x[32 * j + i] > hi ? x[32 * j + i] : hi;
    }
    lo = lo < 0 ? lo : 0.0f;
    scale[j] = (hi - lo) / Levels;
    mins[j] = -lo;
    maxScale = scale[j] > maxScale ? scale[j] : maxScale;
    maxMin = mins[j] > maxMin ? mins[j] : maxMin;
  }
  const float is = ratioOrZero(63, maxScale), im = ratioOrZero(63, maxMin);
  uint8_t ls[8], lm[8];
  for (int j = 0; j < 8; ++j) {
    float a = rintf(is * scale[j]), b = rintf(im * mins[j]);
    ls[j] = uint8_t(a < 63 ? a : 63);
    lm[j] = uint8_t(b < 63 ? b : 63);
  }
  out.d = floatToHalfBits(maxScale / 63);
  out.dmin = floatToHalfBits(maxMin / 63);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      out.scales[j] = ls[j];
      out.scales[j + 4] = lm[j];
    } else {
      out.scales[j + 4] = uint8_t((ls[j] & 0xf) | ((lm[j] & 0xf) << 4));
      out.scales[j - 4] |= uint8_t((ls[j] >> 4) << 6);
      out.scales[j] |= uint8_t((lm[j] >> 4) << 6);
    }
  }
  const float d = halfBitsToFloat(out.d), dmin = halfBitsToFloat(out.dmin);
  for (int i = 0; i < 128; ++i)
    out.qs[i] = 0;
  uint8_t *qh = nullptr;
  if constexpr (Levels == 31) {
    qh = out.qh;
    for (int i = 0; i < 32; ++i)
      qh[i] = 0;
  }
  for (int j = 0; j < 8; ++j) {
    const float dl = d * float(ls[j]), ml = dmin * float(lm[j]);
    for (int i = 0; i < 32; ++i) {
      float v = dl != 0 ? rintf((x[32 * j + i] + ml) / dl) : 0.0f;
      int q = v < 0 ? 0 : v > Levels ? Levels : int(v);
      out.qs[(j >> 1) * 32 + i] |= uint8_t((j & 1) ? (q & 15) << 4 : q & 15);
      if (qh)
        qh[i] |= uint8_t((q >> 4) << j);
    }
  }
}

inline void quantizeBlock(const float *x, q4_K &out) {
  quantizeScaleMinBlock<15>(x, out);
}
inline void quantizeBlock(const float *x, q5_K &out) {
  quantizeScaleMinBlock<31>(x, out);
}

/// q6_K: per sub-block i of 16, scale_i = max / -32 where max is the
/// element of largest magnitude (the first of equals); with the scale of
/// largest magnitude S (the first of equals), d = f16(S / -128) and
/// sc_i = clamp(rint(scale_i * (-128 / S)), -128, 127). Then with ds =
/// d * sc_i (the stored d): q = clamp(rint(x / ds), -32, 31) + 32, 32 where
/// ds is 0.
inline void quantizeBlock(const float *x, q6_K &out) {
  float scale[16], maxScale = 0, maxAbs = 0;
  for (int i = 0; i < 16; ++i) {
    float amax = 0, max = 0;
    for (int l = 0; l < 16; ++l)
      if (amax < fabsf(x[16 * i + l])) {
        amax = fabsf(x[16 * i + l]);
        max = x[16 * i + l];
      }
    scale[i] = max / -32;
    if (maxAbs < fabsf(scale[i])) {
      maxAbs = fabsf(scale[i]);
      maxScale = scale[i];
    }
  }
  const float is = ratioOrZero(-128, maxScale);
  for (int i = 0; i < 16; ++i) {
    float v = rintf(is * scale[i]);
    out.scales[i] = int8_t(v < -128 ? -128 : v > 127 ? 127 : v);
  }
  out.d = floatToHalfBits(maxScale / -128);
  const float d = halfBitsToFloat(out.d);
  uint8_t L[256];
  for (int i = 0; i < 16; ++i) {
    const float ds = d * float(out.scales[i]);
    for (int l = 0; l < 16; ++l) {
      float v = ds != 0 ? rintf(x[16 * i + l] / ds) : 0.0f;
      v = v < -32 ? -32 : v > 31 ? 31 : v;
      L[16 * i + l] = uint8_t(int(v) + 32);
    }
  }
  // Packing as llama.cpp's quantize_row_q6_K_ref.
  for (int n = 0; n < 2; ++n)
    for (int l = 0; l < 32; ++l) {
      const uint8_t *q = L + 128 * n;
      out.ql[64 * n + l] = uint8_t((q[l] & 0xf) | ((q[l + 64] & 0xf) << 4));
      out.ql[64 * n + l + 32] =
          uint8_t((q[l + 32] & 0xf) | ((q[l + 96] & 0xf) << 4));
      out.qh[32 * n + l] =
          uint8_t((q[l] >> 4) | ((q[l + 32] >> 4) << 2) |
                  ((q[l + 64] >> 4) << 4) | ((q[l + 96] >> 4) << 6));
    }
}

} // namespace moert

#endif // MOERT_QUANT_H
