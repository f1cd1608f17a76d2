//===- kernels.h - CPU kernels called by generated host plans --*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Header-only templates: the generated code instantiates them with the
// model's shapes as compile-time constants and its weight storage types, so
// each model gets kernels specialised to it. Weights are read in place from
// the memory-mapped files (f32, f16 or bf16, converted on the fly with
// F16C/AVX2 where available) and every reduction accumulates in f32.
// Activations are row-major [tokens][features] f32.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_KERNELS_H
#define MOERT_KERNELS_H

#include "moert/kernel_math.h"
#include "moert/pool.h"
#include "moert/program.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define MOERT_AVX2 1
#endif

namespace moert {

/// Storage types of weights.
struct f16 {
  uint16_t bits;
};
struct bf16 {
  uint16_t bits;
};

inline float toFloat(float x) { return x; }
inline float toFloat(bf16 x) {
  uint32_t u = uint32_t(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float toFloat(f16 x) {
#ifdef MOERT_AVX2
  return _cvtsh_ss(x.bits);
#else
  uint32_t sign = uint32_t(x.bits & 0x8000) << 16;
  uint32_t exp = (x.bits >> 10) & 0x1f, man = x.bits & 0x3ff, u;
  if (exp == 0) {
    float f = std::ldexp(float(man), -24);
    std::memcpy(&u, &f, 4);
    u |= sign;
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (man << 13);
  } else {
    u = sign | ((exp + 112) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

#ifdef MOERT_AVX2
inline __m256 load8(const float *p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const f16 *p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
}
inline __m256 load8(const bf16 *p) {
  __m256i wide = _mm256_cvtepu16_epi32(
      _mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

/// x[0..K) · w[0..K), accumulated in f32.
template <typename W> inline float dot(const float *x, const W *w, int64_t K) {
  int64_t i = 0;
  float sum = 0;
#ifdef MOERT_AVX2
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  for (; i + 32 <= K; i += 32) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load8(w + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), load8(w + i + 8), a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), load8(w + i + 16), a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), load8(w + i + 24), a3);
  }
  for (; i + 8 <= K; i += 8)
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load8(w + i), a0);
  sum = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif
  for (; i < K; ++i)
    sum += x[i] * toFloat(w[i]);
  return sum;
}

#ifdef MOERT_AVX2
/// The register-blocked core of `linear`: 4 tokens x 3 weight rows, twelve
/// accumulators, so each weight vector loaded (and converted) feeds four
/// FMAs and each activation vector three. K is a multiple of 8. `res`
/// (laid out as `out`, or null) is added to each result.
template <typename W>
inline void gemm4x3(const float *x, int64_t ldx, const W *w, int64_t K,
                    float *out, int64_t ldo, const float *res) {
  // Fully unrolled so the accumulators live in registers.
  __m256 acc[4][3];
#pragma GCC unroll 4
  for (int t = 0; t < 4; ++t)
#pragma GCC unroll 3
    for (int r = 0; r < 3; ++r)
      acc[t][r] = _mm256_setzero_ps();
  for (int64_t i = 0; i < K; i += 8) {
    __m256 w0 = load8(w + i), w1 = load8(w + K + i), w2 = load8(w + 2 * K + i);
#pragma GCC unroll 4
    for (int t = 0; t < 4; ++t) {
      __m256 xv = _mm256_loadu_ps(x + t * ldx + i);
      acc[t][0] = _mm256_fmadd_ps(xv, w0, acc[t][0]);
      acc[t][1] = _mm256_fmadd_ps(xv, w1, acc[t][1]);
      acc[t][2] = _mm256_fmadd_ps(xv, w2, acc[t][2]);
    }
  }
#pragma GCC unroll 4
  for (int t = 0; t < 4; ++t)
#pragma GCC unroll 3
    for (int r = 0; r < 3; ++r) {
      float v = hsum(acc[t][r]);
      out[t * ldo + r] = res ? v + res[t * ldo + r] : v;
    }
}
#endif

/// out[t * ldo + n] = x[t] · W[n] for W of shape [N, K] (x @ Wᵀ); `ldo` is
/// the output row stride (N for a dense result). With `res` (laid out as
/// `out`), out = x @ Wᵀ + res (moe-fuse-epilogues). Parallel over blocks of
/// weight rows, so each thread streams its part of W once; with four or
/// more tokens the 4x3 register-blocked kernel does the work.
template <typename W, int64_t N, int64_t K>
void linear(moert_pool *pool, const float *x, const W *w, int64_t T, float *out,
            int64_t ldo = N, const float *res = nullptr) {
  auto store = [&](int64_t t, int64_t r, float v) {
    out[t * ldo + r] = res ? v + res[t * ldo + r] : v;
  };
  constexpr int64_t kRows = 24; // rows of W per parallel block (8 x 3)
  constexpr int64_t kBlocks = (N + kRows - 1) / kRows;
  parallelFor(pool, kBlocks, double(T) * N * K, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      int64_t n0 = b * kRows, n1 = std::min(N, n0 + kRows);
      int64_t t = 0;
#ifdef MOERT_AVX2
      if (K % 8 == 0 && T >= 4) {
        int64_t nEnd = n0 + (n1 - n0) / 3 * 3;
        for (; t + 4 <= T; t += 4)
          for (int64_t r = n0; r < nEnd; r += 3)
            gemm4x3(x + t * K, K, w + r * K, K, out + t * ldo + r, ldo,
                    res ? res + t * ldo + r : nullptr);
        // Rows past the last group of three, for the blocked tokens.
        for (int64_t tt = 0; tt < t; ++tt)
          for (int64_t r = nEnd; r < n1; ++r)
            store(tt, r, dot(x + tt * K, w + r * K, K));
      }
#endif
      for (; t < T; ++t)
        for (int64_t r = n0; r < n1; ++r)
          store(t, r, dot(x + t * K, w + r * K, K));
    }
  });
}

template <typename W, int64_t H>
void embedding(const W *table, const int32_t *ids, int64_t T, float *out) {
  for (int64_t t = 0; t < T; ++t) {
    const W *row = table + int64_t(ids[t]) * H;
    for (int64_t i = 0; i < H; ++i)
      out[t * H + i] = toFloat(row[i]);
  }
}

template <typename W, int64_t H>
void rmsNorm(const float *x, const W *w, float eps, int64_t T, float *out) {
  for (int64_t t = 0; t < T; ++t) {
    const float *r = x + t * H;
    float ss = 0;
    for (int64_t i = 0; i < H; ++i)
      ss += r[i] * r[i];
    float scale = rmsNormScale(ss, H, eps);
    for (int64_t i = 0; i < H; ++i)
      out[t * H + i] = r[i] * scale * toFloat(w[i]);
  }
}

/// RoPE, rotate-half convention, on [T][Width] with heads of D.
template <int64_t Width, int64_t D>
void rope(const float *x, const int32_t *pos, double theta, int64_t T,
          float *out) {
  constexpr int64_t Half = D / 2;
  double invFreq[Half];
  for (int64_t i = 0; i < Half; ++i)
    invFreq[i] = ropeInvFreq(theta, i, D);
  for (int64_t t = 0; t < T; ++t) {
    float c[Half], s[Half];
    for (int64_t i = 0; i < Half; ++i)
      ropeCosSin(pos[t], invFreq[i], c[i], s[i]);
    for (int64_t h = 0; h < Width / D; ++h) {
      const float *r = x + t * Width + h * D;
      float *o = out + t * Width + h * D;
      for (int64_t i = 0; i < Half; ++i)
        ropeHeadPair<D>(r, o, i, c[i], s[i]);
    }
  }
}

template <int64_t Size>
void add(const float *a, const float *b, int64_t T, float *out) {
  for (int64_t i = 0; i < T * Size; ++i)
    out[i] = a[i] + b[i];
}

/// One query row against the keys of positions [first, last] in a ring
/// cache (position j in slot j % Cap): o = softmax(scale * q·k) · v. Keys are
/// taken in blocks whose scores live on the stack, with a running maximum
/// (what was accumulated is rescaled when a block raises it), so the cost
/// follows the number of keys seen, not the cache's capacity, and nothing is
/// allocated.
template <int64_t D, int64_t Cap>
inline void attendRow(const float *qh, const float *kc, const float *vc,
                      int64_t first, int64_t last, float scale, float *o) {
  constexpr int64_t kBlock = 256;
  float s[kBlock];
  float best = -INFINITY, total = 0;
  std::fill(o, o + D, 0.0f);
  for (int64_t j0 = first; j0 <= last; j0 += kBlock) {
    int64_t n = std::min<int64_t>(kBlock, last - j0 + 1);
    // Three passes over the block, as over a whole row: scores, their
    // exponentials (and sum), the weighted values.
    float blockBest = -INFINITY;
    for (int64_t j = 0; j < n; ++j) {
      s[j] = dot(qh, kc + ((j0 + j) % Cap) * D, D) * scale;
      blockBest = std::max(blockBest, s[j]);
    }
    if (blockBest > best) {
      if (best != -INFINITY) {
        float r = std::exp(best - blockBest);
        total *= r;
        for (int64_t i = 0; i < D; ++i)
          o[i] *= r;
      }
      best = blockBest;
    }
    for (int64_t j = 0; j < n; ++j)
      total += s[j] = std::exp(s[j] - best);
    for (int64_t j = 0; j < n; ++j) {
      const float *vj = vc + ((j0 + j) % Cap) * D;
      for (int64_t i = 0; i < D; ++i)
        o[i] += s[j] * vj[i];
    }
  }
  float inv = 1.0f / total;
  for (int64_t i = 0; i < D; ++i)
    o[i] *= inv;
}

/// Causal GQA attention over a ring-buffer KV cache. Tokens are handled in
/// order: each writes its key and value into slot pos % Cap (evicting the
/// position Cap back, which no later query can see) and then attends, so a
/// chunk of any length is exact even when it is longer than the window.
/// Parallel over kv heads, which own disjoint parts of the cache. The work
/// per query is proportional to the keys it sees (at most min(Window, Cap)),
/// whatever the capacity.
template <int64_t Heads, int64_t KvHeads, int64_t D, int64_t Cap,
          int64_t Window>
void attention(moert_pool *pool, const float *q, const float *k, const float *v,
               moert_kv cache, const int32_t *pos, float scale, int64_t T,
               float *out) {
  constexpr int64_t Group = Heads / KvHeads;
  constexpr int64_t Visible = Window > 0 && Window < Cap ? Window : Cap;
  int64_t context =
      T > 0 ? std::min<int64_t>(int64_t(pos[T - 1]) + 1, Visible) : 0;
  parallelFor(
      pool, KvHeads, double(T) * Heads * D * double(context),
      [&](int64_t g0, int64_t g1) {
        for (int64_t g = g0; g < g1; ++g) {
          float *kc = cache.k + g * Cap * D, *vc = cache.v + g * Cap * D;
          for (int64_t t = 0; t < T; ++t) {
            int64_t p = pos[t];
            std::memcpy(kc + (p % Cap) * D, k + t * KvHeads * D + g * D,
                        D * sizeof(float));
            std::memcpy(vc + (p % Cap) * D, v + t * KvHeads * D + g * D,
                        D * sizeof(float));
            int64_t first = firstKey<Cap, Window>(p);
            for (int64_t h = g * Group; h < (g + 1) * Group; ++h)
              attendRow<D, Cap>(q + t * Heads * D + h * D, kc, vc, first, p,
                                scale, out + t * Heads * D + h * D);
          }
        }
      });
}

template <int64_t E, int64_t K, bool Softmax, bool Renormalize>
void router(const float *logits, int64_t T, float *weights, int32_t *indices) {
  for (int64_t t = 0; t < T; ++t)
    routeToken<E, K, Softmax, Renormalize>(logits + t * E, weights + t * K,
                                           indices + t * K);
}

/// The gate GEMV and the routing of each token in one pass; the logits stay
/// on the stack.
template <typename W, int64_t H, int64_t E, int64_t K, bool Softmax,
          bool Renormalize>
void fusedRouter(const float *x, const W *gate, int64_t T, float *weights,
                 int32_t *indices) {
  for (int64_t t = 0; t < T; ++t) {
    float logits[E];
    for (int64_t e = 0; e < E; ++e)
      logits[e] = dot(x + t * H, gate + e * H, H);
    routeToken<E, K, Softmax, Renormalize>(logits, weights + t * K,
                                           indices + t * K);
  }
}

/// The SwiGLU expert bank as the unfused op states it: for each token, for
/// each of its k experts, gate and up GEMVs, silu·up, the down GEMV, mixed
/// by the router weight. Each expert's weights are read once per token that
/// chose it; grouping tokens by expert is moe-fuse-expert-gemms' job.
/// `scratch` holds 2*T*(H + I) floats (only 2*I + H are used).
template <typename WG, typename WU, typename WD, int64_t H, int64_t I,
          int64_t E, int64_t K>
void experts(moert_pool *pool, const float *x, const float *weights,
             const int32_t *indices, const WG *const *gate, const WU *const *up,
             const WD *const *down, int64_t T, float *scratch, float *out) {
  float *g = scratch, *u = g + I, *y = u + I;
  std::fill(out, out + T * H, 0.0f);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < K; ++j) {
      int64_t e = indices[t * K + j];
      linear<WG, I, H>(pool, x + t * H, gate[e], 1, g);
      linear<WU, I, H>(pool, x + t * H, up[e], 1, u);
      for (int64_t i = 0; i < I; ++i)
        g[i] = siluTimes(g[i], u[i]);
      linear<WD, H, I>(pool, g, down[e], 1, y);
      float mix = weights[t * K + j];
      for (int64_t i = 0; i < H; ++i)
        out[t * H + i] += mix * y[i];
    }
}

//===----------------------------------------------------------------------===//
// The fused expert path (moe-fuse-expert-gemms)
//===----------------------------------------------------------------------===//

/// Counting sort of the T*K (token, choice) pairs by expert: perm lists pair
/// indices t*K + j grouped by expert, in token order; offsets[E + 1].
template <int64_t E, int64_t K>
void expertPermute(const int32_t *indices, int64_t T, int32_t *perm,
                   int32_t *offsets) {
  int64_t count[E + 1] = {};
  for (int64_t i = 0; i < T * K; ++i)
    ++count[indices[i] + 1];
  countsToOffsets(count, E);
  for (int64_t e = 0; e <= E; ++e)
    offsets[e] = int32_t(count[e]);
  for (int64_t i = 0; i < T * K; ++i)
    perm[count[indices[i]]++] = int32_t(i);
}

/// One GEMM per expert over its rows of the permuted batch, with up to two
/// weights per expert stacked along the output ([RowsA + RowsB, In]): the
/// gate_up GEMM reads each expert's w1 and w3 where the file has them.
/// Gather: row r reads token perm[r] / K of x; else x is already permuted.
/// Silu (two equal parts): out is [rows, RowsA] silu(gate) * up, the up
/// part staged in `up` (rows x RowsB floats).
template <typename WA, typename WB, int64_t RowsA, int64_t RowsB, int64_t In,
          int64_t E, int64_t K, bool Gather, bool Silu = false>
void groupedMatmul(moert_pool *pool, const float *x, const int32_t *perm,
                   const int32_t *offsets, const void *const *weights,
                   float *gathered, float *out, float *up = nullptr) {
  static_assert(!Silu || RowsA == RowsB, "silu_mul takes two equal parts");
  constexpr int64_t Parts = RowsB > 0 ? 2 : 1;
  constexpr int64_t N = Silu ? RowsA : RowsA + RowsB;
  for (int64_t e = 0; e < E; ++e) {
    int64_t r0 = offsets[e], rows = offsets[e + 1] - r0;
    if (rows == 0)
      continue;
    const float *src = x + r0 * In;
    if (Gather) {
      for (int64_t r = 0; r < rows; ++r)
        std::memcpy(gathered + r * In, x + pairToken<K>(perm[r0 + r]) * In,
                    In * sizeof(float));
      src = gathered;
    }
    // Parts side by side in the output: w1 rows, then w3 rows (with Silu:
    // w1 rows in the output, w3 rows in `up`, then combined in place).
    float *o = out + r0 * N;
    linear<WA, RowsA, In>(
        pool, src, static_cast<const WA *>(weights[e * Parts]), rows, o, N);
    if constexpr (Silu) {
      float *u = up + r0 * RowsB;
      linear<WB, RowsB, In>(pool, src,
                            static_cast<const WB *>(weights[e * Parts + 1]),
                            rows, u, RowsB);
      for (int64_t i = 0; i < rows * RowsA; ++i)
        o[i] = siluTimes(o[i], u[i]);
    } else if constexpr (RowsB > 0) {
      linear<WB, RowsB, In>(pool, src,
                            static_cast<const WB *>(weights[e * Parts + 1]),
                            rows, o + RowsA, N);
    }
  }
}

/// [rows, 2I] gate|up -> [rows, I] silu(gate) * up.
template <int64_t I> void siluMul(const float *in, int64_t rows, float *out) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < I; ++i)
      out[r * I + i] = siluTimes(in[r * 2 * I + i], in[r * 2 * I + I + i]);
}

/// out[t] = Σ_j weights[t, j] * y[r] over rows r with perm[r] = t*K + j,
/// plus res[t] when given (moe-fuse-epilogues; added after the sum).
template <int64_t H, int64_t K>
void expertCombine(const float *y, const int32_t *perm, const float *weights,
                   int64_t T, float *out, const float *res = nullptr) {
  std::fill(out, out + T * H, 0.0f);
  for (int64_t r = 0; r < T * K; ++r) {
    int64_t pair = perm[r];
    float w = weights[pair];
    float *o = out + pairToken<K>(pair) * H;
    for (int64_t i = 0; i < H; ++i)
      o[i] += w * y[r * H + i];
  }
  if (res)
    for (int64_t i = 0; i < T * H; ++i)
      out[i] += res[i];
}

} // namespace moert

#endif // MOERT_KERNELS_H
