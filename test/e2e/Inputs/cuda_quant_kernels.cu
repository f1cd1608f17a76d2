// Every kernel template that takes weights, instantiated as the generated
// .cu instantiates it but with each block-quantised weight type, at
// Mixtral-8x7B's shapes (hidden 4096, intermediate 14336, 8 experts, top 2,
// 32 heads, 8 KV heads of 128, vocabulary 32000). cuda-quant-nvcc.test
// compiles it for sm_80 and sm_90 through check_ptxas.py (no spills).
#include "moert/cuda/kernels.cuh"

using moert::cuda::Outs;
using moert::cuda::Ptrs;

#define PTRS(N) const __grid_constant__ Ptrs<N>
#define MATMUL_PARAMS(N)                                                       \
  const float *x, const int32_t *perm, const int32_t *offsets, PTRS(N) w,      \
      int n, float *out, const float *res
#define MATMUL_ARGS x, perm, offsets, w, n, out, res

#define QUANT_KERNELS(Q)                                                       \
  __global__ void __launch_bounds__(256)                                       \
      embedding_##Q(const moert::Q *table, const int32_t *ids, float *out) {   \
    moert::cuda::embedding<moert::Q, 4096>(table, ids, out);                   \
  }                                                                            \
  __global__ void __launch_bounds__(256)                                       \
      rms_norm_##Q(const float *x, const moert::Q *w, float eps, float *out) { \
    moert::cuda::rmsNorm<moert::Q, 4096>(x, w, eps, out);                      \
  }                                                                            \
  /* o_proj with the residual, and lm_head */                                  \
  __global__ void __launch_bounds__(256) linear_gemv_##Q(MATMUL_PARAMS(1)) {   \
    moert::cuda::gemv<moert::Q, moert::Q, 4096, 0, 4096, 1, 1, false, false,   \
                      false, 1>(MATMUL_ARGS);                                  \
  }                                                                            \
  __global__ void __launch_bounds__(256) lm_head_gemv_##Q(MATMUL_PARAMS(1)) {  \
    moert::cuda::gemv<moert::Q, moert::Q, 32000, 0, 4096, 1, 1, false, false,  \
                      false, 1>(MATMUL_ARGS);                                  \
  }                                                                            \
  /* stacked k | v, and a dense gate | up with silu */                         \
  __global__ void __launch_bounds__(256) pair_gemv_##Q(MATMUL_PARAMS(2)) {     \
    moert::cuda::gemv<moert::Q, moert::Q, 1024, 1024, 4096, 1, 1, false,       \
                      false, false, 2>(MATMUL_ARGS);                           \
  }                                                                            \
  __global__ void __launch_bounds__(256) silu_gemv_##Q(MATMUL_PARAMS(2)) {     \
    moert::cuda::gemv<moert::Q, moert::Q, 14336, 14336, 4096, 1, 1, false,     \
                      false, true, 2>(MATMUL_ARGS);                            \
  }                                                                            \
  /* a quantised gate with an f16 up projection */                             \
  __global__ void __launch_bounds__(256) mixed_gemv_##Q(MATMUL_PARAMS(2)) {    \
    moert::cuda::gemv<moert::Q, __half, 14336, 14336, 4096, 1, 1, false,       \
                      false, true, 2>(MATMUL_ARGS);                            \
  }                                                                            \
  /* experts: gate | up gathered with silu, then down */                       \
  __global__ void __launch_bounds__(256)                                       \
      grouped_up_gemv_##Q(MATMUL_PARAMS(16)) {                                 \
    moert::cuda::gemv<moert::Q, moert::Q, 14336, 14336, 4096, 8, 2, true,      \
                      true, true, 16>(MATMUL_ARGS);                            \
  }                                                                            \
  __global__ void __launch_bounds__(256)                                       \
      grouped_down_gemv_##Q(MATMUL_PARAMS(8)) {                                \
    moert::cuda::gemv<moert::Q, moert::Q, 4096, 0, 14336, 8, 2, false, true,   \
                      false, 8>(MATMUL_ARGS);                                  \
  }                                                                            \
  /* q, k and v with RoPE on q and k */                                        \
  __global__ void __launch_bounds__(256) fused_linear_gemv_##Q(                \
      const float *x, PTRS(3) w, int n, const __grid_constant__ Outs<3> out,   \
      const int32_t *pos, double theta) {                                      \
    moert::cuda::gemvMulti<moert::Q, moert::Q, moert::Q, 4096, 4096, 1024,     \
                           1024, true, true, false, 128>(x, w, n, out, pos,    \
                                                         theta);               \
  }                                                                            \
  __global__ void __launch_bounds__(256) linear_mma_##Q(MATMUL_PARAMS(1)) {    \
    moert::cuda::gemmMma<moert::Q, 4096, 0, 4096, 1, 1, false, false, false,   \
                         1>(MATMUL_ARGS);                                      \
  }                                                                            \
  __global__ void __launch_bounds__(256) pair_mma_##Q(MATMUL_PARAMS(2)) {      \
    moert::cuda::gemmMma<moert::Q, 1024, 1024, 4096, 1, 1, false, false,       \
                         false, 2>(MATMUL_ARGS);                               \
  }                                                                            \
  __global__ void __launch_bounds__(256)                                       \
      grouped_up_mma_##Q(MATMUL_PARAMS(16)) {                                  \
    moert::cuda::gemmMma<moert::Q, 14336, 14336, 4096, 8, 2, true, true, true, \
                         16>(MATMUL_ARGS);                                     \
  }                                                                            \
  __global__ void __launch_bounds__(256)                                       \
      grouped_down_mma_##Q(MATMUL_PARAMS(8)) {                                 \
    moert::cuda::gemmMma<moert::Q, 4096, 0, 14336, 8, 2, false, true, false,   \
                         8>(MATMUL_ARGS);                                      \
  }

extern "C" {
QUANT_KERNELS(q8_0)
QUANT_KERNELS(q4_0)
QUANT_KERNELS(q4_1)
QUANT_KERNELS(q4_K)
QUANT_KERNELS(q5_K)
QUANT_KERNELS(q6_K)
} // extern "C"
