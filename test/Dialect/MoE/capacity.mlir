// RUN: moe-opt %s --split-input-file | FileCheck %s
// RUN: moe-opt %s --split-input-file | moe-opt --split-input-file | FileCheck %s
// RUN: moe-opt %s --split-input-file --mlir-print-op-generic | moe-opt --split-input-file | FileCheck %s

// CHECK-LABEL: func.func @capacity
// CHECK: %[[KW:.+]], %[[KI:.+]] = moe.expert_capacity %{{.+}}, %{{.+}} experts 8 factor 1.250000e+00 : tensor<?x2xf32>, tensor<?x2xi32>
// CHECK: return %[[KW]], %[[KI]] : tensor<?x2xf32>, tensor<?x2xi32>
func.func @capacity(%w: tensor<?x2xf32>, %i: tensor<?x2xi32>) -> (tensor<?x2xf32>, tensor<?x2xi32>) {
  %kw, %ki = moe.expert_capacity %w, %i experts 8 factor 1.25 : tensor<?x2xf32>, tensor<?x2xi32>
  return %kw, %ki : tensor<?x2xf32>, tensor<?x2xi32>
}
