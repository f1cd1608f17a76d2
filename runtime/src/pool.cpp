//===- pool.cpp - persistent thread pool of the runtime --------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#include "moert/pool.h"

struct moert_pool {
  std::vector<std::thread> workers;
  std::mutex mutex;
  std::condition_variable wake, done;
  // The current job.
  void (*fn)(void *, int64_t, int64_t) = nullptr;
  void *ctx = nullptr;
  int64_t n = 0, chunks = 0;
  std::atomic<int64_t> next{0};
  int64_t generation = 0;
  int busy = 0;
  bool stop = false;

  /// Takes chunks of the current job until none are left.
  void work() {
    for (int64_t c; (c = next.fetch_add(1)) < chunks;) {
      int64_t begin = n * c / chunks, end = n * (c + 1) / chunks;
      if (begin < end)
        fn(ctx, begin, end);
    }
  }

  void loop() {
    int64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex);
        wake.wait(lock, [&] { return stop || generation != seen; });
        if (stop)
          return;
        seen = generation;
      }
      work();
      std::lock_guard<std::mutex> lock(mutex);
      if (--busy == 0)
        done.notify_one();
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

extern "C" void moert_pool_run(moert_pool *pool, int64_t n, int64_t chunks,
                               void (*fn)(void *, int64_t, int64_t),
                               void *ctx) {
  {
    std::lock_guard<std::mutex> lock(pool->mutex);
    pool->fn = fn;
    pool->ctx = ctx;
    pool->n = n;
    pool->chunks = chunks;
    pool->next.store(0);
    pool->busy = static_cast<int>(pool->workers.size());
    ++pool->generation;
  }
  pool->wake.notify_all();
  pool->work();
  std::unique_lock<std::mutex> lock(pool->mutex);
  pool->done.wait(lock, [&] { return pool->busy == 0; });
}
