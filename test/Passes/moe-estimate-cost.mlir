// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-estimate-cost))' | FileCheck %s
// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-estimate-cost{step-tokens=4}))' | FileCheck %s --check-prefix=STEP4
// RUN: not moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-estimate-cost{step-tokens=0}))' 2>&1 | FileCheck %s --check-prefix=ERR

// RUN: not moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-estimate-cost{step-tokens=9223372036854775806}))' 2>&1 | FileCheck %s --check-prefix=HUGE

// ERR: error: moe-estimate-cost: step-tokens must be in [1, 1048576], got 0
// HUGE: error: moe-estimate-cost: step-tokens must be in [1, 1048576], got 9223372036854775806

// lm_head 256x64 in f16: 32768 bytes, read whole, 2*256*64 flops per token.
// CHECK-LABEL: func.func @head
// CHECK-SAME: moe.cost = {bytes_per_step = 32768 : i64, flops_per_step = 32768 : i64, step_tokens = 1 : i64, weight_bytes = 32768 : i64}
// STEP4-LABEL: func.func @head
// STEP4-SAME: moe.cost = {bytes_per_step = 32768 : i64, flops_per_step = 131072 : i64, step_tokens = 4 : i64, weight_bytes = 32768 : i64}
func.func @head(%h: tensor<?x64xf32>) -> tensor<?x256xf32> {
  %w = moe.weight "lm_head.weight" : tensor<256x64xf16>
  %l = moe.linear %h, %w : tensor<?x64xf32>, tensor<256x64xf16>
  return %l : tensor<?x256xf32>
}

// -----

// Fused projections cost what the linears did: q 64x64 and k 32x64 in f32
// read whole (24576 bytes), 2*(64 + 32)*64 flops per token.
// CHECK-LABEL: func.func @fused
// CHECK-SAME: moe.cost = {bytes_per_step = 24576 : i64, flops_per_step = 12288 : i64, step_tokens = 1 : i64, weight_bytes = 24576 : i64}
func.func @fused(%h: tensor<?x64xf32>) -> (tensor<?x64xf32>, tensor<?x32xf32>) {
  %wq = moe.weight "q" : tensor<64x64xf32>
  %wk = moe.weight "k" : tensor<32x64xf32>
  %q, %k = moe.fused_linear %h weights [%wq, %wk] : (tensor<64x64xf32>, tensor<32x64xf32>) : tensor<?x64xf32>
  return %q, %k : tensor<?x64xf32>, tensor<?x32xf32>
}

// -----

// A tied embedding (one f32 table for embedding and lm_head) counts once, at
// its larger read: the whole table, not one row.
// CHECK-LABEL: func.func @tied
// CHECK-SAME: moe.cost = {bytes_per_step = 65536 : i64, flops_per_step = 32768 : i64, step_tokens = 1 : i64, weight_bytes = 65536 : i64}
func.func @tied(%ids: tensor<?xi32>) -> tensor<?x256xf32> {
  %t = moe.weight "model.embed_tokens.weight" : tensor<256x64xf32>
  %h = moe.embedding %t[%ids] : tensor<256x64xf32>, tensor<?xi32>
  %l = moe.linear %h, %t : tensor<?x64xf32>, tensor<256x64xf32>
  return %l : tensor<?x256xf32>
}

// -----

// An embedding alone reads one 64 x 4-byte row per token (4 rows at STEP4).
// CHECK-LABEL: func.func @embed
// CHECK-SAME: moe.cost = {bytes_per_step = 256 : i64, flops_per_step = 0 : i64, step_tokens = 1 : i64, weight_bytes = 65536 : i64}
// STEP4-LABEL: func.func @embed
// STEP4-SAME: bytes_per_step = 1024 : i64
func.func @embed(%ids: tensor<?xi32>) -> tensor<?x64xf32> {
  %t = moe.weight "model.embed_tokens.weight" : tensor<256x64xf32>
  %h = moe.embedding %t[%ids] : tensor<256x64xf32>, tensor<?xi32>
  return %h : tensor<?x64xf32>
}

// -----

// E = 4, k = 2, H = 8, I = 16, bf16 experts: 3*16*8*2 = 768 bytes an expert.
// One token reads the f32 gate (128 B) and 2 experts: 128 + 2*768 = 1664 B,
// 2*4*8 + 6*2*16*8 = 1600 flops. Four tokens touch 1 - (1/2)^4 = 15/16 of
// the experts on average: 128 + 3072*15/16 = 3008 B.
// CHECK-LABEL: func.func @moe_block
// CHECK-SAME: moe.cost = {bytes_per_step = 1664 : i64, flops_per_step = 1600 : i64, step_tokens = 1 : i64, weight_bytes = 3200 : i64}
// STEP4-LABEL: func.func @moe_block
// STEP4-SAME: moe.cost = {bytes_per_step = 3008 : i64, flops_per_step = 6400 : i64, step_tokens = 4 : i64, weight_bytes = 3200 : i64}
func.func @moe_block(%b: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %gate = moe.weight "gate" : tensor<4x8xf32>
  %logits = moe.linear %b, %gate : tensor<?x8xf32>, tensor<4x8xf32>
  %w, %i = moe.router %logits top 2 softmax renormalize : tensor<?x4xf32>
  %g0 = moe.weight "e0.w1" : tensor<16x8xbf16>
  %g1 = moe.weight "e1.w1" : tensor<16x8xbf16>
  %g2 = moe.weight "e2.w1" : tensor<16x8xbf16>
  %g3 = moe.weight "e3.w1" : tensor<16x8xbf16>
  %u0 = moe.weight "e0.w3" : tensor<16x8xbf16>
  %u1 = moe.weight "e1.w3" : tensor<16x8xbf16>
  %u2 = moe.weight "e2.w3" : tensor<16x8xbf16>
  %u3 = moe.weight "e3.w3" : tensor<16x8xbf16>
  %d0 = moe.weight "e0.w2" : tensor<8x16xbf16>
  %d1 = moe.weight "e1.w2" : tensor<8x16xbf16>
  %d2 = moe.weight "e2.w2" : tensor<8x16xbf16>
  %d3 = moe.weight "e3.w2" : tensor<8x16xbf16>
  %y = moe.experts %b, %w, %i
      gate [%g0, %g1, %g2, %g3] : tensor<16x8xbf16>
      up [%u0, %u1, %u2, %u3] : tensor<16x8xbf16>
      down [%d0, %d1, %d2, %d3] : tensor<8x16xbf16>
      : tensor<?x8xf32>, tensor<?x2xf32>, tensor<?x2xi32>
  return %y : tensor<?x8xf32>
}

// -----

// A weight nobody uses is stored but never read.
// CHECK-LABEL: func.func @unused
// CHECK-SAME: moe.cost = {bytes_per_step = 0 : i64, flops_per_step = 0 : i64, step_tokens = 1 : i64, weight_bytes = 400 : i64}
func.func @unused() {
  %w = moe.weight "unused" : tensor<100xf32>
  return
}
