// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-expert-capacity{factor=1.25}))' | FileCheck %s
// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-expert-capacity{factor=1.25}))' | moe-opt --split-input-file | FileCheck %s
// Idempotent: a bank already bounded is left alone.
// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-expert-capacity{factor=1.25},moe-expert-capacity{factor=2.0}))' | FileCheck %s
// With the fusion and the sharding after it, both take the capped routes.
// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-expert-capacity{factor=0.5},moe-fuse-expert-gemms))' | FileCheck %s --check-prefix=FUSED
// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-expert-capacity{factor=0.5},moe-shard-experts{ranks=2}))' | FileCheck %s --check-prefix=SHARDED
// The pipeline runs it only when asked, after moe-fuse-router.
// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(moe-default-pipeline{capacity-factor=1.5 max-seq=16})' | FileCheck %s --check-prefix=PIPELINE
// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(moe-default-pipeline{max-seq=16})' | FileCheck %s --check-prefix=OFF

// The bank reads the capped weights and indices, never the router's.
// CHECK-LABEL: func.func @bank
// CHECK: %[[W:.+]], %[[I:.+]] = moe.router
// CHECK: %[[KW:.+]], %[[KI:.+]] = moe.expert_capacity %[[W]], %[[I]] experts 3 factor 1.250000e+00 : tensor<?x2xf32>, tensor<?x2xi32>
// CHECK-NOT: moe.expert_capacity
// CHECK: moe.experts %{{[^,]+}}, %[[KW]], %[[KI]]
// FUSED-LABEL: func.func @bank
// FUSED: %[[KW:.+]], %[[KI:.+]] = moe.expert_capacity %{{.+}}, %{{.+}} experts 3 factor 5.000000e-01
// FUSED: moe.expert_permute %[[KI]] experts 3
// FUSED: moe.expert_combine %{{.+}}[%{{.+}}], %[[KW]]
// SHARDED-LABEL: func.func @bank
// SHARDED: %[[KW:.+]], %[[KI:.+]] = moe.expert_capacity
// SHARDED: moe.ep_exchange_counts %[[KI]] ranks 2
// SHARDED: moe.ep_dispatch %{{[^,]+}}, %[[KI]], %[[KW]],
// SHARDED: moe.ep_combine %{{[^,]+}}, %[[KI]],
// PIPELINE-LABEL: func.func @bank
// PIPELINE: %[[W:.+]], %[[I:.+]] = moe.fused_router
// PIPELINE: %[[KW:.+]], %[[KI:.+]] = moe.expert_capacity %[[W]], %[[I]] experts 3 factor 1.500000e+00
// PIPELINE: moe.expert_permute %[[KI]]
// OFF-LABEL: func.func @bank
// OFF-NOT: moe.expert_capacity
func.func @bank(%b: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %gate = moe.weight "gate" : tensor<3x64xf32>
  %l = moe.linear %b, %gate : tensor<?x64xf32>, tensor<3x64xf32>
  %w, %i = moe.router %l top 2 softmax renormalize : tensor<?x3xf32>
  %g0 = moe.weight "e0.w1" : tensor<96x64xf32>
  %g1 = moe.weight "e1.w1" : tensor<96x64xf32>
  %g2 = moe.weight "e2.w1" : tensor<96x64xf32>
  %u0 = moe.weight "e0.w3" : tensor<96x64xf32>
  %u1 = moe.weight "e1.w3" : tensor<96x64xf32>
  %u2 = moe.weight "e2.w3" : tensor<96x64xf32>
  %d0 = moe.weight "e0.w2" : tensor<64x96xf32>
  %d1 = moe.weight "e1.w2" : tensor<64x96xf32>
  %d2 = moe.weight "e2.w2" : tensor<64x96xf32>
  %y = moe.experts %b, %w, %i
      gate [%g0, %g1, %g2] : tensor<96x64xf32>
      up [%u0, %u1, %u2] : tensor<96x64xf32>
      down [%d0, %d1, %d2] : tensor<64x96xf32>
      : tensor<?x64xf32>, tensor<?x2xf32>, tensor<?x2xi32>
  return %y : tensor<?x64xf32>
}
