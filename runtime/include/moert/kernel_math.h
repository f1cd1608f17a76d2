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

//===----------------------------------------------------------------------===//
// RoPE scaling (transformers' rope_type)
//===----------------------------------------------------------------------===//
//
// transformers' RoPE types change which frequency pair i turns at, and yarn
// also multiplies cos and sin by an attention factor (modeling_rope_utils.py:
// _compute_linear_scaling_rope_parameters, _compute_dynamic_ntk_parameters
// with the dynamic_rope_update decorator, _compute_yarn_parameters,
// _compute_llama3_parameters). transformers computes inv_freq in float32;
// here, as for the default type, it is computed in double (the angle's
// convention above), with the same formula, the same parameters and the
// same positions.

/// transformers' rope_type (`default` is RopeDefault: no scaling).
enum RopeKind : int32_t {
  RopeDefault = 0,
  RopeLinear = 1,
  RopeDynamic = 2,
  RopeYarn = 3,
  RopeLlama3 = 4,
};

/// A RoPE type's parameters as the kernels take them, resolved by the
/// compiler from the IR's `scaling <...>` (ropeYarnRange and
/// ropeYarnAttention below, called at compile time). Fields a kind does not
/// use keep their defaults.
struct RopeScaling {
  int32_t kind = RopeDefault;
  /// linear, dynamic, yarn, llama3: `factor`.
  double factor = 1.0;
  /// yarn: the first pair of the ramp from extrapolation to interpolation
  /// (find_correction_range's low); llama3: `low_freq_factor`.
  double low = 0.0;
  /// yarn: the ramp's end (high, already + 0.001 where it equals low);
  /// llama3: `high_freq_factor`.
  double high = 0.0;
  /// dynamic: `max_position_embeddings`, above which the base grows;
  /// llama3: `original_max_position_embeddings`.
  double context = 0.0;
  /// yarn: the factor of cos and sin (attention_factor); others 1.
  double attention = 1.0;
};

/// pi, as math.pi (not every host library defines M_PI).
#define MOERT_ROPE_PI 3.14159265358979323846

/// yarn's find_correction_dim: the (fractional) pair index whose wavelength
/// makes `rotations` turns over `context` positions.
MOERT_HOST_DEVICE MOERT_INLINE double ropeYarnCorrectionDim(double rotations,
                                                            int64_t d,
                                                            double theta,
                                                            double context) {
  return double(d) * log(context / (rotations * 2.0 * MOERT_ROPE_PI)) /
         (2.0 * log(theta));
}

/// yarn's ramp [low, high] over pair indices from beta_fast, beta_slow and
/// original_max_position_embeddings (find_correction_range: floor and ceil
/// with truncate, clamped to [0, d - 1]; linear_ramp_factor's + 0.001 when
/// the two meet).
MOERT_HOST_DEVICE MOERT_INLINE void
ropeYarnRange(int64_t d, double theta, double betaFast, double betaSlow,
              double originalContext, bool truncate, double &low,
              double &high) {
  low = ropeYarnCorrectionDim(betaFast, d, theta, originalContext);
  high = ropeYarnCorrectionDim(betaSlow, d, theta, originalContext);
  if (truncate)
    low = floor(low), high = ceil(high);
  low = low > 0.0 ? low : 0.0;
  high = high < double(d - 1) ? high : double(d - 1);
  if (low == high)
    high += 0.001;
}

/// yarn's get_mscale: 1 for scale <= 1, else 0.1 * mscale * ln(scale) + 1.
MOERT_HOST_DEVICE MOERT_INLINE double ropeYarnMscale(double scale,
                                                     double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * log(scale) + 1.0;
}

/// yarn's attention factor when config.json gives none: get_mscale(factor,
/// mscale) / get_mscale(factor, mscale_all_dim) when both are given and
/// non-zero, else get_mscale(factor).
MOERT_HOST_DEVICE MOERT_INLINE double
ropeYarnAttention(double factor, double mscale, double mscaleAllDim) {
  if (mscale != 0.0 && mscaleAllDim != 0.0)
    return ropeYarnMscale(factor, mscale) /
           ropeYarnMscale(factor, mscaleAllDim);
  return ropeYarnMscale(factor, 1.0);
}

/// The sequence length dynamic scaling sees in a forward call of `n` tokens
/// at positions `pos`: max(pos) + 1, the last position + 1 since a call's
/// positions are consecutive (program.h's forward contract).
MOERT_HOST_DEVICE MOERT_INLINE int64_t ropeSeqLen(const int32_t *pos,
                                                  int64_t n) {
  return n > 0 ? int64_t(pos[n - 1]) + 1 : 0;
}

/// inv_freq of pair i of a head of D under `s`; seqLen (ropeSeqLen) matters
/// only to dynamic.
MOERT_HOST_DEVICE MOERT_INLINE double ropeScaledInvFreq(double theta, int64_t i,
                                                        int64_t d,
                                                        const RopeScaling &s,
                                                        int64_t seqLen) {
  switch (s.kind) {
  case RopeLinear:
    return ropeInvFreq(theta, i, d) / s.factor;
  case RopeDynamic: {
    // dynamic_rope_update: the default frequencies up to
    // max_position_embeddings, then the NTK base of the call's length.
    if (double(seqLen) <= s.context)
      return ropeInvFreq(theta, i, d);
    double base =
        theta * pow(s.factor * double(seqLen) / s.context - (s.factor - 1.0),
                    double(d) / double(d - 2));
    return ropeInvFreq(base, i, d);
  }
  case RopeYarn: {
    // Pairs before `low` (the fast ones) extrapolate: they keep their
    // frequency; pairs after `high` interpolate: frequency / factor; a
    // linear ramp between.
    double extrapolated = ropeInvFreq(theta, i, d);
    double ramp = (double(i) - s.low) / (s.high - s.low);
    ramp = ramp < 0.0 ? 0.0 : ramp > 1.0 ? 1.0 : ramp;
    return extrapolated / s.factor * ramp + extrapolated * (1.0 - ramp);
  }
  case RopeLlama3: {
    // Wavelengths shorter than original / high_freq_factor keep their
    // frequency, longer than original / low_freq_factor divide it by
    // factor, and those between blend the two.
    double f = ropeInvFreq(theta, i, d);
    double wavelen = 2.0 * MOERT_ROPE_PI / f;
    if (wavelen < s.context / s.high)
      return f;
    if (wavelen > s.context / s.low)
      return f / s.factor;
    double smooth = (s.context / wavelen - s.low) / (s.high - s.low);
    return (1.0 - smooth) * f / s.factor + smooth * f;
  }
  default:
    return ropeInvFreq(theta, i, d);
  }
}

/// The cosine and sine of pos * invFreq times `attention` (yarn's factor),
/// as floats.
MOERT_HOST_DEVICE MOERT_INLINE void ropeScaledCosSin(int64_t pos,
                                                     double invFreq,
                                                     double attention, float &c,
                                                     float &s) {
  double a = double(pos) * invFreq;
#ifdef __CUDA_ARCH__
  double sd, cd;
  sincos(a, &sd, &cd);
  c = float(cd * attention), s = float(sd * attention);
#else
  c = float(cos(a) * attention), s = float(sin(a) * attention);
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

/// Expert parallelism (moe-shard-experts): the first expert of rank r (r =
/// R: E), E / R experts a rank and the first E % R ranks one more.
template <int64_t E, int64_t R>
MOERT_HOST_DEVICE constexpr int64_t epFirst(int64_t r) {
  return r * (E / R) + (r < E % R ? r : E % R);
}

/// The rank that holds expert e.
template <int64_t E, int64_t R>
MOERT_HOST_DEVICE MOERT_INLINE int64_t epOwner(int64_t e) {
  int64_t r = 0;
  while (epFirst<E, R>(r + 1) <= e)
    ++r;
  return r;
}

/// The capacity of each expert in a call of T tokens: ceil(factor * T * K /
/// E), which is at least 1 for any factor > 0 (a factor so small that the
/// product underflows to 0 counts as 1) and which no expert could exceed
/// past T (one pair per token), so it is clamped to [1, T]: huge factors
/// mean no drop, never an overflow.
template <int64_t E, int64_t K>
MOERT_HOST_DEVICE MOERT_INLINE int64_t expertCapacityOf(double factor,
                                                        int64_t T) {
  double c = ceil(factor * double(T) * double(K) / double(E));
  return c >= double(T) ? T : c < 1.0 ? 1 : int64_t(c);
}

/// moe.expert_capacity over T tokens' K choices: expert e keeps at most
/// expertCapacityOf(factor, T) pairs, every token's first choice (in token
/// order) before any second choice, and so on; a pair over the capacity
/// gets index -1 and weight 0 in keptIdx / keptW. Safe in place (each pair
/// is read before it is written). Returns the number dropped.
template <int64_t E, int64_t K>
MOERT_HOST_DEVICE inline int64_t
capacityDrop(const float *weights, const int32_t *indices, double factor,
             int64_t T, float *keptW, int32_t *keptIdx) {
  const int64_t capacity = expertCapacityOf<E, K>(factor, T);
  int64_t used[E] = {}, dropped = 0;
  for (int64_t j = 0; j < K; ++j)
    for (int64_t t = 0; t < T; ++t) {
      int64_t i = t * K + j;
      int32_t e = indices[i];
      float w = weights[i];
      if (e >= 0 && e < E) {
        if (used[e] < capacity) {
          ++used[e];
        } else {
          e = -1;
          w = 0.0f;
          ++dropped;
        }
      }
      keptIdx[i] = e;
      keptW[i] = w;
    }
  return dropped;
}

} // namespace moert

#endif // MOERT_KERNEL_MATH_H
