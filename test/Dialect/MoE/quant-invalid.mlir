// RUN: moe-opt %s --split-input-file --verify-diagnostics

// Every verifier rule about block-quantised weights.

func.func @rows_not_whole_blocks() {
  // expected-error @below {{'moe.weight' op quantised weight 'w' must be rank 2 with rows of whole 32-element blocks, got 'tensor<64x48x!moe.quant<q8_0>>'}}
  %0 = moe.weight "w" : tensor<64x48x!moe.quant<q8_0>>
  return
}

// -----

func.func @quantised_vector() {
  // expected-error @below {{'moe.weight' op quantised weight 'w' must be rank 2 with rows of whole 32-element blocks, got 'tensor<64x!moe.quant<q4_0>>'}}
  %0 = moe.weight "w" : tensor<64x!moe.quant<q4_0>>
  return
}

// -----

// expected-error @+2 {{expected ::mlir::moe::QuantFormat to be one of: q8_0, q4_0, q4_1}}
// expected-error @+1 {{failed to parse MoE_QuantType parameter 'format'}}
func.func @unknown_format(%w: tensor<64x64x!moe.quant<q5_k>>) {
  return
}

// -----

// An operand that is not a weight read through moe.weight still has whole
// blocks per row.
func.func @linear_operand_blocks(%x: tensor<?x48xf32>, %w: tensor<8x48x!moe.quant<q8_0>>) -> tensor<?x8xf32> {
  // expected-error @below {{'moe.linear' op quantised weight operand #1 of type 'tensor<8x48x!moe.quant<q8_0>>' must be rank 2 with rows of whole 32-element blocks}}
  %y = moe.linear %x, %w : tensor<?x48xf32>, tensor<8x48x!moe.quant<q8_0>>
  return %y : tensor<?x8xf32>
}

// -----

// Norm scales are never quantised.
func.func @rms_norm_quantised(%x: tensor<?x64xf32>, %w: tensor<64x!moe.quant<q8_0>>) -> tensor<?x64xf32> {
  // expected-error @below {{'moe.rms_norm' op operand #1 must be statically shaped tensor of 32-bit float or 16-bit float or bfloat16 type values}}
  %y = moe.rms_norm %x, %w eps 1.0e-05 : tensor<?x64xf32>, tensor<64x!moe.quant<q8_0>>
  return %y : tensor<?x64xf32>
}

// -----

// Nor are router gates.
func.func @fused_router_quantised(%x: tensor<?x64xf32>, %g: tensor<4x64x!moe.quant<q8_0>>) -> (tensor<?x2xf32>, tensor<?x2xi32>) {
  // expected-error @below {{'moe.fused_router' op operand #1 must be statically shaped tensor of 32-bit float or 16-bit float or bfloat16 type values}}
  %w, %i = moe.fused_router %x, %g top 2 softmax renormalize : tensor<?x64xf32>, tensor<4x64x!moe.quant<q8_0>>
  return %w, %i : tensor<?x2xf32>, tensor<?x2xi32>
}

// -----

// Blocks in a model file (a GGUF file's) are quantised already.
// expected-error @below {{'moe.weight_source' op weight 'w' must be quantized to a !moe.quant tensor of its own shape, from floats in a model file, got 'tensor<64x64x!moe.quant<q8_0>>' quantized to 'tensor<64x64x!moe.quant<q4_0>>'}}
moe.weight_source "w" in "model.gguf" at 0 : tensor<64x64x!moe.quant<q8_0>> quantized to tensor<64x64x!moe.quant<q4_0>>

// -----

// The artifact's weights file holds each tensor as its type: written, not
// pending.
// expected-error @below {{'moe.weight_source' op weight 'w' in the artifact's weights file is stored as its type: it takes no layout and no pending quantisation}}
moe.weight_source "w" in artifact "m.weights.safetensors" at 0 : tensor<64x64xf32> quantized to tensor<64x64x!moe.quant<q8_0>>

// -----

// expected-error @below {{'moe.weight_source' op weight 'w' must be quantized to a !moe.quant tensor of its own shape, from floats in a model file, got 'tensor<64x64xf32>' quantized to 'tensor<64x32x!moe.quant<q8_0>>'}}
moe.weight_source "w" in "model.safetensors" at 0 : tensor<64x64xf32> quantized to tensor<64x32x!moe.quant<q8_0>>

// -----

// expected-error @below {{'moe.weight_source' op offset 3 of weight 'w' is not a multiple of its element size (2 bytes)}}
moe.weight_source "w" in artifact "m.weights.safetensors" at 3 : tensor<64x64x!moe.quant<q4_1>>

// -----

// expected-error @below {{'moe.weight_source' op file of weight 'w' must be a plain file name in the artifact's directory, got '../m.weights.safetensors'}}
moe.weight_source "w" in artifact "../m.weights.safetensors" at 0 : tensor<64x64x!moe.quant<q8_0>>

// -----

module attributes {moe.weight_dir = "/models/m"} {
  moe.weight_source "w" in "model.safetensors" at 0 : tensor<64x64xf32> quantized to tensor<64x64x!moe.quant<q8_0>>
  func.func @f() {
    // expected-error @below {{'moe.weight' op type 'tensor<64x64xf32>' differs from its moe.weight_source type 'tensor<64x64x!moe.quant<q8_0>>'}}
    %w = moe.weight "w" : tensor<64x64xf32>
    return
  }
}
