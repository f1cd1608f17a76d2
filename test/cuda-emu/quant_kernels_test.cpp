//===- quant_kernels_test.cpp - CUDA kernels on quantised weights -*- C++ -*-//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Every CUDA kernel template that reads weights, instantiated with q8_0, q4_0,
// q4_1, q4_K, q5_K and q6_K and run on the CPU emulator (compiled like the
// generated .cu: -include cuda_emu.h -DMOERT_CUDA_EMULATOR), against a
// double-precision reference over moert::dequant's values. The weights are
// quantised here by a scalar copy of llama.cpp's reference quantisers, so the
// test does not depend on the compiler's. Tolerances are relative to sum |x *
// w| of each output: 1e-5 where the kernel accumulates exact f32 weights (gemv,
// whose dequantised values are exact), 1e-3 where the activations and weights
// are rounded to f16 (the tensor-core GEMM: 2^-11 each). The k-quants' rows are
// whole super-blocks of 256: their shapes are rounded up (sz).
//
//===----------------------------------------------------------------------===//

#include "moert/cuda/kernels.cuh"
#include "test/common/ReferenceQuantizers.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

using moert::cuda::Outs;
using moert::cuda::Ptrs;

namespace {

int failures = 0;

/// A row length for Q: n, or n rounded up to whole k-quant super-blocks.
template <typename Q> constexpr int sz(int n) {
  constexpr int B = int(moert::IsQuant<Q>::kBlock);
  return (n + B - 1) / B * B;
}
std::mt19937 rng(1234);

std::vector<float> randomVector(size_t n, float scale) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (float &f : v)
    f = u(rng);
  return v;
}

/// A random [rows, cols] weight quantised as Q (row 0 all zeros: a zero
/// scale), and its dequantised values.
template <typename Q> struct Weight {
  std::vector<Q> blocks;
  std::vector<float> values; // moert::dequant's, row-major
  int rows, cols;
  Weight(int rows, int cols) : rows(rows), cols(cols) {
    std::vector<float> x = randomVector(size_t(rows) * cols, 0.5f);
    std::fill(x.begin(), x.begin() + cols, 0.0f);
    constexpr int B = int(moert::IsQuant<Q>::kBlock);
    blocks.resize(size_t(rows) * cols / B);
    values.resize(x.size());
    for (size_t b = 0; b < blocks.size(); ++b) {
      moe_test::quantize(&x[b * B], blocks[b]);
      for (int j = 0; j < B; ++j)
        values[b * B + j] = moert::dequant(blocks[b], j);
    }
  }
  const Q *data() const { return blocks.data(); }
  float at(int r, int c) const { return values[size_t(r) * cols + c]; }
};

/// Dot product of input row `xr` with weight row `r`, and sum |x * w|.
template <typename Q>
void dot(const float *xr, const Weight<Q> &w, int r, double &s, double &a) {
  s = 0, a = 0;
  for (int k = 0; k < w.cols; ++k) {
    double p = double(xr[k]) * w.at(r, k);
    s += p, a += std::fabs(p);
  }
}

void expectNear(const char *what, float got, double want, double tol, int row,
                int col) {
  if (std::fabs(got - want) <= tol)
    return;
  if (failures++ < 20)
    std::fprintf(stderr, "FAIL %s [%d][%d]: got %.8g, want %.8g (tol %.3g)\n",
                 what, row, col, got, want, tol);
}

/// out = silu(g) * u with its tolerance from the tolerances of g and u.
void expectSilu(const char *what, float got, double g, double ag, double u,
                double au, double rel, int row, int col) {
  double silu = g / (1 + std::exp(-g));
  double tol = rel * (1.1 * std::fabs(u) * ag + std::fabs(g) * au) + 1e-6;
  expectNear(what, got, silu * u, tol, row, col);
}

template <auto F, typename... A>
void launch(unsigned gx, unsigned gy, A... args) {
  void *argv[] = {&args...};
  moert_emu::launch(moert_emu::Entry<F>::kernel("test"), gx, gy, 256, argv);
}

// The kernels, wrapped as the generated .cu wraps them.
template <typename Q, int H>
void embeddingK(const Q *t, const int32_t *ids, float *out) {
  moert::cuda::embedding<Q, H>(t, ids, out);
}
template <typename WA, typename WB, int RowsA, int RowsB, int In, int E, int K,
          bool Gather, bool Grouped, bool Silu, int NumPtrs>
void gemvK(const float *x, const int32_t *perm, const int32_t *offsets,
           Ptrs<NumPtrs> w, int n, float *out, const float *res) {
  moert::cuda::gemv<WA, WB, RowsA, RowsB, In, E, K, Gather, Grouped, Silu,
                    NumPtrs>(x, perm, offsets, w, n, out, res);
}
template <typename T, int RowsA, int RowsB, int In, int E, int K, bool Gather,
          bool Grouped, bool Silu, int NumPtrs>
void mmaK(const float *x, const int32_t *perm, const int32_t *offsets,
          Ptrs<NumPtrs> w, int n, float *out, const float *res) {
  moert::cuda::gemmMma<T, RowsA, RowsB, In, E, K, Gather, Grouped, Silu,
                       NumPtrs>(x, perm, offsets, w, n, out, res);
}
template <typename Q, int In, int N0, int N1, int D>
void multiK(const float *x, Ptrs<3> w, int n, Outs<3> out, const int32_t *pos,
            double theta) {
  moert::cuda::gemvMulti<Q, Q, Q, In, N0, N1, 0, true, false, false, D>(
      x, w, n, out, pos, theta);
}

template <typename Q> void testEmbedding(const char *name) {
  constexpr int H = sz<Q>(64), V = 10;
  Weight<Q> table(V, H);
  std::vector<int32_t> ids = {3, 0, 9};
  std::vector<float> out(ids.size() * H, -1);
  launch<&embeddingK<Q, H>>(unsigned(ids.size()), 1, table.data(),
                            (const int32_t *)ids.data(), out.data());
  for (size_t t = 0; t < ids.size(); ++t)
    for (int i = 0; i < H; ++i)
      expectNear(name, out[t * H + i], table.at(ids[t], i), 0, int(t), i);
}

/// Dense gemv for 1..8 rows (with the residual for even counts), and two
/// stacked parts of different widths.
template <typename Q> void testGemvDense(const char *name) {
  constexpr int N = 40, In = sz<Q>(128);
  Weight<Q> w(N, In);
  Ptrs<1> ptrs = {{w.data()}};
  for (int n = 1; n <= 8; ++n) {
    std::vector<float> x = randomVector(size_t(n) * In, 1), res;
    if (n % 2 == 0)
      res = randomVector(size_t(n) * N, 1);
    std::vector<float> out(size_t(n) * N, -1);
    launch<&gemvK<Q, Q, N, 0, In, 1, 1, false, false, false, 1>>(
        (N + 7) / 8, 1, (const float *)x.data(), (const int32_t *)nullptr,
        (const int32_t *)nullptr, ptrs, n, out.data(),
        (const float *)(res.empty() ? nullptr : res.data()));
    for (int r = 0; r < n; ++r)
      for (int c = 0; c < N; ++c) {
        double s, a;
        dot(&x[size_t(r) * In], w, c, s, a);
        if (!res.empty())
          s += res[size_t(r) * N + c];
        expectNear(name, out[size_t(r) * N + c], s, 1e-5 * a + 1e-6, r, c);
      }
  }
  constexpr int RowsA = 16, RowsB = 24, In2 = sz<Q>(96), n = 3;
  Weight<Q> wa(RowsA, In2), wb(RowsB, In2);
  Ptrs<2> two = {{wa.data(), wb.data()}};
  std::vector<float> x = randomVector(size_t(n) * In2, 1);
  std::vector<float> out(size_t(n) * (RowsA + RowsB), -1);
  launch<&gemvK<Q, Q, RowsA, RowsB, In2, 1, 1, false, false, false, 2>>(
      (RowsA + RowsB + 7) / 8, 1, (const float *)x.data(),
      (const int32_t *)nullptr, (const int32_t *)nullptr, two, n, out.data(),
      (const float *)nullptr);
  for (int r = 0; r < n; ++r)
    for (int c = 0; c < RowsA + RowsB; ++c) {
      double s, a;
      dot(&x[size_t(r) * In2], c < RowsA ? wa : wb, c < RowsA ? c : c - RowsA,
          s, a);
      expectNear(name, out[size_t(r) * (RowsA + RowsB) + c], s, 1e-5 * a + 1e-6,
                 r, c);
    }
}

/// Expert-sorted pairs for T tokens and K = 2 with the given counts per
/// expert (summing to 2T): perm[r] is the pair (token * 2 + choice) of row r.
std::vector<int32_t> makePerm(int t, const std::vector<int> &counts,
                              std::vector<int32_t> &offsets) {
  std::vector<int32_t> perm(size_t(t) * 2);
  for (size_t i = 0; i < perm.size(); ++i)
    perm[i] = int32_t(i);
  std::shuffle(perm.begin(), perm.end(), rng);
  offsets = {0};
  for (int c : counts)
    offsets.push_back(offsets.back() + c);
  return perm;
}

/// Grouped gate/up with gather and silu, then the grouped down projection
/// without, on experts of uneven sizes (one empty); `Mma` picks the
/// tensor-core kernels (more rows, f16 tolerance).
template <typename Q, bool Mma> void testGrouped(const char *name) {
  constexpr int E = 4, K = 2, I = sz<Q>(Mma ? 128 : 32), H = sz<Q>(64);
  int t = Mma ? 35 : 5;
  std::vector<int> counts =
      Mma ? std::vector<int>{40, 0, 25, 5} : std::vector<int>{4, 0, 5, 1};
  double rel = Mma ? 1e-3 : 1e-5;
  std::vector<int32_t> offsets, perm = makePerm(t, counts, offsets);
  int rows = t * K;
  std::vector<Weight<Q>> gate, up, down;
  Ptrs<2 * E> gu;
  Ptrs<E> dn;
  for (int e = 0; e < E; ++e) {
    gate.emplace_back(I, H), up.emplace_back(I, H), down.emplace_back(H, I);
  }
  for (int e = 0; e < E; ++e) {
    gu.p[2 * e] = gate[e].data(), gu.p[2 * e + 1] = up[e].data();
    dn.p[e] = down[e].data();
  }
  std::vector<float> x = randomVector(size_t(t) * H, 1);
  std::vector<float> mid(size_t(rows) * I, -1), out(size_t(rows) * H, -1);
  const int32_t *pp = perm.data(), *op = offsets.data();
  if constexpr (Mma) {
    unsigned tiles = unsigned((rows + 63) / 64 + E);
    launch<&mmaK<Q, I, I, H, E, K, true, true, true, 2 * E>>(
        tiles, (I + 63) / 64, (const float *)x.data(), pp, op, gu, t,
        mid.data(), (const float *)nullptr);
    launch<&mmaK<Q, H, 0, I, E, K, false, true, false, E>>(
        tiles, (H + 127) / 128, (const float *)mid.data(), pp, op, dn, t,
        out.data(), (const float *)nullptr);
  } else {
    unsigned groups = unsigned(std::min(E, rows));
    launch<&gemvK<Q, Q, I, I, H, E, K, true, true, true, 2 * E>>(
        (I + 7) / 8, groups, (const float *)x.data(), pp, op, gu, t, mid.data(),
        (const float *)nullptr);
    launch<&gemvK<Q, Q, H, 0, I, E, K, false, true, false, E>>(
        (H + 7) / 8, groups, (const float *)mid.data(), pp, op, dn, t,
        out.data(), (const float *)nullptr);
  }
  for (int e = 0; e < E; ++e)
    for (int r = offsets[e]; r < offsets[e + 1]; ++r) {
      const float *xr = &x[size_t(perm[r] / K) * H];
      for (int c = 0; c < I; ++c) {
        double g, ag, u, au;
        dot(xr, gate[e], c, g, ag);
        dot(xr, up[e], c, u, au);
        expectSilu(name, mid[size_t(r) * I + c], g, ag, u, au, rel, r, c);
      }
      // The down projection of the kernel's own intermediate rows.
      for (int c = 0; c < H; ++c) {
        double s, a;
        dot(&mid[size_t(r) * I], down[e], c, s, a);
        expectNear(name, out[size_t(r) * H + c], s, rel * a + 1e-6, r, c);
      }
    }
}

/// q (with RoPE) and k of one input in one launch.
template <typename Q> void testMulti(const char *name) {
  constexpr int In = sz<Q>(64), N0 = 32, N1 = 16, D = 16, n = 2;
  const double theta = 10000;
  Weight<Q> wq(N0, In), wk(N1, In);
  Ptrs<3> ptrs = {{wq.data(), wk.data(), nullptr}};
  std::vector<float> x = randomVector(size_t(n) * In, 1);
  std::vector<float> q(size_t(n) * N0, -1), k(size_t(n) * N1, -1);
  std::vector<int32_t> pos = {5, 6};
  Outs<3> outs = {{q.data(), k.data(), nullptr}};
  constexpr int Items = N0 / 2 + N1;
  launch<&multiK<Q, In, N0, N1, D>>((Items + 7) / 8, 1, (const float *)x.data(),
                                    ptrs, n, outs, (const int32_t *)pos.data(),
                                    theta);
  for (int t = 0; t < n; ++t) {
    const float *xr = &x[size_t(t) * In];
    for (int c = 0; c < N0; ++c) {
      int i = c % D, head = c / D;
      if (i >= D / 2)
        continue;
      int a = head * D + i, b = a + D / 2;
      double s1, a1, s2, a2;
      dot(xr, wq, a, s1, a1);
      dot(xr, wq, b, s2, a2);
      float cs, sn;
      moert::ropeCosSin(pos[t], moert::ropeInvFreq(theta, i, D), cs, sn);
      double tol = 1e-5 * (a1 + a2) + 1e-6;
      expectNear(name, q[size_t(t) * N0 + a], s1 * cs - s2 * sn, tol, t, a);
      expectNear(name, q[size_t(t) * N0 + b], s2 * cs + s1 * sn, tol, t, b);
    }
    for (int c = 0; c < N1; ++c) {
      double s, a;
      dot(xr, wk, c, s, a);
      expectNear(name, k[size_t(t) * N1 + c], s, 1e-5 * a + 1e-6, t, c);
    }
  }
}

/// The tensor-core GEMM, dense with the residual: 70 rows (a partial
/// m-tile) by 160 features (a partial n-tile).
template <typename Q> void testMmaDense(const char *name) {
  constexpr int N = 160, In = sz<Q>(128), n = 70;
  Weight<Q> w(N, In);
  Ptrs<1> ptrs = {{w.data()}};
  std::vector<float> x = randomVector(size_t(n) * In, 1);
  std::vector<float> res = randomVector(size_t(n) * N, 1);
  std::vector<float> out(size_t(n) * N, -1);
  launch<&mmaK<Q, N, 0, In, 1, 1, false, false, false, 1>>(
      (n + 63) / 64, (N + 127) / 128, (const float *)x.data(),
      (const int32_t *)nullptr, (const int32_t *)nullptr, ptrs, n, out.data(),
      (const float *)res.data());
  for (int r = 0; r < n; ++r)
    for (int c = 0; c < N; ++c) {
      double s, a;
      dot(&x[size_t(r) * In], w, c, s, a);
      expectNear(name, out[size_t(r) * N + c], s + res[size_t(r) * N + c],
                 1e-3 * a + 1e-6, r, c);
    }
}

template <typename Q> void testType(const char *type) {
  int before = failures;
  std::string n = type;
  testEmbedding<Q>((n + " embedding").c_str());
  testGemvDense<Q>((n + " gemv").c_str());
  testGrouped<Q, false>((n + " grouped gemv").c_str());
  testMulti<Q>((n + " gemvMulti").c_str());
  testMmaDense<Q>((n + " gemmMma").c_str());
  testGrouped<Q, true>((n + " grouped gemmMma").c_str());
  std::printf("%s: %s\n", type, failures == before ? "ok" : "FAILED");
}

} // namespace

int main() {
  testType<moert::q8_0>("q8_0");
  testType<moert::q4_0>("q4_0");
  testType<moert::q4_1>("q4_1");
  testType<moert::q4_K>("q4_K");
  testType<moert::q5_K>("q5_K");
  testType<moert::q6_K>("q6_K");
  if (failures)
    std::printf("%d mismatches\n", failures);
  return failures ? 1 : 0;
}
