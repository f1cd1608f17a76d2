//===- AttentionCheck.h - moert::attention against a reference -*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// The CPU attention kernel (runtime/include/moert/kernels.h) run over a whole
// sequence in chunks, against causal attention computed directly in double
// from the whole history of keys and values (no ring, no blocks, no running
// maximum). Shared by the runtime's tests (built for the portable C++) and
// the kernel tests (built for each instruction set).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TEST_COMMON_ATTENTIONCHECK_H
#define MOE_TEST_COMMON_ATTENTIONCHECK_H

#include "moert/kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <vector>

namespace moe_test {

/// Causal attention with a window, computed directly in double.
inline std::vector<float>
attentionReference(int heads, int kvHeads, int d, int window,
                   const std::vector<float> &q, const std::vector<float> &k,
                   const std::vector<float> &v, int positions, float scale) {
  std::vector<float> out(size_t(positions * heads * d));
  for (int p = 0; p < positions; ++p)
    for (int h = 0; h < heads; ++h) {
      int g = h / (heads / kvHeads);
      int first = window > 0 ? std::max(0, p - window + 1) : 0;
      std::vector<double> w;
      double best = -INFINITY, total = 0;
      for (int j = first; j <= p; ++j) {
        double s = 0;
        for (int i = 0; i < d; ++i)
          s += double(q[size_t((p * heads + h) * d + i)]) *
               k[size_t((j * kvHeads + g) * d + i)];
        w.push_back(s * scale);
        best = std::max(best, w.back());
      }
      for (double &x : w)
        total += x = std::exp(x - best);
      for (int i = 0; i < d; ++i) {
        double o = 0;
        for (int j = first; j <= p; ++j)
          o += w[size_t(j - first)] / total *
               v[size_t((j * kvHeads + g) * d + i)];
        out[size_t((p * heads + h) * d + i)] = float(o);
      }
    }
  return out;
}

/// Runs positions [0, n) through attention<> in chunks of `chunk` tokens
/// (on `pool`, which may be null) and compares every output with the
/// reference. `amplitude` scales q and k: large ones make sharp softmaxes,
/// whose running maximum moves from block to block. Returns how far
/// `allocations` (where given) moved while the kernel ran.
template <int64_t Heads, int64_t KvHeads, int64_t D, int64_t Cap,
          int64_t Window>
long checkAttention(int n, int chunk, int64_t cacheSlots,
                    moert_pool *pool = nullptr, float amplitude = 1.0f,
                    const std::atomic<long> *allocations = nullptr) {
  std::vector<float> q(size_t(n * Heads * D)), k(size_t(n * KvHeads * D)),
      v(k.size());
  uint32_t state = 12345;
  auto next = [&] {
    state = state * 1664525u + 1013904223u;
    return float(int(state >> 9) % 2001 - 1000) / 500.0f;
  };
  for (float &x : q)
    x = amplitude * next();
  for (float &x : k)
    x = amplitude * next();
  for (float &x : v)
    x = next();
  std::vector<float> kc(size_t(KvHeads * cacheSlots * D)), vc(kc.size()),
      out(q.size());
  std::vector<int32_t> pos(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i)
    pos[size_t(i)] = i;
  float scale = 1.0f / std::sqrt(float(D));
  long before = allocations ? allocations->load() : 0;
  for (int t0 = 0; t0 < n; t0 += chunk) {
    int T = std::min(chunk, n - t0);
    moert::attention<Heads, KvHeads, D, Cap, Window>(
        pool, q.data() + t0 * Heads * D, k.data() + t0 * KvHeads * D,
        v.data() + t0 * KvHeads * D, moert_kv{kc.data(), vc.data()},
        pos.data() + t0, scale, T, out.data() + t0 * Heads * D);
  }
  long made = allocations ? allocations->load() - before : 0;
  std::vector<float> want = attentionReference(int(Heads), int(KvHeads), int(D),
                                               int(Window), q, k, v, n, scale);
  // A score's f32 rounding is a few ulps of its size, which grows with
  // amplitude^2, and moves its weight by as much relative to the others.
  float tol = 1e-5f * std::max(1.0f, amplitude * amplitude);
  for (size_t i = 0; i < out.size(); ++i)
    EXPECT_NEAR(out[i], want[i], tol * (1 + std::fabs(want[i]))) << i;
  return made;
}

} // namespace moe_test

#endif // MOE_TEST_COMMON_ATTENTIONCHECK_H
