// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-plan-memory{max-batch-tokens=1}))' | FileCheck %s --check-prefix=CPU
// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-plan-memory{max-batch-tokens=1 target=cuda}))' | FileCheck %s --check-prefix=CUDA
// RUN: not moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-plan-memory{target=tpu}))' 2>&1 | FileCheck %s --check-prefix=BAD

// The scratch a target's kernels need comes from its attribute's buffer
// interface. The CPU kernels stage the gathered rows (2 x 64 floats per
// token) and the up rows of silu_mul (2 x 96) of the gate_up grouped matmul:
// 320 floats of scratch live during the op. The CUDA kernels gather in their
// loads and apply silu in their stores: no scratch, a smaller arena.
//
// The gate_up result is 2 x 96 = 192 floats per token, live into the down
// GEMM; with the scratch (largest first, at 0) the CPU arena is 320 + 192 =
// 512, the CUDA one 192.

// CPU-LABEL: func.func @gate_up
// CPU-SAME: target = #moert.cpu
// CPU-SAME: floats_per_token = 512
// CPU: moe.grouped_matmul {{.*}} {moe.placement = #moe.placement<results = [320], scratch = 0>}
// CPU: moe.grouped_matmul {{[^{]*}} : tensor<?x96xf32>
// CUDA-LABEL: func.func @gate_up
// CUDA-SAME: target = #moert.cuda
// CUDA-SAME: floats_per_token = 192
// CUDA: moe.grouped_matmul {{.*}} {moe.placement = #moe.placement<results = [0]>} :
// CUDA: moe.grouped_matmul {{[^{]*}} : tensor<?x96xf32>
// BAD: error: moe-plan-memory: target must be cpu or cuda, got 'tpu'
func.func @gate_up(%b: tensor<?x64xf32>, %p: tensor<?xi32>, %o: tensor<3xi32>) -> tensor<?x64xf32> {
  %g = moe.weight "g" : tensor<96x64xf16>
  %u = moe.weight "u" : tensor<96x64xf16>
  %d = moe.weight "d" : tensor<64x96xf16>
  %gu = moe.grouped_matmul %b[%p] gather, %o top 2 weights [%g, %u, %g, %u] : tensor<96x64xf16> parts 2 silu_mul : tensor<?x64xf32>, tensor<?xi32>, tensor<3xi32>
  %dn = moe.grouped_matmul %gu[%p], %o top 2 weights [%d, %d] : tensor<64x96xf16> parts 1 : tensor<?x96xf32>, tensor<?xi32>, tensor<3xi32>
  return %dn : tensor<?x64xf32>
}
