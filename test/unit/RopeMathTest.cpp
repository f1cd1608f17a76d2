//===- RopeMathTest.cpp - RoPE scaling formulas of kernel_math.h ----------===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// The RoPE types' frequencies (runtime/include/moert/kernel_math.h), which
// the CPU and CUDA kernels share, against values worked out by hand from
// transformers' definitions (modeling_rope_utils.py); and the CPU rope
// kernel's use of them.
//
//===----------------------------------------------------------------------===//

#include "moert/kernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

using namespace moert;

namespace {

constexpr int64_t D = 16;
constexpr double Theta = 10000.0;

double base(int64_t i) { return std::pow(Theta, -2.0 * double(i) / D); }

TEST(RopeMath, DefaultAndLinear) {
  RopeScaling none;
  RopeScaling linear{RopeLinear, 4.0};
  for (int64_t i = 0; i < D / 2; ++i) {
    EXPECT_EQ(ropeScaledInvFreq(Theta, i, D, none, 1 << 20),
              ropeInvFreq(Theta, i, D));
    EXPECT_DOUBLE_EQ(ropeScaledInvFreq(Theta, i, D, linear, 5), base(i) / 4.0);
  }
}

TEST(RopeMath, DynamicGrowsTheBaseBeyondTheContext) {
  RopeScaling s{RopeDynamic, 2.0, 0, 0, /*context=*/512};
  for (int64_t seqLen : {1, 300, 512})
    for (int64_t i = 0; i < D / 2; ++i)
      EXPECT_EQ(ropeScaledInvFreq(Theta, i, D, s, seqLen), base(i));
  // base' = theta (f s / m - (f - 1))^(D / (D - 2)): pair 0 stays 1, the
  // last pair divides by f s / m - f + 1 = 3 for s = 1024.
  EXPECT_EQ(ropeScaledInvFreq(Theta, 0, D, s, 1024), 1.0);
  EXPECT_NEAR(ropeScaledInvFreq(Theta, D / 2 - 1, D, s, 1024) / base(D / 2 - 1),
              1.0 / 3.0, 1e-12);
  int32_t pos[] = {40, 41, 42};
  EXPECT_EQ(ropeSeqLen(pos, 3), 43);
}

TEST(RopeMath, YarnRangeRampAndAttention) {
  // find_correction_dim(beta) = D ln(4096 / (2 pi beta)) / (2 ln theta):
  // 2.6180602 for beta 32, 5.6283602 for beta 1 (python3 -c "import math;
  // print(16 * math.log(4096 / (2 * math.pi * 32)) / (2 * math.log(1e4)))").
  double low, high;
  ropeYarnRange(D, Theta, 32, 1, 4096, true, low, high);
  EXPECT_EQ(low, 2.0);
  EXPECT_EQ(high, 6.0);
  ropeYarnRange(D, Theta, 32, 1, 4096, false, low, high);
  EXPECT_NEAR(low, 2.61806020, 1e-8);
  EXPECT_NEAR(high, 5.62836016, 1e-8);
  // Equal ends get + 0.001 (linear_ramp_factor); a low end below 0 is 0.
  ropeYarnRange(D, Theta, 32, 32, 4096, false, low, high);
  EXPECT_DOUBLE_EQ(high, low + 0.001);
  ropeYarnRange(D, Theta, 32, 1, 64, true, low, high);
  EXPECT_EQ(low, 0.0);
  EXPECT_EQ(high, 3.0);

  RopeScaling s{RopeYarn, 4.0, 2.0, 6.0, 0, 1.5};
  for (int64_t i = 0; i < D / 2; ++i) {
    double ramp = std::min(std::max((double(i) - 2.0) / 4.0, 0.0), 1.0);
    EXPECT_DOUBLE_EQ(ropeScaledInvFreq(Theta, i, D, s, 1),
                     base(i) / 4.0 * ramp + base(i) * (1.0 - ramp));
  }
  EXPECT_DOUBLE_EQ(ropeYarnAttention(4.0, 0, 0), 0.1 * std::log(4.0) + 1.0);
  EXPECT_DOUBLE_EQ(ropeYarnAttention(4.0, 1.0, 0), 0.1 * std::log(4.0) + 1.0);
  EXPECT_DOUBLE_EQ(ropeYarnAttention(4.0, 1.0, 0.5),
                   (0.1 * std::log(4.0) + 1.0) / (0.05 * std::log(4.0) + 1.0));
  EXPECT_EQ(ropeYarnAttention(0.5, 1.0, 0.5), 1.0);
}

TEST(RopeMath, Llama3Bands) {
  // Wavelengths 2 pi theta^(2i / D): 6.28, 19.9, 62.8, 198.7, ...; with
  // original 64, low 1, high 4: below 16 keep, above 64 / 8, between blend.
  RopeScaling s{RopeLlama3, 8.0, 1.0, 4.0, 64.0};
  EXPECT_EQ(ropeScaledInvFreq(Theta, 0, D, s, 1), base(0));
  for (int64_t i : {1, 2}) {
    double smooth = (64.0 / (2 * M_PI / base(i)) - 1.0) / 3.0;
    EXPECT_GT(smooth, 0.0);
    EXPECT_LT(smooth, 1.0);
    EXPECT_DOUBLE_EQ(ropeScaledInvFreq(Theta, i, D, s, 1),
                     (1 - smooth) * base(i) / 8.0 + smooth * base(i));
  }
  for (int64_t i = 3; i < D / 2; ++i)
    EXPECT_DOUBLE_EQ(ropeScaledInvFreq(Theta, i, D, s, 1), base(i) / 8.0);
}

TEST(RopeMath, CpuKernelScalesCosAndSinAndSeesTheCallsLength) {
  // Two tokens, one head: the yarn kernel with attention 2 is twice the one
  // with attention 1; the dynamic kernel rotates by the frequencies of its
  // call's length (last position + 1 = 41 > 8).
  std::vector<float> x(2 * D), a(2 * D), b(2 * D), c(2 * D), ref(2 * D);
  for (int64_t i = 0; i < 2 * D; ++i)
    x[i] = float(i % 7) - 3.0f;
  int32_t pos[] = {39, 40};
  rope<D, D, false, RopeYarn>(x.data(), pos, Theta, 2, a.data(), 4.0, 2.0, 6.0,
                              0, 2.0);
  rope<D, D, false, RopeYarn>(x.data(), pos, Theta, 2, b.data(), 4.0, 2.0, 6.0,
                              0, 1.0);
  for (int64_t i = 0; i < 2 * D; ++i)
    EXPECT_NEAR(a[i], 2.0f * b[i], 1e-5f);
  rope<D, D, false, RopeDynamic>(x.data(), pos, Theta, 2, c.data(), 2.0, 0, 0,
                                 8.0, 1.0);
  RopeScaling s{RopeDynamic, 2.0, 0, 0, 8.0};
  for (int64_t t = 0; t < 2; ++t)
    for (int64_t i = 0; i < D / 2; ++i) {
      double angle = pos[t] * ropeScaledInvFreq(Theta, i, D, s, 41);
      float cs = float(std::cos(angle)), sn = float(std::sin(angle));
      float x1 = x[t * D + i], x2 = x[t * D + i + D / 2];
      EXPECT_EQ(c[t * D + i], x1 * cs - x2 * sn);
      EXPECT_EQ(c[t * D + i + D / 2], x2 * cs + x1 * sn);
    }
}

} // namespace
