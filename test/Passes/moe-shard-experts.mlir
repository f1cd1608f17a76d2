// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-shard-experts{ranks=2}))' | FileCheck %s
// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-shard-experts{ranks=2}))' | moe-opt --split-input-file | FileCheck %s
// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-shard-experts{ranks=3}))' | FileCheck %s --check-prefix=R3

// E = 3 on 2 ranks: rank 0 holds experts 0 and 1, rank 1 expert 2. The bank
// becomes exchange counts -> dispatch -> local experts -> combine, with the
// very same weights; the router stays replicated.
// CHECK-LABEL: func.func @bank
// CHECK-SAME: (%[[B:[^:]+]]: tensor<?x64xf32>
// CHECK: %[[W:.+]], %[[I:.+]] = moe.router
// CHECK-DAG: %[[G0:.+]] = moe.weight "e0.w1"
// CHECK-DAG: %[[G2:.+]] = moe.weight "e2.w1"
// CHECK-DAG: %[[U1:.+]] = moe.weight "e1.w3"
// CHECK-DAG: %[[D2:.+]] = moe.weight "e2.w2"
// CHECK: %[[C:.+]] = moe.ep_exchange_counts %[[I]] ranks 2 first_expert [0, 2, 3] : tensor<?x2xi32> -> tensor<2x2xi32>
// CHECK: %[[R:.+]], %[[E:.+]], %[[GT:.+]] = moe.ep_dispatch %[[B]], %[[I]], %[[W]], %[[C]] : tensor<?x64xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<2x2xi32> -> tensor<?x64xf32>, tensor<?xi32>, tensor<?xf32>
// CHECK: %[[Y:.+]] = moe.ep_experts %[[R]], %[[E]], %[[GT]], %[[C]] gate[%[[G0]], %{{.+}}, %[[G2]]] up[%{{.+}}, %[[U1]], %{{.+}}] down[%{{.+}}, %{{.+}}, %[[D2]]] first_expert [0, 2, 3]
// CHECK: %[[OUT:.+]] = moe.ep_combine %[[Y]], %[[I]], %[[C]] first_expert [0, 2, 3] : tensor<?x64xf32>, tensor<?x2xi32>, tensor<2x2xi32> -> tensor<?x64xf32>
// CHECK-NOT: moe.experts
// CHECK: return %[[OUT]]
// E = 3 on 3 ranks: one expert each.
// R3-LABEL: func.func @bank
// R3: moe.ep_exchange_counts %{{.+}} ranks 3 first_expert [0, 1, 2, 3] : tensor<?x2xi32> -> tensor<2x3xi32>
// R3: moe.ep_combine
// R3-NOT: moe.experts
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
