//===- QuantKernelsTest.cpp - CPU kernels on block-quantised weights ------===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// The kernels of runtime/include/moert/kernels.h with q8_0, q4_0, q4_1,
// q4_K, q5_K and q6_K weights against a double-precision reference built from
// quant.h's scalar `dequant`. Weights are quantised here by a scalar copy of
// llama.cpp's reference quantisers. Tolerances are error bounds, derived per
// output:
//  - f32 dequantisation (prefill, and decode's f32 path): the products and
//    sums are f32, so the error is a few ulps of Σ|x_i| (|w_i| + |o_b|),
//    where o_b is the block's nibble offset (the kernels sum Σ x·nibble and
//    the offset term separately); 1e-5 of it covers K up to thousands.
//  - int8 activations (decode's int8 path, and prefill's where
//    qk::kPrefillInt8): rounding x to the block's grid
//    of step amax_b / 127 moves each element by at most half a step, so the
//    result moves by at most Σ_b amax_b / 254 · Σ_{i in b} |w_i|, plus the
//    f32 slack above.
//  - The k-quants take the same bounds per element and activation block of
//    32 (q4_K's and q5_K's offset is its sub-block's dmin * m; q6_K's
//    signed values have none). Their rows are whole super-blocks of 256, so the
//    shapes below are rounded up to multiples of 256 for them (sz).
//
//===----------------------------------------------------------------------===//

#include "moert/kernels.h"
#include "moert/pool.h"
#include "moert/quant.h"
#include "test/common/AttentionCheck.h"
#include "test/common/ReferenceQuantizers.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

using namespace moert;
using moe_test::quantize;

namespace {

/// The offset of element i of a block as the kernels split it off (see
/// top).
double offset(const q8_0 &, int) { return 0; }
double offset(const q4_0 &b, int) {
  return std::fabs(8 * halfBitsToFloat(b.d));
}
double offset(const q4_1 &b, int) { return std::fabs(halfBitsToFloat(b.m)); }
double offset(const q4_K &b, int i) {
  int sc, m;
  scaleMinK4(b.scales, i / 32, sc, m);
  return std::fabs(halfBitsToFloat(b.dmin) * m);
}
double offset(const q5_K &b, int i) {
  int sc, m;
  scaleMinK4(b.scales, i / 32, sc, m);
  return std::fabs(halfBitsToFloat(b.dmin) * m);
}
double offset(const q6_K &, int) { return 0; }

/// A shape's row length for W: k, or k rounded up to whole super-blocks.
template <typename W> constexpr int64_t sz(int64_t k) {
  constexpr int64_t B = IsQuant<W>::kBlock;
  return (k + B - 1) / B * B;
}

/// Element k of a quantised row, as quant.h's dequant has it.
template <typename W> double elem(const W *row, int64_t k) {
  constexpr int64_t B = IsQuant<W>::kBlock;
  return dequant(row[k / B], int(k % B));
}
template <typename W> double offsetAt(const W *row, int64_t k) {
  constexpr int64_t B = IsQuant<W>::kBlock;
  return offset(row[k / B], int(k % B));
}

std::vector<float> randomVector(std::mt19937 &rng, size_t n, float scale = 1) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float &f : v)
    f = dist(rng);
  return v;
}

/// A [rows, cols] weight, random and quantised.
template <typename W>
std::vector<W> randomWeight(std::mt19937 &rng, int64_t rows, int64_t cols) {
  std::vector<float> f = randomVector(rng, size_t(rows * cols), 0.05f);
  constexpr int64_t B = IsQuant<W>::kBlock;
  std::vector<W> w(size_t(rows * cols / B));
  for (size_t b = 0; b < w.size(); ++b)
    quantize(f.data() + b * B, w[b]);
  return w;
}

/// One output x · row: the exact value (double, from the scalar dequant) and
/// the bound on a kernel's error. `ex` (or null) bounds how far the x the
/// kernel was given may be from `x` (an intermediate of the reference).
struct Expected {
  double value, tol;
};

template <typename W>
Expected expectRow(const W *row, int64_t K, const double *x, bool int8,
                   const double *ex = nullptr) {
  double v = 0, tol = 0, slack = 0;
  for (int64_t b = 0; b < K / 32; ++b) {
    double amax = 0, sumW = 0;
    for (int i = 0; i < 32; ++i) {
      int64_t k = b * 32 + i;
      double w = elem(row, k), e = ex ? ex[k] : 0;
      v += x[k] * w;
      tol += std::fabs(w) * e;
      amax = std::max(amax, std::fabs(x[k]) + e);
      sumW += std::fabs(w);
      slack += (std::fabs(x[k]) + e) * (std::fabs(w) + offsetAt(row, k));
    }
    if (int8)
      tol += amax / 254 * sumW * (1 + 1e-6);
  }
  return {v, tol + 1e-5 * slack + 1e-30};
}

/// The int8 path's own arithmetic, exactly: x rounded to int8 per block as
/// the kernel does (d = amax / 127 in f32, q = x * (1 / d) rounded to
/// nearest even), then the integer dot products scaled in double. The
/// kernel must agree to f32 rounding, which the loose bound of expectRow
/// cannot check (it would pass a scale off by 0.2%).
template <typename W>
Expected expectInt8Row(const W *row, int64_t K, const float *x) {
  double v = 0, slack = 0;
  for (int64_t b = 0; b < K / 32; ++b) {
    float amax = 0;
    for (int i = 0; i < 32; ++i)
      amax = std::max(amax, std::fabs(x[b * 32 + i]));
    float d = amax / 127, id = d != 0 ? 1 / d : 0;
    for (int i = 0; i < 32; ++i) {
      double xq = double(d) * std::nearbyint(x[b * 32 + i] * id);
      double w = elem(row, b * 32 + i);
      v += xq * w;
      slack += std::fabs(xq) * (std::fabs(w) + offsetAt(row, b * 32 + i));
    }
  }
  return {v, 1e-5 * slack + 1e-30};
}

std::vector<double> toDouble(const float *x, int64_t n) {
  return std::vector<double>(x, x + n);
}

struct PoolDeleter {
  void operator()(moert_pool *p) const { moert_pool_free(p); }
};
using Pool = std::unique_ptr<moert_pool, PoolDeleter>;

template <typename W> class QuantKernels : public ::testing::Test {};
using Formats = ::testing::Types<q8_0, q4_0, q4_1, q4_K, q5_K, q6_K>;
TYPED_TEST_SUITE(QuantKernels, Formats);

/// linear<W, N, K> (decode path `Decode`: -1 = what linear picks, 0 = f32,
/// 1 = int8) for T tokens with a padded output (ldo = N + 3) and a residual,
/// against the reference; the padding must stay untouched.
template <typename W, int64_t N, int64_t K>
void checkLinear(moert_pool *pool, int64_t T, int decodePath, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<W> w = randomWeight<W>(rng, N, K);
  std::vector<float> x = randomVector(rng, size_t(T * K));
  constexpr int64_t ldo = N + 3;
  std::vector<float> res = randomVector(rng, size_t(T * ldo));
  std::vector<float> out(size_t(T * ldo), 1234.5f);
  if (decodePath < 0)
    linear<W, N, K>(pool, x.data(), w.data(), T, out.data(), ldo, res.data());
  else if (decodePath == 0)
    qk::linearDecode<W, N, K, false>(pool, x.data(), w.data(), T, out.data(),
                                     ldo, res.data());
  else
    qk::linearDecode<W, N, K, true>(pool, x.data(), w.data(), T, out.data(),
                                    ldo, res.data());
  // Prefill (T >= 4) takes int8 activations where qk::kPrefillInt8 says.
  bool int8 = T < 4 ? (decodePath < 0 ? qk::kDecodeInt8<W> : decodePath == 1)
                    : qk::kPrefillInt8<W>;
  std::vector<double> xd = toDouble(x.data(), T * K);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t n = 0; n < N; ++n) {
      Expected e = expectRow(weightRow(w.data(), n, K), K, &xd[t * K], int8);
      double want = e.value + res[t * ldo + n];
      ASSERT_NEAR(out[t * ldo + n], want, e.tol + 1e-6 * std::fabs(want))
          << "T=" << T << " t=" << t << " n=" << n << " path=" << decodePath;
      if (int8) {
        Expected q = expectInt8Row(weightRow(w.data(), n, K), K, &x[t * K]);
        double wantQ = q.value + res[t * ldo + n];
        ASSERT_NEAR(out[t * ldo + n], wantQ, q.tol + 1e-6 * std::fabs(wantQ))
            << "int8 emulation: T=" << T << " t=" << t << " n=" << n;
      }
    }
    for (int64_t n = N; n < ldo; ++n)
      ASSERT_EQ(out[t * ldo + n], 1234.5f);
  }
}

TYPED_TEST(QuantKernels, LinearDecode) {
  for (int threads : {1, 2}) {
    Pool pool(moert_pool_create(threads));
    for (int path : {-1, 0, 1})
      for (int64_t T = 1; T < 4; ++T) {
        // N = 70: 2 x 24 + 22 rows (an odd row at the end); K = 544: 17
        // blocks; enough work for parallelFor to split.
        checkLinear<TypeParam, 70, sz<TypeParam>(544)>(pool.get(), T, path,
                                                       7 * T + path);
        checkLinear<TypeParam, 7, sz<TypeParam>(64)>(pool.get(), T, path,
                                                     11 * T + path);
      }
  }
}

TYPED_TEST(QuantKernels, LinearPrefill) {
  for (int threads : {1, 2}) {
    Pool pool(moert_pool_create(threads));
    for (int64_t T = 4; T <= 37; ++T)
      checkLinear<TypeParam, 50, sz<TypeParam>(544)>(pool.get(), T, -1,
                                                     uint32_t(T));
    // K below one panel chunk (for the 32-element blocks), N below one
    // parallel block.
    checkLinear<TypeParam, 5, sz<TypeParam>(96)>(pool.get(), 9, -1, 99);
  }
}

/// A NaN or an infinity in one token's activations makes every output of
/// that token non-finite, on every path (int8 activations included, where a
/// max over the block would drop a NaN and a conversion would saturate it),
/// and leaves the other tokens finite.
TYPED_TEST(QuantKernels, NonFiniteActivations) {
  using W = TypeParam;
  // 17 blocks: 16 in steps of 8, a tail (3 super-blocks for the k-quants)
  constexpr int64_t N = 30, K = sz<W>(544);
  std::mt19937 rng(77);
  std::vector<W> w = randomWeight<W>(rng, N, K);
  Pool pool(moert_pool_create(2));
  // (element, value): a NaN early in a block (not the last lane a max
  // sees), an infinity, a NaN in the tail block.
  const std::pair<int64_t, float> bad[] = {
      {2 * 32 + 3, NAN}, {5 * 32 + 31, INFINITY}, {16 * 32 + 1, NAN}};
  for (auto [at, value] : bad)
    for (int64_t T : {1, 3, 6})
      for (int path : {-1, 0, 1}) {
        if (path >= 0 && T >= 4)
          continue;
        std::vector<float> x = randomVector(rng, size_t(T * K));
        int64_t badToken = T - 1;
        x[badToken * K + at] = value;
        std::vector<float> out(size_t(T * N));
        if (path < 0)
          linear<W, N, K>(pool.get(), x.data(), w.data(), T, out.data());
        else if (path == 0)
          qk::linearDecode<W, N, K, false>(pool.get(), x.data(), w.data(), T,
                                           out.data(), N, nullptr);
        else
          qk::linearDecode<W, N, K, true>(pool.get(), x.data(), w.data(), T,
                                          out.data(), N, nullptr);
        for (int64_t t = 0; t < T; ++t)
          for (int64_t n = 0; n < N; ++n)
            ASSERT_EQ(std::isfinite(out[t * N + n]), t != badToken)
                << "element " << at << " = " << value << ", T=" << T
                << " path=" << path << " t=" << t << " n=" << n;
      }
}

TYPED_TEST(QuantKernels, LinearDenseNoResidual) {
  using W = TypeParam;
  std::mt19937 rng(5);
  constexpr int64_t N = 26, K = sz<W>(320);
  std::vector<W> w = randomWeight<W>(rng, N, K);
  for (int64_t T : {1, 6}) {
    std::vector<float> x = randomVector(rng, size_t(T * K));
    std::vector<float> out(size_t(T * N));
    linear<W, N, K>(nullptr, x.data(), w.data(), T, out.data());
    std::vector<double> xd = toDouble(x.data(), T * K);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t n = 0; n < N; ++n) {
        Expected e =
            expectRow(weightRow(w.data(), n, K), K, &xd[t * K],
                      T < 4 ? qk::kDecodeInt8<W> : qk::kPrefillInt8<W>);
        EXPECT_NEAR(out[t * N + n], e.value, e.tol);
      }
  }
}

TYPED_TEST(QuantKernels, Embedding) {
  using W = TypeParam;
  std::mt19937 rng(3);
  constexpr int64_t H = sz<W>(96);
  std::vector<W> table = randomWeight<W>(rng, 10, H);
  const int32_t ids[] = {3, 0, 9, 3};
  std::vector<float> out(4 * H);
  embedding<W, H>(table.data(), ids, 4, out.data());
  for (int64_t t = 0; t < 4; ++t)
    for (int64_t i = 0; i < H; ++i)
      ASSERT_EQ(out[t * H + i],
                float(elem(weightRow(table.data(), ids[t], H), i)))
          << t << " " << i;
}

TYPED_TEST(QuantKernels, FusedRouterGate) {
  using W = TypeParam;
  std::mt19937 rng(4);
  constexpr int64_t H = sz<W>(128), E = 4;
  std::vector<W> gate = randomWeight<W>(rng, E, H);
  std::vector<float> x = randomVector(rng, H);
  float weights[E];
  int32_t idx[E];
  fusedRouter<W, H, E, E, false, false>(x.data(), gate.data(), 1, weights, idx);
  std::vector<double> xd = toDouble(x.data(), H);
  for (int64_t j = 0; j < E; ++j) {
    Expected e =
        expectRow(weightRow(gate.data(), idx[j], H), H, xd.data(), false);
    // sigmoid' <= 1/4.
    EXPECT_NEAR(weights[j], 1 / (1 + std::exp(-e.value)), e.tol / 4 + 1e-7);
  }
}

/// silu(g) * u's error from errors eg, eu in g and u: |silu'| <= 1.1.
double siluTimesTol(double g, double u, double eg, double eu) {
  double s = g / (1 + std::exp(-g));
  return 1.1 * std::fabs(u) * eg + (std::fabs(s) + 1.1 * eg) * eu + 1e-7;
}

/// groupedMatmul over E = 3 experts with 7, 0 and 3 rows (prefill, empty,
/// decode), gathering from 5 tokens x K = 2 choices.
template <typename W, bool Silu> void checkGrouped(moert_pool *pool) {
  constexpr int64_t R = 40, In = sz<W>(96), E = 3, K = 2, T = 5;
  std::mt19937 rng(Silu ? 21 : 22);
  std::vector<std::vector<W>> ws;
  std::vector<const void *> ptrs;
  for (int64_t i = 0; i < 2 * E; ++i)
    ws.push_back(randomWeight<W>(rng, R, In));
  for (auto &w : ws)
    ptrs.push_back(w.data());
  std::vector<float> x = randomVector(rng, T * In);
  const int32_t indices[T * K] = {0, 2, 2, 0, 0, 2, 0, 0, 0, 0};
  int32_t perm[T * K], offsets[E + 1];
  expertPermute<E, K>(indices, T, perm, offsets);
  ASSERT_EQ(offsets[1] - offsets[0], 7);
  ASSERT_EQ(offsets[2] - offsets[1], 0);
  constexpr int64_t N = Silu ? R : 2 * R;
  std::vector<float> gathered(T * K * In), out(T * K * N), up(T * K * R);
  groupedMatmul<W, W, R, R, In, E, K, true, Silu>(pool, x.data(), perm, offsets,
                                                  ptrs.data(), gathered.data(),
                                                  out.data(), up.data());
  std::vector<double> xd = toDouble(x.data(), T * In);
  for (int64_t e = 0; e < E; ++e) {
    int64_t rows = offsets[e + 1] - offsets[e];
    bool int8 = rows < 4 ? qk::kDecodeInt8<W> : qk::kPrefillInt8<W>;
    for (int64_t r = offsets[e]; r < offsets[e + 1]; ++r) {
      const double *xr = &xd[pairToken<K>(perm[r]) * In];
      for (int64_t n = 0; n < R; ++n) {
        Expected a =
            expectRow(weightRow(ws[2 * e].data(), n, In), In, xr, int8);
        Expected b =
            expectRow(weightRow(ws[2 * e + 1].data(), n, In), In, xr, int8);
        if (Silu) {
          double want = a.value / (1 + std::exp(-a.value)) * b.value;
          ASSERT_NEAR(out[r * N + n], want,
                      siluTimesTol(a.value, b.value, a.tol, b.tol))
              << e << " " << r << " " << n;
        } else {
          ASSERT_NEAR(out[r * N + n], a.value, a.tol);
          ASSERT_NEAR(out[r * N + R + n], b.value, b.tol);
        }
      }
    }
  }
}

TYPED_TEST(QuantKernels, GroupedMatmul) {
  for (int threads : {1, 2}) {
    Pool pool(moert_pool_create(threads));
    checkGrouped<TypeParam, true>(pool.get());
    checkGrouped<TypeParam, false>(pool.get());
  }
}

/// The unfused expert bank: every GEMV is a decode (one token), and the
/// down projection's input is the kernel's own silu(g) * u, whose distance
/// from the reference's is bounded first.
TYPED_TEST(QuantKernels, Experts) {
  using W = TypeParam;
  constexpr int64_t H = sz<W>(64), I = sz<W>(96), E = 3, K = 2, T = 3;
  std::mt19937 rng(31);
  std::vector<std::vector<W>> g, u, d;
  std::vector<const W *> gp, up, dp;
  for (int64_t e = 0; e < E; ++e) {
    g.push_back(randomWeight<W>(rng, I, H));
    u.push_back(randomWeight<W>(rng, I, H));
    d.push_back(randomWeight<W>(rng, H, I));
    gp.push_back(g.back().data());
    up.push_back(u.back().data());
    dp.push_back(d.back().data());
  }
  std::vector<float> x = randomVector(rng, T * H, 4.0f);
  const int32_t indices[T * K] = {0, 2, 2, 0, 0, 1};
  const float mix[T * K] = {0.7f, 0.3f, 0.6f, 0.4f, 0.5f, 0.5f};
  std::vector<float> scratch(2 * T * (H + I)), out(T * H);
  for (int threads : {1, 2}) {
    Pool pool(moert_pool_create(threads));
    experts<W, W, W, H, I, E, K>(pool.get(), x.data(), mix, indices, gp.data(),
                                 up.data(), dp.data(), T, scratch.data(),
                                 out.data());
    bool int8 = qk::kDecodeInt8<W>;
    std::vector<double> xd = toDouble(x.data(), T * H);
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> want(H, 0.0), tol(H, 0.0);
      for (int64_t j = 0; j < K; ++j) {
        int64_t e = indices[t * K + j];
        std::vector<double> h(I), eh(I);
        for (int64_t i = 0; i < I; ++i) {
          Expected a = expectRow(weightRow(gp[e], i, H), H, &xd[t * H], int8);
          Expected b = expectRow(weightRow(up[e], i, H), H, &xd[t * H], int8);
          h[i] = a.value / (1 + std::exp(-a.value)) * b.value;
          eh[i] = siluTimesTol(a.value, b.value, a.tol, b.tol);
        }
        for (int64_t n = 0; n < H; ++n) {
          Expected y =
              expectRow(weightRow(dp[e], n, I), I, h.data(), int8, eh.data());
          want[n] += mix[t * K + j] * y.value;
          tol[n] += mix[t * K + j] * y.tol;
        }
      }
      for (int64_t n = 0; n < H; ++n)
        ASSERT_NEAR(out[t * H + n], want[n], tol[n] + 1e-6 * std::fabs(want[n]))
            << threads << " " << t << " " << n;
    }
  }
}

/// The k-quants' vector dequantisation (prefill's panels without AVX-512
/// VNNI, the f32 decode path) is quant.h's dequant bit for bit.
template <typename W> void checkDequantRow() {
  std::mt19937 rng(9);
  std::vector<W> w = randomWeight<W>(rng, 1, 1024);
  std::vector<float> out(1024);
  qk::dequantRow(w.data(), 4, out.data());
  for (int64_t i = 0; i < 1024; ++i)
    ASSERT_EQ(out[i], float(elem(w.data(), i))) << i;
}
TEST(QuantKernelsKQuant, DequantRowExact) {
  checkDequantRow<q4_K>();
  checkDequantRow<q5_K>();
  checkDequantRow<q6_K>();
}

/// Float weights (f32, f16, bf16) through linear: decode rows below four
/// tokens, the packed-panel GEMM (fp::gemm) from four. The shapes cover a
/// partial last panel of rows (N % 16, N % 32), K in several panel chunks
/// with a short last one (520 = 2 x 256 + 8), token tiles with a tail
/// (T % 12, T % 6), an output row stride wider than N, and the residual
/// given separately and in place (res == out).
template <typename W> W storeAs(float f);
template <> float storeAs<float>(float f) { return f; }
template <> f16 storeAs<f16>(float f) { return f16{moe_test::toHalfBits(f)}; }
template <> bf16 storeAs<bf16>(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return bf16{uint16_t(u >> 16)};
}

template <typename W, int64_t N, int64_t K> void checkFloatLinear() {
  std::mt19937 rng(8);
  std::vector<float> wf = randomVector(rng, N * K, 0.05f);
  std::vector<W> w(N * K);
  for (int64_t i = 0; i < N * K; ++i)
    w[i] = storeAs<W>(wf[i]);
  for (int threads : {1, 2}) {
    Pool pool(moert_pool_create(threads));
    for (int64_t T : {1, 3, 4, 9, 13, 25}) {
      for (int mode = 0; mode < 3; ++mode) {
        // 0: residual apart, ldo = N + 3; 1: in place; 2: none.
        const int64_t ldo = mode == 0 ? N + 3 : N;
        std::vector<float> x = randomVector(rng, T * K);
        std::vector<float> res = randomVector(rng, T * ldo), out(T * ldo, 7.0f);
        if (mode == 1)
          out = res;
        const float *r = mode == 0   ? res.data()
                         : mode == 1 ? out.data()
                                     : nullptr;
        linear<W, N, K>(pool.get(), x.data(), w.data(), T, out.data(), ldo, r);
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t n = 0; n < N; ++n) {
            double want = mode == 2 ? 0.0 : res[t * ldo + n],
                   mag = std::fabs(want);
            for (int64_t k = 0; k < K; ++k) {
              double p = double(x[t * K + k]) * toFloat(w[n * K + k]);
              want += p;
              mag += std::fabs(p);
            }
            ASSERT_NEAR(out[t * ldo + n], want, 1e-5 * mag)
                << "T " << T << " mode " << mode << " row " << n;
          }
          // The gap of a wider output row is not written.
          for (int64_t n = N; n < ldo; ++n)
            ASSERT_EQ(out[t * ldo + n], mode == 0 ? 7.0f : res[t * ldo + n]);
        }
      }
    }
  }
}

TEST(FloatKernels, LinearF32) {
  checkFloatLinear<float, 29, 200>();
  checkFloatLinear<float, 64, 520>();
  checkFloatLinear<float, 77, 64>();
}
TEST(FloatKernels, LinearF16) {
  checkFloatLinear<f16, 29, 200>();
  checkFloatLinear<f16, 64, 520>();
  checkFloatLinear<f16, 77, 64>();
}
TEST(FloatKernels, LinearBF16) {
  checkFloatLinear<bf16, 29, 200>();
  checkFloatLinear<bf16, 48, 520>();
}

/// A [rows, cols] weight of any format: quantised, or stored as f32/f16.
template <typename W>
std::vector<W> anyWeight(std::mt19937 &rng, int64_t rows, int64_t cols) {
  if constexpr (IsQuant<W>::value) {
    return randomWeight<W>(rng, rows, cols);
  } else {
    std::vector<float> f = randomVector(rng, size_t(rows * cols), 0.05f);
    std::vector<W> w(f.size());
    for (size_t i = 0; i < f.size(); ++i)
      w[i] = storeAs<W>(f[i]);
    return w;
  }
}

/// groupedMatmul when no expert has more than one row (decode) runs every
/// expert's GEMVs in one parallel region (groupedDecode). Its results must
/// be bit-identical to `linear` on each row alone (the kernels the
/// multi-row path uses, checked against references above), silu·up
/// applied as siluTimes does: gate_up with Silu (the up rows never staged),
/// gate_up side by side, and the down projection (no gather); gate and up
/// of one type or two (each with its own activations). One token chooses
/// two experts of six; two tokens choose three, out of order, and one pair
/// is dropped (moe.expert_capacity), so the rows map to tokens through the
/// permutation and the dropped row is not written. groupedDecode is called
/// itself (it must take these cases) and through groupedMatmul; the shapes
/// are large enough for parallelFor to use the threads.
template <typename WA, typename WB, bool Silu, bool Down>
void checkGroupedDecode() {
  constexpr int64_t R = 56, In = std::max(sz<WA>(256), sz<WB>(256)), E = 6,
                    K = 2;
  constexpr int64_t RB = Down ? 0 : R;
  constexpr int64_t N = Silu ? R : R + RB;
  std::mt19937 rng(Silu ? 41 : Down ? 42 : 43);
  std::vector<std::vector<WA>> wa;
  std::vector<std::vector<WB>> wb;
  std::vector<const void *> ptrs;
  for (int64_t e = 0; e < E; ++e) {
    wa.push_back(anyWeight<WA>(rng, R, In));
    ptrs.push_back(wa.back().data());
    if (!Down) {
      wb.push_back(anyWeight<WB>(rng, R, In));
      ptrs.push_back(wb.back().data());
    }
  }
  for (int64_t T : {1, 2}) {
    const int32_t indices[4] = {4, 1, 0, -1};
    int32_t perm[4], offsets[E + 1];
    expertPermute<E, K>(indices, T, perm, offsets);
    ASSERT_EQ(offsets[E], T == 1 ? 2 : 3);
    // Gathered (gate_up): token rows; else (down) the permuted batch.
    std::vector<float> x = randomVector(rng, size_t((Down ? T * K : T) * In));
    for (int direct : {1, 0})
      for (int threads : {1, 2, 3}) {
        Pool pool(moert_pool_create(threads));
        std::vector<float> gathered(T * K * In), out(T * K * N, 99.0f),
            up(T * K * R, 77.0f);
        if (direct)
          ASSERT_TRUE((groupedDecode<WA, WB, R, RB, In, E, K, !Down, Silu>(
              pool.get(), x.data(), perm, offsets, ptrs.data(), out.data())));
        else
          groupedMatmul<WA, WB, R, RB, In, E, K, !Down, Silu>(
              pool.get(), x.data(), perm, offsets, ptrs.data(), gathered.data(),
              out.data(), up.data());
        for (int64_t e = 0; e < E; ++e) {
          ASSERT_LE(offsets[e + 1] - offsets[e], 1);
          for (int64_t r = offsets[e]; r < offsets[e + 1]; ++r) {
            const float *xr =
                Down ? &x[r * In] : &x[pairToken<K>(perm[r]) * In];
            std::vector<float> a(R), b(R);
            linear<WA, R, In>(nullptr, xr, wa[e].data(), 1, a.data());
            if (!Down)
              linear<WB, R, In>(nullptr, xr, wb[e].data(), 1, b.data());
            for (int64_t n = 0; n < R; ++n) {
              if (Silu) {
                ASSERT_EQ(out[r * N + n], siluTimes(a[n], b[n]))
                    << "T " << T << " expert " << e << " row " << n;
              } else {
                ASSERT_EQ(out[r * N + n], a[n]) << "expert " << e;
                if (!Down) {
                  ASSERT_EQ(out[r * N + R + n], b[n]) << "expert " << e;
                }
              }
            }
          }
        }
        // The row of the dropped pair, and `up`, are not written.
        for (int64_t i = offsets[E] * N; i < T * K * N; ++i)
          ASSERT_EQ(out[i], 99.0f);
        for (float u : up)
          ASSERT_EQ(u, 77.0f);
      }
  }
  // An expert with two rows: groupedDecode leaves it to the per-expert
  // path, writing nothing.
  const int32_t twice[4] = {3, 1, 3, 0};
  int32_t perm[4], offsets[E + 1];
  expertPermute<E, K>(twice, 2, perm, offsets);
  std::vector<float> x = randomVector(rng, size_t((Down ? 4 : 2) * In)),
                     out(4 * N, 99.0f);
  EXPECT_FALSE((groupedDecode<WA, WB, R, RB, In, E, K, !Down, Silu>(
      nullptr, x.data(), perm, offsets, ptrs.data(), out.data())));
  for (float o : out)
    ASSERT_EQ(o, 99.0f);
}

template <typename WA, typename WB = WA> void checkGroupedDecodeAll() {
  checkGroupedDecode<WA, WB, true, false>();
  checkGroupedDecode<WA, WB, false, false>();
  checkGroupedDecode<WA, WB, false, true>();
}

TEST(FloatKernels, GroupedDecodeF32) { checkGroupedDecodeAll<float>(); }
TEST(FloatKernels, GroupedDecodeF16) { checkGroupedDecodeAll<f16>(); }
TEST(FloatKernels, GroupedDecodeMixed) {
  checkGroupedDecodeAll<f16, float>();
  checkGroupedDecodeAll<q4_K, q6_K>();
  checkGroupedDecodeAll<q8_0, f16>();
}
TYPED_TEST(QuantKernels, GroupedDecode) { checkGroupedDecodeAll<TypeParam>(); }

/// fusedLinear (moe.fused_linear of two or three weights, of mixed formats)
/// against one `linear` per weight, bit for bit: one token (every weight's
/// rows in one parallel region) and several (linear per weight). The
/// widths leave partial blocks of 24 rows; the sizes are large enough for
/// parallelFor to use the threads.
template <typename W0, typename W1, typename W2, int64_t N2>
void checkFusedLinear() {
  constexpr int64_t K = 512, N0 = 50, N1 = 30;
  std::mt19937 rng(51);
  std::vector<W0> w0 = anyWeight<W0>(rng, N0, K);
  std::vector<W1> w1 = anyWeight<W1>(rng, N1, K);
  std::vector<W2> w2 = anyWeight<W2>(rng, std::max<int64_t>(N2, 1), K);
  const void *ws[3] = {w0.data(), w1.data(), w2.data()};
  for (int64_t T : {1, 2, 5}) {
    std::vector<float> x = randomVector(rng, size_t(T * K));
    for (int threads : {1, 2}) {
      Pool pool(moert_pool_create(threads));
      std::vector<float> o0(T * N0), o1(T * N1),
          o2(T * std::max<int64_t>(N2, 1), 5.0f);
      float *const outs[3] = {o0.data(), o1.data(), o2.data()};
      fusedLinear<W0, W1, W2, K, N0, N1, N2>(pool.get(), x.data(), ws, T, outs);
      std::vector<float> e0(T * N0), e1(T * N1), e2(o2.size(), 5.0f);
      linear<W0, N0, K>(pool.get(), x.data(), w0.data(), T, e0.data());
      linear<W1, N1, K>(pool.get(), x.data(), w1.data(), T, e1.data());
      if constexpr (N2 > 0)
        linear<W2, N2, K>(pool.get(), x.data(), w2.data(), T, e2.data());
      ASSERT_EQ(o0, e0) << "T " << T;
      ASSERT_EQ(o1, e1) << "T " << T;
      ASSERT_EQ(o2, e2) << "T " << T;
    }
  }
}

TEST(FloatKernels, FusedLinear) {
  checkFusedLinear<float, float, float, 20>();
  checkFusedLinear<f16, f16, f16, 30>();
  checkFusedLinear<f16, f16, float, 0>();
  checkFusedLinear<q4_K, float, q6_K, 24>();
  checkFusedLinear<q8_0, q4_0, q4_1, 0>();
}

/// The pool hands out pieces of a shrinking size, each at least the grain
/// but the last: every index exactly once, whatever the threads.
TEST(Pool, PiecesCoverEachIndexOnce) {
  for (int threads : {1, 2, 4})
    for (int64_t n : {1, 7, 1000, 4097})
      for (int64_t grain : {1, 5, 64}) {
        Pool pool(moert_pool_create(threads));
        std::vector<std::atomic<int>> seen(static_cast<size_t>(n));
        std::atomic<int64_t> smallPieces{0};
        struct Ctx {
          std::vector<std::atomic<int>> *seen;
          std::atomic<int64_t> *small;
          int64_t n, grain;
        } ctx{&seen, &smallPieces, n, grain};
        moert_pool_run(
            pool.get(), n, grain,
            [](void *p, int64_t b, int64_t e) {
              auto *c = static_cast<Ctx *>(p);
              if (e - b < c->grain && e != c->n)
                ++*c->small;
              for (int64_t i = b; i < e; ++i)
                ++(*c->seen)[size_t(i)];
            },
            &ctx);
        for (int64_t i = 0; i < n; ++i)
          ASSERT_EQ(seen[size_t(i)].load(), 1)
              << "threads " << threads << " n " << n << " grain " << grain
              << " index " << i;
        EXPECT_EQ(smallPieces.load(), 0);
      }
}

/// The head computes rows [from, T) only, row `from` first.
TEST(FloatKernels, LmHeadRowsFrom) {
  constexpr int64_t N = 40, K = 64, T = 9;
  std::mt19937 rng(3);
  std::vector<float> w = randomVector(rng, N * K, 0.05f);
  std::vector<float> x = randomVector(rng, T * K), all(T * N);
  linear<float, N, K>(nullptr, x.data(), w.data(), T, all.data());
  for (int64_t from : {int64_t(-1), int64_t(0), int64_t(5), T - 1, T}) {
    std::vector<float> out(T * N, 7.0f);
    lmHead<float, N, K>(nullptr, x.data(), w.data(), T, out.data(), from);
    const int64_t first = std::max<int64_t>(from, 0),
                  rows = T - std::min(first, T);
    for (int64_t i = 0; i < T * N; ++i) {
      const int64_t t = first + i / N;
      if (i < rows * N)
        ASSERT_NEAR(out[i], all[t * N + i % N],
                    1e-5f * (1 + std::fabs(all[t * N + i % N])))
            << from << " " << i;
      else
        ASSERT_EQ(out[i], 7.0f) << from << " " << i;
    }
  }
}

/// moe.expert_capacity on a hand-worked case: E = 3, K = 2, T = 4, factor
/// 0.75: capacity ceil(0.75 * 4 * 2 / 3) = 2. First choices claim places in
/// token order (tokens 0, 1 and 2 to expert 0: token 2's is dropped; token
/// 3's to expert 1), then second choices (token 0's to expert 1: its second
/// place; token 1's to expert 2; token 2's to expert 1, now full: dropped;
/// token 3's to expert 2: its second place).
TEST(CapacityKernels, FirstChoicesFirstInTokenOrder) {
  const int32_t idx[] = {0, 1, 0, 2, 0, 1, 1, 2};
  const float w[] = {.6f, .4f, .7f, .3f, .8f, .2f, .9f, .1f};
  float kw[8];
  int32_t ki[8];
  int64_t stats[2] = {10, 1};
  expertCapacity<3, 2>(w, idx, 0.75, 4, stats, kw, ki);
  const int32_t wantIdx[] = {0, 1, 0, 2, -1, -1, 1, 2};
  const float wantW[] = {.6f, .4f, .7f, .3f, 0.f, 0.f, .9f, .1f};
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(ki[i], wantIdx[i]) << i;
    EXPECT_EQ(kw[i], wantW[i]) << i;
  }
  EXPECT_EQ(stats[0], 10 + 8);
  EXPECT_EQ(stats[1], 1 + 2);
  // In place, as the memory plan may put it; and no counters.
  float w2[8];
  int32_t i2[8];
  std::memcpy(w2, w, sizeof w);
  std::memcpy(i2, idx, sizeof idx);
  expertCapacity<3, 2>(w2, i2, 0.75, 4, nullptr, w2, i2);
  EXPECT_EQ(0, std::memcmp(i2, wantIdx, sizeof i2));
  EXPECT_EQ(0, std::memcmp(w2, wantW, sizeof w2));
  // One token: every capacity is at least 1, nothing is dropped, even when
  // factor * T * K / E underflows to 0.
  for (double tiny : {0.01, 5e-324}) {
    int64_t one[2] = {0, 0};
    expertCapacity<3, 2>(w, idx, tiny, 1, one, kw, ki);
    EXPECT_EQ(ki[0], 0);
    EXPECT_EQ(ki[1], 1);
    EXPECT_EQ(one[1], 0) << tiny;
  }
  // A factor past any int64: the capacity is T, nothing is dropped.
  int64_t huge[2] = {0, 0};
  expertCapacity<3, 2>(w, idx, 1e300, 4, huge, kw, ki);
  EXPECT_EQ(0, std::memcmp(ki, idx, sizeof ki));
  EXPECT_EQ(huge[1], 0);
  EXPECT_EQ((expertCapacityOf<3, 2>(1e300, 4)), 4);
  EXPECT_EQ((expertCapacityOf<3, 2>(0.75, 4)), 2);
  EXPECT_EQ((expertCapacityOf<3, 2>(5e-324, 4)), 1);
}

/// Dropped pairs (-1) belong to no expert: perm lists the kept pairs by
/// expert and ends in -1; the combine and the unfused bank add nothing for
/// them, and the fused path equals the unfused one.
TEST(CapacityKernels, DroppedPairsAddNothing) {
  constexpr int64_t E = 3, K = 2, T = 4, H = 16, I = 8;
  const int32_t idx[] = {0, 1, 0, 2, -1, -1, 1, 2};
  int32_t perm[T * K], offsets[E + 1];
  expertPermute<E, K>(idx, T, perm, offsets);
  const int32_t wantPerm[] = {0, 2, 1, 6, 3, 7, -1, -1};
  const int32_t wantOffsets[] = {0, 2, 4, 6};
  EXPECT_EQ(0, std::memcmp(perm, wantPerm, sizeof perm));
  EXPECT_EQ(0, std::memcmp(offsets, wantOffsets, sizeof offsets));

  std::mt19937 rng(5);
  std::vector<float> x = randomVector(rng, T * H);
  const float w[] = {.6f, .4f, .7f, .3f, 0.f, 0.f, .9f, .1f};
  std::vector<std::vector<float>> gate, up, down;
  std::vector<const float *> g, u, d;
  for (int64_t e = 0; e < E; ++e) {
    gate.push_back(randomVector(rng, I * H, 0.2f));
    up.push_back(randomVector(rng, I * H, 0.2f));
    down.push_back(randomVector(rng, H * I, 0.2f));
  }
  for (int64_t e = 0; e < E; ++e) {
    g.push_back(gate[e].data());
    u.push_back(up[e].data());
    d.push_back(down[e].data());
  }
  // Unfused: token 2 has no expert at all, so its output is 0.
  std::vector<float> scratch(2 * T * (H + I)), unfused(T * H, 5.0f);
  experts<float, float, float, H, I, E, K>(nullptr, x.data(), w, idx, g.data(),
                                           u.data(), d.data(), T,
                                           scratch.data(), unfused.data());
  for (int64_t h = 0; h < H; ++h)
    EXPECT_EQ(unfused[2 * H + h], 0.0f) << h;
  // Fused: rows past offsets[E] hold NaN and are never read.
  std::vector<float> y(T * K * H, std::nanf("")), fused(T * H);
  for (int64_t r = 0; r < offsets[E]; ++r) {
    const int64_t t = perm[r] / K, e = idx[perm[r]];
    std::vector<float> hg(I), hu(I), hd(H);
    linear<float, I, H>(nullptr, x.data() + t * H, g[e], 1, hg.data());
    linear<float, I, H>(nullptr, x.data() + t * H, u[e], 1, hu.data());
    for (int64_t i = 0; i < I; ++i)
      hg[i] = siluTimes(hg[i], hu[i]);
    linear<float, H, I>(nullptr, hg.data(), d[e], 1, y.data() + r * H);
  }
  expertCombine<H, K>(y.data(), perm, w, T, fused.data());
  for (int64_t i = 0; i < T * H; ++i)
    EXPECT_NEAR(fused[i], unfused[i], 1e-5f * (1 + std::fabs(unfused[i]))) << i;
}

//===----------------------------------------------------------------------===//
// Attention, per instruction set: the group's scores eight keys at a time,
// the vector exp, the values with accumulators in registers
//===----------------------------------------------------------------------===//

TEST(AttentionKernels, MiniShapesMatchTheReference) {
  // mini's heads (16 query, 4 kv, dim 64): 200 positions are several blocks
  // of 64 keys with tails of every length; decode (chunks of 1) and a
  // prefill chunk, on two threads.
  Pool pool(moert_pool_create(2));
  moe_test::checkAttention<16, 4, 64, 256, 0>(200, 1, 256, pool.get());
  moe_test::checkAttention<16, 4, 64, 256, 0>(200, 77, 256, pool.get());
}

TEST(AttentionKernels, SharpScoresMoveTheRunningMaximum) {
  // Scores spread over hundreds (q and k 6x larger): later blocks raise the
  // maximum, rescaling what was accumulated, and most weights underflow.
  Pool pool(moert_pool_create(2));
  moe_test::checkAttention<8, 2, 32, 300, 0>(300, 13, 300, pool.get(), 6.0f);
}

TEST(AttentionKernels, OddGroupsAndHeadDims) {
  // Head dim 128 in groups of 4 (two heads' accumulators in AVX-512
  // registers, one head's with AVX2); 40, a multiple of 8 but not of 16
  // (AVX-512 takes the plain loops for the values), in groups of 3; 12,
  // whose scores and values take the plain loops, through a sliding window
  // on a ring that wraps; 256 (AVX2: the plain loops for the values).
  Pool pool(moert_pool_create(2));
  moe_test::checkAttention<8, 2, 128, 100, 0>(100, 9, 100, pool.get());
  moe_test::checkAttention<6, 2, 40, 90, 0>(90, 90, 90, pool.get());
  moe_test::checkAttention<4, 2, 12, 70, 30>(140, 11, 70, pool.get());
  moe_test::checkAttention<2, 1, 256, 80, 0>(80, 5, 80, pool.get());
}

TEST(AttentionKernels, EightKeysAcrossTheRingsWrap) {
  // Rings of 37, 70 and 45 slots that wrap several times: groups of eight
  // keys whose slots run past the end of the ring and start again at 0.
  Pool pool(moert_pool_create(2));
  moe_test::checkAttention<4, 2, 64, 37, 37>(150, 1, 37, pool.get());
  moe_test::checkAttention<4, 2, 64, 70, 30>(150, 13, 70, pool.get());
  moe_test::checkAttention<8, 1, 16, 45, 45>(120, 120, 45, pool.get());
}

TEST(AttentionKernels, LargeGroupsGoInSubGroups) {
  // 48 query heads on one kv head: sub-groups of 16; 17 (prime): one head
  // at a time. 32768 heads on one kv head (a config the frontend accepts):
  // one group's scores on the stack would be 8 MiB, past the main thread's
  // stack.
  moe_test::checkAttention<48, 1, 16, 80, 0>(80, 7, 80);
  moe_test::checkAttention<17, 1, 8, 70, 0>(70, 70, 70);
  moe_test::checkAttention<32768, 1, 2, 4, 0>(4, 4, 4);
}

TEST(AttentionKernels, KeysOfMinusInfinityWeighNothing) {
  // The first 70 keys (more than a block) score -inf for every query: they
  // take no weight, and the later keys' softmax is as if they were not
  // there (exp(-inf - -inf) would be NaN for the rest of the context).
  constexpr int64_t H = 4, KV = 1, D = 16, Cap = 128;
  const int n = 100;
  std::vector<float> q(size_t(n * H * D), 1.0f), k(size_t(n * KV * D)),
      v(k.size()), kc(size_t(KV * Cap * D)), vc(kc.size()), out(q.size());
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < D; ++i) {
      k[size_t(j * D + i)] = j < 70 && i == 0 ? -INFINITY : 0.01f * float(j);
      v[size_t(j * D + i)] = float(j);
    }
  std::vector<int32_t> pos(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i)
    pos[size_t(i)] = i;
  moert::attention<H, KV, D, Cap, 0>(nullptr, q.data(), k.data(), v.data(),
                                     moert_kv{kc.data(), vc.data()}, pos.data(),
                                     0.25f, n, out.data());
  for (int p = 70; p < n; ++p) {
    // The softmax over keys 70..p of scores 0.25 * D * 0.01 * j; values j.
    double num = 0, den = 0;
    for (int j = 70; j <= p; ++j) {
      double w = std::exp(0.25 * D * 0.01 * j);
      num += w * j;
      den += w;
    }
    for (int h = 0; h < H; ++h)
      ASSERT_NEAR(out[size_t((p * H + h) * D + 3)], num / den, 1e-4)
          << "position " << p;
  }
}

} // namespace
