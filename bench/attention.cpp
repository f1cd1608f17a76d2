// The CPU attention kernel (moert::attention) on the `mini` model's shapes
// (16 query heads, 4 kv heads, head dim 64): decode (one query) after a
// context of C positions, and a prefill chunk of T tokens from position 0.
// Prints the time per call, per layer, and ns per (query head, key) pair;
// one decode step of mini makes 8 such calls.
//   c++ -std=c++17 -O2 -march=native -pthread -Iruntime/include \
//     bench/attention.cpp runtime/src/pool.cpp -o attention
//   ./attention [threads [context [prefill]]]
#include "moert/kernels.h"
#include "moert/pool.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

using namespace moert;

namespace {

using Clock = std::chrono::steady_clock;
constexpr int64_t Heads = 16, KvHeads = 4, D = 64, Cap = 32768;

struct State {
  std::vector<float> kc, vc, q, k, v, out;
  std::vector<int32_t> pos;
  explicit State(int64_t T)
      : kc(size_t(KvHeads * Cap * D)), vc(kc.size()), q(size_t(T * Heads * D)),
        k(size_t(T * KvHeads * D)), v(k.size()), out(q.size()), pos(size_t(T)) {
    std::mt19937 rng(7);
    std::normal_distribution<float> n(0.0f, 1.0f);
    for (auto *x : {&kc, &vc, &q, &k, &v})
      for (float &f : *x)
        f = n(rng);
  }
  void run(moert_pool *pool, int64_t T) {
    attention<Heads, KvHeads, D, Cap, 0>(pool, q.data(), k.data(), v.data(),
                                         moert_kv{kc.data(), vc.data()},
                                         pos.data(), 0.125f, T, out.data());
  }
};

/// Best of 5 timings of `reps` calls, in seconds per call.
template <typename F> double best(int reps, F &&f) {
  double b = 1e30;
  for (int r = 0; r < 5; ++r) {
    auto t0 = Clock::now();
    for (int i = 0; i < reps; ++i)
      f();
    b = std::min(b, std::chrono::duration<double>(Clock::now() - t0).count() /
                        reps);
  }
  return b;
}

} // namespace

int main(int argc, char **argv) {
  int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  int64_t context = argc > 2 ? std::atoll(argv[2]) : 576;
  int64_t prefill = argc > 3 ? std::atoll(argv[3]) : 512;
  moert_pool *pool = threads > 1 ? moert_pool_create(threads) : nullptr;

  State d(1);
  d.pos[0] = int32_t(context - 1);
  double s = best(200, [&] { d.run(pool, 1); });
  std::printf("decode, context %lld: %.1f us a layer, %.2f ns a (head, key), "
              "%.2f ms for 8 layers\n",
              (long long)context, s * 1e6, s * 1e9 / double(Heads * context),
              s * 8e3);

  State p(prefill);
  for (int64_t t = 0; t < prefill; ++t)
    p.pos[size_t(t)] = int32_t(t);
  double pairs = double(Heads) * double(prefill) * double(prefill + 1) / 2;
  s = best(3, [&] { p.run(pool, prefill); });
  std::printf("prefill, %lld tokens: %.2f ms a layer, %.2f ns a (head, key)\n",
              (long long)prefill, s * 1e3, s * 1e9 / pairs);
  return 0;
}
