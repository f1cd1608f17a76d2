// A weight source with a layout below the memory plan: the lowering keeps
// it (the kernels see the weight's own [out, in] type), and the printers
// print only bytes that exist, so a layout still to be written into the
// artifact's weights file is moe-compile's to carry out first.
//
// RUN: sed -e 's/\(weight_source "w2".*tensor<64x32xf32>\)$/\1 transposed/' -e 's/at 66304 : tensor<32x64xf32>$/at 66304 : tensor<32x64xf32> rows 1 step 2 of tensor<64x64xf32>/' %S/Inputs/one-layer-f32-unfused.mlir > %t.mlir
// RUN: moe-opt %t.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory),moe-lower-to-cpu)' -o %t.lowered.mlir
// RUN: FileCheck %s --check-prefix=CPU < %t.lowered.mlir
// RUN: not moe-translate --moe-to-cpp %t.lowered.mlir 2>&1 | FileCheck %s --check-prefix=UNWRITTEN

// CPU: moe.weight_source "w1" in "m.safetensors" at 66304 : tensor<32x64xf32> rows 1 step 2 of tensor<64x64xf32>
// CPU: moe.weight_source "w2" in "m.safetensors" at 82688 : tensor<64x32xf32> transposed
// CPU: moert.call "moert::experts" [f32, f32, f32, 64, 32, 2, 1] threaded

// UNWRITTEN: error: 'moe.weight_source' op weight 'w1' is still to be re-laid out; moe-compile writes it into the artifact's weights file and then prints the plan
