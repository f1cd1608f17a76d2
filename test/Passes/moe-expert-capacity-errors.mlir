// RUN: not moe-opt %s --pass-pipeline='builtin.module(func.func(moe-expert-capacity{factor=0}))' 2>&1 | FileCheck %s --check-prefix=ZERO
// RUN: not moe-opt %s --pass-pipeline='builtin.module(func.func(moe-expert-capacity{factor=-1.5}))' 2>&1 | FileCheck %s --check-prefix=NEGATIVE
// RUN: not moe-opt %s --pass-pipeline='builtin.module(func.func(moe-fuse-expert-gemms,moe-expert-capacity{factor=1}))' 2>&1 | FileCheck %s --check-prefix=FUSED
// RUN: not moe-opt %s --pass-pipeline='builtin.module(func.func(moe-shard-experts{ranks=2},moe-expert-capacity{factor=1}))' 2>&1 | FileCheck %s --check-prefix=SHARDED
// RUN: not moe-opt %s --pass-pipeline='builtin.module(moe-default-pipeline{capacity-factor=-1})' 2>&1 | FileCheck %s --check-prefix=PIPELINE

// ZERO: error: moe-expert-capacity: factor must be a finite number above 0, got 0
// NEGATIVE: error: moe-expert-capacity: factor must be a finite number above 0, got -1.5
// FUSED: error: 'moe.expert_permute' op moe-expert-capacity: the expert bank is already fused; run moe-expert-capacity before moe-fuse-expert-gemms
// SHARDED: error: 'moe.ep_exchange_counts' op moe-expert-capacity: the expert bank is already sharded; run moe-expert-capacity before moe-shard-experts
// PIPELINE: moe-default-pipeline: capacity-factor must be a finite number above 0 (0: off), got -1
func.func @bank(%b: tensor<?x64xf32>, %l: tensor<?x3xf32>) -> tensor<?x64xf32> {
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

// -----

// RUN: not moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-expert-capacity{factor=1}))' 2>&1 | FileCheck %s --check-prefix=SOURCE
// SOURCE: error: 'moe.experts' op moe-expert-capacity: the weights and indices must come from one moe.router or moe.fused_router
func.func @not_routed(%b: tensor<?x64xf32>, %w: tensor<?x1xf32>, %i: tensor<?x1xi32>) -> tensor<?x64xf32> {
  %g = moe.weight "w1" : tensor<96x64xf32>
  %u = moe.weight "w3" : tensor<96x64xf32>
  %d = moe.weight "w2" : tensor<64x96xf32>
  %y = moe.experts %b, %w, %i
      gate [%g] : tensor<96x64xf32> up [%u] : tensor<96x64xf32>
      down [%d] : tensor<64x96xf32>
      : tensor<?x64xf32>, tensor<?x1xf32>, tensor<?x1xi32>
  return %y : tensor<?x64xf32>
}
