// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-fuse-router))' | FileCheck %s

// The gate GEMM feeding only the router becomes one moe.fused_router with
// the same k, scoring and renormalisation.
// CHECK-LABEL: func.func @fuse
// CHECK-SAME: (%[[B:.+]]: tensor<?x64xf32>)
// CHECK: %[[G:.+]] = moe.weight "gate" : tensor<4x64xbf16>
// CHECK-NOT: moe.linear
// CHECK-NOT: moe.router
// CHECK: %[[W:.+]], %[[I:.+]] = moe.fused_router %[[B]], %[[G]] top 2 softmax renormalize : tensor<?x64xf32>, tensor<4x64xbf16>
// CHECK: return %[[W]], %[[I]]
func.func @fuse(%b: tensor<?x64xf32>) -> (tensor<?x2xf32>, tensor<?x2xi32>) {
  %g = moe.weight "gate" : tensor<4x64xbf16>
  %l = moe.linear %b, %g : tensor<?x64xf32>, tensor<4x64xbf16>
  %w, %i = moe.router %l top 2 softmax renormalize : tensor<?x4xf32>
  return %w, %i : tensor<?x2xf32>, tensor<?x2xi32>
}

// -----

// Sigmoid scoring without renormalisation carries over as it is.
// CHECK-LABEL: func.func @sigmoid
// CHECK: moe.fused_router %{{.+}}, %{{.+}} top 1 sigmoid : tensor<?x64xf32>, tensor<8x64xf32>
// CHECK-NOT: renormalize
func.func @sigmoid(%b: tensor<?x64xf32>) -> (tensor<?x1xf32>, tensor<?x1xi32>) {
  %g = moe.weight "gate" : tensor<8x64xf32>
  %l = moe.linear %b, %g : tensor<?x64xf32>, tensor<8x64xf32>
  %w, %i = moe.router %l top 1 sigmoid : tensor<?x8xf32>
  return %w, %i : tensor<?x1xf32>, tensor<?x1xi32>
}

// -----

// Negative: the logits have another user, so they must exist anyway.
// CHECK-LABEL: func.func @logits_used
// CHECK: %[[L:.+]] = moe.linear
// CHECK: moe.router %[[L]] top 2 softmax renormalize
// CHECK-NOT: moe.fused_router
// CHECK: return %{{.+}}, %{{.+}}, %[[L]]
func.func @logits_used(%b: tensor<?x64xf32>) -> (tensor<?x2xf32>, tensor<?x2xi32>, tensor<?x4xf32>) {
  %g = moe.weight "gate" : tensor<4x64xf32>
  %l = moe.linear %b, %g : tensor<?x64xf32>, tensor<4x64xf32>
  %w, %i = moe.router %l top 2 softmax renormalize : tensor<?x4xf32>
  return %w, %i, %l : tensor<?x2xf32>, tensor<?x2xi32>, tensor<?x4xf32>
}

// -----

// Negative: logits that no moe.linear produced.
// CHECK-LABEL: func.func @logits_argument
// CHECK: moe.router %{{.+}} top 2 softmax
// CHECK-NOT: moe.fused_router
func.func @logits_argument(%l: tensor<?x4xf32>) -> (tensor<?x2xf32>, tensor<?x2xi32>) {
  %w, %i = moe.router %l top 2 softmax : tensor<?x4xf32>
  return %w, %i : tensor<?x2xf32>, tensor<?x2xi32>
}
