//===- pool.h - persistent thread pool of the runtime ----------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// One pool per loaded model: worker threads are started once and sleep
// between parallel regions, so kernels never spawn threads.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_POOL_H
#define MOERT_POOL_H

#include <algorithm>
#include <cstdint>

extern "C" {
struct moert_pool;
/// `threads` <= 0: one per core. Starts as many of the threads as the system
/// allows (at least the caller's own); null only when out of memory. Never
/// throws.
moert_pool *moert_pool_create(int threads);
void moert_pool_free(moert_pool *pool);
int moert_pool_size(const moert_pool *pool);
/// Calls fn(ctx, begin, end) over [0, n) split into pieces of at least
/// `grain` (but the last), on all threads of the pool (the caller
/// included), the pieces shrinking as the job runs out; returns when all are
/// done. Which thread runs which piece, and where the pieces begin, depend
/// on timing: fn must compute each index the same way whatever the piece.
void moert_pool_run(moert_pool *pool, int64_t n, int64_t grain,
                    void (*fn)(void *ctx, int64_t begin, int64_t end),
                    void *ctx);
}

namespace moert {

/// Runs body(begin, end) over [0, n) in parallel when `work` (a rough count
/// of operations) is worth it, else inline.
template <typename Body>
inline void parallelFor(moert_pool *pool, int64_t n, double work,
                        const Body &body) {
  constexpr double kMinParallelWork = 1 << 15;
  if (!pool || n <= 1 || work < kMinParallelWork ||
      moert_pool_size(pool) <= 1) {
    body(int64_t(0), n);
    return;
  }
  moert_pool_run(
      pool, n, 1,
      [](void *ctx, int64_t begin, int64_t end) {
        (*static_cast<const Body *>(ctx))(begin, end);
      },
      const_cast<Body *>(&body));
}

} // namespace moert

#endif // MOERT_POOL_H
