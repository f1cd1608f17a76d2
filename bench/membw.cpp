// Read bandwidth of this machine: T threads sum disjoint slices of a 1 GiB
// buffer (the access pattern of decode, which streams the weights once).
// The buffer asks for 2 MiB pages, as the runtime's weight mappings do
// (MADV_HUGEPAGE): with 4 KiB pages the same loop measured as little as half
// (bench/RESULTS.md, issue 12). Prints the best of several passes in GB/s.
//   c++ -O2 -march=native -pthread membw.cpp -o membw && ./membw [threads]
#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

int main(int argc, char **argv) {
  int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const size_t n = (size_t(1) << 30) / sizeof(float);
  const size_t bytes = n * sizeof(float), huge = size_t(2) << 20;
  auto *data = static_cast<float *>(std::aligned_alloc(huge, bytes));
  if (!data)
    return 1;
  madvise(data, bytes, MADV_HUGEPAGE);
  std::fill(data, data + n, 1.0f);
  std::vector<float> sums(size_t(threads) * 16);
  double best = 0;
  for (int pass = 0; pass < 8; ++pass) {
    auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        size_t b = n * t / threads, e = n * (t + 1) / threads;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (size_t i = b; i + 32 <= e; i += 32) {
          a0 = _mm256_add_ps(a0, _mm256_loadu_ps(&data[i]));
          a1 = _mm256_add_ps(a1, _mm256_loadu_ps(&data[i + 8]));
          a2 = _mm256_add_ps(a2, _mm256_loadu_ps(&data[i + 16]));
          a3 = _mm256_add_ps(a3, _mm256_loadu_ps(&data[i + 24]));
        }
        float out[8];
        _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(a0, a1),
                                            _mm256_add_ps(a2, a3)));
        sums[size_t(t) * 16] = out[0];
      });
    for (auto &th : pool)
      th.join();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, n * sizeof(float) / s / 1e9);
  }
  std::printf("%.2f\n", best);
  std::free(data);
  return sums[0] == 12345.0f; // keep the sums alive
}
