// The prefill grouped expert GEMM of kernels.cuh against cuBLAS's dense GEMM
// for the same FLOPs, on GPU 0, for mini's two expert GEMMs at a prefill of
// T tokens with top-k routing spread evenly over E experts:
//   gate_up: [T*k, H] x [E][2I, H]^T (gathering rows by token, storing
//            silu(gate) * up as the -O2 pipeline runs it), and
//   down:    [T*k, I] x [E][H, I]^T,
// against cublasGemmEx with f16 inputs, f32 outputs and f32 accumulation on
// [T*k, K] x [N, K]^T. Prints one line per GEMM: TFLOP/s of both and the
// ratio.
//   nvcc -O3 -std=c++17 -arch=sm_90 -I ../runtime/include cuda_grouped_gemm.cu
//        -lcublas -o cuda_grouped_gemm && ./cuda_grouped_gemm [T]
#include "moert/cuda/kernels.cuh"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#define CHECK(call)                                                            \
  do {                                                                         \
    auto e_ = (call);                                                          \
    if (e_ != 0) {                                                             \
      std::fprintf(stderr, "%s failed (%d)\n", #call, int(e_));                \
      std::exit(1);                                                            \
    }                                                                          \
  } while (0)

constexpr int H = 1024, I = 3584, E = 8, K = 2;

__global__ void __launch_bounds__(256)
    gateUp(const float *x, const int32_t *perm, const int32_t *offsets,
           const __grid_constant__ moert::cuda::Ptrs<2 * E> w, int n,
           float *out) {
  moert::cuda::gemmMma<__half, I, I, H, E, K, true, true, true, 2 * E>(
      x, perm, offsets, w, n, out, nullptr);
}
__global__ void __launch_bounds__(256)
    down(const float *x, const int32_t *perm, const int32_t *offsets,
         const __grid_constant__ moert::cuda::Ptrs<E> w, int n, float *out) {
  moert::cuda::gemmMma<__half, H, 0, I, E, K, false, true, false, E>(
      x, perm, offsets, w, n, out, nullptr);
}

template <typename F> float timeIt(F launch) {
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  launch(); // warm-up
  CHECK(cudaEventRecord(a));
  const int reps = 20;
  for (int i = 0; i < reps; ++i)
    launch();
  CHECK(cudaEventRecord(b));
  CHECK(cudaEventSynchronize(b));
  float ms = 0;
  CHECK(cudaEventElapsedTime(&ms, a, b));
  CHECK(cudaGetLastError());
  return ms / reps;
}

template <typename T> T *deviceArray(size_t count) {
  T *p = nullptr;
  CHECK(cudaMalloc(&p, count * sizeof(T)));
  CHECK(cudaMemset(p, 0, count * sizeof(T)));
  return p;
}

int main(int argc, char **argv) {
  const int T = argc > 1 ? std::atoi(argv[1]) : 512, rows = T * K;
  // Routing: token t's choices are experts (t + j) % E: every expert gets
  // rows / E rows; perm lists pairs grouped by expert in token order.
  std::vector<int32_t> perm, offsets(E + 1, 0);
  for (int e = 0; e < E; ++e) {
    offsets[e] = int32_t(perm.size());
    for (int t = 0; t < T; ++t)
      for (int j = 0; j < K; ++j)
        if ((t + j) % E == e)
          perm.push_back(t * K + j);
  }
  offsets[E] = int32_t(perm.size());
  int32_t *dPerm = deviceArray<int32_t>(perm.size());
  int32_t *dOffsets = deviceArray<int32_t>(E + 1);
  CHECK(cudaMemcpy(dPerm, perm.data(), perm.size() * 4, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dOffsets, offsets.data(), (E + 1) * 4,
                   cudaMemcpyHostToDevice));
  float *x = deviceArray<float>(size_t(T) * H);
  float *act = deviceArray<float>(size_t(rows) * I);
  float *z = deviceArray<float>(size_t(rows) * H);
  moert::cuda::Ptrs<2 * E> w13;
  moert::cuda::Ptrs<E> w2;
  for (int e = 0; e < E; ++e) {
    w13.p[2 * e] = deviceArray<__half>(size_t(I) * H);
    w13.p[2 * e + 1] = deviceArray<__half>(size_t(I) * H);
    w2.p[e] = deviceArray<__half>(size_t(H) * I);
  }
  float gateUpMs = timeIt([&] {
    gateUp<<<dim3((rows + 63) / 64 + E, (I + 63) / 64), 256>>>(
        x, dPerm, dOffsets, w13, T, act);
  });
  float downMs = timeIt([&] {
    down<<<dim3((rows + 63) / 64 + E, (H + 127) / 128), 256>>>(
        act, dPerm, dOffsets, w2, T, z);
  });

  cublasHandle_t handle;
  CHECK(cublasCreate(&handle));
  auto dense = [&](int m, int n, int k) {
    __half *a = deviceArray<__half>(size_t(m) * k);
    __half *b = deviceArray<__half>(size_t(n) * k);
    float *c = deviceArray<float>(size_t(m) * n);
    const float one = 1, zero = 0;
    // Column-major C^T[n, m] = W[n, k] . A^T: the row-major [m, n] result.
    float ms = timeIt([&] {
      CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &one, b,
                         CUDA_R_16F, k, a, CUDA_R_16F, k, &zero, c, CUDA_R_32F,
                         n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    });
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
    return ms;
  };
  float denseGateUp = dense(rows, 2 * I, H), denseDown = dense(rows, H, I);
  auto report = [&](const char *name, float ours, float theirs, int n, int k) {
    double flops = 2.0 * rows * n * k;
    std::printf("%s [%d x %d] x [%d x %d]^T: grouped %.1f TFLOP/s, cuBLAS "
                "dense %.1f TFLOP/s, ratio %.0f%%\n",
                name, rows, k, n, k, flops / ours / 1e9, flops / theirs / 1e9,
                100.0 * theirs / ours);
  };
  report("gate_up", gateUpMs, denseGateUp, 2 * I, H);
  report("down", downMs, denseDown, H, I);
  return 0;
}
