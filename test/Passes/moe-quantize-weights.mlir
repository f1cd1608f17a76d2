// RUN: moe-opt %s --split-input-file --moe-quantize-weights=format=q8_0 | FileCheck %s --check-prefix=ALL
// RUN: moe-opt %s --split-input-file --moe-quantize-weights="format=q4_0 only=experts" | FileCheck %s --check-prefix=EXPERTS
// RUN: moe-opt %s --split-input-file --moe-quantize-weights=format=q4_1 2>&1 | FileCheck %s --check-prefix=WARN
// RUN: not moe-opt %s --split-input-file --moe-quantize-weights=format=q5_k 2>&1 | FileCheck %s --check-prefix=BADFORMAT
// RUN: not moe-opt %s --split-input-file --moe-quantize-weights=only=attention 2>&1 | FileCheck %s --check-prefix=BADONLY

// BADFORMAT: moe-quantize-weights: format must be q8_0, q4_0 or q4_1, got 'q5_k'
// BADONLY: moe-quantize-weights: only must be all or experts, got 'attention'

// One layer as the importer writes it: every weight a projection, lm_head,
// the embedding or an expert takes is quantised (and its manifest entry
// marked); the norm scales and the router's gate keep their types.
// ALL: moe.weight_source "embed" in "m.safetensors" at 0 : tensor<256x64xf16> quantized to tensor<256x64x!moe.quant<q8_0>>
// ALL: moe.weight_source "norm" in "m.safetensors" at 32768 : tensor<64xf16>{{$}}
// ALL: moe.weight_source "q" in "m.safetensors" at 32896 : tensor<64x64xf16> quantized to tensor<64x64x!moe.quant<q8_0>>
// ALL: moe.weight_source "gate" in "m.safetensors" at 41088 : tensor<2x64xf16>{{$}}
// ALL: moe.weight_source "w1" in "m.safetensors" at 41344 : tensor<128x64xf16> quantized to tensor<128x64x!moe.quant<q8_0>>
// ALL: moe.weight_source "w2" in "m.safetensors" at 57728 : tensor<64x128xf16> quantized to tensor<64x128x!moe.quant<q8_0>>
// ALL-LABEL: func.func @layer
// ALL: moe.embedding %{{.+}}[%{{.+}}] : tensor<256x64x!moe.quant<q8_0>>
// ALL: moe.rms_norm %{{.+}}, %{{.+}} eps {{.+}} : tensor<?x64xf32>, tensor<64xf16>
// ALL: moe.linear %{{.+}}, %{{.+}} : tensor<?x64xf32>, tensor<64x64x!moe.quant<q8_0>>
// ALL: moe.linear %{{.+}}, %{{.+}} : tensor<?x64xf32>, tensor<2x64xf16>
// ALL: gate [%{{.+}}, %{{.+}}] : tensor<128x64x!moe.quant<q8_0>> up [%{{.+}}, %{{.+}}] : tensor<128x64x!moe.quant<q8_0>> down [%{{.+}}, %{{.+}}] : tensor<64x128x!moe.quant<q8_0>>

// With only=experts, the expert weights alone.
// EXPERTS: moe.weight_source "embed" in "m.safetensors" at 0 : tensor<256x64xf16>{{$}}
// EXPERTS: moe.weight_source "q" in "m.safetensors" at 32896 : tensor<64x64xf16>{{$}}
// EXPERTS: moe.weight_source "w1" in "m.safetensors" at 41344 : tensor<128x64xf16> quantized to tensor<128x64x!moe.quant<q4_0>>
// EXPERTS-LABEL: func.func @layer
// EXPERTS: moe.embedding %{{.+}}[%{{.+}}] : tensor<256x64xf16>
// EXPERTS: moe.linear %{{.+}}, %{{.+}} : tensor<?x64xf32>, tensor<64x64xf16>
// EXPERTS: gate [%{{.+}}, %{{.+}}] : tensor<128x64x!moe.quant<q4_0>>
module attributes {moe.weight_dir = "/m"} {
  moe.weight_source "embed" in "m.safetensors" at 0 : tensor<256x64xf16>
  moe.weight_source "norm" in "m.safetensors" at 32768 : tensor<64xf16>
  moe.weight_source "q" in "m.safetensors" at 32896 : tensor<64x64xf16>
  moe.weight_source "gate" in "m.safetensors" at 41088 : tensor<2x64xf16>
  moe.weight_source "w1" in "m.safetensors" at 41344 : tensor<128x64xf16>
  moe.weight_source "w2" in "m.safetensors" at 57728 : tensor<64x128xf16>
  func.func @layer(%ids: tensor<?xi32>) -> tensor<?x64xf32> {
    %e = moe.weight "embed" : tensor<256x64xf16>
    %h = moe.embedding %e[%ids] : tensor<256x64xf16>, tensor<?xi32>
    %n = moe.weight "norm" : tensor<64xf16>
    %a = moe.rms_norm %h, %n eps 1.0e-05 : tensor<?x64xf32>, tensor<64xf16>
    %wq = moe.weight "q" : tensor<64x64xf16>
    %q = moe.linear %a, %wq : tensor<?x64xf32>, tensor<64x64xf16>
    %wg = moe.weight "gate" : tensor<2x64xf16>
    %l = moe.linear %q, %wg : tensor<?x64xf32>, tensor<2x64xf16>
    %rw, %ri = moe.router %l top 1 softmax renormalize : tensor<?x2xf32>
    %w1 = moe.weight "w1" : tensor<128x64xf16>
    %w2 = moe.weight "w2" : tensor<64x128xf16>
    %y = moe.experts %q, %rw, %ri
        gate [%w1, %w1] : tensor<128x64xf16>
        up [%w1, %w1] : tensor<128x64xf16>
        down [%w2, %w2] : tensor<64x128xf16>
        : tensor<?x64xf32>, tensor<?x1xf32>, tensor<?x1xi32>
    return %y : tensor<?x64xf32>
  }
}

// -----

// A weight whose rows are not whole blocks stays as it is, with a warning
// that names it; so does one that a use cannot take quantised (the gate
// feeding the router, even when it also feeds a projection).
// WARN: warning: weight 'odd' of type 'tensor<8x48xf32>' is not quantised: its rows are not whole 32-element blocks
// WARN-LABEL: func.func @kept
// WARN: moe.linear %{{.+}}, %{{.+}} : tensor<?x48xf32>, tensor<8x48xf32>
// WARN: moe.linear %{{.+}}, %{{.+}} : tensor<?x64xf32>, tensor<4x64xf32>
// WARN: moe.linear %{{.+}}, %{{.+}} : tensor<?x64xf32>, tensor<4x64xf32>
func.func @kept(%x: tensor<?x48xf32>, %b: tensor<?x64xf32>) -> (tensor<?x8xf32>, tensor<?x4xf32>, tensor<?x2xf32>) {
  %w = moe.weight "odd" : tensor<8x48xf32>
  %y = moe.linear %x, %w : tensor<?x48xf32>, tensor<8x48xf32>
  %g = moe.weight "gate" : tensor<4x64xf32>
  %l = moe.linear %b, %g : tensor<?x64xf32>, tensor<4x64xf32>
  %g2 = moe.weight "gate" : tensor<4x64xf32>
  %p = moe.linear %b, %g2 : tensor<?x64xf32>, tensor<4x64xf32>
  %rw, %ri = moe.router %l top 2 softmax renormalize : tensor<?x4xf32>
  return %y, %p, %rw : tensor<?x8xf32>, tensor<?x4xf32>, tensor<?x2xf32>
}

// -----

// The cost model reads what the quantised weights occupy: 256 rows of
// 2 blocks of 18 bytes (q4_0) instead of 256 x 64 x 4.
// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(moe-quantize-weights{format=q4_0},func.func(moe-estimate-cost))' | FileCheck %s --check-prefix=COST
// COST-LABEL: func.func @head
// COST-SAME: moe.cost = {bytes_per_step = 9216 : i64, flops_per_step = 32768 : i64, step_tokens = 1 : i64, weight_bytes = 9216 : i64}
func.func @head(%h: tensor<?x64xf32>) -> tensor<?x256xf32> {
  %w = moe.weight "lm_head.weight" : tensor<256x64xf32>
  %l = moe.linear %h, %w : tensor<?x64xf32>, tensor<256x64xf32>
  return %l : tensor<?x256xf32>
}

// -----

// Nothing that may be quantised has whole blocks: one warning says so.
// RUN: moe-opt %s --split-input-file --moe-quantize-weights=format=q8_0 2>&1 >/dev/null | FileCheck %s --check-prefix=NONE
// NONE: warning: weight 'only' of type 'tensor<8x40xf32>' is not quantised
// NONE: warning: moe-quantize-weights: no weight was quantised to '!moe.quant<q8_0>' (no weight that may be has rows of whole 32-element blocks)
module {
  func.func @none(%x: tensor<?x40xf32>) -> tensor<?x8xf32> {
    %w = moe.weight "only" : tensor<8x40xf32>
    %y = moe.linear %x, %w : tensor<?x40xf32>, tensor<8x40xf32>
    return %y : tensor<?x8xf32>
  }
}
