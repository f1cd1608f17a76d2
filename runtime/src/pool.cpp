//===- pool.cpp - persistent thread pool of the runtime --------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#include "moert/pool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
static inline void cpuRelax() { _mm_pause(); }
#else
static inline void cpuRelax() {}
#endif

namespace {
/// How long a thread spins for the next job (a worker) or for the workers
/// to finish (the caller) before it sleeps on a condition variable. A
/// decode step runs about ten parallel regions per layer, tens of
/// microseconds apart; waking a sleeping thread costs about as much, and
/// the job meanwhile runs on the caller alone.
constexpr auto kSpin = std::chrono::microseconds(200);

/// Spins until done() or kSpin has passed; whether done() held.
template <typename Done> bool spinUntil(const Done &done) {
  auto start = std::chrono::steady_clock::now();
  for (int i = 1;; ++i) {
    if (done())
      return true;
    cpuRelax();
    if (i % 64 == 0 && std::chrono::steady_clock::now() - start > kSpin)
      return done();
  }
}
} // namespace

struct moert_pool {
  std::vector<std::thread> workers;
  std::mutex mutex;
  std::condition_variable wake, done;
  // The current job.
  void (*fn)(void *, int64_t, int64_t) = nullptr;
  void *ctx = nullptr;
  int64_t n = 0, grain = 1;
  std::atomic<int64_t> next{0};
  // Written under `mutex`; read without it by the spinning threads.
  std::atomic<int64_t> generation{0};
  // Workers inside work(): the caller waits for these only, not for
  // workers that have not woken yet (they find no chunk left when they do).
  std::atomic<int> active{0};
  std::atomic<bool> stop{false};

  /// Takes pieces of the current job until none are left. A piece is a
  /// share of what is left (1 / (2 * threads)), at least `grain`, so the
  /// pieces shrink towards the end of the job and the threads finish
  /// within about one grain of each other (with equal pieces, the last one
  /// taken left the other threads idle for up to a whole piece: in decode,
  /// ~5% of a step at ~90 parallel regions a step; bench/RESULTS.md).
  void work() {
    const int64_t share = 2 * int64_t(workers.size() + 1);
    int64_t begin = next.load();
    while (begin < n) {
      int64_t end = std::min(n, begin + std::max(grain, (n - begin) / share));
      if (next.compare_exchange_weak(begin, end)) {
        fn(ctx, begin, end);
        begin = next.load();
      }
    }
  }

  void loop() {
    int64_t seen = 0;
    for (;;) {
      if (!spinUntil(
              [&] { return stop.load() || generation.load() != seen; })) {
        std::unique_lock<std::mutex> lock(mutex);
        wake.wait(lock,
                  [&] { return stop.load() || generation.load() != seen; });
      }
      {
        // Joins the newest job under the mutex, which its fields were
        // written under; a job that has ended leaves no chunk to take.
        std::lock_guard<std::mutex> lock(mutex);
        if (stop.load())
          return;
        seen = generation.load();
        active.fetch_add(1);
      }
      work();
      if (active.fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> lock(mutex);
        done.notify_one();
      }
    }
  }

  /// Waits until no worker is inside work().
  void waitIdle() {
    if (!spinUntil([&] { return active.load() == 0; })) {
      std::unique_lock<std::mutex> lock(mutex);
      done.wait(lock, [&] { return active.load() == 0; });
    }
  }
};

extern "C" moert_pool *moert_pool_create(int threads) {
  if (threads <= 0)
    threads = int(std::max(1u, std::thread::hardware_concurrency()));
  auto *pool = new (std::nothrow) moert_pool;
  if (!pool)
    return nullptr;
  try {
    pool->workers.reserve(size_t(threads - 1));
  } catch (...) {
  }
  // When the system will not start another thread (std::system_error:
  // EAGAIN under a thread or memory limit) the pool keeps those that
  // started; the caller's thread always works too.
  for (int i = 1; i < threads; ++i) {
    try {
      pool->workers.emplace_back([pool] { pool->loop(); });
    } catch (...) {
      break;
    }
  }
  return pool;
}

extern "C" void moert_pool_free(moert_pool *pool) {
  if (!pool)
    return;
  {
    std::lock_guard<std::mutex> lock(pool->mutex);
    pool->stop = true;
  }
  pool->wake.notify_all();
  for (std::thread &t : pool->workers)
    t.join();
  delete pool;
}

extern "C" int moert_pool_size(const moert_pool *pool) {
  return static_cast<int>(pool->workers.size()) + 1;
}

extern "C" void moert_pool_run(moert_pool *pool, int64_t n, int64_t grain,
                               void (*fn)(void *, int64_t, int64_t),
                               void *ctx) {
  // A worker that joined the previous job late may still be reading its
  // fields; workers join under the mutex, so none is left once it is held
  // with none active.
  pool->waitIdle();
  {
    std::unique_lock<std::mutex> lock(pool->mutex);
    pool->done.wait(lock, [&] { return pool->active.load() == 0; });
    pool->fn = fn;
    pool->ctx = ctx;
    pool->n = n;
    pool->grain = std::max<int64_t>(1, grain);
    pool->next.store(0);
    ++pool->generation;
  }
  pool->wake.notify_all();
  pool->work();
  // Every chunk has been taken; those taken by workers end when they leave
  // work().
  pool->waitIdle();
}
