//===- kernel_math.h - Formulas of the CPU and CUDA kernels -----*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// The model's per-element formulas, written once for both kernel libraries:
// the CPU kernels (kernels.h) and the CUDA kernels (cuda/kernels.cuh, which
// nvcc compiles for the device and the tests' emulator, test/cuda-emu,
// compiles as plain C++). Everything here is a small inline function or
// template marked MOERT_HOST_DEVICE, which is `__host__ __device__` under
// nvcc and nothing in a host compiler (the emulator included: it is not
// __CUDACC__, and it defines __host__ and __device__ away anyway).
//
// Only <math.h>'s float and double functions are used (expf, pow, sin, cos),
// which are the same functions as <cmath>'s std:: overloads on the host and
// CUDA's device math on the GPU, so moving a formula here changes no result.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_KERNEL_MATH_H
#define MOERT_KERNEL_MATH_H

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define MOERT_HOST_DEVICE __host__ __device__
#define MOERT_INLINE __forceinline__
#else
#define MOERT_HOST_DEVICE
#define MOERT_INLINE inline __attribute__((always_inline))
#endif

namespace moert {

//===----------------------------------------------------------------------===//
// Activations and normalisation
//===----------------------------------------------------------------------===//

/// silu(g) * u = g / (1 + e^-g) * u: SwiGLU's gate times its up projection.
MOERT_HOST_DEVICE MOERT_INLINE float siluTimes(float g, float u) {
  return g / (1.0f + expf(-g)) * u;
}

/// The logistic function, a router's sigmoid score.
MOERT_HOST_DEVICE MOERT_INLINE float sigmoid(float x) {
  return 1.0f / (1.0f + expf(-x));
}

/// RMSNorm's factor 1 / sqrt(mean(x^2) + eps) from the sum of squares `ss`
/// of `n` elements, in f32.
MOERT_HOST_DEVICE MOERT_INLINE float rmsNormScale(float ss, int64_t n,
                                                  float eps) {
  return 1.0f / sqrtf(ss / n + eps);
}

//===----------------------------------------------------------------------===//
// RoPE, rotate-half convention
//===----------------------------------------------------------------------===//
//
// Element i of a head of D (i < D / 2) is paired with element i + D / 2 (or,
// interleaved, element 2i with 2i + 1) and the pair is rotated by the angle pos
// * theta^(-2i / D), computed in double and rounded to float only as its cosine
// and sine.

/// inv_freq_i = theta^(-2i / D) of pair i of a head of D.
MOERT_HOST_DEVICE MOERT_INLINE double ropeInvFreq(double theta, int64_t i,
                                                  int64_t d) {
  return pow(theta, -2.0 * double(i) / double(d));
}

/// The cosine and sine of the angle pos * invFreq, as floats.
MOERT_HOST_DEVICE MOERT_INLINE void ropeCosSin(int64_t pos, double invFreq,
                                               float &c, float &s) {
  double a = double(pos) * invFreq;
#ifdef __CUDA_ARCH__
  double sd, cd;
  sincos(a, &sd, &cd);
  c = float(cd), s = float(sd);
#else
  c = float(cos(a)), s = float(sin(a));
#endif
}

/// The pair (x1, x2) = (element i, element i + D / 2) rotated by the angle
/// whose cosine and sine are c and s.
MOERT_HOST_DEVICE MOERT_INLINE void ropeRotate(float x1, float x2, float c,
                                               float s, float &o1, float &o2) {
  o1 = x1 * c - x2 * s;
  o2 = x2 * c + x1 * s;
}

/// The elements of pair i of a head of D: (i, i + D / 2) (rotate-half), or
/// (2i, 2i + 1) with Interleaved (the GPT-J / llama.cpp pairing, for q and
/// k rows stored permuted as GGUF files store them: the same rotation of
/// the same pairs, so attention scores are the same).
template <int64_t D, bool Interleaved = false>
MOERT_HOST_DEVICE MOERT_INLINE void ropePairElements(int64_t i, int64_t &a,
                                                     int64_t &b) {
  a = Interleaved ? 2 * i : i;
  b = Interleaved ? 2 * i + 1 : i + D / 2;
}

/// Pair i of the head at `in` (of D elements) rotated into the head at `out`
/// (which may be `in`).
template <int64_t D, bool Interleaved = false>
MOERT_HOST_DEVICE MOERT_INLINE void ropeHeadPair(const float *in, float *out,
                                                 int64_t i, float c, float s) {
  int64_t a, b;
  ropePairElements<D, Interleaved>(i, a, b);
  ropeRotate(in[a], in[b], c, s, out[a], out[b]);
}

//===----------------------------------------------------------------------===//
// Attention over a ring-buffer KV cache
//===----------------------------------------------------------------------===//

/// The first key position a query at position p sees: causal, within a
/// sliding window of Window keys (Window > 0) and still held by a ring of
/// Cap slots (position j lives in slot j % Cap).
template <int64_t Cap, int64_t Window, typename I>
MOERT_HOST_DEVICE MOERT_INLINE I firstKey(I p) {
  I first = Window > 0 && p - I(Window) + 1 > 0 ? p - I(Window) + 1 : 0;
  return first > p - I(Cap) + 1 ? first : p - I(Cap) + 1;
}

//===----------------------------------------------------------------------===//
// Routing and the fused expert path's index math
//===----------------------------------------------------------------------===//

/// One token's routing from its E logits: scores (softmax over all E in f32,
/// or sigmoid), the top K (descending; ties to the lower index), optionally
/// renormalised to sum to one. Writes K weights and expert indices.
template <int64_t E, int64_t K, bool Softmax, bool Renormalize>
MOERT_HOST_DEVICE MOERT_INLINE void
routeToken(const float *logits, float *weights, int32_t *indices) {
  float p[E];
  if (Softmax) {
    float m = logits[0], total = 0;
    for (int64_t e = 1; e < E; ++e)
      if (m < logits[e])
        m = logits[e];
    for (int64_t e = 0; e < E; ++e)
      total += p[e] = expf(logits[e] - m);
    for (int64_t e = 0; e < E; ++e)
      p[e] /= total;
  } else {
    for (int64_t e = 0; e < E; ++e)
      p[e] = sigmoid(logits[e]);
  }
  bool taken[E];
  for (int64_t e = 0; e < E; ++e)
    taken[e] = false;
  float sum = 0;
  for (int64_t j = 0; j < K; ++j) {
    int64_t best = -1;
    for (int64_t e = 0; e < E; ++e)
      if (!taken[e] && (best < 0 || p[e] > p[best]))
        best = e;
    taken[best] = true;
    indices[j] = int32_t(best);
    sum += weights[j] = p[best];
  }
  if (Renormalize)
    for (int64_t j = 0; j < K; ++j)
      weights[j] /= sum;
}

/// The fused expert path numbers a token's K choices as pairs t * K + j;
/// the expert-sorted batch lists pairs (perm[r]) grouped by expert.
template <int64_t K, typename I>
MOERT_HOST_DEVICE MOERT_INLINE I pairToken(I pair) {
  return pair / I(K);
}
template <int64_t K, typename I>
MOERT_HOST_DEVICE MOERT_INLINE I pairChoice(I pair) {
  return pair % I(K);
}

/// Per-expert row counts to row offsets, in place: on entry count[e + 1] is
/// expert e's number of rows (count[0] = 0); on return count[e] is its first
/// row and count[E] the total.
template <typename I>
MOERT_HOST_DEVICE MOERT_INLINE void countsToOffsets(I *count, int64_t experts) {
  for (int64_t e = 0; e < experts; ++e)
    count[e + 1] += count[e];
}

} // namespace moert

#endif // MOERT_KERNEL_MATH_H
