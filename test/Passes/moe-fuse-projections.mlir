// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-fuse-projections))' | FileCheck %s

// q, k and v of one input become one moe.fused_linear at the place of the
// last of them, each result where its linear's was used.
// CHECK-LABEL: func.func @qkv
// CHECK-SAME: (%[[A:[^:]+]]: tensor<?x64xf32>)
// CHECK: %[[WQ:.+]] = moe.weight "q"
// CHECK: %[[WK:.+]] = moe.weight "k"
// CHECK: %[[WV:.+]] = moe.weight "v"
// CHECK-NOT: moe.linear
// CHECK: %[[R:.+]]:3 = moe.fused_linear %[[A]] weights [%[[WQ]], %[[WK]], %[[WV]]] : (tensor<64x64xf16>, tensor<32x64xf16>, tensor<32x64xf16>) : tensor<?x64xf32>
// CHECK: return %[[R]]#0, %[[R]]#1, %[[R]]#2 : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>
func.func @qkv(%a: tensor<?x64xf32>) -> (tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>) {
  %wq = moe.weight "q" : tensor<64x64xf16>
  %q = moe.linear %a, %wq : tensor<?x64xf32>, tensor<64x64xf16>
  %wk = moe.weight "k" : tensor<32x64xf16>
  %k = moe.linear %a, %wk : tensor<?x64xf32>, tensor<32x64xf16>
  %wv = moe.weight "v" : tensor<32x64xf16>
  %v = moe.linear %a, %wv : tensor<?x64xf32>, tensor<32x64xf16>
  return %q, %k, %v : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>
}

// -----

// Linears of different inputs stay apart; a lone linear stays a linear.
// CHECK-LABEL: func.func @different_inputs
// CHECK: moe.linear %{{.+}}, %{{.+}} : tensor<?x64xf32>, tensor<32x64xf32>
// CHECK-NEXT: moe.linear %{{.+}}, %{{.+}} : tensor<?x64xf32>, tensor<32x64xf32>
// CHECK-NOT: moe.fused_linear
func.func @different_inputs(%a: tensor<?x64xf32>, %b: tensor<?x64xf32>) -> (tensor<?x32xf32>, tensor<?x32xf32>) {
  %w = moe.weight "w" : tensor<32x64xf32>
  %x = moe.linear %a, %w : tensor<?x64xf32>, tensor<32x64xf32>
  %y = moe.linear %b, %w : tensor<?x64xf32>, tensor<32x64xf32>
  return %x, %y : tensor<?x32xf32>, tensor<?x32xf32>
}

// -----

// Negative: the first result is used before the second linear, so the
// fused op has no place.
// CHECK-LABEL: func.func @used_between
// CHECK: %[[X:.+]] = moe.linear
// CHECK-NEXT: moe.rms_norm %[[X]]
// CHECK-NEXT: moe.linear
// CHECK-NOT: moe.fused_linear
func.func @used_between(%a: tensor<?x64xf32>) -> (tensor<?x32xf32>, tensor<?x32xf32>) {
  %w = moe.weight "w" : tensor<32x64xf32>
  %n = moe.weight "n" : tensor<32xf32>
  %x = moe.linear %a, %w : tensor<?x64xf32>, tensor<32x64xf32>
  %r = moe.rms_norm %x, %n eps 1.0e-05 : tensor<?x32xf32>, tensor<32xf32>
  %y = moe.linear %a, %w : tensor<?x64xf32>, tensor<32x64xf32>
  return %r, %y : tensor<?x32xf32>, tensor<?x32xf32>
}

// -----

// A linear with a residual is not a plain projection; its sibling stays
// alone too.
// CHECK-LABEL: func.func @residual
// CHECK: moe.linear %{{.+}}, %{{.+}} residual
// CHECK: moe.linear %{{.+}}, %{{.+}} :
// CHECK-NOT: moe.fused_linear
func.func @residual(%a: tensor<?x64xf32>, %r: tensor<?x64xf32>) -> (tensor<?x64xf32>, tensor<?x64xf32>) {
  %w = moe.weight "w" : tensor<64x64xf32>
  %x = moe.linear %a, %w residual %r : tensor<?x64xf32>, tensor<64x64xf32>, tensor<?x64xf32>
  %y = moe.linear %a, %w : tensor<?x64xf32>, tensor<64x64xf32>
  return %x, %y : tensor<?x64xf32>, tensor<?x64xf32>
}
