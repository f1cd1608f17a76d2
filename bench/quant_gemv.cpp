// Decode GEMV (linear<W, N, K> with T = 1) and prefill GEMM (T = 512) of
// moert's CPU kernels on the `mini` model's shapes, for f16 and the block
// formats (q8_0, q4_0, q4_1, q4_K, q6_K), both decode strategies of the block
// formats (int8 activations, f32 dequantisation). Decode prints the weight
// bytes read per second: it is bandwidth-bound, so compare with bench/membw.cpp
// on the same machine. Each decode measurement cycles through enough copies of
// the weight
// (>= 512 MiB) that it streams from memory, not from the 32 MiB L3.
//   c++ -std=c++17 -O2 -march=native -pthread -Iruntime/include \
//     bench/quant_gemv.cpp runtime/src/pool.cpp -o quant_gemv
//   ./quant_gemv [threads [prefill (0/1) [format [cache]]]]
// `cache` times decode on one copy of each weight, from L3: the kernels'
// own rate, without the memory's limit.
#include "moert/kernels.h"
#include "moert/pool.h"

#include <sys/mman.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

using namespace moert;

namespace {

using Clock = std::chrono::steady_clock;

/// Decode from L3 rather than from memory (see decode()).
bool inCache = false;

/// Memory in 2 MiB pages where the kernel gives them, as the runtime asks
/// for its weight mappings (bench/RESULTS.md, issue 12: a probe read them
/// at twice the speed of 4 KiB pages once, at the same speed other times).
template <typename T> struct HugeAlloc {
  using value_type = T;
  HugeAlloc() = default;
  template <typename U> HugeAlloc(const HugeAlloc<U> &) {}
  T *allocate(size_t n) {
    void *p = mmap(nullptr, n * sizeof(T), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
      throw std::bad_alloc();
    madvise(p, n * sizeof(T), MADV_HUGEPAGE);
    return static_cast<T *>(p);
  }
  void deallocate(T *p, size_t n) { munmap(p, n * sizeof(T)); }
  bool operator==(const HugeAlloc &) const { return true; }
  bool operator!=(const HugeAlloc &) const { return false; }
};

/// Random weight bytes with a sane f16 scale in every block (random scale
/// bits would include NaN and subnormals, which no real model has).
template <typename W, typename A>
void fill(std::vector<W, A> &w, std::mt19937 &rng) {
  auto *bytes = reinterpret_cast<uint8_t *>(w.data());
  for (size_t i = 0; i < w.size() * sizeof(W); ++i)
    bytes[i] = uint8_t(rng());
  if constexpr (IsQuant<W>::value) {
    for (W &b : w) {
      b.d = 0x2000; // 2^-7
      if constexpr (std::is_same<W, q4_1>::value)
        b.m = 0xa400; // -2^-6
      if constexpr (std::is_same<W, q4_K>::value)
        b.dmin = 0x2000;
    }
  } else if constexpr (std::is_same<W, float>::value) {
    for (W &f : w)
      f = float(rng() % 2001) / 1000.0f - 1.0f;
  } else {
    for (W &b : w)
      b.bits = uint16_t(0x2000 + (b.bits & 0x83ff));
  }
}

const char *name(const float *) { return "f32"; }
const char *name(const f16 *) { return "f16"; }
const char *name(const q8_0 *) { return "q8_0"; }
const char *name(const q4_0 *) { return "q4_0"; }
const char *name(const q4_1 *) { return "q4_1"; }
const char *name(const q4_K *) { return "q4_K"; }
const char *name(const q6_K *) { return "q6_K"; }

/// Mode: 0 = what linear does, 1 = int8 decode, 2 = f32 decode.
template <typename W, int64_t N, int64_t K>
void decode(moert_pool *pool, int mode) {
  if constexpr (!IsQuant<W>::value)
    if (mode != 0)
      return;
  constexpr int64_t elems = N * K / IsQuant<W>::kBlock;
  constexpr double bytes = double(rowBytes<W>(K)) * N;
  // In cache (the 4th argument): one copy, read again and again from L3,
  // so the kernels' own rate shows (decode is bound by the weights'
  // conversions where memory reads faster than they run).
  const int copies = inCache ? 1 : int((512.0 * (1 << 20)) / bytes) + 1;
  const int reps = inCache ? 100 : 1;
  std::mt19937 rng(1);
  std::vector<std::vector<W, HugeAlloc<W>>> ws(copies);
  for (auto &w : ws)
    w.resize(elems);
  for (auto &w : ws)
    fill(w, rng);
  std::vector<float> x(K), out(N);
  for (float &f : x)
    f = float(rng() % 2001) / 1000.0f - 1.0f;
  auto run = [&](const W *w) {
    if constexpr (IsQuant<W>::value) {
      if (mode == 1)
        return qk::linearDecode<W, N, K, true>(pool, x.data(), w, 1, out.data(),
                                               N, nullptr);
      if (mode == 2)
        return qk::linearDecode<W, N, K, false>(pool, x.data(), w, 1,
                                                out.data(), N, nullptr);
    }
    linear<W, N, K>(pool, x.data(), w, 1, out.data());
  };
  for (auto &w : ws) // warm-up: page the copies in
    run(w.data());
  double best = 1e30;
  for (int pass = 0; pass < 5; ++pass) {
    auto t0 = Clock::now();
    for (int rep = 0; rep < reps; ++rep)
      for (auto &w : ws)
        run(w.data());
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::min(best, s / copies / reps);
  }
  static const char *modes[] = {"linear", "int8", "f32"};
  std::printf("decode  %-5s %-6s N=%5lld K=%5lld  %8.1f us  %6.2f GB/s\n",
              name(static_cast<W *>(nullptr)), modes[mode], (long long)N,
              (long long)K, best * 1e6, bytes / best / 1e9);
}

template <typename W, int64_t N, int64_t K>
void prefill(moert_pool *pool, int64_t T) {
  constexpr int64_t elems = N * K / IsQuant<W>::kBlock;
  std::mt19937 rng(2);
  std::vector<W> w(elems);
  fill(w, rng);
  std::vector<float> x(T * K), out(T * N);
  for (float &f : x)
    f = float(rng() % 2001) / 1000.0f - 1.0f;
  linear<W, N, K>(pool, x.data(), w.data(), T, out.data());
  double best = 1e30;
  for (int pass = 0; pass < 3; ++pass) {
    auto t0 = Clock::now();
    linear<W, N, K>(pool, x.data(), w.data(), T, out.data());
    best = std::min(best,
                    std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::printf("prefill %-5s T=%lld N=%5lld K=%5lld  %8.2f ms  %6.1f GFLOP/s\n",
              name(static_cast<W *>(nullptr)), (long long)T, (long long)N,
              (long long)K, best * 1e3, 2.0 * T * N * K / best / 1e9);
}

template <typename W>
void all(moert_pool *pool, bool doPrefill, const char *only) {
  if (only && std::strcmp(only, name(static_cast<W *>(nullptr))) != 0)
    return;
  for (int mode : {0, 1, 2}) {
    decode<W, 3584, 1024>(pool, mode);
    decode<W, 1024, 3584>(pool, mode);
    decode<W, 32000, 1024>(pool, mode);
  }
  if (doPrefill) {
    prefill<W, 3584, 1024>(pool, 512);
    prefill<W, 1024, 3584>(pool, 512);
    prefill<W, 3584, 1024>(pool, 128);
    prefill<W, 1024, 3584>(pool, 128);
  }
}

} // namespace

int main(int argc, char **argv) {
  int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  bool doPrefill = argc > 2 ? std::atoi(argv[2]) != 0 : true;
  const char *only = argc > 3 ? argv[3] : nullptr; // one format
  inCache = argc > 4 && std::strcmp(argv[4], "cache") == 0;

  moert_pool *pool = moert_pool_create(threads);
  std::printf("threads %d\n", moert_pool_size(pool));
  all<float>(pool, doPrefill, only);
  all<f16>(pool, doPrefill, only);
  all<q8_0>(pool, doPrefill, only);
  all<q4_0>(pool, doPrefill, only);
  all<q4_1>(pool, doPrefill, only);
  all<q4_K>(pool, doPrefill, only);
  all<q6_K>(pool, doPrefill, only);
  moert_pool_free(pool);
}
