// FMA peak of this machine: T threads each run independent chains of
// vector FMAs (enough chains to cover the FMA latency on both pipes) on
// registers only, for AVX2 (256-bit) and, where compiled in, AVX-512.
// Prints the best of several passes in GFLOP/s (an FMA is two FLOPs), the
// figure the prefill GEMMs are compared with.
//   c++ -O2 -march=native -pthread fmapeak.cpp -o fmapeak && ./fmapeak
//   [threads]
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {

constexpr long kIters = 20'000'000;

/// Twelve chains of `V` FMAs, kIters steps each; returns FLOPs done.
template <typename V, typename Fma, typename Set1>
double chains(float seed, Fma fma, Set1 set1, float *sink) {
  V a[12], m = set1(0.999999f), c = set1(1e-7f);
  for (int i = 0; i < 12; ++i)
    a[i] = set1(seed + float(i));
  for (long it = 0; it < kIters; ++it)
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i)
      a[i] = fma(a[i], m, c);
  V s = a[0];
  for (int i = 1; i < 12; ++i)
    s = fma(s, m, a[i]);
  *sink = reinterpret_cast<float *>(&s)[0];
  return 2.0 * 12 * kIters * (sizeof(V) / sizeof(float));
}

double avx2(float seed, float *sink) {
  return chains<__m256>(
      seed,
      [](__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); },
      [](float f) { return _mm256_set1_ps(f); }, sink);
}

#ifdef __AVX512F__
double avx512(float seed, float *sink) {
  return chains<__m512>(
      seed,
      [](__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); },
      [](float f) { return _mm512_set1_ps(f); }, sink);
}
#endif

template <typename Kernel> double peak(int threads, Kernel kernel) {
  double best = 0;
  std::vector<float> sinks(size_t(threads) * 16);
  for (int pass = 0; pass < 5; ++pass) {
    std::vector<double> flops(threads);
    auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back(
          [&, t] { flops[t] = kernel(float(t), &sinks[t * 16]); });
    for (auto &th : pool)
      th.join();
    double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count();
    double total = 0;
    for (double f : flops)
      total += f;
    best = std::max(best, total / s / 1e9);
  }
  return best;
}

} // namespace

int main(int argc, char **argv) {
  int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  double p = peak(threads, avx2);
#ifdef __AVX512F__
  p = std::max(p, peak(threads, avx512));
#endif
  std::printf("%.1f\n", p);
}
