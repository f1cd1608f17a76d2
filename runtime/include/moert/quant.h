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
  return halfBitsToFloat(b.d) * float(nibble(b.qs, i)) +
         halfBitsToFloat(b.m);
}

} // namespace moert

#endif // MOERT_QUANT_H
