//===- ep.h - the kernels of expert parallelism -----------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// The four steps of an expert-parallel MoE layer (moe-shard-experts): every
// rank runs the same program on the same tokens; rank r holds experts
// [first(r), first(r + 1)) (E / R each, the first E % R ranks one more) and
// owns the token slice [T*r/R, T*(r+1)/R) of the layer.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_EP_H
#define MOERT_EP_H

#include "moert/comm.h"

namespace moert {

// epFirst and epOwner, the split of moe-shard-experts: kernel_math.h.

inline int64_t epSliceBegin(const moert_comm *c, int64_t T, int64_t r) {
  return T * r / c->size();
}

/// counts[0][r]: rows of this rank's token slice for rank r; counts[1][r]:
/// rows rank r sends this rank. Pairs moe.expert_capacity dropped (index
/// -1) are sent nowhere, here and in epDispatch and epCombine.
template <int64_t E, int64_t K, int64_t R>
void epExchangeCounts(moert_comm *c, const int32_t *indices, int64_t T,
                      int32_t *counts) {
  int64_t r = c->rank();
  int32_t send[R] = {};
  for (int64_t t = epSliceBegin(c, T, r); t < epSliceBegin(c, T, r + 1); ++t)
    for (int64_t j = 0; j < K; ++j)
      if (indices[t * K + j] >= 0)
        ++send[epOwner<E, R>(indices[t * K + j])];
  c->alltoall(send, counts + R, "exchanging the token counts");
  for (int64_t i = 0; i < R; ++i)
    counts[i] = send[i];
}

/// A dispatched row: H floats, then the expert and the routing weight.
template <int64_t H> constexpr int64_t epRowFloats() { return H + 2; }

template <int64_t H, int64_t E, int64_t K, int64_t R>
void epDispatch(moert_comm *c, const float *x, const int32_t *indices,
                const float *weights, const int32_t *counts, int64_t T,
                float *rows, int32_t *experts, float *gates) {
  constexpr int64_t F = epRowFloats<H>();
  int64_t r = c->rank(), sent = 0, received = 0;
  int64_t at[R], sendBytes[R], recvBytes[R];
  for (int64_t i = 0; i < R; ++i) {
    at[i] = sent;
    sent += counts[i];
    received += counts[R + i];
    sendBytes[i] = counts[i] * F * int64_t(sizeof(float));
    recvBytes[i] = counts[R + i] * F * int64_t(sizeof(float));
  }
  c->sendRows.resize(size_t(sent * F));
  c->recvRows.resize(size_t(received * F));
  // By destination, in (token, choice) order within it.
  for (int64_t t = epSliceBegin(c, T, r); t < epSliceBegin(c, T, r + 1); ++t)
    for (int64_t j = 0; j < K; ++j) {
      int32_t e = indices[t * K + j];
      if (e < 0)
        continue;
      float *row = c->sendRows.data() + at[epOwner<E, R>(e)]++ * F;
      std::memcpy(row, x + t * H, H * sizeof(float));
      std::memcpy(row + H, &e, sizeof(float));
      row[H + 1] = weights[t * K + j];
    }
  c->alltoallv(c->sendRows.data(), sendBytes, c->recvRows.data(), recvBytes,
               "dispatching the tokens");
  for (int64_t i = 0; i < received; ++i) {
    const float *row = c->recvRows.data() + i * F;
    std::memcpy(rows + i * H, row, H * sizeof(float));
    std::memcpy(experts + i, row + H, sizeof(int32_t));
    gates[i] = row[H + 1];
  }
}

/// out[i] = gate[i] * down(silu(gate_w x) * up_w x) with row i's expert,
/// over the rows this rank received; each local expert's rows as one GEMM.
template <typename WG, typename WU, typename WD, int64_t H, int64_t I,
          int64_t E, int64_t R>
void epExperts(moert_pool *pool, moert_comm *c, const float *rows,
               const int32_t *experts, const float *gates,
               const int32_t *counts, const WG *const *gate,
               const WU *const *up, const WD *const *down, float *out) {
  int64_t m = 0;
  for (int64_t i = 0; i < R; ++i)
    m += counts[R + i];
  int64_t lo = epFirst<E, R>(c->rank()), hi = epFirst<E, R>(c->rank() + 1);
  int64_t count[E + 1] = {};
  for (int64_t i = 0; i < m; ++i) {
    int32_t e = experts[i];
    if (e < lo || e >= hi)
      c->abort("received a row for an expert this rank does not hold");
    ++count[e + 1];
  }
  for (int64_t e = 0; e < E; ++e)
    count[e + 1] += count[e];
  c->perm.resize(size_t(m));
  int64_t next[E];
  for (int64_t e = 0; e < E; ++e)
    next[e] = count[e];
  for (int64_t i = 0; i < m; ++i)
    c->perm[size_t(next[experts[i]]++)] = int32_t(i);
  int64_t most = 0;
  for (int64_t e = lo; e < hi; ++e)
    most = std::max(most, count[e + 1] - count[e]);
  c->gathered.resize(size_t(most * H));
  c->hidden.resize(size_t(most * I));
  c->up.resize(size_t(most * I));
  c->down.resize(size_t(most * H));
  for (int64_t e = lo; e < hi; ++e) {
    int64_t r0 = count[e], n = count[e + 1] - r0;
    if (n == 0)
      continue;
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(c->gathered.data() + i * H, rows + c->perm[r0 + i] * H,
                  H * sizeof(float));
    linear<WG, I, H>(pool, c->gathered.data(), gate[e], n, c->hidden.data());
    linear<WU, I, H>(pool, c->gathered.data(), up[e], n, c->up.data());
    for (int64_t i = 0; i < n * I; ++i)
      c->hidden[i] = siluTimes(c->hidden[i], c->up[i]);
    linear<WD, H, I>(pool, c->hidden.data(), down[e], n, c->down.data());
    for (int64_t i = 0; i < n; ++i) {
      int64_t row = c->perm[r0 + i];
      float g = gates[row];
      for (int64_t h = 0; h < H; ++h)
        out[row * H + h] = g * c->down[i * H + h];
    }
  }
}

/// The rows back to their ranks, each token's k rows summed (in expert
/// order, as expertCombine sums them), the residual added, and the token
/// slices all-gathered into out [T, H] on every rank.
template <int64_t H, int64_t E, int64_t K, int64_t R>
void epCombine(moert_comm *c, const float *y, const int32_t *indices,
               const int32_t *counts, int64_t T, float *out,
               const float *res = nullptr) {
  int64_t r = c->rank(), sent = 0;
  int64_t at[R], sendBytes[R], recvBytes[R], slice[R];
  for (int64_t i = 0; i < R; ++i) {
    at[i] = sent;
    sent += counts[i];
    // Back the way they came: what was received goes back.
    sendBytes[i] = counts[R + i] * H * int64_t(sizeof(float));
    recvBytes[i] = counts[i] * H * int64_t(sizeof(float));
    slice[i] = (epSliceBegin(c, T, i + 1) - epSliceBegin(c, T, i)) * H *
               int64_t(sizeof(float));
  }
  c->recvRows.resize(size_t(sent * H));
  c->alltoallv(y, sendBytes, c->recvRows.data(), recvBytes,
               "combining the expert outputs");
  int64_t lo = epSliceBegin(c, T, r), hi = epSliceBegin(c, T, r + 1);
  for (int64_t t = lo; t < hi; ++t) {
    int64_t pos[K], order[K], kept = 0;
    for (int64_t j = 0; j < K; ++j)
      if (indices[t * K + j] >= 0) {
        pos[j] = at[epOwner<E, R>(indices[t * K + j])]++;
        order[kept++] = j;
      }
    std::sort(order, order + kept, [&](int64_t a, int64_t b) {
      return indices[t * K + a] < indices[t * K + b];
    });
    float *o = out + t * H;
    std::fill(o, o + H, 0.0f);
    for (int64_t j = 0; j < kept; ++j) {
      const float *row = c->recvRows.data() + pos[order[j]] * H;
      for (int64_t h = 0; h < H; ++h)
        o[h] += row[h];
    }
    if (res)
      for (int64_t h = 0; h < H; ++h)
        o[h] += res[t * H + h];
  }
  c->allgatherv(out, slice, "sharing the layer's output");
}

} // namespace moert

#endif // MOERT_EP_H
