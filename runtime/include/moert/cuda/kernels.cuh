//===- kernels.cuh - CUDA kernels called by generated plans ----*- CUDA -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Device templates that the generated .cu file instantiates with the model's
// shapes and weight types, one `extern "C" __global__` wrapper per distinct
// specialisation. The layout contract is the CPU target's (kernels.h):
// activations are row-major [tokens][features] f32 at the planned offsets of
// one arena, weights are read in their stored type (f32, f16, bf16, or the
// block-quantised q8_0, q4_0, q4_1, q4_K, q5_K and q6_K of quant.h, dequantised
// in registers) and every reduction accumulates in f32. KV caches are
// [kv_heads][capacity][head_dim] f32 rings: position p lives in slot p %
// capacity.
//
// Matmuls come in two variants chosen by the host plan from the token count:
// `gemv` (decode: one warp per output feature streams its weight row once
// for up to kGemvRows activation rows; bandwidth-bound) and `gemmMma`
// (prefill: 64x128x64 block tiles on tensor cores through WMMA, f16/bf16
// inputs with the f32 activations rounded to the weight type in shared
// memory, f32 accumulation; quantised weights are dequantised to f16 tiles).
// Both serve dense `moe.linear` (one group: all
// tokens) and `moe.grouped_matmul` (group e: rows offsets[e]..offsets[e+1]
// of the expert-sorted batch, optionally gathering token perm[r] / K).
// With `res` (non-null; dense only), out = x @ W^T + res: the residual
// add moe-fuse-epilogues folded in, one rounding as in the unfused add.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_CUDA_KERNELS_CUH
#define MOERT_CUDA_KERNELS_CUH

#ifndef MOERT_CUDA_EMULATOR // test/cuda-emu/cuda_emu.h stands in for these
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#endif
#include <stdint.h>

#include "moert/kernel_math.h"
#include "moert/quant.h"

namespace moert {
namespace cuda {

/// Expert weight pointers, passed by value in the kernel parameter space
/// (declared __grid_constant__ so indexing them does not copy them to local
/// memory).
template <int Count> struct Ptrs {
  const void *p[Count];
};

/// Output pointers, passed by value like Ptrs.
template <int Count> struct Outs {
  float *p[Count];
};

/// Rows of activations one gemv pass reads each weight row for.
constexpr int kGemvRows = 4;

__device__ __forceinline__ float toF(float x) { return x; }
__device__ __forceinline__ float toF(__half x) { return __half2float(x); }
__device__ __forceinline__ float toF(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

/// f16 bits (a quantised block's scale or minimum) to float: one conversion
/// instruction, where halfBitsToFloat is the portable definition.
__device__ __forceinline__ float halfToF(uint16_t h) {
  return __half2float(__ushort_as_half(h));
}

/// Element i of a weight row of W: as stored, or dequantised from its block
/// (the scalar definition; the hot loops dequantise whole quarters of blocks).
template <typename W>
__device__ __forceinline__ float weightAt(const W *row, int i) {
  if constexpr (IsQuant<W>::value)
    return dequant(row[i / IsQuant<W>::kBlock], int(i % IsQuant<W>::kBlock));
  else
    return toF(row[i]);
}

/// Eight consecutive weights (16-byte aligned for 16-bit types) as floats.
__device__ __forceinline__ void load8(const float *p, float (&v)[8]) {
  float4 a = __ldg(reinterpret_cast<const float4 *>(p));
  float4 b = __ldg(reinterpret_cast<const float4 *>(p) + 1);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
  v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ void load8(const __half *p, float (&v)[8]) {
  uint4 u = __ldg(reinterpret_cast<const uint4 *>(p));
  const __half2 *h = reinterpret_cast<const __half2 *>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 f = __half22float2(h[i]);
    v[2 * i] = f.x, v[2 * i + 1] = f.y;
  }
}
__device__ __forceinline__ void load8(const __nv_bfloat16 *p, float (&v)[8]) {
  uint4 u = __ldg(reinterpret_cast<const uint4 *>(p));
  const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 f = __bfloat1622float2(h[i]);
    v[2 * i] = f.x, v[2 * i + 1] = f.y;
  }
}

__device__ __forceinline__ float warpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/// Sum (or max) over the block; every thread gets the result. `red` holds
/// one float per warp. Contains barriers: call from every thread.
template <int Threads, bool Max>
__device__ __forceinline__ float blockReduce(float v, float *red) {
  constexpr int Warps = Threads / 32;
  v = Max ? warpMax(v) : warpSum(v);
  if (threadIdx.x % 32 == 0)
    red[threadIdx.x / 32] = v;
  __syncthreads();
  float r = red[0];
#pragma unroll
  for (int w = 1; w < Warps; ++w)
    r = Max ? fmaxf(r, red[w]) : r + red[w];
  __syncthreads();
  return r;
}

//===----------------------------------------------------------------------===//
// Element-wise and per-token kernels
//===----------------------------------------------------------------------===//

/// grid (T), block 256.
template <typename W, int H>
__device__ void embedding(const W *table, const int32_t *ids, float *out) {
  int t = blockIdx.x;
  const W *row = weightRow(table, ids[t], H);
  for (int i = threadIdx.x; i < H; i += blockDim.x)
    out[int64_t(t) * H + i] = weightAt(row, i);
}

/// grid (T), block 256.
template <typename W, int H>
__device__ void rmsNorm(const float *x, const W *w, float eps, float *out) {
  __shared__ float red[8];
  int t = blockIdx.x;
  const float *r = x + int64_t(t) * H;
  float ss = 0;
  for (int i = threadIdx.x; i < H; i += 256)
    ss += r[i] * r[i];
  ss = blockReduce<256, false>(ss, red);
  float scale = rmsNormScale(ss, H, eps);
  for (int i = threadIdx.x; i < H; i += 256)
    out[int64_t(t) * H + i] = r[i] * scale * weightAt(w, i);
}

/// Element i of a head and its partner i + D/2 (x1, x2) rotated for
/// position p, as on the CPU (kernel_math.h).
template <int D>
__device__ __forceinline__ void ropePair(float x1, float x2, int p, int i,
                                         double theta, float &o1, float &o2) {
  float c, s;
  ropeCosSin(p, ropeInvFreq(theta, i, D), c, s);
  ropeRotate(x1, x2, c, s, o1, o2);
}

/// ropePair under a scaled RoPE type (kernel_math.h's RopeScaling; seqLen
/// for dynamic: ropeSeqLen of the call).
template <int D>
__device__ __forceinline__ void
ropePairScaled(float x1, float x2, int p, int i, double theta,
               const RopeScaling &scaling, int64_t seqLen, float &o1,
               float &o2) {
  float c, s;
  ropeScaledCosSin(p, ropeScaledInvFreq(theta, i, D, scaling, seqLen),
                   scaling.attention, c, s);
  ropeRotate(x1, x2, c, s, o1, o2);
}

/// RoPE on [T][Width] with heads of D, rotate-half or interleaved pairs
/// (kernel_math.h); angles in double as on the CPU. grid (ceil(T * Width /
/// 2 / 256)), block 256.
/// A scaled RoPE type (Kind, a RopeKind other than RopeDefault) takes its
/// resolved parameters after `out`, RopeScaling's fields in order.
template <int Width, int D, bool Interleaved = false, int Kind = 0>
__device__ void rope(const float *x, const int32_t *pos, double theta, int n,
                     float *out, double factor = 1.0, double low = 0.0,
                     double high = 0.0, double context = 0.0,
                     double attention = 1.0) {
  constexpr int Half = D / 2, Pairs = Width / 2;
  int idx = blockIdx.x * 256 + threadIdx.x;
  if (idx >= n * Pairs)
    return;
  int t = idx / Pairs, rem = idx % Pairs, h = rem / Half, i = rem % Half;
  const float *r = x + int64_t(t) * Width + h * D;
  float *o = out + int64_t(t) * Width + h * D;
  int64_t a, b;
  ropePairElements<D, Interleaved>(i, a, b);
  if constexpr (Kind == RopeDefault)
    ropePair<D>(r[a], r[b], pos[t], i, theta, o[a], o[b]);
  else
    ropePairScaled<D>(r[a], r[b], pos[t], i, theta,
                      RopeScaling{Kind, factor, low, high, context, attention},
                      ropeSeqLen(pos, n), o[a], o[b]);
}

/// grid (ceil(T * Size / 256)), block 256.
template <int Size>
__device__ void add(const float *a, const float *b, int n, float *out) {
  int64_t i = int64_t(blockIdx.x) * 256 + threadIdx.x;
  if (i < int64_t(n) * Size)
    out[i] = a[i] + b[i];
}

/// [rows][2I] gate|up -> [rows][I] silu(gate) * up.
/// grid (ceil(rows * I / 256)), block 256.
template <int I>
__device__ void siluMul(const float *in, int rows, float *out) {
  int64_t idx = int64_t(blockIdx.x) * 256 + threadIdx.x;
  if (idx >= int64_t(rows) * I)
    return;
  int64_t r = idx / I, i = idx % I;
  out[idx] = siluTimes(in[r * 2 * I + i], in[r * 2 * I + I + i]);
}

//===----------------------------------------------------------------------===//
// Routing: fused gate GEMV + scores + top-k + renormalisation, permutation,
// combine
//===----------------------------------------------------------------------===//

/// One block (256 threads) per token: warp w computes the logits of experts
/// w, w + 8, ... (8 weights per lane and step when H is a multiple of 8, else
/// one); thread 0 routes exactly as the CPU target does (routeToken). grid
/// (T).
template <typename W, int H, int E, int K, bool Softmax, bool Renormalize>
__device__ void fusedRouter(const float *x, const W *gate, float *weights,
                            int32_t *indices) {
  __shared__ float logits[E];
  int t = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float *xr = x + int64_t(t) * H;
  for (int e = warp; e < E; e += 8) {
    const W *wr = gate + int64_t(e) * H;
    float acc = 0;
    if constexpr (H % 8 == 0) {
      for (int k = lane * 8; k < H; k += 256) {
        float wv[8];
        load8(wr + k, wv);
#pragma unroll
        for (int j = 0; j < 8; ++j)
          acc += xr[k + j] * wv[j];
      }
    } else {
      // Any width: rows are not 16-byte aligned, so one element per lane.
      for (int k = lane; k < H; k += 32)
        acc += xr[k] * toF(wr[k]);
    }
    acc = warpSum(acc);
    if (lane == 0)
      logits[e] = acc;
  }
  __syncthreads();
  if (threadIdx.x == 0)
    routeToken<E, K, Softmax, Renormalize>(logits, weights + t * K,
                                           indices + t * K);
}

/// moe.expert_capacity (capacityDrop, kernel_math.h), as on the CPU: the
/// priority order is sequential, so one thread runs it (T * K pairs, a few
/// thousand at most), and adds to the session's counters stats[0] (pairs
/// routed) and stats[1] (dropped). grid (1), block 32.
template <int E, int K>
__device__ void expertCapacity(const float *weights, const int32_t *indices,
                               double factor, int n, int64_t *stats,
                               float *keptW, int32_t *keptIdx) {
  if (threadIdx.x != 0)
    return;
  int64_t dropped =
      capacityDrop<E, K>(weights, indices, factor, n, keptW, keptIdx);
  stats[0] += int64_t(n) * K;
  stats[1] += dropped;
}

/// Stable counting sort of the T*K (token, choice) pairs by expert, as on the
/// CPU: perm lists pair indices grouped by expert in token order, offsets has
/// E + 1 entries; the pairs moe.expert_capacity dropped (index -1) fill perm
/// from offsets[E] on with -1. One block; thread e owns experts e, e +
/// Threads, ... grid (1), block Threads (a multiple of 32, at most 1024; E +
/// 1 rounded up to 32 gives each thread one expert).
template <int E, int K>
__device__ void expertPermute(const int32_t *indices, int n, int32_t *perm,
                              int32_t *offsets) {
  __shared__ int count[E + 1];
  int pairs = n * K;
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    int mine = 0;
    for (int i = 0; i < pairs; ++i)
      mine += indices[i] == e;
    count[e + 1] = mine;
  }
  if (threadIdx.x == 0)
    count[0] = 0;
  __syncthreads();
  if (threadIdx.x == 0)
    countsToOffsets(count, E);
  __syncthreads();
  for (int e = threadIdx.x; e <= E; e += blockDim.x)
    offsets[e] = count[e];
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    int next = count[e];
    for (int i = 0; i < pairs; ++i)
      if (indices[i] == e)
        perm[next++] = i;
  }
  for (int i = count[E] + threadIdx.x; i < pairs; i += blockDim.x)
    perm[i] = -1;
}

/// out[t] = sum_j weights[t, j] * y[r] over the rows r with perm[r] = t*K + j,
/// plus res[t] after the sum when res is non-null. Each block finds its
/// token's K rows by scanning perm; a dropped pair (perm's -1 entries) has
/// no row and adds nothing. grid (T), block 256.
template <int H, int K>
__device__ void expertCombine(const float *y, const int32_t *perm,
                              const float *weights, int n, float *out,
                              const float *res) {
  __shared__ int rows[K];
  int t = blockIdx.x;
  for (int j = threadIdx.x; j < K; j += 256)
    rows[j] = -1;
  __syncthreads();
  for (int r = threadIdx.x; r < n * K; r += 256) {
    int pair = perm[r];
    if (pair >= 0 && pairToken<K>(pair) == t)
      rows[pairChoice<K>(pair)] = r;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < H; i += 256) {
    float acc = 0;
#pragma unroll
    for (int j = 0; j < K; ++j)
      if (rows[j] >= 0)
        acc += weights[t * K + j] * y[int64_t(rows[j]) * H + i];
    int64_t o = int64_t(t) * H + i;
    out[o] = res ? acc + res[o] : acc;
  }
}

//===----------------------------------------------------------------------===//
// Expert parallelism (moe-shard-experts) on GPUs
//===----------------------------------------------------------------------===//
//
// Every rank holds every token (attention is replicated), so the rows
// moe.ep_dispatch brings rank `rank` are exactly the (token, choice) pairs
// of its own experts, in (token, choice) order (the source ranks' slices,
// in rank order): each rank gathers them itself, and only the combine
// exchanges data, as an all-gather of per-rank partial sums
// (moert/cuda/ep_host.h). Dropped pairs (index -1) belong to no rank.

/// Whether pair i is rank `rank`'s.
template <int E, int R>
__device__ __forceinline__ bool epMine(const int32_t *indices, int i,
                                       int rank) {
  return indices[i] >= 0 && epOwner<E, R>(indices[i]) == rank;
}

/// This rank's pairs before token t's: where its first row goes. Each
/// thread counts a stride of the t * K pairs and the block sums the counts
/// (O(t * K / 256) a thread). Called once a kernel, by every thread of a
/// block of 256.
template <int E, int K, int R>
__device__ int epSlotBase(const int32_t *indices, int t, int rank) {
  __shared__ int part[256];
  int b = 0;
  for (int i = threadIdx.x; i < t * K; i += 256)
    b += epMine<E, R>(indices, i, rank);
  part[threadIdx.x] = b;
  __syncthreads();
  for (int w = 128; w > 0; w >>= 1) {
    if (int(threadIdx.x) < w)
      part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  return part[0];
}

/// moe.ep_dispatch: slot s of rows, experts and gates is this rank's s-th
/// pair (token t's hidden state, its expert, its routing weight); the slots
/// past the last hold expert -1. (The counts moe.ep_exchange_counts would
/// exchange are not needed here: nothing on this target reads them.) grid
/// (T), block 256.
template <int H, int E, int K, int R>
__device__ void epGatherLocal(const float *x, const int32_t *indices,
                              const float *weights, int n, int rank,
                              float *rows, int32_t *experts, float *gates) {
  int t = blockIdx.x;
  int s = epSlotBase<E, K, R>(indices, t, rank);
  for (int j = 0; j < K; ++j) {
    int i = t * K + j;
    if (!epMine<E, R>(indices, i, rank))
      continue;
    for (int h = threadIdx.x; h < H; h += 256)
      rows[int64_t(s) * H + h] = x[int64_t(t) * H + h];
    if (threadIdx.x == 0) {
      experts[s] = indices[i];
      gates[s] = weights[i];
    }
    ++s;
  }
  if (t != n - 1)
    return;
  // The last token's block knows how many rows there are.
  for (int i = s + threadIdx.x; i < n * K; i += 256) {
    experts[i] = -1;
    gates[i] = 0.0f;
  }
}

/// moe.ep_experts' last step: out[s] = gates[s] * y[r] for the row r that
/// expertPermute<E, 1> sorted slot s to (perm[r] = s). Expert e's segment
/// of perm, [offsets[e], offsets[e + 1]), is ascending (the sort is
/// stable), so each block finds its row by binary search; an empty slot
/// (expert -1) is zeros. grid (n), block 256.
template <int H>
__device__ void epScaleRows(const float *y, const int32_t *perm,
                            const int32_t *offsets, const int32_t *experts,
                            const float *gates, float *out) {
  int s = blockIdx.x, e = experts[s], row = -1;
  if (e >= 0) {
    int lo = offsets[e], hi = offsets[e + 1];
    while (lo < hi) {
      int mid = lo + (hi - lo) / 2;
      if (perm[mid] < s)
        lo = mid + 1;
      else
        hi = mid;
    }
    if (lo < offsets[e + 1] && perm[lo] == s)
      row = lo;
  }
  for (int h = threadIdx.x; h < H; h += 256)
    out[int64_t(s) * H + h] =
        row >= 0 ? gates[s] * y[int64_t(row) * H + h] : 0.0f;
}

/// moe.ep_combine, this rank's share: token t's rows of this rank's experts
/// (the slots epGatherLocal gave them) summed in expert order into this
/// rank's block of partials [R][n][H]. grid (T), block 256.
template <int H, int E, int K, int R>
__device__ void epPartialSum(const float *y, const int32_t *indices, int n,
                             int rank, float *partials) {
  int t = blockIdx.x;
  int s = epSlotBase<E, K, R>(indices, t, rank);
  int slot[K], order[K], mine = 0;
  for (int j = 0; j < K; ++j)
    if (epMine<E, R>(indices, t * K + j, rank)) {
      slot[j] = s++;
      order[mine++] = j;
    }
  // Expert order, as the single-process combine sums (K is small).
  for (int a = 1; a < mine; ++a)
    for (int b = a; b > 0 && indices[t * K + order[b]] <
                                 indices[t * K + order[b - 1]];
         --b) {
      int o = order[b];
      order[b] = order[b - 1];
      order[b - 1] = o;
    }
  float *out = partials + (int64_t(rank) * n + t) * H;
  for (int h = threadIdx.x; h < H; h += 256) {
    float acc = 0.0f;
    for (int a = 0; a < mine; ++a)
      acc += y[int64_t(slot[order[a]]) * H + h];
    out[h] = acc;
  }
}

/// out = the ranks' partials summed in rank order (every rank the same
/// floats, in the same order), plus res when non-null. grid (ceil(n * H /
/// 256)), block 256.
template <int H, int R>
__device__ void epSumPartials(const float *partials, int n, float *out,
                              const float *res) {
  int64_t i = int64_t(blockIdx.x) * 256 + threadIdx.x;
  if (i >= int64_t(n) * H)
    return;
  float acc = 0.0f;
  for (int r = 0; r < R; ++r)
    acc += partials[int64_t(r) * n * H + i];
  out[i] = res ? acc + res[i] : acc;
}

//===----------------------------------------------------------------------===//
// Matmuls: out[r][n] = x[row(r)] . W[n] for W of shape [N, In] (x @ W^T)
//===----------------------------------------------------------------------===//

/// The input row of output row `r`: the token perm[r] / K when gathering.
template <int K, bool Gather>
__device__ __forceinline__ int inputRow(const int32_t *perm, int r) {
  return Gather ? pairToken<K>(perm[r]) : r;
}

/// x[0..8) . w[0..8) for 8 activations (as two float4) and 8 weights.
__device__ __forceinline__ float dot8(float4 a, float4 b, const float (&w)[8]) {
  return a.x * w[0] + a.y * w[1] + a.z * w[2] + a.w * w[3] + b.x * w[4] +
         b.y * w[5] + b.z * w[6] + b.w * w[7];
}

/// The quantised gemv reads a block of 32 weights with four lanes; lane
/// quarter p (0, 4, 8 or 12) gets elements p..p+3 of the block in v[0..3] and
/// p+16..p+19 in v[4..7] (the two nibbles of q4 bytes p..p+3, so every q4
/// byte is read by one lane). Blocks are only 2-byte aligned: 16-bit loads.
/// The products are exact in f32 (an f16 scale times a small integer), so
/// the weights are dequant()'s values bit for bit.
__device__ __forceinline__ void loadQuarter(const q8_0 *row, int blk, int p,
                                            float (&v)[8]) {
  const uint16_t *u = reinterpret_cast<const uint16_t *>(row + blk);
  float d = halfToF(__ldg(u));
  // qs[j] is byte 2 + j: halfwords 1 + p / 2 (low half qs[p]), 2 + p / 2,
  // and 9 + p / 2, 10 + p / 2 for qs[p + 16..].
  uint16_t q[4] = {__ldg(u + 1 + p / 2), __ldg(u + 2 + p / 2),
                   __ldg(u + 9 + p / 2), __ldg(u + 10 + p / 2)};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[2 * i] = d * float(int8_t(q[i] & 0xff));
    v[2 * i + 1] = d * float(int8_t(q[i] >> 8));
  }
}
/// Nibbles of q4 bytes p..p+3 (in halfwords lo, hi) as d * nibble + m.
__device__ __forceinline__ void q4Quarter(uint16_t lo, uint16_t hi, float d,
                                          float m, float (&v)[8]) {
  uint32_t b = uint32_t(lo) | uint32_t(hi) << 16;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    uint32_t byte = b >> (8 * j) & 0xff;
    v[j] = d * float(int(byte & 0xf)) + m;
    v[4 + j] = d * float(int(byte >> 4)) + m;
  }
}
__device__ __forceinline__ void loadQuarter(const q4_0 *row, int blk, int p,
                                            float (&v)[8]) {
  const uint16_t *u = reinterpret_cast<const uint16_t *>(row + blk);
  float d = halfToF(__ldg(u));
  // d * (n - 8) as d * n + (-8 d): both exact, so is the sum.
  q4Quarter(__ldg(u + 1 + p / 2), __ldg(u + 2 + p / 2), d, -8.0f * d, v);
}
__device__ __forceinline__ void loadQuarter(const q4_1 *row, int blk, int p,
                                            float (&v)[8]) {
  const uint16_t *u = reinterpret_cast<const uint16_t *>(row + blk);
  q4Quarter(__ldg(u + 2 + p / 2), __ldg(u + 3 + p / 2), halfToF(__ldg(u)),
            halfToF(__ldg(u + 1)), v);
}
/// q4_K's and q5_K's sub-block j scale and min, d * sc_j and dmin * m_j
/// (scaleMinK4), from the 16-bit words s0, s1, s2 of the block that hold
/// scales[j - 4], scales[j] and scales[j + 4] (the byte of j's parity in
/// each) and the raw f16 d and dmin.
__device__ __forceinline__ void scaleMinK(uint16_t s0, uint16_t s1, uint16_t s2,
                                          int j, uint16_t d, uint16_t dmin,
                                          float &d1, float &m1) {
  const int sh = (j & 1) * 8;
  const int b0 = s0 >> sh & 0xff, b1 = s1 >> sh & 0xff, b2 = s2 >> sh & 0xff;
  const int sc = j < 4 ? b1 & 63 : (b2 & 0xf) | (b0 >> 6) << 4;
  const int m = j < 4 ? b2 & 63 : (b2 >> 4) | (b1 >> 6) << 4;
  d1 = halfToF(d) * float(sc);
  m1 = halfToF(dmin) * float(m);
}
/// The same from the block's words `u` in global memory (d, dmin, then
/// scales[12]: the three bytes are words (4 + j) / 2 - 2, + 0 and + 2).
__device__ __forceinline__ void scaleMinWords(const uint16_t *u, int j,
                                              float &d1, float &m1) {
  const uint16_t *sw = u + 2 + j / 2;
  scaleMinK(__ldg(sw - 2), __ldg(sw), __ldg(sw + 2), j, __ldg(u), __ldg(u + 1),
            d1, m1);
}
/// The k-quants: `blk` counts 32-element chunks of the row (sub-block
/// blk % 8 of super-block blk / 8), read in place with 16-bit loads; the
/// values are dequant()'s (up to the contraction of q4_K's d1 * q - m1).
/// q4_K: the sub-block's scale and min from words 2..7 (scaleMinK4; the
/// three bytes it needs have the parity of j), its nibbles from the 32
/// bytes of qs it shares with its neighbour (low nibbles for even j).
__device__ __forceinline__ void loadQuarter(const q4_K *row, int blk, int p,
                                            float (&v)[8]) {
  const uint16_t *u = reinterpret_cast<const uint16_t *>(row + blk / 8);
  const int j = blk % 8;
  float d1, m1;
  scaleMinWords(u, j, d1, m1);
  const uint16_t *qs = u + 8 + (j >> 1) * 16 + p / 2;
  const uint32_t lo = uint32_t(__ldg(qs)) | uint32_t(__ldg(qs + 1)) << 16;
  const uint32_t hi = uint32_t(__ldg(qs + 8)) | uint32_t(__ldg(qs + 9)) << 16;
  const int nsh = (j & 1) * 4;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[i] = d1 * float(int(lo >> (8 * i + nsh) & 0xf)) - m1;
    v[4 + i] = d1 * float(int(hi >> (8 * i + nsh) & 0xf)) - m1;
  }
}
/// q5_K: q4_K's scales and nibbles (qs at word 24), plus bit j of qh bytes
/// p..p+3 and p+16..p+19 (words 8..23) as each value's bit 4.
__device__ __forceinline__ void loadQuarter(const q5_K *row, int blk, int p,
                                            float (&v)[8]) {
  const uint16_t *u = reinterpret_cast<const uint16_t *>(row + blk / 8);
  const int j = blk % 8;
  float d1, m1;
  scaleMinWords(u, j, d1, m1);
  const uint16_t *qs = u + 24 + (j >> 1) * 16 + p / 2;
  const uint32_t lo = uint32_t(__ldg(qs)) | uint32_t(__ldg(qs + 1)) << 16;
  const uint32_t hi = uint32_t(__ldg(qs + 8)) | uint32_t(__ldg(qs + 9)) << 16;
  const uint16_t *qh = u + 8 + p / 2;
  const uint32_t hlo =
      (uint32_t(__ldg(qh)) | uint32_t(__ldg(qh + 1)) << 16) >> j;
  const uint32_t hhi =
      (uint32_t(__ldg(qh + 8)) | uint32_t(__ldg(qh + 9)) << 16) >> j;
  const int nsh = (j & 1) * 4;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[i] = d1 * float(int((lo >> (8 * i + nsh) & 0xf) | (hlo >> (8 * i) & 1)
                                                            << 4)) -
           m1;
    v[4 + i] = d1 * float(int((hi >> (8 * i + nsh) & 0xf) | (hhi >> (8 * i) & 1)
                                                                << 4)) -
               m1;
  }
}
/// q6_K: chunk j = 4 n + k of a super-block takes nibble (k >= 2: high) of
/// ql[64 n + 32 (k & 1) + l] and bits 2k, 2k + 1 of qh[32 n + l]; its two
/// sub-blocks' scales are one word (scales[2j], scales[2j + 1]).
__device__ __forceinline__ void loadQuarter(const q6_K *row, int blk, int p,
                                            float (&v)[8]) {
  const uint16_t *u = reinterpret_cast<const uint16_t *>(row + blk / 8);
  const int j = blk % 8, n = j / 4, k = j % 4;
  const uint16_t scw = __ldg(u + 96 + j);
  const float d = halfToF(__ldg(u + 104));
  const float da = d * float(int8_t(scw & 0xff)),
              db = d * float(int8_t(scw >> 8));
  const uint16_t *ql = u + 32 * n + 16 * (k & 1) + p / 2;
  const uint16_t *qh = u + 64 + 16 * n + p / 2;
  const uint32_t l0 = uint32_t(__ldg(ql)) | uint32_t(__ldg(ql + 1)) << 16;
  const uint32_t l1 = uint32_t(__ldg(ql + 8)) | uint32_t(__ldg(ql + 9)) << 16;
  const uint32_t h0 = uint32_t(__ldg(qh)) | uint32_t(__ldg(qh + 1)) << 16;
  const uint32_t h1 = uint32_t(__ldg(qh + 8)) | uint32_t(__ldg(qh + 9)) << 16;
  // Four 6-bit values per word: the nibbles and the bit pairs in place.
  const int lsh = k >= 2 ? 4 : 0, hsh = 2 * k;
  const uint32_t qa = (l0 >> lsh & 0x0f0f0f0fu) | (h0 >> hsh & 0x03030303u)
                                                      << 4;
  const uint32_t qb = (l1 >> lsh & 0x0f0f0f0fu) | (h1 >> hsh & 0x03030303u)
                                                      << 4;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[i] = da * float(int(qa >> 8 * i & 0xff) - 32);
    v[4 + i] = db * float(int(qb >> 8 * i & 0xff) - 32);
  }
}

/// The same elements of an unquantised row (the other part of a Pair whose
/// first is quantised).
template <typename W>
__device__ __forceinline__ void loadQuarter(const W *row, int blk, int p,
                                            float (&v)[8]) {
  const W *e = row + blk * kQuantBlock + p;
#pragma unroll
  for (int i = 0; i < 4; ++i)
    v[i] = toF(e[i]), v[4 + i] = toF(e[16 + i]);
}

/// The warp's dot products of weight row `wrow` (and, with Pair, `wrow2`)
/// with rows r0..r1 of the batch, kGemvRows rows per pass over the weights;
/// `store(r, s, s2)` runs on lane 0 for each row r with the sums.
template <typename W, typename W2, int In, int K, bool Gather, bool Pair,
          typename Store>
__device__ __forceinline__ void gemvRows(const W *wrow, const W2 *wrow2,
                                         const float *x, const int32_t *perm,
                                         int r0, int r1, Store store) {
  int lane = threadIdx.x % 32;
  for (int rb = r0; rb < r1; rb += kGemvRows) {
    int cnt = min(kGemvRows, r1 - rb);
    const float *xr[kGemvRows];
#pragma unroll
    for (int i = 0; i < kGemvRows; ++i)
      xr[i] =
          x + int64_t(inputRow<K, Gather>(perm, i < cnt ? rb + i : rb)) * In;
    float acc[kGemvRows] = {}, acc2[kGemvRows] = {};
    if constexpr (IsQuant<W>::value || IsQuant<W2>::value) {
      static_assert(In % kQuantBlock == 0,
                    "quantised weights take a multiple of 32 inputs");
      static_assert(In % IsQuant<W>::kBlock == 0 &&
                        In % IsQuant<W2>::kBlock == 0,
                    "k-quant weights take a multiple of 256 inputs");
      // Four lanes per block, eight consecutive blocks per step: the warp
      // reads each weight byte once, dequantising in registers. Not
      // unrolled: the warps of a decode step's thousands of rows hide the
      // latency, and ptxas spills unrolled variants (by 2, 3 or 4) to reach
      // an occupancy step.
      int p = lane % 4 * 4;
#pragma unroll 1
      for (int blk = lane / 4; blk < In / kQuantBlock; blk += 8) {
        float wv[8], wv2[8];
        loadQuarter(wrow, blk, p, wv);
        if constexpr (Pair)
          loadQuarter(wrow2, blk, p, wv2);
#pragma unroll
        for (int i = 0; i < kGemvRows; ++i) {
          if (i < cnt) {
            const float *xk = xr[i] + blk * kQuantBlock + p;
            float4 a = __ldg(reinterpret_cast<const float4 *>(xk));
            float4 b = __ldg(reinterpret_cast<const float4 *>(xk + 16));
            acc[i] += dot8(a, b, wv);
            if constexpr (Pair)
              acc2[i] += dot8(a, b, wv2);
          }
        }
      }
    } else if constexpr (In % 8 == 0) {
#pragma unroll 4
      for (int k = lane * 8; k < In; k += 256) {
        float wv[8], wv2[8];
        load8(wrow + k, wv);
        if constexpr (Pair)
          load8(wrow2 + k, wv2);
#pragma unroll
        for (int i = 0; i < kGemvRows; ++i) {
          if (i < cnt) {
            float4 a = __ldg(reinterpret_cast<const float4 *>(xr[i] + k));
            float4 b = __ldg(reinterpret_cast<const float4 *>(xr[i] + k) + 1);
            acc[i] += dot8(a, b, wv);
            if constexpr (Pair)
              acc2[i] += dot8(a, b, wv2);
          }
        }
      }
    } else {
      // Any width: rows are not 16-byte aligned, so one element per lane
      // and step (still coalesced across the warp).
#pragma unroll 4
      for (int k = lane; k < In; k += 32) {
        float w = toF(wrow[k]), w2 = 0;
        if constexpr (Pair)
          w2 = toF(wrow2[k]);
#pragma unroll
        for (int i = 0; i < kGemvRows; ++i) {
          if (i < cnt) {
            float a = xr[i][k];
            acc[i] += a * w;
            if constexpr (Pair)
              acc2[i] += a * w2;
          }
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kGemvRows; ++i) {
      float s = warpSum(acc[i]), s2 = 0;
      if constexpr (Pair)
        s2 = warpSum(acc2[i]);
      if (lane == 0 && i < cnt)
        store(rb + i, s, s2);
    }
  }
}

/// One warp: output column `col` of rows r0..r1 from weight row `wrow`. With
/// Silu, `wrow2` is the up row of the same column: both are streamed in the
/// same pass and the warp stores silu(gate) * up.
template <typename W, typename W2, int In, int K, bool Gather, bool Silu>
__device__ __forceinline__ void
gemvRow(const W *wrow, const W2 *wrow2, const float *x, const int32_t *perm,
        int r0, int r1, int col, float *out, int ldo, const float *res) {
  // The column as a 64-bit offset. col >= 0, so quantised rows zero-extend
  // it: the high word is then a constant zero, where a sign-extended col is
  // a two-register value live across all of gemvRows' passes, which ptxas
  // spilled (sm_80: lm_head_gemv q8_0, mixed_gemv q4_0) to stay at its
  // 40 or 48 register occupancy step. The unquantised rows keep the sign
  // extension their register counts were settled with.
  int64_t c = IsQuant<W>::value || IsQuant<W2>::value ? int64_t(uint32_t(col))
                                                      : int64_t(col);
  gemvRows<W, W2, In, K, Gather, Silu>(wrow, wrow2, x, perm, r0, r1,
                                       [&](int r, float s, float s2) {
                                         if constexpr (Silu)
                                           s = siluTimes(s, s2);
                                         int64_t o = int64_t(r) * ldo + c;
                                         out[o] = res ? s + res[o] : s;
                                       });
}

/// Decode variant. One warp per output feature; block 256 (8 features).
/// With Silu (two parts of equal width), feature j is silu(gate j) * up j:
/// the warp streams both weight rows. Grouped, blockIdx.y is the y-th expert
/// that has rows, so the grid needs only min(E, rows) of them (a decode step
/// of one token: k, not E). grid (ceil(width / 8), Grouped ? min(E, n * K) :
/// 1) for the output width (RowsA + RowsB, or RowsA with Silu).
template <typename WA, typename WB, int RowsA, int RowsB, int In, int E, int K,
          bool Gather, bool Grouped, bool Silu, int NumPtrs>
__device__ void gemv(const float *x, const int32_t *perm,
                     const int32_t *offsets, const Ptrs<NumPtrs> &w, int n,
                     float *out, const float *res) {
  static_assert(!Silu || RowsA == RowsB, "silu_mul takes two equal parts");
  constexpr int Parts = RowsB > 0 ? 2 : 1;
  constexpr int N = Silu ? RowsA : RowsA + RowsB;
  int e = 0;
  if (Grouped) {
    e = -1;
    for (int g = 0, busy = 0; g < E && e < 0; ++g)
      if (offsets[g + 1] > offsets[g] && busy++ == int(blockIdx.y))
        e = g;
    if (e < 0)
      return;
  }
  int r0 = Grouped ? offsets[e] : 0, r1 = Grouped ? offsets[e + 1] : n;
  int col = blockIdx.x * 8 + threadIdx.x / 32;
  if (r0 >= r1 || col >= N)
    return;
  const WA *a = static_cast<const WA *>(w.p[e * Parts]);
  const WB *b = static_cast<const WB *>(w.p[e * Parts + Parts - 1]);
  if constexpr (Silu)
    gemvRow<WA, WB, In, K, Gather, true>(weightRow(a, col, In),
                                         weightRow(b, col, In), x, perm, r0, r1,
                                         col, out, N, res);
  else if (RowsB == 0 || col < RowsA)
    gemvRow<WA, WA, In, K, Gather, false>(weightRow(a, col, In), nullptr, x,
                                          perm, r0, r1, col, out, N, res);
  else
    gemvRow<WB, WB, In, K, Gather, false>(weightRow(b, col - RowsA, In),
                                          nullptr, x, perm, r0, r1, col, out, N,
                                          res);
}

/// One part of gemvMulti: warp `item` of the part's items. A part with
/// Rope has N / 2 items, each a pair of features (h * D + i, h * D + i +
/// D / 2) of one head: the warp streams both weight rows and stores them
/// rotated for each token's position.
template <typename W, int In, int N, bool Rope, int D, bool Interleaved,
          int Kind>
__device__ __forceinline__ void
gemvPart(const void *w, const float *x, int n, int item, float *out,
         const int32_t *pos, double theta, const RopeScaling &scaling) {
  const W *rows = static_cast<const W *>(w);
  if constexpr (Rope) {
    int h = item / (D / 2), i = item % (D / 2);
    int64_t pa, pb;
    ropePairElements<D, Interleaved>(i, pa, pb);
    int a = h * D + int(pa), b = h * D + int(pb);
    gemvRows<W, W, In, 1, false, true>(
        weightRow(rows, a, In), weightRow(rows, b, In), x, nullptr, 0, n,
        [&](int t, float s, float s2) {
          if constexpr (Kind == RopeDefault)
            ropePair<D>(s, s2, pos[t], i, theta, out[int64_t(t) * N + a],
                        out[int64_t(t) * N + b]);
          else
            ropePairScaled<D>(s, s2, pos[t], i, theta, scaling,
                              ropeSeqLen(pos, n), out[int64_t(t) * N + a],
                              out[int64_t(t) * N + b]);
        });
  } else {
    gemvRow<W, W, In, 1, false, false>(weightRow(rows, item, In), nullptr, x,
                                       nullptr, 0, n, item, out, N, nullptr);
  }
}

/// Decode variant of moe.fused_linear: two or three projections of one
/// input (widths N0, N1, N2; N2 = 0 for two) in one launch, one warp per
/// feature of their concatenated width, or per rotated pair of features for
/// a part with RoPE (R0, R1, R2; head_dim D, interleaved pairs or not,
/// `pos`, `theta`; a scaled RoPE type Kind with RopeScaling's fields after
/// `theta`, as moert::cuda::rope takes them). grid (ceil(items / 8)), block
/// 256.
template <typename W0, typename W1, typename W2, int In, int N0, int N1, int N2,
          bool R0, bool R1, bool R2, int D, bool Interleaved = false,
          int Kind = 0>
__device__ void gemvMulti(const float *x, const Ptrs<3> &w, int n,
                          const Outs<3> &out, const int32_t *pos, double theta,
                          double factor = 1.0, double low = 0.0,
                          double high = 0.0, double context = 0.0,
                          double attention = 1.0) {
  constexpr int I0 = R0 ? N0 / 2 : N0, I1 = R1 ? N1 / 2 : N1,
                I2 = R2 ? N2 / 2 : N2;
  RopeScaling scaling{Kind, factor, low, high, context, attention};
  int item = blockIdx.x * 8 + threadIdx.x / 32;
  if (item < I0)
    gemvPart<W0, In, N0, R0, D, Interleaved, Kind>(w.p[0], x, n, item, out.p[0],
                                                   pos, theta, scaling);
  else if (item < I0 + I1)
    gemvPart<W1, In, N1, R1, D, Interleaved, Kind>(
        w.p[1], x, n, item - I0, out.p[1], pos, theta, scaling);
  else if (item < I0 + I1 + I2)
    gemvPart<W2, In, N2, R2, D, Interleaved, Kind>(
        w.p[2], x, n, item - I0 - I1, out.p[2], pos, theta, scaling);
}

/// The block's rows for the prefill variant: m-tile blockIdx.x counted over
/// the groups in order. Returns false when the tile is past the last row.
template <int E, int BM, bool Grouped>
__device__ __forceinline__ bool mmaTile(const int32_t *offsets, int n, int &e,
                                        int &r0, int &r1) {
  int tile = blockIdx.x;
  if (!Grouped) {
    e = 0, r0 = tile * BM, r1 = n;
    return r0 < r1;
  }
  int before = 0;
  for (int g = 0; g < E; ++g) {
    int lo = offsets[g], hi = offsets[g + 1];
    int tiles = (hi - lo + BM - 1) / BM;
    if (tile < before + tiles) {
      e = g, r0 = lo + (tile - before) * BM, r1 = hi;
      return true;
    }
    before += tiles;
  }
  return false;
}

template <typename T> struct Convert;
template <> struct Convert<__half> {
  static __device__ __forceinline__ uint32_t pack(float a, float b) {
    __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t *>(&h);
  }
};
template <> struct Convert<__nv_bfloat16> {
  static __device__ __forceinline__ uint32_t pack(float a, float b) {
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t *>(&h);
  }
};

/// The element type of gemmMma's shared-memory tiles and WMMA fragments for
/// weights of T: T itself, or f16 for the quantised formats (their scales
/// are f16, and a q8_0 or q4 value times its scale fits f16's 11 bits
/// exactly for q4 and to one rounding for q8_0).
template <typename T> struct MmaType {
  using type = T;
};
template <> struct MmaType<q8_0> {
  using type = __half;
};
template <> struct MmaType<q4_0> {
  using type = __half;
};
template <> struct MmaType<q4_1> {
  using type = __half;
};
template <> struct MmaType<q4_K> {
  using type = __half;
};
template <> struct MmaType<q5_K> {
  using type = __half;
};
template <> struct MmaType<q6_K> {
  using type = __half;
};

/// A quantised block held in registers by gemmMma between its global load
/// and its store to shared memory: the block's 16-bit words.
template <typename T> struct RawBlock {
  static constexpr int Words = int(sizeof(T)) / 2;
  uint16_t u[Words];
  /// Loads block `b` (null: a zero block, which dequantises to zeros). Blocks
  /// are only 2-byte aligned: 16-bit loads.
  __device__ __forceinline__ void load(const T *b) {
    const uint16_t *p = reinterpret_cast<const uint16_t *>(b);
#pragma unroll
    for (int i = 0; i < Words; ++i)
      u[i] = b ? __ldg(p + i) : uint16_t(0);
  }
};

/// The k-quants' raw form is one 32-element sub-block of a super-block
/// (gemmMma's thread reads 32 weights a K-step): only the words it needs,
/// at addresses computed at the load (the registers are never indexed by
/// the sub-block, which would put them in local memory).
template <> struct RawBlock<q4_K> {
  // d, dmin; the scale words holding bytes 4 + j, 8 + j, j; 32 qs bytes.
  uint16_t d, dmin, s1, s2, s0, qs[16];
  int sub;
  __device__ __forceinline__ void load(const q4_K *b, int j) {
    const uint16_t *p = reinterpret_cast<const uint16_t *>(b);
    sub = j;
    d = b ? __ldg(p) : uint16_t(0);
    dmin = b ? __ldg(p + 1) : uint16_t(0);
    s1 = b ? __ldg(p + (4 + j) / 2) : uint16_t(0);
    s2 = b ? __ldg(p + (8 + j) / 2) : uint16_t(0);
    s0 = b ? __ldg(p + j / 2) : uint16_t(0);
#pragma unroll
    for (int i = 0; i < 16; ++i)
      qs[i] = b ? __ldg(p + 8 + (j >> 1) * 16 + i) : uint16_t(0);
  }
};
/// q5_K: q4_K's words, and the sub-block's 32 fifth bits (bit j of each qh
/// byte) gathered into one word at the load (bit l: element l).
template <> struct RawBlock<q5_K> {
  uint16_t d, dmin, s1, s2, s0, qs[16];
  uint32_t qh;
  int sub;
  __device__ __forceinline__ void load(const q5_K *b, int j) {
    const uint16_t *p = reinterpret_cast<const uint16_t *>(b);
    sub = j;
    d = b ? __ldg(p) : uint16_t(0);
    dmin = b ? __ldg(p + 1) : uint16_t(0);
    s1 = b ? __ldg(p + (4 + j) / 2) : uint16_t(0);
    s2 = b ? __ldg(p + (8 + j) / 2) : uint16_t(0);
    s0 = b ? __ldg(p + j / 2) : uint16_t(0);
    qh = 0;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const uint32_t w = b ? __ldg(p + 8 + i) : uint16_t(0);
      qh |= (w >> j & 1) << (2 * i) | (w >> (8 + j) & 1) << (2 * i + 1);
    }
#pragma unroll
    for (int i = 0; i < 16; ++i)
      qs[i] = b ? __ldg(p + 24 + (j >> 1) * 16 + i) : uint16_t(0);
  }
};
template <> struct RawBlock<q6_K> {
  // The sub-block's 32 ql bytes, 32 qh bytes, its two scales, d.
  uint16_t ql[16], qh[16], sc, d;
  int sub;
  __device__ __forceinline__ void load(const q6_K *b, int j) {
    const uint16_t *p = reinterpret_cast<const uint16_t *>(b);
    const int n = j / 4, k = j % 4;
    sub = j;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      ql[i] = b ? __ldg(p + 32 * n + 16 * (k & 1) + i) : uint16_t(0);
      qh[i] = b ? __ldg(p + 64 + 16 * n + i) : uint16_t(0);
    }
    sc = b ? __ldg(p + 96 + j) : uint16_t(0);
    d = b ? __ldg(p + 104) : uint16_t(0);
  }
};

/// The 32 elements of a raw block as 16 packed f16 pairs (elements 2i,
/// 2i + 1 in word i), rounded once from the exact f32 dequantised values.
__device__ __forceinline__ void dequantHalf(const RawBlock<q8_0> &r,
                                            uint32_t (&h)[16]) {
  float d = halfToF(r.u[0]);
#pragma unroll
  for (int i = 0; i < 16; ++i)
    h[i] = Convert<__half>::pack(d * float(int8_t(r.u[1 + i] & 0xff)),
                                 d * float(int8_t(r.u[1 + i] >> 8)));
}
/// q4: low nibbles of qs[2i], qs[2i + 1] are elements 2i, 2i + 1 (word i),
/// their high nibbles elements 16 + 2i, 17 + 2i (word 8 + i).
__device__ __forceinline__ void q4Half(const uint16_t *qs, float d, float m,
                                       uint32_t (&h)[16]) {
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    uint32_t q = qs[i];
    h[i] = Convert<__half>::pack(d * float(int(q & 0xf)) + m,
                                 d * float(int(q >> 8 & 0xf)) + m);
    h[8 + i] = Convert<__half>::pack(d * float(int(q >> 4 & 0xf)) + m,
                                     d * float(int(q >> 12 & 0xf)) + m);
  }
}
__device__ __forceinline__ void dequantHalf(const RawBlock<q4_0> &r,
                                            uint32_t (&h)[16]) {
  float d = halfToF(r.u[0]);
  q4Half(r.u + 1, d, -8.0f * d, h);
}
__device__ __forceinline__ void dequantHalf(const RawBlock<q4_1> &r,
                                            uint32_t (&h)[16]) {
  q4Half(r.u + 2, halfToF(r.u[0]), halfToF(r.u[1]), h);
}
/// q4_K sub-block j: word i holds elements 2i, 2i + 1 in its bytes' low
/// (even j) or high nibbles.
__device__ __forceinline__ void dequantHalf(const RawBlock<q4_K> &r,
                                            uint32_t (&h)[16]) {
  const int j = r.sub;
  float d1, m1;
  scaleMinK(r.s0, r.s1, r.s2, j, r.d, r.dmin, d1, m1);
  const int nsh = (j & 1) * 4;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    uint32_t q = uint32_t(r.qs[i]) >> nsh;
    h[i] = Convert<__half>::pack(d1 * float(int(q & 0xf)) - m1,
                                 d1 * float(int(q >> 8 & 0xf)) - m1);
  }
}
/// q5_K sub-block j: q4_K's nibbles, bit 4 from bits 2i, 2i + 1 of qh.
__device__ __forceinline__ void dequantHalf(const RawBlock<q5_K> &r,
                                            uint32_t (&h)[16]) {
  const int j = r.sub;
  float d1, m1;
  scaleMinK(r.s0, r.s1, r.s2, j, r.d, r.dmin, d1, m1);
  const int nsh = (j & 1) * 4;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    uint32_t q = uint32_t(r.qs[i]) >> nsh, hb = r.qh >> (2 * i);
    h[i] = Convert<__half>::pack(
        d1 * float(int((q & 0xf) | (hb & 1) << 4)) - m1,
        d1 * float(int((q >> 8 & 0xf) | (hb >> 1 & 1) << 4)) - m1);
  }
}
/// q6_K sub-block j = 4 n + k: elements 2i, 2i + 1 from ql word i's
/// nibbles (high for k >= 2) and qh word i's bits 2k, 2k + 1; the first 16
/// elements take scales[2j], the rest scales[2j + 1].
__device__ __forceinline__ void dequantHalf(const RawBlock<q6_K> &r,
                                            uint32_t (&h)[16]) {
  const int k = r.sub % 4, lsh = k >= 2 ? 4 : 0, hsh = 2 * k;
  const float d = halfToF(r.d);
  const float da = d * float(int8_t(r.sc & 0xff)),
              db = d * float(int8_t(r.sc >> 8));
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    uint32_t l = uint32_t(r.ql[i]) >> lsh, hb = uint32_t(r.qh[i]) >> hsh;
    int q0 = int((l & 0xf) | (hb & 3) << 4);
    int q1 = int((l >> 8 & 0xf) | (hb >> 8 & 3) << 4);
    const float ds = i < 8 ? da : db;
    h[i] = Convert<__half>::pack(ds * float(q0 - 32), ds * float(q1 - 32));
  }
}

/// Prefill variant on tensor cores. Block tile 64 rows x 128 features,
/// K-steps of 64; 8 warps in a 2 x 4 grid, each 32 x 32 (2 x 2 WMMA 16x16x16
/// fragments). The next K-step's tiles are loaded into registers while the
/// current one is multiplied. With Silu the tile's 128 features are gate
/// rows j0..j0+64 and the up rows of the same j, and the block stores the 64
/// features silu(gate) * up. grid (m-tiles, ceil(N / 128)) or, with Silu,
/// (m-tiles, ceil(RowsA / 64)); block 256. Quantised weights (T q8_0, q4_0,
/// q4_1, q4_K, q5_K or q6_K) are dequantised to f16 on their way to shared
/// memory: each thread's 32 weights of a K-step are exactly one block.
template <typename T, int RowsA, int RowsB, int In, int E, int K, bool Gather,
          bool Grouped, bool Silu, int NumPtrs>
__device__ void gemmMma(const float *x, const int32_t *perm,
                        const int32_t *offsets, const Ptrs<NumPtrs> &w, int n,
                        float *out, const float *res) {
  using namespace nvcuda;
  constexpr bool Quant = IsQuant<T>::value;
  using S = typename MmaType<T>::type; // the tiles' element type
  constexpr int BM = 64, BN = 128, BK = 64, LD = BK + 8, LDC = BN + 4;
  constexpr int Parts = RowsB > 0 ? 2 : 1;
  constexpr int N = Silu ? RowsA : RowsA + RowsB; // output width
  static_assert(In % BK == 0, "the input width must be a multiple of 64");
  static_assert(N % 4 == 0, "the output width must be a multiple of 4");
  static_assert(!Silu || RowsA == RowsB, "silu_mul takes two equal parts");
  int e, r0, r1;
  if (!mmaTile<E, BM, Grouped>(offsets, n, e, r0, r1))
    return;
  int n0 = blockIdx.y * (Silu ? BN / 2 : BN);
  int tid = threadIdx.x, warp = tid / 32;

  struct AB {
    S a[BM][LD];
    S b[BN][LD];
  };
  union Smem {
    AB ab;
    float c[BM][LDC];
  };
  __shared__ __align__(128) Smem smem;

  // A: thread -> row tid / 4, 16 consecutive k at (tid % 4) * 16.
  int ar = tid / 4, ak = (tid % 4) * 16;
  const float *aRow =
      r0 + ar < r1 ? x + int64_t(inputRow<K, Gather>(perm, r0 + ar)) * In + ak
                   : nullptr;
  // B: thread -> tile feature tid / 2, 32 consecutive k at (tid % 2) * 32.
  // The feature's weight row: stacked [w_a; w_b] row n0 + tid / 2, or with
  // Silu gate (tile features < 64) or up row n0 + tid / 2 % 64.
  int br = tid / 2, bk = (tid % 2) * 32;
  int col = Silu ? n0 + br % (BN / 2) : n0 + br;
  bool second = Silu ? br >= BN / 2 : RowsB > 0 && col >= RowsA;
  // bRow points at the thread's k = bk (a block, for quantised weights).
  const T *bRow = nullptr;
  if (col < (Silu ? RowsA : N))
    bRow = weightRow(static_cast<const T *>(w.p[e * Parts + (second ? 1 : 0)]),
                     second && !Silu ? col - RowsA : col, In) +
           (Quant ? bk / IsQuant<T>::kBlock : bk);

  float4 aReg[4];
  uint4 bReg[Quant ? 1 : 4];
  RawBlock<T> bRaw;
  auto loadGlobal = [&](int k0) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
      aReg[i] = aRow ? __ldg(reinterpret_cast<const float4 *>(aRow + k0) + i)
                     : make_float4(0, 0, 0, 0);
    if constexpr (Quant) {
      if constexpr (IsKQuant<T>::value)
        bRaw.load(bRow ? bRow + k0 / kQuantSuperBlock : nullptr,
                  (k0 % kQuantSuperBlock + bk) / 32);
      else
        bRaw.load(bRow ? bRow + k0 / kQuantBlock : nullptr);
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i)
        bReg[i] = bRow ? __ldg(reinterpret_cast<const uint4 *>(bRow + k0) + i)
                       : make_uint4(0, 0, 0, 0);
    }
  };
  auto storeShared = [&] {
    uint4 packed[2];
    uint32_t *p = reinterpret_cast<uint32_t *>(packed);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      p[2 * i] = Convert<S>::pack(aReg[i].x, aReg[i].y);
      p[2 * i + 1] = Convert<S>::pack(aReg[i].z, aReg[i].w);
    }
    uint4 *a = reinterpret_cast<uint4 *>(&smem.ab.a[ar][ak]);
    a[0] = packed[0];
    a[1] = packed[1];
    uint4 *b = reinterpret_cast<uint4 *>(&smem.ab.b[br][bk]);
    if constexpr (Quant) {
      uint32_t h[16];
      dequantHalf(bRaw, h);
#pragma unroll
      for (int i = 0; i < 4; ++i)
        b[i] = make_uint4(h[4 * i], h[4 * i + 1], h[4 * i + 2], h[4 * i + 3]);
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i)
        b[i] = bReg[i];
    }
  };

  int wm = warp / 4, wn = warp % 4;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::fill_fragment(acc[i][j], 0.0f);

  loadGlobal(0);
  for (int k0 = 0; k0 < In; k0 += BK) {
    __syncthreads();
    storeShared();
    __syncthreads();
    if (k0 + BK < In)
      loadGlobal(k0 + BK);
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, S, wmma::row_major> af[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, S, wmma::col_major> bf[2];
#pragma unroll
      for (int i = 0; i < 2; ++i)
        wmma::load_matrix_sync(af[i], &smem.ab.a[wm * 32 + i * 16][kk], LD);
#pragma unroll
      for (int j = 0; j < 2; ++j)
        wmma::load_matrix_sync(bf[j], &smem.ab.b[wn * 32 + j * 16][kk], LD);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j)
          wmma::mma_sync(acc[i][j], af[i], bf[j], acc[i][j]);
    }
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(&smem.c[wm * 32 + i * 16][wn * 32 + j * 16],
                              acc[i][j], LDC, wmma::mem_row_major);
  __syncthreads();
  constexpr int Width = Silu ? BN / 2 : BN; // features stored per row
  for (int idx = tid; idx < BM * Width / 4; idx += 256) {
    int row = idx / (Width / 4), c = (idx % (Width / 4)) * 4;
    if (r0 + row < r1 && n0 + c < N) {
      int64_t o = int64_t(r0 + row) * N + n0 + c;
      float4 v = *reinterpret_cast<const float4 *>(&smem.c[row][c]);
      if constexpr (Silu) {
        float4 u = *reinterpret_cast<const float4 *>(&smem.c[row][c + Width]);
        v.x = siluTimes(v.x, u.x), v.y = siluTimes(v.y, u.y);
        v.z = siluTimes(v.z, u.z), v.w = siluTimes(v.w, u.w);
      }
      if (res) {
        float4 r = *reinterpret_cast<const float4 *>(res + o);
        v.x += r.x, v.y += r.y, v.z += r.z, v.w += r.w;
      }
      *reinterpret_cast<float4 *>(out + o) = v;
    }
  }
}

//===----------------------------------------------------------------------===//
// Attention over the ring-buffer KV cache
//===----------------------------------------------------------------------===//
//
// Keys and values of positions in this chunk (>= pos[0]) are read from the
// chunk's k/v inputs, older ones from the cache; the next kernel
// (`attentionDecodeFinish` or `kvAppend`) writes the chunk into the cache.
// Reading in-chunk positions from the inputs is what makes a parallel chunk
// exact when it is longer than the window: a position the chunk evicts is
// still read from the slot it occupied.

template <int KvHeads, int D, int Cap>
__device__ __forceinline__ const float *
kvRow(int j, int g, int p0, const float *chunk, const float *cache) {
  return j >= p0 ? chunk + int64_t(j - p0) * KvHeads * D + g * D
                 : cache + (int64_t(g) * Cap + j % Cap) * D;
}

/// Keys of the split `s` of `Splits` of a query at position `p`: [lo, hi]
/// (empty when lo > hi). Splits take whole warps of keys, so a short
/// context leaves the last splits empty.
template <int Cap, int Window, int Splits>
__device__ __forceinline__ void splitKeys(int p, int s, int &lo, int &hi) {
  int first = firstKey<Cap, Window>(p), keys = p - first + 1;
  int chunk = ((keys + Splits - 1) / Splits + 31) / 32 * 32;
  lo = first + s * chunk;
  hi = min(p, lo + chunk - 1);
}

/// The head_dims the tiled attention kernels take; larger ones (whose tiles
/// would not fit in static shared memory) go through attendRows.
constexpr int kMaxTiledHeadDim = 256;

/// Any head_dim: one block of 128 threads runs an online softmax for one
/// query (head row `qh`, unscaled) over keys lo..hi in tiles of 128 (one key
/// per thread, its score read from global memory), accumulating the output
/// in place at `dst` (thread i owns dims i, i + 128, ...), rescaled when the
/// running maximum rises. Nothing in shared memory grows with D. With
/// Partial, dst gets the unnormalised [acc[D], max, sum] of
/// attentionDecode's workspace; else the normalised output row. Contains
/// barriers: call from every thread.
template <int KvHeads, int D, int Cap, bool Partial>
__device__ __forceinline__ void
attendRows(const float *qh, const float *k, const float *v, const float *kc,
           const float *vc, int g, int p0, int lo, int hi, float scale,
           float *dst) {
  constexpr int Threads = 128, Tile = 128;
  static_assert(D % 2 == 0, "head_dim must be even");
  __shared__ float ps[Tile], red[Threads / 32];
  int tid = threadIdx.x;
  for (int c = tid; c < D; c += Threads)
    dst[c] = 0.0f;
  float m = -INFINITY, l = 0;
  for (int s = lo; s <= hi; s += Tile) {
    int cnt = min(Tile, hi - s + 1);
    float sc = -INFINITY;
    if (tid < cnt) {
      const float *kr = kvRow<KvHeads, D, Cap>(s + tid, g, p0, k, kc);
      float dot = 0;
#pragma unroll 4
      for (int i = 0; i < D; i += 2) {
        float2 kv = *reinterpret_cast<const float2 *>(kr + i);
        dot += qh[i] * scale * kv.x + qh[i + 1] * scale * kv.y;
      }
      sc = dot;
    }
    float mNew = fmaxf(m, blockReduce<Threads, true>(sc, red));
    float pv = tid < cnt ? expf(sc - mNew) : 0.0f;
    ps[tid] = pv;
    float tileSum = blockReduce<Threads, false>(pv, red); // also publishes ps
    float corr = m == -INFINITY ? 0.0f : expf(m - mNew);
    l = l * corr + tileSum;
    for (int c = tid; c < D; c += Threads) {
      float acc = dst[c] * corr;
      // Unrolled by two only: by more, ptxas spills (head_dim 264, sm_90).
#pragma unroll 2
      for (int i = 0; i < cnt; ++i)
        acc += ps[i] * kvRow<KvHeads, D, Cap>(s + i, g, p0, v, vc)[c];
      dst[c] = acc;
    }
    m = mNew;
    __syncthreads();
  }
  if constexpr (Partial) {
    if (tid == 0)
      dst[D] = m, dst[D + 1] = l;
  } else {
    for (int c = tid; c < D; c += Threads)
      dst[c] /= l;
  }
}

/// Decode variant, split over the keys (flash-decoding): one block (128
/// threads) per (query head, split, token) runs an online softmax over its
/// keys in tiles of 128 (one key per thread) and writes the unnormalised
/// partial [acc[D], max, sum] to `ws`; `attentionDecodeFinish` merges the
/// splits. A decode step has only Heads x tokens queries; the splits are what
/// spread the cache reads over the SMs. Any even D: a head_dim that divides
/// or is a multiple of 128 gives every thread the same share of the output
/// dims (the fast path), others leave some threads (or some of their dims)
/// idle; past kMaxTiledHeadDim, attendRows. grid (Heads * Splits, T).
template <int Heads, int KvHeads, int D, int Cap, int Window, int Splits>
__device__ void attentionDecode(const float *q, const float *k, const float *v,
                                const float *kc, const float *vc,
                                const int32_t *pos, float scale, float *ws) {
  constexpr int Threads = 128, Tile = 128, Group = Heads / KvHeads;
  static_assert(D % 2 == 0, "head_dim must be even");
  int h = blockIdx.x / Splits, split = blockIdx.x % Splits, t = blockIdx.y;
  int g = h / Group, tid = threadIdx.x;
  int p = pos[t], p0 = pos[0], lo, hi;
  splitKeys<Cap, Window, Splits>(p, split, lo, hi);
  float *partial = ws + ((int64_t(t) * Heads + h) * Splits + split) * (D + 2);
  if constexpr (D > kMaxTiledHeadDim) {
    attendRows<KvHeads, D, Cap, true>(q + (int64_t(t) * Heads + h) * D, k, v,
                                      kc, vc, g, p0, lo, hi, scale, partial);
  } else {
    // Parts groups of D threads split the keys (D <= Threads), or each
    // thread owns Dims of the dims (d, d + Threads, ...).
    constexpr int Parts = D <= Threads ? Threads / D : 1;
    constexpr int Dims = D <= Threads ? 1 : (D + Threads - 1) / Threads;
    // Whether every thread has a part (D divides Threads) and all its Dims
    // dims (Threads divides D): true for the powers of two.
    constexpr bool AllParts = D > Threads || Threads % D == 0;
    constexpr bool AllDims = D <= Threads || D % Threads == 0;
    __shared__ float qs[D], ps[Tile], red[Threads / 32];
    __shared__ float part[Threads][Dims];
    for (int i = tid; i < D; i += Threads)
      qs[i] = q[int64_t(t) * Heads * D + h * D + i] * scale;
    __syncthreads();
    int d = tid % (D <= Threads ? D : Threads), which = tid / D;
    bool busy = AllParts || which < Parts;
    float m = -INFINITY, l = 0, acc[Dims] = {};
    for (int s = lo; s <= hi; s += Tile) {
      int cnt = min(Tile, hi - s + 1);
      float sc = -INFINITY;
      if (tid < cnt) {
        const float *kr = kvRow<KvHeads, D, Cap>(s + tid, g, p0, k, kc);
        float dot = 0;
        if constexpr (D % 4 == 0) {
#pragma unroll 8
          for (int i = 0; i < D; i += 4) {
            float4 kv = *reinterpret_cast<const float4 *>(kr + i);
            dot += qs[i] * kv.x + qs[i + 1] * kv.y + qs[i + 2] * kv.z +
                   qs[i + 3] * kv.w;
          }
        } else {
#pragma unroll 8
          for (int i = 0; i < D; i += 2) {
            float2 kv = *reinterpret_cast<const float2 *>(kr + i);
            dot += qs[i] * kv.x + qs[i + 1] * kv.y;
          }
        }
        sc = dot;
      }
      float mNew = fmaxf(m, blockReduce<Threads, true>(sc, red));
      float pv = tid < cnt ? expf(sc - mNew) : 0.0f;
      ps[tid] = pv;
      float tileSum = blockReduce<Threads, false>(pv, red); // also publishes ps
      float corr = m == -INFINITY ? 0.0f : expf(m - mNew);
      l = l * corr + tileSum;
#pragma unroll
      for (int c = 0; c < Dims; ++c)
        acc[c] *= corr;
      if (busy)
        for (int i = which; i < cnt; i += Parts) {
          const float *vr = kvRow<KvHeads, D, Cap>(s + i, g, p0, v, vc);
#pragma unroll
          for (int c = 0; c < Dims; ++c)
            if (AllDims || d + c * Threads < D)
              acc[c] += ps[i] * vr[d + c * Threads];
        }
      m = mNew;
      __syncthreads();
    }
#pragma unroll
    for (int c = 0; c < Dims; ++c)
      part[tid][c] = acc[c];
    __syncthreads();
    if (which == 0 || Parts == 1) {
#pragma unroll
      for (int c = 0; c < Dims; ++c) {
        if (!AllDims && d + c * Threads >= D)
          continue;
        float total = 0;
        for (int j = 0; j < Parts; ++j)
          total += part[d + j * D][c];
        partial[d + c * Threads] = total;
      }
    }
    if (tid == 0)
      partial[D] = m, partial[D + 1] = l;
  }
}

/// Stores key and value row (token t, kv head g) of the chunk in its slot.
template <int KvHeads, int D, int Cap>
__device__ __forceinline__ void storeKv(const float *k, const float *v,
                                        const int32_t *pos, int t, int g, int c,
                                        float *kc, float *vc) {
  int64_t src = (int64_t(t) * KvHeads + g) * D + c;
  int64_t slot = (int64_t(g) * Cap + pos[t] % Cap) * D + c;
  kc[slot] = k[src];
  vc[slot] = v[src];
}

/// Merges the splits of `attentionDecode` into the output, and appends the
/// chunk's keys and values to the cache (blocks of the first KvHeads heads;
/// only the last Cap tokens, as kvAppend). grid (Heads, T), block 128.
template <int Heads, int KvHeads, int D, int Cap, int Splits>
__device__ void attentionDecodeFinish(const float *ws, const float *k,
                                      const float *v, const int32_t *pos, int n,
                                      float *out, float *kc, float *vc) {
  int h = blockIdx.x, t = blockIdx.y;
  const float *partial = ws + (int64_t(t) * Heads + h) * Splits * (D + 2);
  float mMax = -INFINITY;
  for (int s = 0; s < Splits; ++s)
    mMax = fmaxf(mMax, partial[s * (D + 2) + D]);
  float l = 0;
  for (int s = 0; s < Splits; ++s) {
    float ms = partial[s * (D + 2) + D];
    if (ms != -INFINITY)
      l += partial[s * (D + 2) + D + 1] * expf(ms - mMax);
  }
  for (int c = threadIdx.x; c < D; c += 128) {
    float total = 0;
    for (int s = 0; s < Splits; ++s) {
      float ms = partial[s * (D + 2) + D];
      if (ms != -INFINITY)
        total += partial[s * (D + 2) + c] * expf(ms - mMax);
    }
    out[(int64_t(t) * Heads + h) * D + c] = total / l;
  }
  if (h < KvHeads && t >= n - Cap)
    for (int c = threadIdx.x; c < D; c += 128)
      storeKv<KvHeads, D, Cap>(k, v, pos, t, h, c, kc, vc);
}

/// Prefill variant: one block (128 threads) per (query head, 16 queries);
/// tiles of 32 keys and values (8 for head_dim > 128, to stay within the
/// 48 KB of static shared memory) are staged in shared memory and shared by
/// the 16 queries; 8 threads per query split the keys of a tile for the
/// scores and the head dims for the output (a head_dim that is not a
/// multiple of 8 leaves some of them idle on its last dims). Past
/// kMaxTiledHeadDim, each of the 16 queries in turn goes through attendRows.
/// grid (Heads, ceil(T / 16)).
template <int Heads, int KvHeads, int D, int Cap, int Window>
__device__ void attentionPrefill(const float *q, const float *k, const float *v,
                                 const float *kc, const float *vc,
                                 const int32_t *pos, int n, float scale,
                                 float *out) {
  constexpr int QT = 16, Group = Heads / KvHeads;
  static_assert(D % 2 == 0, "head_dim must be even");
  int h = blockIdx.x, t0 = blockIdx.y * QT, g = h / Group, tid = threadIdx.x;
  if constexpr (D > kMaxTiledHeadDim) {
    int last = min(t0 + QT, n) - 1, p0 = pos[0];
    for (int t = t0; t <= last; ++t) {
      int64_t row = (int64_t(t) * Heads + h) * D;
      attendRows<KvHeads, D, Cap, false>(q + row, k, v, kc, vc, g, p0,
                                         firstKey<Cap, Window>(pos[t]), pos[t],
                                         scale, out + row);
    }
  } else {
    constexpr int KT = D > 128 ? 8 : 32, Dims = (D + 7) / 8;
    static_assert((QT * (D + 1) + KT * (2 * D + 1) + QT * (KT + 1)) * 4 <=
                      48 * 1024,
                  "head_dim too large for the prefill attention's shared "
                  "memory");
    __shared__ float qs[QT][D + 1], ks[KT][D + 1], vs[KT][D], ss[QT][KT + 1];
    int qi = tid / 8, lane8 = tid % 8;
    int last = min(t0 + QT, n) - 1, p0 = pos[0];
    int lo = firstKey<Cap, Window>(pos[t0]), hi = pos[last];
    bool valid = t0 + qi <= last;
    int pq = valid ? pos[t0 + qi] : -1, fq = firstKey<Cap, Window>(pq);
    for (int i = tid; i < QT * D; i += 128) {
      int r = i / D, c = i % D;
      qs[r][c] = t0 + r <= last
                     ? q[int64_t(t0 + r) * Heads * D + h * D + c] * scale
                     : 0.0f;
    }
    float m = -INFINITY, l = 0, acc[Dims] = {};
    for (int s = lo; s <= hi; s += KT) {
      __syncthreads(); // the previous tile is consumed (and qs is written)
      if constexpr (D % 4 == 0) {
        for (int i = tid; i < KT * D / 4; i += 128) {
          int kk = i / (D / 4), c = (i % (D / 4)) * 4, j = s + kk;
          float4 kv = make_float4(0, 0, 0, 0), vv = kv;
          if (j <= hi) {
            kv = *reinterpret_cast<const float4 *>(
                kvRow<KvHeads, D, Cap>(j, g, p0, k, kc) + c);
            vv = *reinterpret_cast<const float4 *>(
                kvRow<KvHeads, D, Cap>(j, g, p0, v, vc) + c);
          }
          ks[kk][c] = kv.x, ks[kk][c + 1] = kv.y, ks[kk][c + 2] = kv.z,
          ks[kk][c + 3] = kv.w;
          *reinterpret_cast<float4 *>(&vs[kk][c]) = vv;
        }
      } else {
        // Rows of an even D are 8-byte aligned: pairs of floats.
        for (int i = tid; i < KT * D / 2; i += 128) {
          int kk = i / (D / 2), c = (i % (D / 2)) * 2, j = s + kk;
          float2 kv = {0.0f, 0.0f}, vv = kv;
          if (j <= hi) {
            kv = *reinterpret_cast<const float2 *>(
                kvRow<KvHeads, D, Cap>(j, g, p0, k, kc) + c);
            vv = *reinterpret_cast<const float2 *>(
                kvRow<KvHeads, D, Cap>(j, g, p0, v, vc) + c);
          }
          ks[kk][c] = kv.x, ks[kk][c + 1] = kv.y;
          vs[kk][c] = vv.x, vs[kk][c + 1] = vv.y;
        }
      }
      __syncthreads();
      float sc[KT / 8], rowMax = -INFINITY;
#pragma unroll
      for (int mi = 0; mi < KT / 8; ++mi) {
        int kk = lane8 + 8 * mi, j = s + kk;
        sc[mi] = -INFINITY;
        if (valid && j <= pq && j >= fq) {
          float dot = 0;
#pragma unroll 16
          for (int c = 0; c < D; ++c)
            dot += qs[qi][c] * ks[kk][c];
          sc[mi] = dot;
        }
        rowMax = fmaxf(rowMax, sc[mi]);
      }
#pragma unroll
      for (int o = 4; o > 0; o >>= 1)
        rowMax = fmaxf(rowMax, __shfl_xor_sync(0xffffffffu, rowMax, o));
      float mNew = fmaxf(m, rowMax), rowSum = 0;
#pragma unroll
      for (int mi = 0; mi < KT / 8; ++mi) {
        float pv = sc[mi] == -INFINITY ? 0.0f : expf(sc[mi] - mNew);
        ss[qi][lane8 + 8 * mi] = pv;
        rowSum += pv;
      }
#pragma unroll
      for (int o = 4; o > 0; o >>= 1)
        rowSum += __shfl_xor_sync(0xffffffffu, rowSum, o);
      float corr = m == -INFINITY ? 0.0f : expf(m - mNew);
      l = l * corr + rowSum;
      m = mNew;
      __syncwarp();
#pragma unroll
      for (int c = 0; c < Dims; ++c)
        acc[c] *= corr;
      for (int kk = 0; kk < KT; ++kk) {
        float pk = ss[qi][kk];
#pragma unroll
        for (int c = 0; c < Dims; ++c)
          if (D % 8 == 0 || lane8 + 8 * c < D)
            acc[c] += pk * vs[kk][lane8 + 8 * c];
      }
    }
    if (valid)
#pragma unroll
      for (int c = 0; c < Dims; ++c)
        if (D % 8 == 0 || lane8 + 8 * c < D)
          out[int64_t(t0 + qi) * Heads * D + h * D + lane8 + 8 * c] =
              acc[c] / l;
  }
}

/// Writes the chunk's keys and values into their slots; only the last Cap
/// tokens of a chunk longer than the ring are stored (each slot once).
/// grid (ceil(T * KvHeads * D / 256)), block 256.
template <int KvHeads, int D, int Cap>
__device__ void kvAppend(const float *k, const float *v, const int32_t *pos,
                         int n, float *kc, float *vc) {
  constexpr int Width = KvHeads * D;
  int64_t idx = int64_t(blockIdx.x) * 256 + threadIdx.x;
  if (idx >= int64_t(n) * Width)
    return;
  int t = int(idx / Width), rem = int(idx % Width);
  if (t >= n - Cap)
    storeKv<KvHeads, D, Cap>(k, v, pos, t, rem / D, rem % D, kc, vc);
}

} // namespace cuda
} // namespace moert

#endif // MOERT_CUDA_KERNELS_CUH
