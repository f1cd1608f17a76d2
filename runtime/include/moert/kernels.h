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
#include "moert/quant.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define MOERT_AVX2 1
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) &&  \
    defined(__AVX512VNNI__)
#define MOERT_AVX512VNNI 1
#endif
#endif
// Inlines a lambda into its caller (GCC and Clang), so the kernels' small
// step lambdas keep their accumulators in registers.
#define MOERT_INLINE_LAMBDA __attribute__((always_inline))

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
#ifdef MOERT_AVX512VNNI
// 16 half-width weights to f32 in one instruction. Decode's f16 dot
// product is bound by these conversions in cache: from L3 (quant_gemv
// `cache`), 2 threads, mini's shapes ran at 98-106 GB/s of f16 weights
// through 16-lane conversions against 78-101 through 8-lane ones, and from
// memory no slower (bench/RESULTS.md, issue 12). (The masked forms with
// every lane set compile to the unmasked instructions, whose intrinsics GCC
// 12 warns about: an undefined pass-through operand.)
inline __m512 load16(const float *p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const f16 *p) {
  return _mm512_mask_cvtph_ps(
      _mm512_setzero_ps(), __mmask16(0xffff),
      _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
}
inline __m512 load16(const bf16 *p) {
  const __m512i zero = _mm512_setzero_si512();
  __m512i wide = _mm512_mask_cvtepu16_epi32(
      zero, __mmask16(0xffff),
      _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
  return _mm512_castsi512_ps(
      _mm512_mask_slli_epi32(zero, __mmask16(0xffff), wide, 16));
}
#endif
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

//===----------------------------------------------------------------------===//
// Block-quantised weights (quant.h): q8_0, q4_0, q4_1
//===----------------------------------------------------------------------===//
//
// Decode (fewer than four tokens) streams each weight byte once, so it is
// bound by memory bandwidth, and the work per block is what decides whether
// it keeps up with it. Two ways of doing a block are implemented (so the
// benchmark, bench/quant_gemv.cpp, can compare them) and `linear` picks the
// faster per format (kDecodeInt8):
//  - int8: each token's activations are quantised once per call to int8 per
//    block of 32 (scale amax / 127, as q8_0), and a block is an exact int32
//    dot product (maddubs + madd, or VNNI's dpbusd) scaled once to f32. The
//    q4 nibbles are used unsigned; their offset (-8 for q4_0, the min m for
//    q4_1) is applied with the block's sum of the activations, a per-token
//    constant, so it costs one scalar FMA per block and row.
//  - f32: each block is dequantised to f32 in registers and FMAed against
//    the f32 activations; exact up to f32 rounding.
// The int8 path adds the error of rounding the activations (at most half a
// step, amax / 254, per element); the tests bound it.
//
// Prefill (four tokens or more) is compute-bound: a panel of weight rows x
// a chunk of K is dequantised to f32 on the stack and the 4x3 FMA kernel of
// the float formats runs over it for all tokens, so the dequantisation is
// paid once per weight element per call.

namespace qk {

/// Blocks of W per row of K elements.
template <int64_t K> constexpr int64_t blocks() {
  static_assert(K % kQuantBlock == 0, "a quantised row is whole blocks");
  return K / kQuantBlock;
}

inline float scale(const q8_0 &b) { return toFloat(f16{b.d}); }
inline float scale(const q4_0 &b) { return toFloat(f16{b.d}); }
inline float scale(const q4_1 &b) { return toFloat(f16{b.d}); }

/// Element i of a block (32 elements, or a k-quant's 256) as the scalar
/// definition (quant.h) has it.
template <typename W> inline void dequantBlock(const W &b, float *out) {
  for (int i = 0; i < int(IsQuant<W>::kBlock); ++i)
    out[i] = dequant(b, i);
}

/// One token's activations as int8 blocks: x[i] ~ d[b] * q[i] with
/// d[b] = amax / 127 of block b (llama.cpp's q8_0 rounding, to even);
/// s[b] = d[b] * Σ q over the block, what the q4 offsets multiply.
/// A block holding a NaN or an infinity gets d[b] = NaN (or inf) and q = 0,
/// so that the non-finite value reaches the outputs it feeds, as it does in
/// f32, rather than being dropped by max (which ignores NaN) or turned into
/// a saturated byte.
inline void quantizeActs(const float *x, int64_t blocks, int8_t *q, float *d,
                         float *s) {
  for (int64_t b = 0; b < blocks; ++b) {
    const float *xb = x + b * 32;
#ifdef MOERT_AVX2
    __m256 v[4];
    __m256 sign = _mm256_set1_ps(-0.0f), m = _mm256_setzero_ps();
    __m256 nan = _mm256_setzero_ps();
    for (int j = 0; j < 4; ++j) {
      v[j] = _mm256_loadu_ps(xb + 8 * j);
      m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[j]));
      nan = _mm256_or_ps(nan, _mm256_cmp_ps(v[j], v[j], _CMP_UNORD_Q));
    }
    __m128 h =
        _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    float amax = _mm256_movemask_ps(nan) ? NAN : _mm_cvtss_f32(h);
    float db = amax / 127, id = db != 0 ? 1 / db : 0;
    if (!std::isfinite(db)) {
      std::fill(q + b * 32, q + b * 32 + 32, int8_t(0));
      d[b] = s[b] = db;
      continue;
    }
    __m256 idv = _mm256_set1_ps(id);
    __m256i i[4];
    for (int j = 0; j < 4; ++j)
      i[j] = _mm256_cvtps_epi32(_mm256_mul_ps(v[j], idv));
    __m256i sum = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]),
                                   _mm256_add_epi32(i[2], i[3]));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum),
                               _mm256_extracti128_si256(sum, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
    // Pack to bytes; the packs interleave 128-bit lanes, which the
    // permutation undoes.
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]),
                                   _mm256_packs_epi32(i[2], i[3]));
    p = _mm256_permutevar8x32_epi32(p,
                                    _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(q + b * 32), p);
    d[b] = db;
    s[b] = db * float(_mm_cvtsi128_si32(s4));
#else
    float amax = 0;
    for (int i = 0; i < 32; ++i)
      amax = std::isnan(xb[i]) || std::isnan(amax)
                 ? NAN
                 : std::max(amax, std::fabs(xb[i]));
    float db = amax / 127, id = db != 0 ? 1 / db : 0;
    if (!std::isfinite(db)) {
      std::fill(q + b * 32, q + b * 32 + 32, int8_t(0));
      d[b] = s[b] = db;
      continue;
    }
    int sum = 0;
    for (int i = 0; i < 32; ++i)
      sum += q[b * 32 + i] = int8_t(std::nearbyint(xb[i] * id));
    d[b] = db;
    s[b] = db * float(sum);
#endif
  }
}

#ifdef MOERT_AVX2
/// A block's 32 weight bytes in element order: q8_0's signed values, or the
/// q4 formats' nibbles (0..15, unsigned).
MOERT_INLINE __m256i nibbles(const uint8_t *qs) {
  __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i *>(qs));
  __m256i both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}
MOERT_INLINE __m256i weightBytes(const q8_0 &b) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(b.qs));
}
MOERT_INLINE __m256i weightBytes(const q4_0 &b) { return nibbles(b.qs); }
MOERT_INLINE __m256i weightBytes(const q4_1 &b) { return nibbles(b.qs); }

/// Σ u[i] * x[i] over 32 bytes as eight int32 sums of four, u unsigned.
MOERT_INLINE __m256i dotU8(__m256i u, __m256i x) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, x);
#elif defined(__AVXVNNI__)
  return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, x);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1));
#endif
}

/// Σ w[i] * x[i] over a block as eight int32 partial sums, exactly: w signed
/// (q8_0; moved onto x's sign so maddubs sees an unsigned operand) or
/// unsigned nibbles. maddubs cannot saturate here: |pair| <= 2*128*127.
template <bool Signed> MOERT_INLINE __m256i blockDot(__m256i w, __m256i x) {
  if (Signed)
    return dotU8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
  return dotU8(w, x);
}

/// The 32 weight bytes as four vectors of eight floats, before the scale:
/// q8_0's values, q4_0's nibble - 8, q4_1's nibble.
template <typename W> MOERT_INLINE void blockFloats(const W &b, __m256 *f) {
  __m256i v = weightBytes(b);
  if (std::is_same<W, q4_0>::value)
    v = _mm256_sub_epi8(v, _mm256_set1_epi8(8));
  __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
  f[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
  f[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
  f[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
  f[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
}
#endif

/// The scalar offset term of a block against a token, per unit of the
/// activations' block sum: 0 for q8_0, -8 d for q4_0, m for q4_1.
MOERT_INLINE float offsetTerm(const q8_0 &, float) { return 0; }
MOERT_INLINE float offsetTerm(const q4_0 &, float d) { return -8 * d; }
MOERT_INLINE float offsetTerm(const q4_1 &b, float) {
  return toFloat(f16{b.m});
}

#ifdef MOERT_AVX512VNNI
// The AVX-512 int8 row kernel takes two blocks per 512-bit vector and eight
// blocks per step, so the per-block scalar work of the 256-bit kernel (an
// f16 scale converted, multiplied and broadcast, a scalar offset FMA) is
// done eight blocks at a time in vectors.

/// The low 128 and 256 bits of a 512-bit vector. (GCC 12's
/// _mm512_castsi512_si128/_si256 extract with an "undefined" source that
/// -Wmaybe-uninitialized then reports; the shuffles compile to the same
/// register rename.)
MOERT_INLINE __m128i low128(__m512i v) {
  using V8 = long long __attribute__((vector_size(64)));
  return __m128i(__builtin_shufflevector(V8(v), V8(v), 0, 1));
}
MOERT_INLINE __m256i low256(__m512i v) {
  using V8 = long long __attribute__((vector_size(64)));
  return __m256i(__builtin_shufflevector(V8(v), V8(v), 0, 1, 2, 3));
}

/// The f16 scales (and q4_1's minimums) of eight consecutive blocks as
/// floats, gathered with word permutes from the bytes the blocks span
/// rather than eight scalar loads.
MOERT_INLINE void scales8(const q4_0 *w, __m256 &d, __m256 &) {
  // Eight 18-byte blocks: the scales are words 0, 9, ..., 63 of the first
  // 128 bytes.
  const char *p = reinterpret_cast<const char *>(w);
  __m512i a = _mm512_loadu_si512(p), b = _mm512_loadu_si512(p + 64);
  __m512i idx =
      _mm512_setr_epi32(9 << 16, 27 << 16 | 18, 45 << 16 | 36, 63 << 16 | 54, 0,
                        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  __m512i h = _mm512_permutex2var_epi16(a, idx, b);
  d = _mm256_cvtph_ps(low128(h));
}
MOERT_INLINE void scales8(const q8_0 *w, __m256 &d, __m256 &) {
  // Eight 34-byte blocks: words 0, 17, 34, 51 of the first 128 bytes and
  // 68, ..., 119 (4, 21, 38, 55 of the next 128).
  const char *p = reinterpret_cast<const char *>(w);
  __m512i idx = _mm512_setr_epi32(17 << 16, 51 << 16 | 34, 0, 0, 0, 0, 0, 0, 0,
                                  0, 0, 0, 0, 0, 0, 0);
  __m512i lo = _mm512_permutex2var_epi16(_mm512_loadu_si512(p), idx,
                                         _mm512_loadu_si512(p + 64));
  __m512i hi = _mm512_permutex2var_epi16(
      _mm512_loadu_si512(p + 128), _mm512_add_epi16(idx, _mm512_set1_epi16(4)),
      _mm512_loadu_si512(p + 192));
  __m128i h = _mm_unpacklo_epi64(low128(lo), low128(hi));
  d = _mm256_cvtph_ps(h);
}
MOERT_INLINE void scales8(const q4_1 *w, __m256 &d, __m256 &m) {
  // Eight 20-byte blocks: d and m are words 10j and 10j + 1; blocks 0-6
  // lie in the first 128 bytes, block 7 (words 70, 71) in bytes 96-159.
  const char *p = reinterpret_cast<const char *>(w);
  __m512i idx = _mm512_setr_epi32(
      10 << 16, 30 << 16 | 20, 50 << 16 | 40, 22 << 16 | 60, 11 << 16 | 1,
      31 << 16 | 21, 51 << 16 | 41, 23 << 16 | 61, 0, 0, 0, 0, 0, 0, 0, 0);
  __m512i h = _mm512_permutex2var_epi16(_mm512_loadu_si512(p), idx,
                                        _mm512_loadu_si512(p + 64));
  h = _mm512_mask_permutexvar_epi16(h, 0x8080, idx, _mm512_loadu_si512(p + 96));
  __m256i hh = low256(h);
  d = _mm256_cvtph_ps(_mm256_castsi256_si128(hh));
  m = _mm256_cvtph_ps(_mm256_extracti128_si256(hh, 1));
}

/// Blocks [0, n8) of one token's int8 activations (n8 a multiple of 8)
/// rearranged in place for the q4 formats: the two middle 16-byte quarters
/// of each block pair swap (block 2j's elements 0-15, 2j+1's 0-15, then
/// 2j's 16-31, 2j+1's 16-31), so that one 256-bit load of two blocks' bytes
/// gives both blocks' low nibbles, and one shift both high nibbles.
template <typename W> inline void pairActs(int8_t *q, int64_t n8) {
  if (std::is_same<W, q8_0>::value || IsKQuant<W>::value)
    return;
  for (int64_t b = 0; b < n8; b += 2) {
    __m128i *c = reinterpret_cast<__m128i *>(q + b * 32);
    __m128i t = _mm_loadu_si128(c + 1);
    _mm_storeu_si128(c + 1, _mm_loadu_si128(c + 2));
    _mm_storeu_si128(c + 2, t);
  }
}

/// int8Row's AVX-512 form over blocks [0, n8) (activations as pairActs
/// left them), eight blocks a step: each token's sum, still spread over the
/// lanes of sum[t] (the caller does the horizontal sums four rows at once).
/// Two blocks' int32 partial sums share a 256-bit vector, so the
/// conversion, the scale permute and the FMA are paid once per two blocks:
/// the q4 formats chain the low and the high nibbles' dpbusd into the same
/// lanes; q8_0 adds two blocks' lanes pairwise. (Zen 4 splits 512-bit ops
/// into two 256-bit halves, so wider vectors would not do fewer.)
template <typename W, int NT>
MOERT_INLINE void int8Row512(const W *w, int64_t n8, int64_t nb,
                             const int8_t *q, const float *d, const float *s,
                             __m256 *sum) {
  constexpr bool Q8 = std::is_same<W, q8_0>::value;
  auto load = [](const void *p) MOERT_INLINE_LAMBDA {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p));
  };
  // Four accumulators per token so the FMA chains are not latency-bound;
  // off: Σ over blocks of (q4_0, q8_0) dw * s or (q4_1) m * s.
  __m256 acc[NT][4], off[NT];
#pragma GCC unroll 4
  for (int t = 0; t < NT; ++t) {
    off[t] = _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j)
      acc[t][j] = _mm256_setzero_ps();
  }
  for (int64_t b = 0; b < n8; b += 8) {
    __m256 dw, mw;
    scales8(w + b, dw, mw);
    __m256 sc[NT];
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t) {
      sc[t] = _mm256_mul_ps(dw, _mm256_loadu_ps(d + t * nb + b));
      off[t] = _mm256_fmadd_ps(std::is_same<W, q4_1>::value ? mw : dw,
                               _mm256_loadu_ps(s + t * nb + b), off[t]);
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const W *w0 = w + b + 2 * j;
      const int8_t *x0 = q + (b + 2 * j) * 32;
      if constexpr (Q8) {
        // dpbusd multiplies unsigned by signed bytes: the weights biased by
        // 128 (w ^ 0x80 = w + 128) give Σ w x + 128 Σ x, whose second term
        // the offset (-128 dw s) takes back. Exact in int32; in f32 the
        // term adds one rounding of a sum of the size of Σ w x, which
        // measured 11% faster than undoing it in the integers (one more
        // load per block and token) and 25% faster than moving w's sign
        // onto x.
        const __m256i bias = _mm256_set1_epi8(char(0x80));
        __m256i u0 = _mm256_xor_si256(load(w0[0].qs), bias);
        __m256i u1 = _mm256_xor_si256(load(w0[1].qs), bias);
        // After hadd, lanes 0, 1, 4, 5 hold block 2j, 2, 3, 6, 7 2j + 1.
        __m256i idx = _mm256_setr_epi32(2 * j, 2 * j, 2 * j + 1, 2 * j + 1,
                                        2 * j, 2 * j, 2 * j + 1, 2 * j + 1);
#pragma GCC unroll 4
        for (int t = 0; t < NT; ++t) {
          const int8_t *x = x0 + t * nb * 32;
          __m256i p0 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u0, load(x));
          __m256i p1 =
              _mm256_dpbusd_epi32(_mm256_setzero_si256(), u1, load(x + 32));
          acc[t][j] =
              _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_hadd_epi32(p0, p1)),
                              _mm256_permutevar8x32_ps(sc[t], idx), acc[t][j]);
        }
      } else {
        // Nibbles, unsigned: the q4_0 offset of -8 is in `off`.
        __m256i y = _mm256_inserti128_si256(
            _mm256_castsi128_si256(
                _mm_loadu_si128(reinterpret_cast<const __m128i *>(w0[0].qs))),
            _mm_loadu_si128(reinterpret_cast<const __m128i *>(w0[1].qs)), 1);
        const __m256i m = _mm256_set1_epi8(0x0f);
        __m256i lo = _mm256_and_si256(y, m);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(y, 4), m);
        // Lanes 0-3 hold block 2j, 4-7 2j + 1.
        __m256i idx = _mm256_setr_epi32(2 * j, 2 * j, 2 * j, 2 * j, 2 * j + 1,
                                        2 * j + 1, 2 * j + 1, 2 * j + 1);
#pragma GCC unroll 4
        for (int t = 0; t < NT; ++t) {
          const int8_t *x = x0 + t * nb * 32;
          __m256i p = _mm256_dpbusd_epi32(
              _mm256_dpbusd_epi32(_mm256_setzero_si256(), lo, load(x)), hi,
              load(x + 32));
          acc[t][j] =
              _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                              _mm256_permutevar8x32_ps(sc[t], idx), acc[t][j]);
        }
      }
    }
  }
#pragma GCC unroll 4
  for (int t = 0; t < NT; ++t) {
    // The offsets: q4_0's nibbles are value + 8, q8_0's biased bytes value
    // + 128 (see above), q4_1's minimum is m.
    __m256 o = std::is_same<W, q4_1>::value
                   ? off[t]
                   : _mm256_mul_ps(off[t], _mm256_set1_ps(Q8 ? -128 : -8));
    sum[t] =
        _mm256_add_ps(_mm256_add_ps(acc[t][0], acc[t][1]),
                      _mm256_add_ps(_mm256_add_ps(acc[t][2], acc[t][3]), o));
  }
}

/// The horizontal sums of four vectors: [Σa, Σb, Σc, Σd].
MOERT_INLINE __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
  __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

#endif

// The row kernels below read one weight row at a time: streaming two rows
// interleaved measured 2-2.5x slower from memory on Zen 4 (the hardware
// prefetcher follows one sequential stream per thread best). Each keeps two
// sets of accumulators, for even and odd blocks, so the FMA chains (vector
// and the scalar offset term) are not latency-bound.

#ifdef MOERT_AVX2
/// Runs step(b, acc, off) over blocks [0, nb) on two independent chains of
/// NT vector accumulators and scalar offsets (even blocks on one, odd on
/// the other), so the FMAs are not latency-bound; out[t] = the chains' sum.
template <int NT, typename Step>
MOERT_INLINE void twoChains(int64_t nb, const Step &step, float *out) {
  __m256 acc[2][NT];
  float off[2][NT];
#pragma GCC unroll 4
  for (int t = 0; t < NT; ++t)
    acc[0][t] = acc[1][t] = _mm256_setzero_ps(), off[0][t] = off[1][t] = 0;
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    step(b, acc[0], off[0]);
    step(b + 1, acc[1], off[1]);
  }
  if (b < nb)
    step(b, acc[0], off[0]);
#pragma GCC unroll 4
  for (int t = 0; t < NT; ++t)
    out[t] = hsum(_mm256_add_ps(acc[0][t], acc[1][t])) + off[0][t] + off[1][t];
}
#endif

/// One weight row of `nb` blocks against NT tokens' int8 activations (q, d,
/// s of quantizeActs, token t at t * ld blocks): out[t].
template <typename W, int NT>
MOERT_INLINE void int8Row(const W *w, int64_t nb, const int8_t *q,
                          const float *d, const float *s, float *out,
                          int64_t ld = 0) {
  // Token t's activations start at block t * ld (ld = 0: nb).
  if (ld == 0)
    ld = nb;
#ifdef MOERT_AVX2
  constexpr bool Signed = std::is_same<W, q8_0>::value;
  auto step = [&](int64_t b, __m256 *a, float *o) MOERT_INLINE_LAMBDA {
    const W &blk = w[b];
    float dw = scale(blk);
    __m256i wv = weightBytes(blk);
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t) {
      __m256i xv = _mm256_loadu_si256(
          reinterpret_cast<const __m256i *>(q + (t * ld + b) * 32));
      __m256 p = _mm256_cvtepi32_ps(blockDot<Signed>(wv, xv));
      a[t] = _mm256_fmadd_ps(p, _mm256_set1_ps(dw * d[t * ld + b]), a[t]);
      if (!Signed)
        o[t] += offsetTerm(blk, dw) * s[t * ld + b];
    }
  };
  twoChains<NT>(nb, step, out);
#else
  for (int t = 0; t < NT; ++t) {
    float sum = 0;
    for (int64_t b = 0; b < nb; ++b) {
      float dw = scale(w[b]);
      int32_t p = 0;
      for (int i = 0; i < 32; ++i) {
        int wi = std::is_same<W, q8_0>::value
                     ? int(reinterpret_cast<const int8_t *>(w[b].qs)[i])
                     : nibble(reinterpret_cast<const uint8_t *>(w[b].qs), i);
        p += wi * q[(t * ld + b) * 32 + i];
      }
      sum +=
          dw * d[t * ld + b] * float(p) + offsetTerm(w[b], dw) * s[t * ld + b];
    }
    out[t] = sum;
  }
#endif
}

/// One weight row of `nb` blocks against NT tokens' f32 activations (token
/// t at x + t * K), dequantising on the fly; `xs` holds each token's block
/// sums (read for q4_1 only). out[t].
template <typename W, int NT>
MOERT_INLINE void f32Row(const W *w, int64_t nb, const float *x,
                         const float *xs, float *out) {
  const int64_t K = nb * 32;
#ifdef MOERT_AVX2
  constexpr bool Min = std::is_same<W, q4_1>::value;
  auto step = [&](int64_t b, __m256 *a, float *o) MOERT_INLINE_LAMBDA {
    const W &blk = w[b];
    __m256 f[4];
    blockFloats(blk, f);
    __m256 dv = _mm256_set1_ps(scale(blk));
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t) {
      const float *xb = x + t * K + b * 32;
      __m256 p = _mm256_mul_ps(_mm256_loadu_ps(xb), f[0]);
      p = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 8), f[1], p);
      p = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 16), f[2], p);
      p = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 24), f[3], p);
      a[t] = _mm256_fmadd_ps(p, dv, a[t]);
      if (Min)
        o[t] += offsetTerm(blk, 0) * xs[t * nb + b];
    }
  };
  twoChains<NT>(nb, step, out);
#else
  (void)xs;
  for (int t = 0; t < NT; ++t) {
    float sum = 0, f[32];
    for (int64_t b = 0; b < nb; ++b) {
      dequantBlock(w[b], f);
      for (int i = 0; i < 32; ++i)
        sum += x[t * K + b * 32 + i] * f[i];
    }
    out[t] = sum;
  }
#endif
}

//===----------------------------------------------------------------------===//
// k-quants (q4_K, q5_K, q6_K): 256-element super-blocks
//===----------------------------------------------------------------------===//
//
// The int8 activations of quantizeActs (one scale per 32) line up with the
// formats' sub-blocks: q4_K's (and q5_K's) eight sub-blocks of 32 are one
// activation block each, Σ d sc dx Σ(q qx) - dmin m s_b; q6_K's sixteen of 16
// are two per activation block, d dx (sc_a Σ_a (q - 32) qx + sc_b Σ_b (q - 32)
// qx). The integer sums are exact; the f32 scaling is done eight sub-blocks per
// vector (two horizontal adds fold four activation blocks' partial sums
// into one vector of sub-block sums).

/// q4_K's (or q5_K's) eight 6-bit scales then eight mins, as bytes
/// (llama.cpp's utmp unpacking of get_scale_min_k4).
template <typename W> MOERT_INLINE void scalesK4(const W &b, uint8_t *out) {
  uint32_t u[4];
  std::memcpy(u, b.scales, 12);
  const uint32_t m1 = 0x3f3f3f3f, m2 = 0x0f0f0f0f, m3 = 0x03030303;
  u[3] = ((u[2] >> 4) & m2) | (((u[1] >> 6) & m3) << 4);
  const uint32_t mins = u[1] & m1;
  u[1] = (u[2] & m2) | (((u[0] >> 6) & m3) << 4);
  u[2] = mins;
  u[0] &= m1;
  std::memcpy(out, u, 16);
}

#ifdef MOERT_AVX2
/// q4_K's (or q5_K's, with their fifth bits from qh) 256 values as eight
/// vectors of 32 unsigned bytes, sub-block j in u[j].
template <typename W> MOERT_INLINE void k4Bytes(const W &b, __m256i *u) {
  auto load = [](const void *p) MOERT_INLINE_LAMBDA {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p));
  };
  const __m256i m4 = _mm256_set1_epi8(0x0f);
#pragma GCC unroll 4
  for (int il = 0; il < 4; ++il) {
    __m256i y = load(b.qs + 32 * il);
    u[2 * il] = _mm256_and_si256(y, m4);
    u[2 * il + 1] = _mm256_and_si256(_mm256_srli_epi16(y, 4), m4);
  }
  if constexpr (std::is_same<W, q5_K>::value) {
    // Bit j of each qh byte to bit 4 (the 16-bit shifts move no bit that
    // the mask keeps across a byte boundary).
    const __m256i m16 = _mm256_set1_epi8(0x10);
    __m256i h = load(b.qh);
    u[0] =
        _mm256_or_si256(u[0], _mm256_and_si256(_mm256_slli_epi16(h, 4), m16));
    u[1] =
        _mm256_or_si256(u[1], _mm256_and_si256(_mm256_slli_epi16(h, 3), m16));
    u[2] =
        _mm256_or_si256(u[2], _mm256_and_si256(_mm256_slli_epi16(h, 2), m16));
    u[3] =
        _mm256_or_si256(u[3], _mm256_and_si256(_mm256_slli_epi16(h, 1), m16));
    u[4] = _mm256_or_si256(u[4], _mm256_and_si256(h, m16));
    u[5] =
        _mm256_or_si256(u[5], _mm256_and_si256(_mm256_srli_epi16(h, 1), m16));
    u[6] =
        _mm256_or_si256(u[6], _mm256_and_si256(_mm256_srli_epi16(h, 2), m16));
    u[7] =
        _mm256_or_si256(u[7], _mm256_and_si256(_mm256_srli_epi16(h, 3), m16));
  }
}

/// q6_K's 256 values q - 32 (-32..31) as eight vectors of 32 signed bytes,
/// in element order.
MOERT_INLINE void q6Bytes(const q6_K &b, __m256i *v) {
  const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
  const __m256i off = _mm256_set1_epi8(32);
  auto load = [](const void *p) MOERT_INLINE_LAMBDA {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p));
  };
#pragma GCC unroll 2
  for (int n = 0; n < 2; ++n) {
    __m256i l0 = load(b.ql + 64 * n), l1 = load(b.ql + 64 * n + 32);
    __m256i h = load(b.qh + 32 * n);
    v[4 * n + 0] =
        _mm256_or_si256(_mm256_and_si256(l0, m4),
                        _mm256_and_si256(_mm256_slli_epi16(h, 4), m30));
    v[4 * n + 1] =
        _mm256_or_si256(_mm256_and_si256(l1, m4),
                        _mm256_and_si256(_mm256_slli_epi16(h, 2), m30));
    v[4 * n + 2] =
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                        _mm256_and_si256(h, m30));
    v[4 * n + 3] =
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                        _mm256_and_si256(_mm256_srli_epi16(h, 2), m30));
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k)
      v[4 * n + k] = _mm256_sub_epi8(v[4 * n + k], off);
  }
}

/// One k-quant row of `nsb` super-blocks against NT tokens' int8
/// activations (token t at block t * ld): each token's sum, spread over
/// the lanes of sum[t].
template <typename W, int NT>
MOERT_INLINE void kRowSums(const W *w, int64_t nsb, const int8_t *q,
                           const float *d, const float *s, int64_t ld,
                           __m256 *sum) {
  // q4_K or q5_K: unsigned values, a scale and a min per sub-block of 32.
  constexpr bool Q4 =
      std::is_same<W, q4_K>::value || std::is_same<W, q5_K>::value;
  auto load = [](const void *p) MOERT_INLINE_LAMBDA {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p));
  };
  // Two accumulators per token (the two halves of a super-block), and the
  // q4_K minimums' term.
  __m256 acc[NT][2], off[NT];
#pragma GCC unroll 4
  for (int t = 0; t < NT; ++t)
    acc[t][0] = acc[t][1] = off[t] = _mm256_setzero_ps();
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const W &blk = w[sb];
    const int64_t b0 = sb * 8;
    // u[k] (unsigned bytes) against activation block b0 + k; sc0 and sc1
    // the f32 scales of the sub-block sums in the lanes of the folded
    // vectors of blocks 0-3 and 4-7.
    __m256i u[8], sg[8];
    __m256 sc0, sc1, mins;
    if constexpr (Q4) {
      alignas(16) uint8_t sm[16];
      scalesK4(blk, sm);
      __m256 scf =
          _mm256_mul_ps(_mm256_set1_ps(toFloat(f16{blk.d})),
                        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                            reinterpret_cast<const __m128i *>(sm)))));
      mins =
          _mm256_mul_ps(_mm256_set1_ps(toFloat(f16{blk.dmin})),
                        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                            reinterpret_cast<const __m128i *>(sm + 8)))));
      // Folded lanes: blocks [0, 1, 2, 3, 0, 1, 2, 3] (+ 4).
      sc0 = _mm256_permute2f128_ps(scf, scf, 0x00);
      sc1 = _mm256_permute2f128_ps(scf, scf, 0x11);
      k4Bytes(blk, u);
    } else {
      // Folded lanes: sub-blocks [0, 2, 4, 6, 1, 3, 5, 7] (+ 8).
      __m128i sc = _mm_shuffle_epi8(
          _mm_loadu_si128(reinterpret_cast<const __m128i *>(blk.scales)),
          _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15));
      __m256 dv = _mm256_set1_ps(toFloat(f16{blk.d}));
      sc0 = _mm256_mul_ps(dv, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc)));
      sc1 = _mm256_mul_ps(
          dv, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8))));
      mins = _mm256_setzero_ps();
      // Signed weights: |w| against x with w's sign (exact: |x| <= 127).
      q6Bytes(blk, sg);
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k)
        u[k] = _mm256_sign_epi8(sg[k], sg[k]);
    }
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t) {
      const int8_t *x = q + (t * ld + b0) * 32;
      __m256i p[8];
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {
        __m256i xv = load(x + 32 * k);
        if constexpr (!Q4)
          xv = _mm256_sign_epi8(xv, sg[k]);
        p[k] = dotU8(u[k], xv);
      }
      // q4_K lanes: blocks [0, 1, 2, 3, 0, 1, 2, 3]; q6_K: sub-blocks
      // [0, 2, 4, 6, 1, 3, 5, 7] of blocks [0, 1, 2, 3, 0, 1, 2, 3].
      __m256i h0 = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]),
                                     _mm256_hadd_epi32(p[2], p[3]));
      __m256i h1 = _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]),
                                     _mm256_hadd_epi32(p[6], p[7]));
      const float *dx = d + t * ld + b0;
      __m256 dx0 = _mm256_broadcast_ps(reinterpret_cast<const __m128 *>(dx));
      __m256 dx1 =
          _mm256_broadcast_ps(reinterpret_cast<const __m128 *>(dx + 4));
      acc[t][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(h0),
                                  _mm256_mul_ps(sc0, dx0), acc[t][0]);
      acc[t][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(h1),
                                  _mm256_mul_ps(sc1, dx1), acc[t][1]);
      if constexpr (Q4)
        off[t] =
            _mm256_fmadd_ps(mins, _mm256_loadu_ps(s + t * ld + b0), off[t]);
    }
  }
#pragma GCC unroll 4
  for (int t = 0; t < NT; ++t)
    sum[t] = _mm256_sub_ps(_mm256_add_ps(acc[t][0], acc[t][1]), off[t]);
}
#endif

/// One k-quant row of `nsb` super-blocks against NT tokens' int8
/// activations (q, d, s of quantizeActs, token t at block t * ld; ld = 0:
/// 8 nsb): out[t].
template <typename W, int NT>
MOERT_INLINE void kRow(const W *w, int64_t nsb, const int8_t *q, const float *d,
                       const float *s, float *out, int64_t ld = 0) {
  if (ld == 0)
    ld = nsb * 8;
#ifdef MOERT_AVX2
  __m256 sum[NT];
  kRowSums<W, NT>(w, nsb, q, d, s, ld, sum);
#pragma GCC unroll 4
  for (int t = 0; t < NT; ++t)
    out[t] = hsum(sum[t]);
#else
  for (int t = 0; t < NT; ++t) {
    float acc = 0;
    for (int64_t sb = 0; sb < nsb; ++sb) {
      const W &blk = w[sb];
      for (int j = 0; j < 8; ++j) {
        const int64_t b = t * ld + sb * 8 + j;
        const int8_t *x = q + b * 32;
        if constexpr (std::is_same<W, q4_K>::value ||
                      std::is_same<W, q5_K>::value) {
          int sc, m, p = 0;
          scaleMinK4(blk.scales, j, sc, m);
          for (int i = 0; i < 32; ++i) {
            if constexpr (std::is_same<W, q4_K>::value)
              p += nibbleK4(blk.qs, 32 * j + i) * x[i];
            else
              p += q5Value(blk, 32 * j + i) * x[i];
          }
          acc += toFloat(f16{blk.d}) * float(sc) * d[b] * float(p) -
                 toFloat(f16{blk.dmin}) * float(m) * s[b];
        } else {
          int pa = 0, pb = 0;
          for (int i = 0; i < 16; ++i) {
            pa += (q6Value(blk, 32 * j + i) - 32) * x[i];
            pb += (q6Value(blk, 32 * j + 16 + i) - 32) * x[16 + i];
          }
          acc += toFloat(f16{blk.d}) * d[b] *
                 float(blk.scales[2 * j] * pa + blk.scales[2 * j + 1] * pb);
        }
      }
    }
    out[t] = acc;
  }
#endif
}

/// A k-quant super-block's 256 elements as f32 (bit for bit quant.h's
/// dequant: the products rounded as it rounds them).
template <typename W> MOERT_INLINE void dequantSuper(const W &b, float *out) {
#ifdef MOERT_AVX2
  auto cvt8 = [](__m128i v8, bool sgn) MOERT_INLINE_LAMBDA {
    return _mm256_cvtepi32_ps(sgn ? _mm256_cvtepi8_epi32(v8)
                                  : _mm256_cvtepu8_epi32(v8));
  };
  if constexpr (std::is_same<W, q4_K>::value || std::is_same<W, q5_K>::value) {
    alignas(16) uint8_t sm[16];
    scalesK4(b, sm);
    const float d = toFloat(f16{b.d}), dmin = toFloat(f16{b.dmin});
    __m256i nib[8];
    k4Bytes(b, nib);
    for (int il = 0; il < 4; ++il) {
      for (int h = 0; h < 2; ++h) {
        const int j = 2 * il + h;
        __m256 d1 = _mm256_set1_ps(d * float(sm[j]));
        __m256 m1 = _mm256_set1_ps(dmin * float(sm[8 + j]));
        __m128i lo = _mm256_castsi256_si128(nib[j]),
                hi = _mm256_extracti128_si256(nib[j], 1);
        __m128i part[4] = {lo, _mm_srli_si128(lo, 8), hi,
                           _mm_srli_si128(hi, 8)};
        for (int k = 0; k < 4; ++k)
          _mm256_storeu_ps(
              out + 32 * j + 8 * k,
              _mm256_sub_ps(_mm256_mul_ps(d1, cvt8(part[k], false)), m1));
      }
    }
  } else {
    __m256i v[8];
    q6Bytes(b, v);
    const float d = toFloat(f16{b.d});
    for (int k = 0; k < 8; ++k) {
      __m128i lo = _mm256_castsi256_si128(v[k]),
              hi = _mm256_extracti128_si256(v[k], 1);
      __m256 s0 = _mm256_set1_ps(d * float(b.scales[2 * k]));
      __m256 s1 = _mm256_set1_ps(d * float(b.scales[2 * k + 1]));
      _mm256_storeu_ps(out + 32 * k, _mm256_mul_ps(s0, cvt8(lo, true)));
      _mm256_storeu_ps(out + 32 * k + 8,
                       _mm256_mul_ps(s0, cvt8(_mm_srli_si128(lo, 8), true)));
      _mm256_storeu_ps(out + 32 * k + 16, _mm256_mul_ps(s1, cvt8(hi, true)));
      _mm256_storeu_ps(out + 32 * k + 24,
                       _mm256_mul_ps(s1, cvt8(_mm_srli_si128(hi, 8), true)));
    }
  }
#else
  dequantBlock(b, out);
#endif
}

/// One k-quant row of `nsb` super-blocks against NT tokens' f32
/// activations (token t at x + t * K), each super-block dequantised once
/// for all tokens: out[t].
template <typename W, int NT>
MOERT_INLINE void kF32Row(const W *w, int64_t nsb, const float *x, float *out) {
  const int64_t K = nsb * 256;
  alignas(32) float f[256];
#ifdef MOERT_AVX2
  __m256 acc[NT][2];
  for (int t = 0; t < NT; ++t)
    acc[t][0] = acc[t][1] = _mm256_setzero_ps();
  for (int64_t sb = 0; sb < nsb; ++sb) {
    dequantSuper(w[sb], f);
    for (int t = 0; t < NT; ++t) {
      const float *xb = x + t * K + sb * 256;
      for (int i = 0; i < 256; i += 16) {
        acc[t][0] = _mm256_fmadd_ps(_mm256_loadu_ps(xb + i),
                                    _mm256_load_ps(f + i), acc[t][0]);
        acc[t][1] = _mm256_fmadd_ps(_mm256_loadu_ps(xb + i + 8),
                                    _mm256_load_ps(f + i + 8), acc[t][1]);
      }
    }
  }
  for (int t = 0; t < NT; ++t)
    out[t] = hsum(_mm256_add_ps(acc[t][0], acc[t][1]));
#else
  for (int t = 0; t < NT; ++t)
    out[t] = 0;
  for (int64_t sb = 0; sb < nsb; ++sb) {
    dequantSuper(w[sb], f);
    for (int t = 0; t < NT; ++t)
      for (int i = 0; i < 256; ++i)
        out[t] += x[t * K + sb * 256 + i] * f[i];
  }
#endif
}

/// Each block of a quantised row of `nb` blocks to 32 floats.
template <typename W>
inline void dequantRow(const W *w, int64_t nb, float *out) {
  if constexpr (IsKQuant<W>::value) {
    for (int64_t b = 0; b < nb; ++b)
      dequantSuper(w[b], out + b * 256);
  } else {
    for (int64_t b = 0; b < nb; ++b) {
#ifdef MOERT_AVX2
      __m256 f[4];
      blockFloats(w[b], f);
      __m256 dv = _mm256_set1_ps(scale(w[b]));
      __m256 mv = _mm256_set1_ps(
          std::is_same<W, q4_1>::value ? offsetTerm(w[b], 0) : 0.0f);
      for (int j = 0; j < 4; ++j)
        _mm256_storeu_ps(out + b * 32 + 8 * j, _mm256_fmadd_ps(f[j], dv, mv));
#else
      dequantBlock(w[b], out + b * 32);
#endif
    }
  }
}

/// x[0..K) · a quantised row, dequantising a block at a time (the routers'
/// gate GEMV, which is not quantised by the compiler: simple, not fast).
template <typename W>
inline float dotRow(const float *x, const W *w, int64_t K) {
  constexpr int64_t B = IsQuant<W>::kBlock;
  float sum = 0;
  alignas(32) float f[B];
  for (int64_t b = 0; b < K / B; ++b) {
    dequantRow(w + b, 1, f);
    for (int64_t i = 0; i < B; ++i)
      sum += x[b * B + i] * f[i];
  }
  return sum;
}

} // namespace qk

/// x[0..K) · w[0..K), accumulated in f32.
template <typename W> inline float dot(const float *x, const W *w, int64_t K) {
  if constexpr (IsQuant<W>::value) {
    return qk::dotRow(x, w, K);
  } else {
    int64_t i = 0;
    float sum = 0;
#ifdef MOERT_AVX512VNNI
    // Half-width weights: 16 lanes a conversion (load16).
    if constexpr (!std::is_same<W, float>::value) {
      __m512 z0 = _mm512_setzero_ps(), z1 = _mm512_setzero_ps();
      for (; i + 32 <= K; i += 32) {
        z0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), load16(w + i), z0);
        z1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), load16(w + i + 16),
                             z1);
      }
      alignas(64) float part[16];
      _mm512_store_ps(part, _mm512_add_ps(z0, z1));
      sum = hsum(_mm256_add_ps(_mm256_load_ps(part), _mm256_load_ps(part + 8)));
    }
#endif
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
    sum += hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif
    for (; i < K; ++i)
      sum += x[i] * toFloat(w[i]);
    return sum;
  }
}

#ifdef MOERT_AVX2
/// The register-blocked core of `linear`: 4 tokens x 3 weight rows (`ldw`
/// elements apart), twelve accumulators, so each weight vector loaded (and
/// converted) feeds four FMAs and each activation vector three. K is a
/// multiple of 8. `res` (laid out as `out`, or null; it may be `out`) is
/// added to each result.
template <typename W>
inline void gemm4x3(const float *x, int64_t ldx, const W *w, int64_t ldw,
                    int64_t K, float *out, int64_t ldo, const float *res) {
  // Fully unrolled so the accumulators live in registers.
  __m256 acc[4][3];
#pragma GCC unroll 4
  for (int t = 0; t < 4; ++t)
#pragma GCC unroll 3
    for (int r = 0; r < 3; ++r)
      acc[t][r] = _mm256_setzero_ps();
  for (int64_t i = 0; i < K; i += 8) {
    __m256 w0 = load8(w + i), w1 = load8(w + ldw + i);
    __m256 w2 = load8(w + 2 * ldw + i);
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

namespace qk {

/// Whether decode uses the int8 activations (else f32 dequantisation),
/// per format, as measured by bench/quant_gemv.cpp: int8 for all three (on
/// Zen 4, from memory, 2 threads, about 1.3-2x the f32 path's GB/s; in L1,
/// 1.0-1.3 ns per block against 1.9-2.6). Software prefetching of the next
/// rows measured no better than the hardware prefetcher, so there is none.
template <typename W> constexpr bool kDecodeInt8 = true;

/// Rows of W per parallel block (8 x 3, as the float path).
constexpr int64_t kRows = 24;

#ifdef MOERT_AVX512VNNI
/// Rows [r0, r1) of an N x K weight against NT tokens' int8 activations
/// (q, d, s as pairActs left them, token t at t * K bytes and t * nb
/// blocks), one row after another (one sequential stream), their
/// horizontal sums four rows at a time (done per row, they cost as much as
/// the row's dot products at K = 1024): store(t, r, value).
template <typename W, int NT, int64_t K, typename Store>
MOERT_INLINE void int8Rows512(const W *w, int64_t r0, int64_t r1,
                              const int8_t *q, const float *d, const float *s,
                              const Store &store) {
  constexpr int64_t nb = blocks<K>(), n8 = nb / 8 * 8;
  // Blocks [0, n8) take int8Row512, the rest int8Row.
  auto row = [&](int64_t r, __m256 *sum, float *tail) MOERT_INLINE_LAMBDA {
    const W *wr = weightRow(w, r, K);
    for (int t = 0; t < NT; ++t)
      tail[t] = 0;
    if constexpr (IsKQuant<W>::value) {
      kRowSums<W, NT>(wr, K / 256, q, d, s, nb, sum);
    } else {
      if (n8 < nb)
        int8Row<W, NT>(wr + n8, nb - n8, q + n8 * 32, d + n8, s + n8, tail, nb);
      int8Row512<W, NT>(wr, n8, nb, q, d, s, sum);
    }
  };
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    __m256 sum[4][NT];
    alignas(16) float tail[4][NT];
    for (int i = 0; i < 4; ++i)
      row(r + i, sum[i], tail[i]);
    for (int t = 0; t < NT; ++t) {
      alignas(16) float v[4];
      _mm_store_ps(v, hsum4(sum[0][t], sum[1][t], sum[2][t], sum[3][t]));
      for (int i = 0; i < 4; ++i)
        store(t, r + i, v[i] + tail[i][t]);
    }
  }
  for (; r < r1; ++r) {
    __m256 sum[NT];
    float tail[NT];
    row(r, sum, tail);
    for (int t = 0; t < NT; ++t)
      store(t, r, hsum(sum[t]) + tail[t]);
  }
}
#endif

/// NT (< 4) decode tokens' activations as the row kernels take them,
/// computed once and shared by the threads: int8 with each block's scale and
/// sum (Int8), else f32 (with q4_1's block sums). rows() then runs weight
/// rows [r, rEnd) of a K-wide weight against them, from any thread, each
/// row read once for all NT tokens: store(t, r, value).
template <typename W, int64_t K, int NT, bool Int8> struct DecodeActs {
  static_assert(K % IsQuant<W>::kBlock == 0, "a quantised row is whole blocks");
  static constexpr int64_t nb = blocks<K>();
#ifdef MOERT_AVX512VNNI
  // Blocks [0, n8) take the AVX-512 kernel, the rest int8Row.
  static constexpr int64_t n8 = nb / 8 * 8;
#endif
  alignas(64) int8_t q[Int8 ? NT * K : 1];
  float d[NT * nb], s[NT * nb];
  const float *x = nullptr;

  void prepare(const float *acts) {
    x = acts;
    if (Int8) {
      for (int t = 0; t < NT; ++t) {
        quantizeActs(x + t * K, nb, q + t * K, d + t * nb, s + t * nb);
#ifdef MOERT_AVX512VNNI
        pairActs<W>(q + t * K, n8);
#endif
      }
    } else if (std::is_same<W, q4_1>::value) {
      for (int64_t i = 0; i < NT * nb; ++i) {
        float sb = 0;
        for (int j = 0; j < 32; ++j)
          sb += x[i * 32 + j];
        s[i] = sb;
      }
    }
  }

  template <typename Store>
  MOERT_INLINE void rows(const W *w, int64_t r, int64_t rEnd,
                         const Store &store) const {
#ifdef MOERT_AVX512VNNI
    if (Int8) {
      int8Rows512<W, NT, K>(w, r, rEnd, q, d, s, store);
      return;
    }
#endif
    for (; r < rEnd; ++r) {
      float v[NT];
      if constexpr (IsKQuant<W>::value) {
        if (Int8)
          kRow<W, NT>(weightRow(w, r, K), K / 256, q, d, s, v);
        else
          kF32Row<W, NT>(weightRow(w, r, K), K / 256, x, v);
      } else if (Int8)
        int8Row<W, NT>(weightRow(w, r, K), nb, q, d, s, v);
      else
        f32Row<W, NT>(weightRow(w, r, K), nb, x, s, v);
      for (int t = 0; t < NT; ++t)
        store(t, r, v[t]);
    }
  }
};

/// Decode: NT (< 4) tokens, each weight row read once for all of them.
template <typename W, int64_t N, int64_t K, int NT, bool Int8>
void decode(moert_pool *pool, const float *x, const W *w, float *out,
            int64_t ldo, const float *res) {
  constexpr int64_t kBlocks = (N + kRows - 1) / kRows;
  // On the caller's stack (NT*K bytes and 2*NT*K/32 floats).
  DecodeActs<W, K, NT, Int8> acts;
  acts.prepare(x);
  auto store = [&](int t, int64_t r, float v) MOERT_INLINE_LAMBDA {
    int64_t o = t * ldo + r;
    out[o] = res ? v + res[o] : v;
  };
  parallelFor(pool, kBlocks, double(NT) * N * K, [&](int64_t b0, int64_t b1) {
    acts.rows(w, b0 * kRows, std::min(N, b1 * kRows), store);
  });
}

template <typename W, int64_t N, int64_t K, bool Int8>
void linearDecode(moert_pool *pool, const float *x, const W *w, int64_t T,
                  float *out, int64_t ldo, const float *res) {
  if (T == 1)
    decode<W, N, K, 1, Int8>(pool, x, w, out, ldo, res);
  else if (T == 2)
    decode<W, N, K, 2, Int8>(pool, x, w, out, ldo, res);
  else if (T == 3)
    decode<W, N, K, 3, Int8>(pool, x, w, out, ldo, res);
}

#ifdef MOERT_AVX512VNNI
/// Whether prefill quantises the activations to int8 too (as llama.cpp
/// does) rather than dequantising weight panels to f32: on Zen 4 the int8
/// rows run at about twice the f32 panels' multiply-adds per second.
template <typename W> constexpr bool kPrefillInt8 = true;

/// A growing buffer per calling thread for prefill's int8 activations (a
/// model runs one forward pass at a time per thread; allocating per call
/// would page-fault megabytes every linear).
inline void *prefillScratch(size_t bytes) {
  thread_local std::vector<uint64_t> buf;
  if (buf.size() * 8 < bytes)
    buf.resize((bytes + 7) / 8);
  return buf.data();
}

/// Prefill with int8 activations: every token quantised once (as decode
/// does; in parallel), then per parallel block of rows, groups of four
/// tokens against each row with int8Row512, four rows' sums at a time.
template <typename W, int64_t N, int64_t K>
void linearPrefillInt8(moert_pool *pool, const float *x, const W *w, int64_t T,
                       float *out, int64_t ldo, const float *res) {
  static_assert(K % IsQuant<W>::kBlock == 0, "a quantised row is whole blocks");
  constexpr int64_t nb = blocks<K>(), n8 = nb / 8 * 8;
  constexpr int64_t kBlocks = (N + kRows - 1) / kRows;
  char *scratch = static_cast<char *>(
      prefillScratch(size_t(T) * (K + 2 * nb * sizeof(float))));
  float *d = reinterpret_cast<float *>(scratch);
  float *s = d + T * nb;
  int8_t *q = reinterpret_cast<int8_t *>(s + T * nb);
  parallelFor(pool, T, double(T) * K * 8, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      quantizeActs(x + t * K, nb, q + t * K, d + t * nb, s + t * nb);
      pairActs<W>(q + t * K, n8);
    }
  });
  auto store = [&](int64_t t, int64_t r, float v) MOERT_INLINE_LAMBDA {
    int64_t o = t * ldo + r;
    out[o] = res ? v + res[o] : v;
  };
  // NT tokens from t against rows [r0, r1).
  auto tokens = [&](auto nt, int64_t t, int64_t r0,
                    int64_t r1) MOERT_INLINE_LAMBDA {
    constexpr int NT = decltype(nt)::value;
    int8Rows512<W, NT, K>(w, r0, r1, q + t * K, d + t * nb, s + t * nb,
                          [&](int i, int64_t r, float v)
                              MOERT_INLINE_LAMBDA { store(t + i, r, v); });
  };
  parallelFor(pool, kBlocks, double(T) * N * K, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      int64_t r0 = b * kRows, r1 = std::min(N, r0 + kRows);
      int64_t t = 0;
      for (; t + 4 <= T; t += 4)
        tokens(std::integral_constant<int, 4>(), t, r0, r1);
      if (T - t == 3)
        tokens(std::integral_constant<int, 3>(), t, r0, r1);
      else if (T - t == 2)
        tokens(std::integral_constant<int, 2>(), t, r0, r1);
      else if (T - t == 1)
        tokens(std::integral_constant<int, 1>(), t, r0, r1);
    }
  });
}
#else
template <typename W> constexpr bool kPrefillInt8 = false;
#endif

/// K elements per panel chunk: 24 rows x 256 floats = 24 KiB, in L1 with
/// the activations' chunk.
constexpr int64_t kPanelK = 256;

/// Prefill: each parallel block of 24 rows is dequantised a chunk of K at a
/// time into a panel on the stack, and every token is run against it
/// (4x3 FMA kernel, dot for the edges), accumulating over the chunks in
/// `out` (the first chunk adds `res`).
template <typename W, int64_t N, int64_t K>
void linearPrefill(moert_pool *pool, const float *x, const W *w, int64_t T,
                   float *out, int64_t ldo, const float *res) {
  constexpr int64_t B = IsQuant<W>::kBlock;
  static_assert(K % B == 0, "a quantised row is whole blocks");
  static_assert(kPanelK % B == 0, "a panel chunk is whole blocks");
  constexpr int64_t KC = std::min(K, kPanelK);
  constexpr int64_t kBlocks = (N + kRows - 1) / kRows;
  parallelFor(pool, kBlocks, double(T) * N * K, [&](int64_t b0, int64_t b1) {
    alignas(32) float panel[kRows * KC];
    for (int64_t b = b0; b < b1; ++b) {
      int64_t n0 = b * kRows, n1 = std::min(N, n0 + kRows);
      for (int64_t k0 = 0; k0 < K; k0 += KC) {
        int64_t kc = std::min(KC, K - k0);
        for (int64_t r = n0; r < n1; ++r)
          dequantRow(weightRow(w, r, K) + k0 / B, kc / B,
                     panel + (r - n0) * KC);
        const float *base = k0 == 0 ? res : out;
        auto store = [&](int64_t t, int64_t r, float v) {
          int64_t o = t * ldo + r;
          out[o] = base ? v + base[o] : v;
        };
        int64_t t = 0;
#ifdef MOERT_AVX2
        int64_t nEnd = n0 + (n1 - n0) / 3 * 3;
        for (; t + 4 <= T; t += 4)
          for (int64_t r = n0; r < nEnd; r += 3)
            gemm4x3(x + t * K + k0, K, panel + (r - n0) * KC, KC, kc,
                    out + t * ldo + r, ldo,
                    base ? base + t * ldo + r : nullptr);
        for (int64_t tt = 0; tt < t; ++tt)
          for (int64_t r = nEnd; r < n1; ++r)
            store(tt, r, dot(x + tt * K + k0, panel + (r - n0) * KC, kc));
#endif
        for (; t < T; ++t)
          for (int64_t r = n0; r < n1; ++r)
            store(t, r, dot(x + t * K + k0, panel + (r - n0) * KC, kc));
      }
    }
  });
}

} // namespace qk

#ifdef MOERT_AVX2
//===----------------------------------------------------------------------===//
// Float weights (f32, f16, bf16) with four tokens or more: packed panels
//===----------------------------------------------------------------------===//
//
// Prefill is compute-bound, and the 4x3 dot-product kernel (gemm4x3) spent
// as many loads as FMAs on it, converted each f16 weight once per four
// tokens and ended every output with a horizontal sum. Here, per parallel
// block of kPanelRows weight rows and per chunk of kPanelK along K, the
// rows are converted to f32 once and transposed into a panel [k][row]
// (8x8 register transposes), and tiles of kTileTokens tokens run against
// it: per k, two panel vectors are loaded and each token's x[k] is
// broadcast into two FMAs, so the vector lanes run along the output
// features and every output is stored whole, with no horizontal sum. The
// panel (32 KiB; 16 KiB with AVX2) stays in L1/L2 for all tokens.
namespace fp {

// AVX-512 F is among what MOERT_AVX512VNNI requires (top of this file).
#ifdef MOERT_AVX512VNNI
using V = __m512;
constexpr int kLanes = 16;
/// 2 x 12 accumulators of the 32 zmm registers.
constexpr int kTileTokens = 12;
MOERT_INLINE V vzero() { return _mm512_setzero_ps(); }
MOERT_INLINE V vload(const float *p) { return _mm512_load_ps(p); }
MOERT_INLINE V vloadu(const float *p) { return _mm512_loadu_ps(p); }
MOERT_INLINE void vstoreu(float *p, V v) { _mm512_storeu_ps(p, v); }
MOERT_INLINE V vset1(float f) { return _mm512_set1_ps(f); }
MOERT_INLINE V vadd(V a, V b) { return _mm512_add_ps(a, b); }
MOERT_INLINE V vfma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
#else
using V = __m256;
constexpr int kLanes = 8;
/// 2 x 6 accumulators, two panel vectors and a broadcast: 15 of the 16
/// ymm registers.
constexpr int kTileTokens = 6;
MOERT_INLINE V vzero() { return _mm256_setzero_ps(); }
MOERT_INLINE V vload(const float *p) { return _mm256_load_ps(p); }
MOERT_INLINE V vloadu(const float *p) { return _mm256_loadu_ps(p); }
MOERT_INLINE void vstoreu(float *p, V v) { _mm256_storeu_ps(p, v); }
MOERT_INLINE V vset1(float f) { return _mm256_set1_ps(f); }
MOERT_INLINE V vadd(V a, V b) { return _mm256_add_ps(a, b); }
MOERT_INLINE V vfma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
#endif

/// Weight rows per panel: two vectors.
constexpr int64_t kPanelRows = 2 * kLanes;
/// K elements per panel chunk (a multiple of 8).
constexpr int64_t kPanelK = 256;

/// Transposes the 8x8 block v[row][col] in place.
MOERT_INLINE void transpose8(__m256 *v) {
  __m256 t0 = _mm256_unpacklo_ps(v[0], v[1]),
         t1 = _mm256_unpackhi_ps(v[0], v[1]);
  __m256 t2 = _mm256_unpacklo_ps(v[2], v[3]),
         t3 = _mm256_unpackhi_ps(v[2], v[3]);
  __m256 t4 = _mm256_unpacklo_ps(v[4], v[5]),
         t5 = _mm256_unpackhi_ps(v[4], v[5]);
  __m256 t6 = _mm256_unpacklo_ps(v[6], v[7]),
         t7 = _mm256_unpackhi_ps(v[6], v[7]);
  __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44),
         s1 = _mm256_shuffle_ps(t0, t2, 0xee);
  __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44),
         s3 = _mm256_shuffle_ps(t1, t3, 0xee);
  __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44),
         s5 = _mm256_shuffle_ps(t4, t6, 0xee);
  __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44),
         s7 = _mm256_shuffle_ps(t5, t7, 0xee);
  v[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  v[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  v[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  v[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  v[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  v[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  v[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  v[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

/// panel[k * kPanelRows + i] = W[n0 + i][k0 + k] as f32 for k < kc (a
/// multiple of 8) and i < rows; rows past `rows` are zero.
template <typename W>
MOERT_INLINE void pack(const W *w, int64_t K, int64_t n0, int64_t rows,
                       int64_t k0, int64_t kc, float *panel) {
  for (int64_t r0 = 0; r0 < kPanelRows; r0 += 8) {
    if (r0 + 8 <= rows) {
      const W *src = w + (n0 + r0) * K + k0;
      for (int64_t k = 0; k < kc; k += 8) {
        __m256 v[8];
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i)
          v[i] = load8(src + i * K + k);
        transpose8(v);
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j)
          _mm256_store_ps(panel + (k + j) * kPanelRows + r0, v[j]);
      }
    } else {
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t i = r0; i < r0 + 8; ++i)
          panel[k * kPanelRows + i] =
              i < rows ? toFloat(w[(n0 + i) * K + k0 + k]) : 0.0f;
    }
  }
}

/// NT tokens (x, row stride ldx) against a panel of kc k's: out[t][i] for
/// i < rows = acc + base[t][i] (base laid out as out, may be out, or null).
template <int NT>
MOERT_INLINE void tile(const float *panel, int64_t kc, const float *x,
                       int64_t ldx, float *out, int64_t ldo, const float *base,
                       int64_t rows) {
  V acc[NT][2];
#pragma GCC unroll 12
  for (int t = 0; t < NT; ++t)
    acc[t][0] = acc[t][1] = vzero();
  for (int64_t k = 0; k < kc; ++k) {
    V w0 = vload(panel + k * kPanelRows),
      w1 = vload(panel + k * kPanelRows + kLanes);
#pragma GCC unroll 12
    for (int t = 0; t < NT; ++t) {
      V xb = vset1(x[t * ldx + k]);
      acc[t][0] = vfma(xb, w0, acc[t][0]);
      acc[t][1] = vfma(xb, w1, acc[t][1]);
    }
  }
  if (rows == kPanelRows) {
#pragma GCC unroll 12
    for (int t = 0; t < NT; ++t) {
      V a0 = acc[t][0], a1 = acc[t][1];
      if (base) {
        a0 = vadd(a0, vloadu(base + t * ldo));
        a1 = vadd(a1, vloadu(base + t * ldo + kLanes));
      }
      vstoreu(out + t * ldo, a0);
      vstoreu(out + t * ldo + kLanes, a1);
    }
    return;
  }
  alignas(64) float row[kPanelRows];
  for (int t = 0; t < NT; ++t) {
    vstoreu(row, acc[t][0]);
    vstoreu(row + kLanes, acc[t][1]);
    for (int64_t i = 0; i < rows; ++i)
      out[t * ldo + i] = base ? row[i] + base[t * ldo + i] : row[i];
  }
}

/// tile<n> for the last n (< kTileTokens) tokens.
template <int NT>
MOERT_INLINE void tileTail(int n, const float *panel, int64_t kc,
                           const float *x, int64_t ldx, float *out, int64_t ldo,
                           const float *base, int64_t rows) {
  if constexpr (NT > 0) {
    if (n == NT)
      tile<NT>(panel, kc, x, ldx, out, ldo, base, rows);
    else
      tileTail<NT - 1>(n, panel, kc, x, ldx, out, ldo, base, rows);
  }
}

/// out = x @ Wᵀ (+ res) for T >= 4 tokens, W [N, K] with K % 8 == 0:
/// parallel over panels of rows; per panel, each chunk of K is packed once
/// and every token tile runs against it, accumulating into `out` after the
/// first chunk (which adds `res`).
template <typename W, int64_t N, int64_t K>
void gemm(moert_pool *pool, const float *x, const W *w, int64_t T, float *out,
          int64_t ldo, const float *res) {
  static_assert(K % 8 == 0, "panels take K in steps of 8");
  constexpr int64_t KC = std::min(K, kPanelK);
  constexpr int64_t kPanels = (N + kPanelRows - 1) / kPanelRows;
  parallelFor(pool, kPanels, double(T) * N * K, [&](int64_t p0, int64_t p1) {
    alignas(64) float panel[KC * kPanelRows];
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n0 = p * kPanelRows, rows = std::min(kPanelRows, N - n0);
      for (int64_t k0 = 0; k0 < K; k0 += KC) {
        const int64_t kc = std::min(KC, K - k0);
        pack(w, K, n0, rows, k0, kc, panel);
        const float *base = k0 == 0 ? res : out;
        int64_t t = 0;
        for (; t + kTileTokens <= T; t += kTileTokens)
          tile<kTileTokens>(panel, kc, x + t * K + k0, K, out + t * ldo + n0,
                            ldo, base ? base + t * ldo + n0 : nullptr, rows);
        if (t < T)
          tileTail<kTileTokens - 1>(int(T - t), panel, kc, x + t * K + k0, K,
                                    out + t * ldo + n0, ldo,
                                    base ? base + t * ldo + n0 : nullptr, rows);
      }
    }
  });
}

} // namespace fp
#endif

/// out[t * ldo + n] = x[t] · W[n] for W of shape [N, K] (x @ Wᵀ); `ldo` is
/// the output row stride (N for a dense result). With `res` (laid out as
/// `out`), out = x @ Wᵀ + res (moe-fuse-epilogues). Parallel over blocks of
/// weight rows, so each thread streams its part of W once; with four or
/// more tokens the 4x3 register-blocked kernel does the work. The block
/// formats take qk::linearDecode / qk::linearPrefill (see there).
template <typename W, int64_t N, int64_t K>
void linear(moert_pool *pool, const float *x, const W *w, int64_t T, float *out,
            int64_t ldo = N, const float *res = nullptr) {
  if constexpr (IsQuant<W>::value) {
    if (T < 4)
      qk::linearDecode<W, N, K, qk::kDecodeInt8<W>>(pool, x, w, T, out, ldo,
                                                    res);
    else
#ifdef MOERT_AVX512VNNI
        if (qk::kPrefillInt8<W>)
      qk::linearPrefillInt8<W, N, K>(pool, x, w, T, out, ldo, res);
    else
#endif
      qk::linearPrefill<W, N, K>(pool, x, w, T, out, ldo, res);
    return;
  } else {
    auto store = [&](int64_t t, int64_t r, float v) {
      out[t * ldo + r] = res ? v + res[t * ldo + r] : v;
    };
#ifdef MOERT_AVX2
    if constexpr (K % 8 == 0)
      if (T >= 4) {
        fp::gemm<W, N, K>(pool, x, w, T, out, ldo, res);
        return;
      }
#endif
    constexpr int64_t kRows = qk::kRows; // rows of W per parallel block
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
              gemm4x3(x + t * K, K, w + r * K, K, K, out + t * ldo + r, ldo,
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
}

/// One token's activations for the decode rows of a weight of any format:
/// prepare(x) once, then rows(w, r0, r1, store) from any thread computes
/// x · W[r] for r in [r0, r1), exactly as `linear` does for one token,
/// store(r, value).
template <typename W, int64_t K> struct RowActs {
  using Weight = W;
  struct Plain {
    const float *x;
    void prepare(const float *acts) { x = acts; }
  };
  std::conditional_t<IsQuant<W>::value,
                     qk::DecodeActs<W, K, 1, qk::kDecodeInt8<W>>, Plain>
      acts;

  void prepare(const float *x) { acts.prepare(x); }

  template <typename Store>
  MOERT_INLINE void rows(const W *w, int64_t r0, int64_t r1,
                         const Store &store) const {
    if constexpr (IsQuant<W>::value)
      acts.rows(w, r0, r1, [&](int, int64_t r, float v) MOERT_INLINE_LAMBDA {
        store(r, v);
      });
    else
      for (int64_t r = r0; r < r1; ++r)
        store(r, dot(acts.x, w + r * K, K));
  }
};

/// moe.fused_linear (moe-fuse-projections: q, k and v): out[i] = x @ W_iᵀ
/// for two or three weights of one input, W_i [N_i, K] of type W_i (N2 = 0:
/// two). One decode token runs every weight's rows in one parallel region,
/// in blocks of 24 rows (one wait for the threads, not one per weight);
/// more tokens run `linear` per weight. The same row kernels either way, so
/// the results are those of separate linears.
template <typename W0, typename W1, typename W2, int64_t K, int64_t N0,
          int64_t N1, int64_t N2>
void fusedLinear(moert_pool *pool, const float *x, const void *const *w,
                 int64_t T, float *const *out) {
  static_assert(N0 > 0 && N1 > 0 && N2 >= 0, "two or three weights");
  if (T != 1) {
    linear<W0, N0, K>(pool, x, static_cast<const W0 *>(w[0]), T, out[0]);
    linear<W1, N1, K>(pool, x, static_cast<const W1 *>(w[1]), T, out[1]);
    if constexpr (N2 > 0)
      linear<W2, N2, K>(pool, x, static_cast<const W2 *>(w[2]), T, out[2]);
    return;
  }
  // The blocks of linear's decode: the row kernels group rows from a
  // block's start (int8Rows512 four at a time), so the same blocks give the
  // same sums.
  constexpr int64_t kBlock = qk::kRows;
  constexpr int64_t b0 = (N0 + kBlock - 1) / kBlock;
  constexpr int64_t b1 = b0 + (N1 + kBlock - 1) / kBlock;
  constexpr int64_t b2 = b1 + (N2 + kBlock - 1) / kBlock;
  // Weights of W0's type share its activations (quantised once).
  constexpr bool own1 = !std::is_same<W1, W0>::value;
  constexpr bool own2 = N2 > 0 && !std::is_same<W2, W0>::value;
  RowActs<W0, K> a0;
  RowActs<W1, K> a1;
  RowActs<W2, K> a2;
  a0.prepare(x);
  if constexpr (own1)
    a1.prepare(x);
  if constexpr (own2)
    a2.prepare(x);
  const auto &x1 = [&]() -> const auto & {
    if constexpr (own1)
      return a1;
    else
      return a0;
  }();
  const auto &x2 = [&]() -> const auto & {
    if constexpr (own2)
      return a2;
    else
      return a0;
  }();
  auto part = [&](const auto &acts, const void *weight, int64_t b, int64_t n,
                  float *o) {
    using W = typename std::decay_t<decltype(acts)>::Weight;
    acts.rows(static_cast<const W *>(weight), b * kBlock,
              std::min(n, (b + 1) * kBlock),
              [&](int64_t r, float v) { o[r] = v; });
  };
  parallelFor(pool, b2, double(N0 + N1 + N2) * K, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      if (u < b0)
        part(a0, w[0], u, N0, out[0]);
      else if (u < b1)
        part(x1, w[1], u - b0, N1, out[1]);
      else if constexpr (N2 > 0)
        part(x2, w[2], u - b1, N2, out[2]);
    }
  });
}

/// The language-model head: rows [from, T) of x @ Wᵀ (all of them for
/// from <= 0, none for from >= T), row `from` at `out`
/// (moert_exec::logits_from).
template <typename W, int64_t N, int64_t K>
void lmHead(moert_pool *pool, const float *x, const W *w, int64_t T, float *out,
            int64_t from) {
  from = std::max<int64_t>(from, 0);
  if (from < T)
    linear<W, N, K>(pool, x + from * K, w, T - from, out);
}

template <typename W, int64_t H>
void embedding(const W *table, const int32_t *ids, int64_t T, float *out) {
  for (int64_t t = 0; t < T; ++t) {
    const W *row = weightRow(table, int64_t(ids[t]), H);
    if constexpr (IsQuant<W>::value) {
      // The scalar definition: a gathered row is a few KiB, and this keeps
      // the embedding bit-exact with quant.h's dequant.
      constexpr int64_t B = IsQuant<W>::kBlock;
      static_assert(H % B == 0, "a quantised row is whole blocks");
      for (int64_t b = 0; b < H / B; ++b)
        qk::dequantBlock(row[b], out + t * H + b * B);
    } else {
      for (int64_t i = 0; i < H; ++i)
        out[t * H + i] = toFloat(row[i]);
    }
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

/// RoPE on [T][Width] with heads of D: rotate-half pairs, or interleaved
/// ones (kernel_math.h). A scaled RoPE type (Kind, a RopeKind other than
/// RopeDefault) takes its resolved parameters after `out` (RopeScaling's
/// fields in order); the default type's code is the same as without them.
template <int64_t Width, int64_t D, bool Interleaved = false, int Kind = 0>
void rope(const float *x, const int32_t *pos, double theta, int64_t T,
          float *out, double factor = 1.0, double low = 0.0, double high = 0.0,
          double context = 0.0, double attention = 1.0) {
  constexpr int64_t Half = D / 2;
  double invFreq[Half];
  RopeScaling scaling{Kind, factor, low, high, context, attention};
  for (int64_t i = 0; i < Half; ++i)
    invFreq[i] = Kind == RopeDefault ? ropeInvFreq(theta, i, D)
                                     : ropeScaledInvFreq(theta, i, D, scaling,
                                                         ropeSeqLen(pos, T));
  for (int64_t t = 0; t < T; ++t) {
    float c[Half], s[Half];
    for (int64_t i = 0; i < Half; ++i) {
      if constexpr (Kind == RopeDefault)
        ropeCosSin(pos[t], invFreq[i], c[i], s[i]);
      else
        ropeScaledCosSin(pos[t], invFreq[i], attention, c[i], s[i]);
    }
    for (int64_t h = 0; h < Width / D; ++h) {
      const float *r = x + t * Width + h * D;
      float *o = out + t * Width + h * D;
      for (int64_t i = 0; i < Half; ++i)
        ropeHeadPair<D, Interleaved>(r, o, i, c[i], s[i]);
    }
  }
}

template <int64_t Size>
void add(const float *a, const float *b, int64_t T, float *out) {
  for (int64_t i = 0; i < T * Size; ++i)
    out[i] = a[i] + b[i];
}

namespace attn {

/// Keys a block holds scores for, on the stack: 64 keys of head dim 64 are
/// 16 KiB of keys and 16 KiB of values, which stay in L1 from the scores to
/// the weighted values.
constexpr int64_t kBlock = 64;

/// Query heads attended together at most (their scores, kBlock each, are
/// on the stack): a larger group goes in sub-groups.
constexpr int64_t kMaxGroup = 16;

/// The largest divisor of G that is at most kMaxGroup.
template <int64_t G> constexpr int64_t subGroup() {
  for (int64_t h = G < kMaxGroup ? G : kMaxGroup; h > 1; --h)
    if (G % h == 0)
      return h;
  return 1;
}

#ifdef MOERT_AVX2
/// exp of 8 floats: the exponent by rounding x / ln 2, the rest by a degree-6
/// polynomial on [-ln 2 / 2, ln 2 / 2] (Cephes' expf coefficients; within 2
/// ulp of std::exp). Below -87.3 it gives 0 (std::exp gives a subnormal
/// there, which the softmax cannot tell from 0); NaN stays NaN.
inline __m256 exp8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.33654f);
  __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  // (min with the NaN operand second returns it: NaN propagates.)
  x = _mm256_min_ps(_mm256_set1_ps(88.3762626647949f), x);
  __m256 n =
      _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r,
                      _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

/// The 8 sums of a[0..8), in order.
inline __m256 sum8x8(const __m256 *a) {
  __m256 lo =
      _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  __m256 hi =
      _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(lo, hi, 0x20),
                       _mm256_permute2f128_ps(lo, hi, 0x31));
}
#endif

/// s[j] = scale * q · key(j0 + j) for j < n, the key of position p in slot
/// p % Cap. Eight keys at a time share each load of q, and their eight sums
/// are reduced together.
template <int64_t D, int64_t Cap>
MOERT_INLINE void scores(const float *q, const float *kc, int64_t j0, int64_t n,
                         float scale, float *s) {
  int64_t j = 0;
#ifdef MOERT_AVX2
  if constexpr (D % 8 == 0) {
    for (; j + 8 <= n; j += 8) {
      const float *key[8];
#pragma GCC unroll 16
      for (int64_t k = 0; k < 8; ++k)
        key[k] = kc + ((j0 + j + k) % Cap) * D;
      __m256 acc[8];
#pragma GCC unroll 16
      for (int64_t k = 0; k < 8; ++k)
        acc[k] = _mm256_setzero_ps();
#pragma GCC unroll 16
      for (int64_t c = 0; c < D; c += 8) {
        __m256 qc = _mm256_loadu_ps(q + c);
#pragma GCC unroll 16
        for (int64_t k = 0; k < 8; ++k)
          acc[k] = _mm256_fmadd_ps(qc, _mm256_loadu_ps(key[k] + c), acc[k]);
      }
      _mm256_storeu_ps(s + j,
                       _mm256_mul_ps(sum8x8(acc), _mm256_set1_ps(scale)));
    }
  }
#endif
  for (; j < n; ++j)
    s[j] = dot(q, kc + ((j0 + j) % Cap) * D, D) * scale;
}

/// s[j] = exp(s[j] - best) for j < n; returns their sum.
MOERT_INLINE float expShifted(float *s, int64_t n, float best) {
  int64_t j = 0;
#ifdef MOERT_AVX2
  __m256 acc = _mm256_setzero_ps(), b = _mm256_set1_ps(best);
  for (; j + 8 <= n; j += 8) {
    __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), b));
    _mm256_storeu_ps(s + j, e);
    acc = _mm256_add_ps(acc, e);
  }
  if (j < n) {
    // The tail through the same exp8, so a score's weight does not depend
    // on where its block ends.
    alignas(32) float t[8];
    for (int64_t i = 0; i < 8; ++i)
      t[i] = j + i < n ? s[j + i] - best : -INFINITY;
    __m256 e = exp8(_mm256_load_ps(t));
    acc = _mm256_add_ps(acc, e);
    _mm256_store_ps(t, e);
    for (; j < n; ++j)
      s[j] = t[j % 8];
  }
  return hsum(acc);
#else
  float sum = 0;
  for (; j < n; ++j)
    sum += s[j] = std::exp(s[j] - best);
  return sum;
#endif
}

#if defined(MOERT_AVX512VNNI)
using Vf = __m512;
constexpr int64_t kLanes = 16, kRegs = 32;
MOERT_INLINE Vf vload(const float *p) { return _mm512_loadu_ps(p); }
MOERT_INLINE void vstore(float *p, Vf v) { _mm512_storeu_ps(p, v); }
MOERT_INLINE Vf vfma(Vf a, Vf b, Vf c) { return _mm512_fmadd_ps(a, b, c); }
MOERT_INLINE Vf vset(float x) { return _mm512_set1_ps(x); }
#elif defined(MOERT_AVX2)
using Vf = __m256;
constexpr int64_t kLanes = 8, kRegs = 16;
MOERT_INLINE Vf vload(const float *p) { return _mm256_loadu_ps(p); }
MOERT_INLINE void vstore(float *p, Vf v) { _mm256_storeu_ps(p, v); }
MOERT_INLINE Vf vfma(Vf a, Vf b, Vf c) { return _mm256_fmadd_ps(a, b, c); }
MOERT_INLINE Vf vset(float x) { return _mm256_set1_ps(x); }
#endif

/// The largest divisor of G whose heads' accumulators of D floats take at
/// most half the vector registers (at least 1).
template <int64_t G, int64_t D> constexpr int64_t headsInRegs() {
#if defined(MOERT_AVX2)
  constexpr int64_t perHead = D / kLanes;
  for (int64_t h = G; h > 1; --h)
    if (G % h == 0 && h * perHead <= kRegs / 2)
      return h;
#endif
  return 1;
}

/// o[h] += sum_j s[h][j] * value(j0 + j) for the G heads, j < n. Each value
/// row is loaded once per Hc heads, whose accumulators stay in registers
/// for the block (up to 16 registers for one head, as the previous
/// per-head kernel: head dim 128 with AVX2, 256 with AVX-512); every
/// element sees one FMA per key, in key order.
template <int64_t D, int64_t Cap, int64_t G>
MOERT_INLINE void weightedValues(const float *vc, int64_t j0, int64_t n,
                                 const float (*s)[kBlock], float *o) {
#if defined(MOERT_AVX2)
  if constexpr (D % kLanes == 0 && D / kLanes <= 16) {
    constexpr int64_t Hc = headsInRegs<G, D>(), R = D / kLanes;
    for (int64_t h0 = 0; h0 < G; h0 += Hc) {
      Vf acc[Hc][R];
#pragma GCC unroll 16
      for (int64_t h = 0; h < Hc; ++h)
#pragma GCC unroll 16
        for (int64_t c = 0; c < R; ++c)
          acc[h][c] = vload(o + (h0 + h) * D + c * kLanes);
      for (int64_t j = 0; j < n; ++j) {
        const float *vj = vc + ((j0 + j) % Cap) * D;
#pragma GCC unroll 16
        for (int64_t c = 0; c < R; ++c) {
          Vf v = vload(vj + c * kLanes);
#pragma GCC unroll 16
          for (int64_t h = 0; h < Hc; ++h)
            acc[h][c] = vfma(vset(s[h0 + h][j]), v, acc[h][c]);
        }
      }
#pragma GCC unroll 16
      for (int64_t h = 0; h < Hc; ++h)
#pragma GCC unroll 16
        for (int64_t c = 0; c < R; ++c)
          vstore(o + (h0 + h) * D + c * kLanes, acc[h][c]);
    }
    return;
  }
#endif
  for (int64_t j = 0; j < n; ++j) {
    const float *vj = vc + ((j0 + j) % Cap) * D;
    for (int64_t h = 0; h < G; ++h)
      for (int64_t i = 0; i < D; ++i)
        o[h * D + i] += s[h][j] * vj[i];
  }
}

/// The G query rows of one kv head's group (q, o: G rows of D, contiguous)
/// against the keys of positions [first, last] in a ring cache (position j
/// in slot j % Cap): o = softmax(scale * q·k) · v. Keys are taken in blocks
/// whose scores live on the stack, with a running maximum per row (what was
/// accumulated is rescaled when a block raises it), so the cost follows the
/// number of keys seen, not the cache's capacity, and nothing is allocated.
/// The group shares each block's keys and values while they are in L1.
template <int64_t D, int64_t Cap, int64_t G>
inline void attendGroup(const float *q, const float *kc, const float *vc,
                        int64_t first, int64_t last, float scale, float *o) {
  alignas(32) float s[G][kBlock];
  float best[G], total[G];
  for (int64_t h = 0; h < G; ++h) {
    best[h] = -INFINITY;
    total[h] = 0;
  }
  std::fill(o, o + G * D, 0.0f);
  for (int64_t j0 = first; j0 <= last; j0 += kBlock) {
    int64_t n = std::min<int64_t>(kBlock, last - j0 + 1);
    for (int64_t h = 0; h < G; ++h) {
      scores<D, Cap>(q + h * D, kc, j0, n, scale, s[h]);
      float blockBest = *std::max_element(s[h], s[h] + n);
      if (blockBest > best[h]) {
        if (best[h] != -INFINITY) {
          float r = std::exp(best[h] - blockBest);
          total[h] *= r;
          for (int64_t i = 0; i < D; ++i)
            o[h * D + i] *= r;
        }
        best[h] = blockBest;
      }
      if (best[h] == -INFINITY)
        // Every key so far scores -inf: they weigh nothing (not
        // exp(-inf - -inf), a NaN that would stay for the whole context).
        std::fill(s[h], s[h] + n, 0.0f);
      else
        total[h] += expShifted(s[h], n, best[h]);
    }
    weightedValues<D, Cap, G>(vc, j0, n, s, o);
  }
  for (int64_t h = 0; h < G; ++h) {
    float inv = 1.0f / total[h];
    for (int64_t i = 0; i < D; ++i)
      o[h * D + i] *= inv;
  }
}

} // namespace attn

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
  constexpr int64_t Group = Heads / KvHeads, Sub = attn::subGroup<Group>();
  constexpr int64_t Visible = Window > 0 && Window < Cap ? Window : Cap;
  int64_t context =
      T > 0 ? std::min<int64_t>(int64_t(pos[T - 1]) + 1, Visible) : 0;
  auto heads = [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      float *kc = cache.k + g * Cap * D, *vc = cache.v + g * Cap * D;
      for (int64_t t = 0; t < T; ++t) {
        int64_t p = pos[t];
        std::memcpy(kc + (p % Cap) * D, k + t * KvHeads * D + g * D,
                    D * sizeof(float));
        std::memcpy(vc + (p % Cap) * D, v + t * KvHeads * D + g * D,
                    D * sizeof(float));
        int64_t first = firstKey<Cap, Window>(p);
        for (int64_t h = g * Group; h < (g + 1) * Group; h += Sub)
          attn::attendGroup<D, Cap, Sub>(q + (t * Heads + h) * D, kc, vc, first,
                                         p, scale, out + (t * Heads + h) * D);
      }
    }
  };
  parallelFor(pool, KvHeads, double(T) * Heads * D * double(context), heads);
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
      logits[e] = dot(x + t * H, weightRow(gate, e, H), H);
    routeToken<E, K, Softmax, Renormalize>(logits, weights + t * K,
                                           indices + t * K);
  }
}

/// moe.expert_capacity (capacityDrop, kernel_math.h). stats, when
/// non-null, counts [0] the pairs routed and [1] those dropped.
template <int64_t E, int64_t K>
void expertCapacity(const float *weights, const int32_t *indices, double factor,
                    int64_t T, int64_t *stats, float *keptW, int32_t *keptIdx) {
  int64_t dropped =
      capacityDrop<E, K>(weights, indices, factor, T, keptW, keptIdx);
  if (stats) {
    stats[0] += T * K;
    stats[1] += dropped;
  }
}

/// The SwiGLU expert bank as the unfused op states it: for each token, for
/// each of its k experts, gate and up GEMVs, silu·up, the down GEMV, mixed
/// by the router weight. Each expert's weights are read once per token that
/// chose it; grouping tokens by expert is moe-fuse-expert-gemms' job.
/// Dropped pairs (index -1, moe.expert_capacity) add nothing.
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
      if (e < 0)
        continue;
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
/// indices t*K + j grouped by expert, in token order; offsets[E + 1]. The
/// pairs moe.expert_capacity dropped (index -1) fill perm from offsets[E]
/// on with -1.
template <int64_t E, int64_t K>
void expertPermute(const int32_t *indices, int64_t T, int32_t *perm,
                   int32_t *offsets) {
  int64_t count[E + 1] = {};
  for (int64_t i = 0; i < T * K; ++i)
    if (indices[i] >= 0)
      ++count[indices[i] + 1];
  countsToOffsets(count, E);
  for (int64_t e = 0; e <= E; ++e)
    offsets[e] = int32_t(count[e]);
  for (int64_t i = 0; i < T * K; ++i)
    if (indices[i] >= 0)
      perm[count[indices[i]]++] = int32_t(i);
  std::fill(perm + offsets[E], perm + T * K, -1);
}

/// groupedMatmul when no expert has more than one row (decode: one token,
/// or tokens that chose different experts): every expert's GEMVs in one
/// parallel region, in blocks of 24 weight rows, rather than a region per
/// expert and weight (six a layer for Mixtral's two experts, each ending in
/// the threads waiting for each other). With Silu a block computes its gate
/// rows and up rows and combines them, so `up` is not used. The results
/// are those of the per-expert path (the same row kernels). False, having
/// done nothing, when some expert has more rows.
template <typename WA, typename WB, int64_t RowsA, int64_t RowsB, int64_t In,
          int64_t E, int64_t K, bool Gather, bool Silu>
bool groupedDecode(moert_pool *pool, const float *x, const int32_t *perm,
                   const int32_t *offsets, const void *const *weights,
                   float *out) {
  constexpr int64_t Parts = RowsB > 0 ? 2 : 1;
  constexpr int64_t N = Silu ? RowsA : RowsA + RowsB;
  constexpr int64_t kBlock = qk::kRows; // linear's blocks (see fusedLinear)
  constexpr int64_t blocksA = (RowsA + kBlock - 1) / kBlock;
  constexpr int64_t blocksB = (RowsB + kBlock - 1) / kBlock;
  // Units of one expert: Silu, a block of gate and up rows each; else the
  // blocks of A, then those of B.
  constexpr int64_t perExpert = Silu ? blocksA : blocksA + blocksB;
  int32_t active[E];
  int64_t n = 0;
  for (int64_t e = 0; e < E; ++e) {
    int32_t rows = offsets[e + 1] - offsets[e];
    if (rows > 1)
      return false;
    if (rows == 1)
      active[n++] = int32_t(e);
  }
  // Per active expert, its input row prepared for each weight format (the
  // two parts share the row). Grown once per thread, as prefillScratch.
  // (The workers reach them through these pointers: a thread_local named
  // in the body would be the worker's own.)
  thread_local std::vector<RowActs<WA, In>> bufA;
  thread_local std::vector<RowActs<WB, In>> bufB;
  constexpr bool TwoActs = Parts == 2 && !std::is_same<WA, WB>::value;
  if (int64_t(bufA.size()) < n)
    bufA.resize(size_t(n));
  if (TwoActs && int64_t(bufB.size()) < n)
    bufB.resize(size_t(n));
  RowActs<WA, In> *actsA = bufA.data();
  RowActs<WB, In> *actsB = bufB.data();
  // Expert i's activations for B (its own, or A's for one type).
  auto upActs = [&](int64_t i) -> decltype(auto) {
    if constexpr (TwoActs)
      return (actsB[i]);
    else
      return (actsA[i]);
  };
  for (int64_t i = 0; i < n; ++i) {
    int64_t r = offsets[active[i]];
    const float *src = Gather ? x + pairToken<K>(perm[r]) * In : x + r * In;
    actsA[i].prepare(src);
    if constexpr (TwoActs)
      actsB[i].prepare(src);
  }
  auto body = [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t i = u / perExpert, b = u % perExpert, e = active[i];
      float *o = out + int64_t(offsets[e]) * N;
      const auto &a = actsA[i];
      const WA *wa = static_cast<const WA *>(weights[e * Parts]);
      if (b < blocksA) {
        const int64_t r0 = b * kBlock, r1 = std::min(RowsA, r0 + kBlock);
        a.rows(wa, r0, r1, [&](int64_t r, float v) { o[r] = v; });
        if constexpr (Silu) {
          const WB *wb = static_cast<const WB *>(weights[e * Parts + 1]);
          upActs(i).rows(wb, r0, r1, [&](int64_t r, float v) {
            o[r] = siluTimes(o[r], v);
          });
        }
      } else if constexpr (Parts == 2 && !Silu) {
        const WB *wb = static_cast<const WB *>(weights[e * Parts + 1]);
        const int64_t r0 = (b - blocksA) * kBlock,
                      r1 = std::min(RowsB, r0 + kBlock);
        upActs(i).rows(wb, r0, r1,
                       [&](int64_t r, float v) { o[RowsA + r] = v; });
      }
    }
  };
  parallelFor(pool, n * perExpert, double(n) * (RowsA + RowsB) * In, body);
  return true;
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
  if (groupedDecode<WA, WB, RowsA, RowsB, In, E, K, Gather, Silu>(
          pool, x, perm, offsets, weights, out))
    return;
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
/// plus res[t] when given (moe-fuse-epilogues; added after the sum). The
/// -1 entries of perm (dropped pairs) have no row.
template <int64_t H, int64_t K>
void expertCombine(const float *y, const int32_t *perm, const float *weights,
                   int64_t T, float *out, const float *res = nullptr) {
  std::fill(out, out + T * H, 0.0f);
  for (int64_t r = 0; r < T * K; ++r) {
    int64_t pair = perm[r];
    if (pair < 0)
      continue;
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

#include "moert/ep.h"

#endif // MOERT_KERNELS_H
