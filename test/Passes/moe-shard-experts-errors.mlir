// RUN: not moe-opt %s --pass-pipeline='builtin.module(func.func(moe-shard-experts{ranks=4}))' 2>&1 | FileCheck %s --check-prefix=TOO-MANY
// RUN: not moe-opt %s --pass-pipeline='builtin.module(func.func(moe-shard-experts{ranks=0}))' 2>&1 | FileCheck %s --check-prefix=ZERO
// RUN: not moe-opt %s --pass-pipeline='builtin.module(func.func(moe-fuse-expert-gemms,moe-shard-experts{ranks=2}))' 2>&1 | FileCheck %s --check-prefix=FUSED

// TOO-MANY: error: 'moe.experts' op moe-shard-experts: 4 ranks for 3 experts: each rank must hold at least one expert, so ranks must be at most 3
// ZERO: error: moe-shard-experts: ranks must be at least 1, got 0
// FUSED: error: moe-shard-experts: the expert banks are already fused (moe.expert_permute); run moe-shard-experts before moe-fuse-expert-gemms
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
