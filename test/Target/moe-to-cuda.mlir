// The CUDA printers print the launch plan: one __global__ kernel per
// moert.kernel (its template call, its parameters by type), one launch per
// moert.launch (grids from the affine maps, scalars as locals), and
// moert.if_decode as the if on the chunk's token count.
//
// RUN: moe-opt %S/Inputs/one-layer-f16.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory{target=cuda}),moe-lower-to-cuda)' -o %t.mlir
// RUN: moe-translate --moe-to-cuda %t.mlir | FileCheck %s --check-prefix=CU
// RUN: moe-translate --moe-to-cuda-host %t.mlir | FileCheck %s --check-prefix=HOST
//
// A kernel name is a C identifier and its callee a template of the library.
// RUN: sed -e 's/@embedding_0/@"bad name"/g' %t.mlir | not moe-translate --moe-to-cuda 2>&1 | FileCheck %s --check-prefix=NAME
// RUN: sed -e 's/@embedding_0/@system/g' %t.mlir | not moe-translate --moe-to-cuda 2>&1 | FileCheck %s --check-prefix=NAME
// RUN: sed -e 's/"moert::cuda::embedding"/"moert::cuda::embedding<float>(0);abort"/' %t.mlir | not moe-translate --moe-to-cuda 2>&1 | FileCheck %s --check-prefix=CALLEE

// CU: #include "moert/cuda/kernels.cuh"
// CU: __global__ void __launch_bounds__(256) embedding_0(const __half *p0, int32_t *p1, float *p2) {
// CU-NEXT: moert::cuda::embedding<__half, 64>(p0, p1, p2);
// CU: fused_linear_gemv_1(float *p0, const __grid_constant__ moert::cuda::Ptrs<3> p1, int p2, const __grid_constant__ moert::cuda::Outs<3> p3, int32_t *p4, double p5) {
// CU-NEXT: moert::cuda::gemvMulti<__half, __half, __half, 64, 64, 32, 32, true, true, false, 16>(p0, p1, p2, p3, p4, p5);
// CU: __launch_bounds__(128) attention_decode_{{[0-9]+}}(float *p0, float *p1, float *p2, float *p3, float *p4, int32_t *p5, float p6, float *p7) {
// CU-NEXT: moert::cuda::attentionDecode<4, 2, 16, 1024, 0, 4>(p0, p1, p2, p3, p4, p5, p6, p7);
// CU: moert_emu::Entry<embedding_0>::kernel("embedding_0"),

// HOST: int64_t scratchFloats(int64_t n_max) { return n_max * [[ARENA:[0-9]+]] + 2304; }
// HOST: const char *const kKernels[] = {
// HOST-NEXT: "embedding_0",
// HOST: float *const workspace = arena + n_max * [[ARENA]];
// HOST: const void *W0 = ex->weights[0]; // emb
// HOST: void *args[] = {(void *)&W0, (void *)&tokens, (void *)&[[H:b[0-9]+]]};
// HOST-NEXT: ex->launch(ex->device, 0, n64, 1, 256, args); // embedding_0
// HOST: const struct { const void *p[3]; } [[W:t[0-9]+]] = {{[{][{]}}W1, W2, W3{{[}][}]}};
// HOST-NEXT: const struct { float *p[3]; } [[O:t[0-9]+]] = {{[{][{]}}b{{[0-9]+}}, b{{[0-9]+}}, b{{[0-9]+}}{{[}][}]}};
// HOST-NEXT: if (n <= 8) {
// HOST-NEXT: {
// HOST-NEXT: const int c2 = n;
// HOST-NEXT: const double c5 = 10000;
// HOST-NEXT: void *args[] = {(void *)&[[H]], (void *)&[[W]], (void *)&c2, (void *)&[[O]], (void *)&positions, (void *)&c5};
// HOST-NEXT: ex->launch(ex->device, 1, 10, 1, 256, args); // fused_linear_gemv_1
// HOST: } else {
// HOST: ex->launch(ex->device, 2, cdiv(n64, 64), 1, 256, args); // linear_mma_2
// HOST: ex->launch(ex->device, 3, cdiv(n64 * 32, 256), 1, 256, args); // rope_3
// HOST: const float c6 = 0.25f;
// HOST-NEXT: void *args[] = {{.*}}(void *)&ex->caches[0].k, (void *)&ex->caches[0].v, (void *)&positions, (void *)&c6, (void *)&workspace};
// HOST-NEXT: ex->launch(ex->device, {{[0-9]+}}, 16, n64, 128, args); // attention_decode_
// HOST: ex->launch(ex->device, {{[0-9]+}}, 4, cdiv(n64, 16), 128, args); // attention_prefill_
// HOST: (void *)&logits, (void *)&null};
// HOST-NEXT: ex->launch(ex->device, {{[0-9]+}}, 32, 1, 256, args); // linear_gemv_
// HOST: (void *)&logits, (void *)&null};
// HOST-NEXT: ex->launch(ex->device, {{[0-9]+}}, cdiv(n64, 64), 2, 256, args); // linear_mma_
// HOST: MOERT_TARGET_CUDA, moert_device_image, moert_device_image_end, 12, kKernels,
// HOST-NEXT: nullptr, nullptr,
// HOST-NEXT: nullptr, 0,
// HOST-NEXT: 0, nullptr, 0, 0};

// NAME: error: 'moert.kernel' op a kernel's name is kind_<number>, in lowercase letters, digits and '_'
// CALLEE: error: 'moert.kernel' op calls 'moert::cuda::embedding<float>(0);abort', which is not a kernel of the CUDA library
