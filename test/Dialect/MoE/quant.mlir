// RUN: moe-opt %s --split-input-file | moe-opt --split-input-file | FileCheck %s
// RUN: moe-opt %s --split-input-file --mlir-print-op-generic | moe-opt --split-input-file | FileCheck %s

// Block-quantised weights (!moe.quant) round-trip, in moe.weight, in the ops
// that take them, and in the manifest: pending ('quantized to') and
// written ('in artifact').

// CHECK-LABEL: func.func @quantised_ops
// CHECK: %[[E:.+]] = moe.weight "embed" : tensor<256x64x!moe.quant<q8_0>>
// CHECK: moe.embedding %[[E]][%{{.+}}] : tensor<256x64x!moe.quant<q8_0>>, tensor<?xi32>
// CHECK: %[[W:.+]] = moe.weight "proj" : tensor<32x64x!moe.quant<q4_0>>
// CHECK: moe.linear %{{.+}}, %[[W]] : tensor<?x64xf32>, tensor<32x64x!moe.quant<q4_0>>
// CHECK: moe.weight "down" : tensor<64x128x!moe.quant<q4_1>>
func.func @quantised_ops(%ids: tensor<?xi32>, %l: tensor<?x2xf32>) -> tensor<?x64xf32> {
  %e = moe.weight "embed" : tensor<256x64x!moe.quant<q8_0>>
  %h = moe.embedding %e[%ids] : tensor<256x64x!moe.quant<q8_0>>, tensor<?xi32>
  %w = moe.weight "proj" : tensor<32x64x!moe.quant<q4_0>>
  %p = moe.linear %h, %w : tensor<?x64xf32>, tensor<32x64x!moe.quant<q4_0>>
  %g0 = moe.weight "gate0" : tensor<128x64x!moe.quant<q4_1>>
  %u0 = moe.weight "up0" : tensor<128x64x!moe.quant<q4_1>>
  %d0 = moe.weight "down" : tensor<64x128x!moe.quant<q4_1>>
  %rw, %ri = moe.router %l top 1 softmax renormalize : tensor<?x2xf32>
  %y = moe.experts %h, %rw, %ri
      gate [%g0, %g0] : tensor<128x64x!moe.quant<q4_1>>
      up [%u0, %u0] : tensor<128x64x!moe.quant<q4_1>>
      down [%d0, %d0] : tensor<64x128x!moe.quant<q4_1>>
      : tensor<?x64xf32>, tensor<?x1xf32>, tensor<?x1xi32>
  return %y : tensor<?x64xf32>
}

// -----

// CHECK: moe.weight_source "a" in "model.safetensors" at 128 : tensor<64x64xbf16> quantized to tensor<64x64x!moe.quant<q8_0>>
// CHECK: moe.weight_source "b" in artifact "m.bin.weights.safetensors" at 96 : tensor<64x64x!moe.quant<q4_0>>
module attributes {moe.weight_dir = "/models/m"} {
  moe.weight_source "a" in "model.safetensors" at 128 : tensor<64x64xbf16> quantized to tensor<64x64x!moe.quant<q8_0>>
  moe.weight_source "b" in artifact "m.bin.weights.safetensors" at 96 : tensor<64x64x!moe.quant<q4_0>>
  func.func @f() {
    %a = moe.weight "a" : tensor<64x64x!moe.quant<q8_0>>
    %b = moe.weight "b" : tensor<64x64x!moe.quant<q4_0>>
    return
  }
}

// -----

// The weights file beside the executable and a model file are different
// files, whatever their names: no overlap between these two.
// CHECK: moe.weight_source "x" in artifact "w" at 0 : tensor<64x64x!moe.quant<q8_0>>
// CHECK: moe.weight_source "y" in "1w" at 0 : tensor<64x64xf32>
module attributes {moe.weight_dir = "/models/m"} {
  moe.weight_source "x" in artifact "w" at 0 : tensor<64x64x!moe.quant<q8_0>>
  moe.weight_source "y" in "1w" at 0 : tensor<64x64xf32>
  moe.weight_source "z" in "w" at 0 : tensor<64x64xf32>
}
