// RUN: moe-opt %s --split-input-file | moe-opt --split-input-file | FileCheck %s
// RUN: moe-opt %s --split-input-file --mlir-print-op-generic | moe-opt --split-input-file | FileCheck %s
// RUN: moe-opt %s --split-input-file --moe-quantize-weights=format=q8_0 | FileCheck %s --check-prefix=QUANT

// A weight source whose bytes are laid out otherwise than its type
// (`transposed`, `rows S step K of T`, `with scales at OFFSET : T`)
// round-trips; moe-quantize-weights
// composes with it (the layout stays, the quantisation is pending on top).

// CHECK-LABEL: module attributes {moe.weight_dir = "/models/onnx"}
// CHECK: moe.weight_source "q" in "model.onnx.data" at 0 : tensor<64x32xf32> transposed{{$}}
// CHECK: moe.weight_source "fc1[0].gate" in "model.onnx.data" at 8192 : tensor<128x64xf16> rows 0 step 2 of tensor<256x64xf16>{{$}}
// CHECK: moe.weight_source "fc1[0].up" in "model.onnx.data" at 8192 : tensor<128x64xf16> rows 1 step 2 of tensor<256x64xf16>{{$}}
// CHECK: moe.weight_source "v" in "model.onnx.data" at 40960 : tensor<64x64xbf16> transposed quantized to tensor<64x64x!moe.quant<q4_0>>
// CHECK: moe.weight_source "n" in "model.onnx.data" at 49152 : tensor<64xf32>{{$}}
// CHECK: moe.weight_source "o" in artifact "m.bin.weights.safetensors" at 96 : tensor<32x64xf32>{{$}}
// CHECK: moe.weight_source "fc2[0]" in "model.onnx.data" at 65536 : tensor<64x128x!moe.quant<q4_0>> with scales at 69632 : tensor<64x4xf16>{{$}}
// CHECK: moe.weight_source "qfc1[0].up" in "model.onnx.data" at 73728 : tensor<128x64x!moe.quant<q8_0>> rows 1 step 2 of tensor<256x64x!moe.quant<q8_0>> with scales at 90112 : tensor<256x1xf32>{{$}}
// CHECK-LABEL: func.func @f
// CHECK: moe.weight "q" : tensor<64x32xf32>

// QUANT: moe.weight_source "q" in "model.onnx.data" at 0 : tensor<64x32xf32> transposed quantized to tensor<64x32x!moe.quant<q8_0>>
// QUANT: moe.weight_source "fc1[0].gate" in "model.onnx.data" at 8192 : tensor<128x64xf16> rows 0 step 2 of tensor<256x64xf16> quantized to tensor<128x64x!moe.quant<q8_0>>
// QUANT: moe.weight_source "fc1[0].up" in "model.onnx.data" at 8192 : tensor<128x64xf16> rows 1 step 2 of tensor<256x64xf16>{{$}}
// QUANT: %{{.+}} = moe.weight "q" : tensor<64x32x!moe.quant<q8_0>>
// QUANT: %{{.+}} = moe.weight "fc1[0].gate" : tensor<128x64x!moe.quant<q8_0>>
module attributes {moe.weight_dir = "/models/onnx"} {
  moe.weight_source "q" in "model.onnx.data" at 0 : tensor<64x32xf32> transposed
  moe.weight_source "fc1[0].gate" in "model.onnx.data" at 8192 : tensor<128x64xf16> rows 0 step 2 of tensor<256x64xf16>
  moe.weight_source "fc1[0].up" in "model.onnx.data" at 8192 : tensor<128x64xf16> rows 1 step 2 of tensor<256x64xf16>
  moe.weight_source "v" in "model.onnx.data" at 40960 : tensor<64x64xbf16> transposed quantized to tensor<64x64x!moe.quant<q4_0>>
  moe.weight_source "n" in "model.onnx.data" at 49152 : tensor<64xf32>
  moe.weight_source "o" in artifact "m.bin.weights.safetensors" at 96 : tensor<32x64xf32>
  moe.weight_source "fc2[0]" in "model.onnx.data" at 65536 : tensor<64x128x!moe.quant<q4_0>> with scales at 69632 : tensor<64x4xf16>
  moe.weight_source "qfc1[0].up" in "model.onnx.data" at 73728 : tensor<128x64x!moe.quant<q8_0>> rows 1 step 2 of tensor<256x64x!moe.quant<q8_0>> with scales at 90112 : tensor<256x1xf32>
  func.func @f(%x: tensor<?x32xf32>) -> tensor<?x128xf32> {
    %w = moe.weight "q" : tensor<64x32xf32>
    %y = moe.linear %x, %w : tensor<?x32xf32>, tensor<64x32xf32>
    %g = moe.weight "fc1[0].gate" : tensor<128x64xf16>
    %z = moe.linear %y, %g : tensor<?x64xf32>, tensor<128x64xf16>
    return %z : tensor<?x128xf32>
  }
}
