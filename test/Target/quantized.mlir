// Quantised weights below the memory plan: the lowerings pass the block
// type through as a template argument of the same kernels, and the
// printers spell it as moert/quant.h's struct, with the manifest entry's
// dtype and its place in the weights file beside the executable.
//
// RUN: moe-opt %S/Inputs/one-layer-f32-unfused.mlir --moe-quantize-weights=format=q8_0 | FileCheck %s --check-prefix=PENDING
// RUN: moe-opt %S/Inputs/one-layer-f32-unfused.mlir --moe-quantize-weights=format=q8_0 -o %t.pending.mlir
// RUN: moe-opt %t.pending.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory),moe-lower-to-cpu)' | FileCheck %s --check-prefix=CPU
// RUN: moe-opt %S/Inputs/one-layer-f16.mlir --pass-pipeline='builtin.module(moe-quantize-weights{format=q4_0},func.func(moe-plan-kv-cache,moe-plan-memory{target=cuda}),moe-lower-to-cuda)' | FileCheck %s --check-prefix=CUDA
//
// The printers print only bytes that exist: a pending quantisation is
// moe-compile's to write.
// RUN: moe-opt %t.pending.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory),moe-lower-to-cpu)' | not moe-translate --moe-to-cpp 2>&1 | FileCheck %s --check-prefix=UNWRITTEN
//
// Written (as moe-compile rewrites the manifest), the plan names the file.
// RUN: sed -E -e 's/ in "m.safetensors" at ([0-9]+) : tensor<([0-9x]+)xf32> quantized to tensor<([0-9x]+)x!moe.quant<q8_0>>/ in artifact "m.bin.weights.safetensors" at \1 : tensor<\3x!moe.quant<q8_0>>/' %t.pending.mlir > %t.written.mlir
// RUN: moe-opt %t.written.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory),moe-lower-to-cpu)' | moe-translate --moe-to-cpp | FileCheck %s --check-prefix=CPP

// PENDING: moe.weight_source "emb" in "m.safetensors" at 0 : tensor<256x64xf32> quantized to tensor<256x64x!moe.quant<q8_0>>
// PENDING: moe.weight_source "n" in "m.safetensors" at 65536 : tensor<64xf32>{{$}}
// PENDING: moe.weight_source "gate" in "m.safetensors" at 65792 : tensor<2x64xf32>{{$}}
// PENDING: moe.weight_source "w1" in "m.safetensors" at 66304 : tensor<32x64xf32> quantized to tensor<32x64x!moe.quant<q8_0>>

// CPU: moert.call "moert::embedding" [!moe.quant<q8_0>, 64]
// CPU: moert.call "moert::rmsNorm" [f32, 64]
// CPU: moert.call "moert::linear" [f32, 2, 64] threaded
// CPU: moert.call "moert::experts" [!moe.quant<q8_0>, !moe.quant<q8_0>, !moe.quant<q8_0>, 64, 32, 2, 1] threaded
// CPU: moert.call "moert::lmHead" [!moe.quant<q8_0>, 256, 64] threaded

// The tensor cores take the quantised weights too (dequantised to f16 in
// shared memory), where they take f16; fused q/k/v, gemv and embedding the
// same kernels with the block type.
// CUDA: moert.kernel @embedding_0 "moert::cuda::embedding" [!moe.quant<q4_0>, 64]
// CUDA: moert.kernel @fused_linear_gemv_1 "moert::cuda::gemvMulti" [!moe.quant<q4_0>, !moe.quant<q4_0>, !moe.quant<q4_0>, 64, 64, 32, 32,
// CUDA: moert.kernel @linear_mma_2 "moert::cuda::gemmMma" [!moe.quant<q4_0>, 64, 0, 64,
// CUDA: moert.kernel @linear_gemv_{{[0-9]+}} "moert::cuda::gemv" [!moe.quant<q4_0>, !moe.quant<q4_0>, 256, 0, 64,

// UNWRITTEN: error: 'moe.weight_source' op weight 'emb' is still to be quantised; moe-compile writes the quantised weights file and then prints the plan

// CPP: {"emb", "m.bin.weights.safetensors", 0ull, 17408ull, MOERT_Q8_0, 256, 64, 2, 1, 0ull},
// CPP-NEXT: {"n", "m.safetensors", 65536ull, 256ull, MOERT_F32, 64, 1, 1, 0, 0ull},
// CPP-NEXT: {"gate", "m.safetensors", 65792ull, 512ull, MOERT_F32, 2, 64, 2, 0, 0ull},
// CPP-NEXT: {"w1", "m.bin.weights.safetensors", 66304ull, 2176ull, MOERT_Q8_0, 32, 64, 2, 1, 0ull},
// CPP: const moert::q8_0 *W0 = static_cast<const moert::q8_0 *>(ex->weights[0]);
// CPP: moert::embedding<moert::q8_0, 64>(W0,
// CPP: moert::experts<moert::q8_0, moert::q8_0, moert::q8_0, 64, 32, 2, 1>(
// CPP: moert::lmHead<moert::q8_0, 256, 64>(
