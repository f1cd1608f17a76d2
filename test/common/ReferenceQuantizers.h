//===- ReferenceQuantizers.h - llama.cpp's quantisers, for tests -*- C++
//-*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// The kernel tests quantise their random weights with these: llama.cpp's
// reference quantisers (quantize_row_*_ref), one block at a time, written
// apart from runtime/include/moert/quant.h's so that a mistake there cannot
// hide one in the kernels. The f16 scale goes through the compiler's own
// _Float16 conversion (round to nearest even, as F16C).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TEST_COMMON_REFERENCEQUANTIZERS_H
#define MOE_TEST_COMMON_REFERENCEQUANTIZERS_H

#include "moert/quant.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace moe_test {

inline uint16_t toHalfBits(float x) {
  _Float16 h = static_cast<_Float16>(x);
  uint16_t bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}

inline void quantize(const float *x, moert::q8_0 &b) {
  float amax = 0;
  for (int i = 0; i < 32; ++i)
    amax = std::max(amax, std::fabs(x[i]));
  float d = amax / 127, id = d ? 1.0f / d : 0.0f;
  b.d = toHalfBits(d);
  for (int i = 0; i < 32; ++i)
    b.qs[i] = int8_t(roundf(x[i] * id));
}

inline void quantize(const float *x, moert::q4_0 &b) {
  float amax = 0, max = 0;
  for (int i = 0; i < 32; ++i)
    if (amax < std::fabs(x[i])) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  float d = max / -8, id = d ? 1.0f / d : 0.0f;
  b.d = toHalfBits(d);
  for (int j = 0; j < 16; ++j) {
    int lo = std::min(15, int(int8_t(x[j] * id + 8.5f)));
    int hi = std::min(15, int(int8_t(x[j + 16] * id + 8.5f)));
    b.qs[j] = uint8_t(lo | hi << 4);
  }
}

inline void quantize(const float *x, moert::q4_1 &b) {
  float min = x[0], max = x[0];
  for (int i = 1; i < 32; ++i) {
    min = std::min(min, x[i]);
    max = std::max(max, x[i]);
  }
  float d = (max - min) / 15, id = d ? 1.0f / d : 0.0f;
  b.d = toHalfBits(d);
  b.m = toHalfBits(min);
  for (int j = 0; j < 16; ++j) {
    int lo = std::min(15, int(int8_t((x[j] - min) * id + 0.5f)));
    int hi = std::min(15, int(int8_t((x[j + 16] - min) * id + 0.5f)));
    b.qs[j] = uint8_t(lo | hi << 4);
  }
}

} // namespace moe_test

#endif // MOE_TEST_COMMON_REFERENCEQUANTIZERS_H
