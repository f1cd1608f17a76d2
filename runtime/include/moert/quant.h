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

/// Elements per block of every quantised format.
constexpr int64_t kQuantBlock = 32;

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
static_assert(sizeof(q8_0) == 34 && sizeof(q4_0) == 18 && sizeof(q4_1) == 20,
              "quantised blocks are packed as in llama.cpp");

/// Whether W is one of the block formats above.
template <typename W> struct IsQuant {
  static constexpr bool value = false;
};
template <> struct IsQuant<q8_0> {
  static constexpr bool value = true;
};
template <> struct IsQuant<q4_0> {
  static constexpr bool value = true;
};
template <> struct IsQuant<q4_1> {
  static constexpr bool value = true;
};

/// Bytes of one weight row of `cols` elements stored as W (cols a multiple
/// of 32 for the block formats).
template <typename W>
MOERT_HOST_DEVICE MOERT_INLINE constexpr int64_t rowBytes(int64_t cols) {
  return IsQuant<W>::value ? cols / kQuantBlock * int64_t(sizeof(W))
                           : cols * int64_t(sizeof(W));
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

} // namespace moert

#endif // MOERT_QUANT_H
