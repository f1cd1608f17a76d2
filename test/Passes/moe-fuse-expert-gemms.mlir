// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-fuse-expert-gemms))' | FileCheck %s
// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-fuse-expert-gemms))' | moe-opt --split-input-file | FileCheck %s

// The expert bank becomes permute -> gate_up grouped GEMM (w1 and w3 of each
// expert stacked, gathering the tokens) -> silu·up -> down grouped GEMM ->
// combine. Expert weights stay the very same moe.weight values.
// CHECK-LABEL: func.func @bank
// CHECK-SAME: (%[[B:[^:]+]]: tensor<?x64xf32>
// CHECK: %[[W:.+]], %[[I:.+]] = moe.router
// CHECK-DAG: %[[G0:.+]] = moe.weight "e0.w1"
// CHECK-DAG: %[[G1:.+]] = moe.weight "e1.w1"
// CHECK-DAG: %[[G2:.+]] = moe.weight "e2.w1"
// CHECK-DAG: %[[U0:.+]] = moe.weight "e0.w3"
// CHECK-DAG: %[[U1:.+]] = moe.weight "e1.w3"
// CHECK-DAG: %[[U2:.+]] = moe.weight "e2.w3"
// CHECK-DAG: %[[D0:.+]] = moe.weight "e0.w2"
// CHECK-DAG: %[[D1:.+]] = moe.weight "e1.w2"
// CHECK-DAG: %[[D2:.+]] = moe.weight "e2.w2"
// CHECK: %[[PERM:.+]], %[[OFF:.+]] = moe.expert_permute %[[I]] experts 3 : tensor<?x2xi32>
// CHECK: %[[GU:.+]] = moe.grouped_matmul %[[B]][%[[PERM]]] gather, %[[OFF]] top 2 weights [%[[G0]], %[[U0]], %[[G1]], %[[U1]], %[[G2]], %[[U2]]] : (tensor<96x64xf32>, tensor<96x64xbf16>, tensor<96x64xf32>, tensor<96x64xbf16>, tensor<96x64xf32>, tensor<96x64xbf16>) parts 2 : tensor<?x64xf32>, tensor<?xi32>, tensor<4xi32>
// CHECK: %[[H:.+]] = moe.silu_mul %[[GU]] : tensor<?x192xf32>
// CHECK: %[[DN:.+]] = moe.grouped_matmul %[[H]][%[[PERM]]], %[[OFF]] top 2 weights [%[[D0]], %[[D1]], %[[D2]]] : tensor<64x96xf32> parts 1 : tensor<?x96xf32>, tensor<?xi32>, tensor<4xi32>
// CHECK: %[[Y:.+]] = moe.expert_combine %[[DN]][%[[PERM]]], %[[W]] : tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>
// CHECK-NOT: moe.experts
// CHECK: return %[[Y]]
func.func @bank(%b: tensor<?x64xf32>, %l: tensor<?x3xf32>) -> tensor<?x64xf32> {
  %w, %i = moe.router %l top 2 softmax renormalize : tensor<?x3xf32>
  %g0 = moe.weight "e0.w1" : tensor<96x64xf32>
  %g1 = moe.weight "e1.w1" : tensor<96x64xf32>
  %g2 = moe.weight "e2.w1" : tensor<96x64xf32>
  %u0 = moe.weight "e0.w3" : tensor<96x64xbf16>
  %u1 = moe.weight "e1.w3" : tensor<96x64xbf16>
  %u2 = moe.weight "e2.w3" : tensor<96x64xbf16>
  %d0 = moe.weight "e0.w2" : tensor<64x96xf32>
  %d1 = moe.weight "e1.w2" : tensor<64x96xf32>
  %d2 = moe.weight "e2.w2" : tensor<64x96xf32>
  %y = moe.experts %b, %w, %i
      gate [%g0, %g1, %g2] : tensor<96x64xf32>
      up [%u0, %u1, %u2] : tensor<96x64xbf16>
      down [%d0, %d1, %d2] : tensor<64x96xf32>
      : tensor<?x64xf32>, tensor<?x2xf32>, tensor<?x2xi32>
  return %y : tensor<?x64xf32>
}

// -----

// After moe-fuse-router the bank is fused just the same.
// CHECK-LABEL: func.func @after_fused_router
// CHECK: moe.fused_router
// CHECK: moe.expert_permute %{{.+}} experts 2 : tensor<?x1xi32>
// CHECK: moe.expert_combine
func.func @after_fused_router(%b: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %g = moe.weight "gate" : tensor<2x64xf32>
  %w, %i = moe.fused_router %b, %g top 1 softmax : tensor<?x64xf32>, tensor<2x64xf32>
  %e = moe.weight "e" : tensor<96x64xf32>
  %d = moe.weight "d" : tensor<64x96xf32>
  %y = moe.experts %b, %w, %i
      gate [%e, %e] : tensor<96x64xf32> up [%e, %e] : tensor<96x64xf32> down [%d, %d] : tensor<64x96xf32>
      : tensor<?x64xf32>, tensor<?x1xf32>, tensor<?x1xi32>
  return %y : tensor<?x64xf32>
}

// -----

// Negative: routing that no router produced (indices could repeat or
// overflow) keeps the expert bank.
// CHECK-LABEL: func.func @foreign_routing
// CHECK: moe.experts
// CHECK-NOT: moe.expert_permute
func.func @foreign_routing(%b: tensor<?x64xf32>, %w: tensor<?x1xf32>, %i: tensor<?x1xi32>) -> tensor<?x64xf32> {
  %e = moe.weight "e" : tensor<96x64xf32>
  %d = moe.weight "d" : tensor<64x96xf32>
  %y = moe.experts %b, %w, %i
      gate [%e, %e] : tensor<96x64xf32> up [%e, %e] : tensor<96x64xf32> down [%d, %d] : tensor<64x96xf32>
      : tensor<?x64xf32>, tensor<?x1xf32>, tensor<?x1xi32>
  return %y : tensor<?x64xf32>
}
