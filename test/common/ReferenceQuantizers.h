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

// The k-quants: any valid encoding serves the kernel tests, so these are
// simpler than llama.cpp's (no search), and round differently from
// quant.h's (halves away from zero, through double), so that the two
// cannot share a mistake.

/// q4_K (Levels 15) and q5_K (Levels 31, bit 4 of q into qh).
template <int Levels, typename B>
inline void quantizeScaleMin(const float *x, B &b) {
  double scale[8], mins[8], maxScale = 0, maxMin = 0;
  for (int j = 0; j < 8; ++j) {
    double lo = 0, hi = x[32 * j];
    for (int i = 0; i < 32; ++i) {
      lo = std::min(lo, double(x[32 * j + i]));
      hi = std::max(hi, double(x[32 * j + i]));
    }
    scale[j] = (hi - lo) / Levels;
    mins[j] = -lo;
    maxScale = std::max(maxScale, scale[j]);
    maxMin = std::max(maxMin, mins[j]);
  }
  b.d = toHalfBits(float(maxScale / 63));
  b.dmin = toHalfBits(float(maxMin / 63));
  int sc[8], m[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = maxScale > 0
                ? int(std::min(63.0, std::round(scale[j] / maxScale * 63)))
                : 0;
    m[j] =
        maxMin > 0 ? int(std::min(63.0, std::round(mins[j] / maxMin * 63))) : 0;
  }
  std::memset(b.scales, 0, 12);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      b.scales[j] |= uint8_t(sc[j]);
      b.scales[j + 4] |= uint8_t(m[j]);
    } else {
      b.scales[j + 4] = uint8_t((sc[j] & 15) | (m[j] & 15) << 4);
      b.scales[j - 4] |= uint8_t((sc[j] >> 4) << 6);
      b.scales[j] |= uint8_t((m[j] >> 4) << 6);
    }
  }
  double d = moert::halfBitsToFloat(b.d), dmin = moert::halfBitsToFloat(b.dmin);
  std::memset(b.qs, 0, 128);
  if constexpr (Levels == 31)
    std::memset(b.qh, 0, 32);
  for (int i = 0; i < 256; ++i) {
    int j = i / 32;
    double dl = d * sc[j], ml = dmin * m[j];
    int q = dl > 0 ? int(std::round((x[i] + ml) / dl)) : 0;
    q = std::max(0, std::min(Levels, q));
    b.qs[(i / 64) * 32 + i % 32] |=
        uint8_t(i % 64 < 32 ? q & 15 : (q & 15) << 4);
    if constexpr (Levels == 31)
      b.qh[i % 32] |= uint8_t((q >> 4) << j);
  }
}

inline void quantize(const float *x, moert::q4_K &b) {
  quantizeScaleMin<15>(x, b);
}
inline void quantize(const float *x, moert::q5_K &b) {
  quantizeScaleMin<31>(x, b);
}

inline void quantize(const float *x, moert::q6_K &b) {
  double scale[16], maxAbs = 0;
  for (int i = 0; i < 16; ++i) {
    double amax = 0;
    for (int l = 0; l < 16; ++l)
      amax = std::max(amax, std::fabs(double(x[16 * i + l])));
    scale[i] = amax / 31; // positive scales; the extremes map to +-31
    maxAbs = std::max(maxAbs, scale[i]);
  }
  b.d = toHalfBits(float(maxAbs / 127));
  double d = moert::halfBitsToFloat(b.d);
  uint8_t L[256];
  for (int i = 0; i < 16; ++i) {
    b.scales[i] = int8_t(
        maxAbs > 0 ? std::min(127.0, std::round(scale[i] / maxAbs * 127)) : 0);
    // Alternate the scales' signs (the kernels must take them signed).
    if (i % 3 == 1)
      b.scales[i] = int8_t(-b.scales[i]);
    double ds = d * b.scales[i];
    for (int l = 0; l < 16; ++l) {
      int q = ds != 0 ? int(std::round(x[16 * i + l] / ds)) : 0;
      L[16 * i + l] = uint8_t(std::max(-32, std::min(31, q)) + 32);
    }
  }
  std::memset(b.ql, 0, sizeof b.ql);
  std::memset(b.qh, 0, sizeof b.qh);
  for (int i = 0; i < 256; ++i) {
    int n = i / 128, k = (i / 32) % 4, l = i % 32;
    uint8_t &lo = b.ql[64 * n + l + 32 * (k & 1)];
    uint8_t &hi = b.qh[32 * n + l];
    lo |= uint8_t(k >= 2 ? (L[i] & 15) << 4 : L[i] & 15);
    hi |= uint8_t((L[i] >> 4) << (2 * k));
  }
}

} // namespace moe_test

#endif // MOE_TEST_COMMON_REFERENCEQUANTIZERS_H
