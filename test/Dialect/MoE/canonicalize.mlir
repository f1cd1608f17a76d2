// RUN: moe-opt %s --split-input-file --canonicalize | FileCheck %s

// moe.add folds away an added splat zero, on either side.

// CHECK-LABEL: func.func @add_zero_rhs
// CHECK-SAME: (%[[X:.+]]: tensor<4x64xf32>)
// CHECK-NOT: moe.add
// CHECK: return %[[X]]
func.func @add_zero_rhs(%x: tensor<4x64xf32>) -> tensor<4x64xf32> {
  %zero = arith.constant dense<0.0> : tensor<4x64xf32>
  %0 = moe.add %x, %zero : tensor<4x64xf32>
  return %0 : tensor<4x64xf32>
}

// -----

// CHECK-LABEL: func.func @add_zero_lhs
// CHECK-SAME: (%[[X:.+]]: tensor<4x64xf32>)
// CHECK-NOT: moe.add
// CHECK: return %[[X]]
func.func @add_zero_lhs(%x: tensor<4x64xf32>) -> tensor<4x64xf32> {
  %zero = arith.constant dense<-0.0> : tensor<4x64xf32>
  %0 = moe.add %zero, %x : tensor<4x64xf32>
  return %0 : tensor<4x64xf32>
}

// -----

// Negative: a non-zero splat is kept.
// CHECK-LABEL: func.func @add_nonzero
// CHECK: %[[C:.+]] = arith.constant dense<1.000000e+00>
// CHECK: %[[R:.+]] = moe.add %{{.+}}, %[[C]]
// CHECK: return %[[R]]
func.func @add_nonzero(%x: tensor<4x64xf32>) -> tensor<4x64xf32> {
  %one = arith.constant dense<1.0> : tensor<4x64xf32>
  %0 = moe.add %one, %x : tensor<4x64xf32>
  return %0 : tensor<4x64xf32>
}

// -----

// Negative: a constant that is zero only in places is kept.
// CHECK-LABEL: func.func @add_not_splat
// CHECK: moe.add
func.func @add_not_splat(%x: tensor<2x1xf32>) -> tensor<2x1xf32> {
  %c = arith.constant dense<[[0.0], [2.0]]> : tensor<2x1xf32>
  %0 = moe.add %x, %c : tensor<2x1xf32>
  return %0 : tensor<2x1xf32>
}

// -----

// Negative: two non-constant operands.
// CHECK-LABEL: func.func @add_values
// CHECK: moe.add
func.func @add_values(%x: tensor<?x64xf32>, %y: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %0 = moe.add %x, %y : tensor<?x64xf32>
  return %0 : tensor<?x64xf32>
}

// -----

// With softmax and k = E the weights already sum to one: renormalising is a
// no-op and is dropped.

// CHECK-LABEL: func.func @router_dense_softmax
// CHECK: moe.router %{{.+}} top 4 softmax : tensor<?x4xf32>
// CHECK-NOT: renormalize
func.func @router_dense_softmax(%l: tensor<?x4xf32>) -> (tensor<?x4xf32>, tensor<?x4xi32>) {
  %w, %i = moe.router %l top 4 softmax renormalize : tensor<?x4xf32>
  return %w, %i : tensor<?x4xf32>, tensor<?x4xi32>
}

// -----

// Negative: k < E, renormalising changes the weights.
// CHECK-LABEL: func.func @router_sparse_softmax
// CHECK: moe.router %{{.+}} top 2 softmax renormalize : tensor<?x4xf32>
func.func @router_sparse_softmax(%l: tensor<?x4xf32>) -> (tensor<?x2xf32>, tensor<?x2xi32>) {
  %w, %i = moe.router %l top 2 softmax renormalize : tensor<?x4xf32>
  return %w, %i : tensor<?x2xf32>, tensor<?x2xi32>
}

// -----

// Negative: sigmoid scores do not sum to one, even with k = E.
// CHECK-LABEL: func.func @router_dense_sigmoid
// CHECK: moe.router %{{.+}} top 4 sigmoid renormalize : tensor<?x4xf32>
func.func @router_dense_sigmoid(%l: tensor<?x4xf32>) -> (tensor<?x4xf32>, tensor<?x4xi32>) {
  %w, %i = moe.router %l top 4 sigmoid renormalize : tensor<?x4xf32>
  return %w, %i : tensor<?x4xf32>, tensor<?x4xi32>
}
