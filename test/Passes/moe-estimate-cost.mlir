// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-estimate-cost))' | FileCheck %s --check-prefixes=CHECK,UNFUSED
// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-estimate-cost{step-tokens=4}))' | FileCheck %s --check-prefix=STEP4

// The figures describe the computation, not its ops: after the fusions they
// are the same (only an unused weight is gone, so it is no longer stored).
// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-fuse-router,moe-fuse-expert-gemms,moe-fuse-projections,moe-fuse-epilogues,moe-estimate-cost))' | FileCheck %s
// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-fuse-router,moe-fuse-expert-gemms,moe-fuse-projections,moe-fuse-epilogues,moe-estimate-cost{step-tokens=4}))' | FileCheck %s --check-prefix=STEP4
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
// CHECK-SAME: moe.cost = {bytes_per_step = 0 : i64, flops_per_step = 0 : i64, step_tokens = 1 : i64,
// UNFUSED-SAME: weight_bytes = 400 : i64}
func.func @unused() {
  %w = moe.weight "unused" : tensor<100xf32>
  return
}

// -----

// An RMS norm reads its 64 f16 scales whole and multiplies by no weight
// matrix: 128 bytes, no flops.
// CHECK-LABEL: func.func @norm
// CHECK-SAME: moe.cost = {bytes_per_step = 128 : i64, flops_per_step = 0 : i64, step_tokens = 1 : i64, weight_bytes = 128 : i64}
// STEP4-LABEL: func.func @norm
// STEP4-SAME: moe.cost = {bytes_per_step = 128 : i64, flops_per_step = 0 : i64, step_tokens = 4 : i64, weight_bytes = 128 : i64}
func.func @norm(%h: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %w = moe.weight "norm" : tensor<64xf16>
  %n = moe.rms_norm %h, %w eps 1.000000e-05 : tensor<?x64xf32>, tensor<64xf16>
  return %n : tensor<?x64xf32>
}

// -----

// A residual adds no product with a weight: o_proj 64x128 f32 is 32768
// bytes and 2*64*128 = 16384 flops a token, with or without it.
// CHECK-LABEL: func.func @residual
// CHECK-SAME: moe.cost = {bytes_per_step = 32768 : i64, flops_per_step = 16384 : i64, step_tokens = 1 : i64, weight_bytes = 32768 : i64}
// STEP4-LABEL: func.func @residual
// STEP4-SAME: moe.cost = {bytes_per_step = 32768 : i64, flops_per_step = 65536 : i64, step_tokens = 4 : i64, weight_bytes = 32768 : i64}
func.func @residual(%a: tensor<?x128xf32>, %x: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %wo = moe.weight "o" : tensor<64x128xf32>
  %h = moe.linear %a, %wo residual %x : tensor<?x128xf32>, tensor<64x128xf32>, tensor<?x64xf32>
  return %h : tensor<?x64xf32>
}

// -----

// q, k, v of 64, 32 and 32 rows by 64 in f16, RoPE folded into q and k:
// 16384 bytes, 2*128*64 = 16384 flops a token. The same weights as three
// linears and two ropes cost the same (@unfused_qkv below).
// CHECK-LABEL: func.func @fused_qkv_rope
// CHECK-SAME: moe.cost = {bytes_per_step = 16384 : i64, flops_per_step = 16384 : i64, step_tokens = 1 : i64, weight_bytes = 16384 : i64}
// STEP4-LABEL: func.func @fused_qkv_rope
// STEP4-SAME: moe.cost = {bytes_per_step = 16384 : i64, flops_per_step = 65536 : i64, step_tokens = 4 : i64, weight_bytes = 16384 : i64}
func.func @fused_qkv_rope(%a: tensor<?x64xf32>, %pos: tensor<?xi32>) -> (tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>) {
  %wq = moe.weight "q" : tensor<64x64xf16>
  %wk = moe.weight "k" : tensor<32x64xf16>
  %wv = moe.weight "v" : tensor<32x64xf16>
  %q, %k, %v = moe.fused_linear %a weights [%wq, %wk, %wv]
      : (tensor<64x64xf16>, tensor<32x64xf16>, tensor<32x64xf16>)
      rope [0, 1] at %pos head_dim 16 theta 1.000000e+06
      : tensor<?x64xf32>, tensor<?xi32>
  return %q, %k, %v : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>
}

// -----

// CHECK-LABEL: func.func @unfused_qkv
// CHECK-SAME: moe.cost = {bytes_per_step = 16384 : i64, flops_per_step = 16384 : i64, step_tokens = 1 : i64, weight_bytes = 16384 : i64}
// STEP4-LABEL: func.func @unfused_qkv
// STEP4-SAME: moe.cost = {bytes_per_step = 16384 : i64, flops_per_step = 65536 : i64, step_tokens = 4 : i64, weight_bytes = 16384 : i64}
func.func @unfused_qkv(%a: tensor<?x64xf32>, %pos: tensor<?xi32>) -> (tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>) {
  %wq = moe.weight "q" : tensor<64x64xf16>
  %wk = moe.weight "k" : tensor<32x64xf16>
  %wv = moe.weight "v" : tensor<32x64xf16>
  %q = moe.linear %a, %wq : tensor<?x64xf32>, tensor<64x64xf16>
  %k = moe.linear %a, %wk : tensor<?x64xf32>, tensor<32x64xf16>
  %v = moe.linear %a, %wv : tensor<?x64xf32>, tensor<32x64xf16>
  %qr = moe.rope %q, %pos head_dim 16 theta 1.000000e+06 : tensor<?x64xf32>, tensor<?xi32>
  %kr = moe.rope %k, %pos head_dim 16 theta 1.000000e+06 : tensor<?x32xf32>, tensor<?xi32>
  return %qr, %kr, %v : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>
}

// -----

// An embedding of 2 rows: 4 tokens still read at most the 2 rows (512 B).
// CHECK-LABEL: func.func @small_table
// CHECK-SAME: moe.cost = {bytes_per_step = 256 : i64, flops_per_step = 0 : i64, step_tokens = 1 : i64, weight_bytes = 512 : i64}
// STEP4-LABEL: func.func @small_table
// STEP4-SAME: moe.cost = {bytes_per_step = 512 : i64, flops_per_step = 0 : i64, step_tokens = 4 : i64, weight_bytes = 512 : i64}
func.func @small_table(%ids: tensor<?xi32>) -> tensor<?x64xf32> {
  %t = moe.weight "embed" : tensor<2x64xf32>
  %h = moe.embedding %t[%ids] : tensor<2x64xf32>, tensor<?xi32>
  return %h : tensor<?x64xf32>
}

// -----

// @moe_block as moe-fuse-router and moe-fuse-expert-gemms leave it, written
// out: the fused router reads the gate whole and does its 2*4*8 flops a
// token; each expert weight of the grouped GEMMs is read with the share of
// moe.experts, k/E = 1/2 for one token and 15/16 for four; the gate_up GEMM
// does 2*2*16*8 and the down GEMM 2*8*16 flops for each of k = 2 rows a
// token, 6*2*16*8 in all. The figures are @moe_block's.
// CHECK-LABEL: func.func @moe_block_fused
// CHECK-SAME: moe.cost = {bytes_per_step = 1664 : i64, flops_per_step = 1600 : i64, step_tokens = 1 : i64, weight_bytes = 3200 : i64}
// STEP4-LABEL: func.func @moe_block_fused
// STEP4-SAME: moe.cost = {bytes_per_step = 3008 : i64, flops_per_step = 6400 : i64, step_tokens = 4 : i64, weight_bytes = 3200 : i64}
func.func @moe_block_fused(%b: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %gate = moe.weight "gate" : tensor<4x8xf32>
  %w, %i = moe.fused_router %b, %gate top 2 softmax renormalize : tensor<?x8xf32>, tensor<4x8xf32>
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
  %perm, %offsets = moe.expert_permute %i experts 4 : tensor<?x2xi32>
  %gu = moe.grouped_matmul %b[%perm] gather, %offsets top 2
      weights [%g0, %u0, %g1, %u1, %g2, %u2, %g3, %u3] : tensor<16x8xbf16> parts 2
      : tensor<?x8xf32>, tensor<?xi32>, tensor<5xi32>
  %h = moe.silu_mul %gu : tensor<?x32xf32>
  %y = moe.grouped_matmul %h[%perm], %offsets top 2
      weights [%d0, %d1, %d2, %d3] : tensor<8x16xbf16> parts 1
      : tensor<?x16xf32>, tensor<?xi32>, tensor<5xi32>
  %out = moe.expert_combine %y[%perm], %w : tensor<?x8xf32>, tensor<?xi32>, tensor<?x2xf32>
  return %out : tensor<?x8xf32>
}

// -----

// Every expert chosen (k = E = 2): every expert weight is read whole, 2
// experts of 3*4*2*4 = 96 f32 bytes; 6*2*4*2 = 96 flops a token.
// CHECK-LABEL: func.func @all_experts
// CHECK-SAME: moe.cost = {bytes_per_step = 192 : i64, flops_per_step = 96 : i64, step_tokens = 1 : i64, weight_bytes = 192 : i64}
// STEP4-LABEL: func.func @all_experts
// STEP4-SAME: moe.cost = {bytes_per_step = 192 : i64, flops_per_step = 384 : i64, step_tokens = 4 : i64, weight_bytes = 192 : i64}
func.func @all_experts(%b: tensor<?x2xf32>, %w: tensor<?x2xf32>, %i: tensor<?x2xi32>) -> tensor<?x2xf32> {
  %g0 = moe.weight "e0.w1" : tensor<4x2xf32>
  %g1 = moe.weight "e1.w1" : tensor<4x2xf32>
  %u0 = moe.weight "e0.w3" : tensor<4x2xf32>
  %u1 = moe.weight "e1.w3" : tensor<4x2xf32>
  %d0 = moe.weight "e0.w2" : tensor<2x4xf32>
  %d1 = moe.weight "e1.w2" : tensor<2x4xf32>
  %y = moe.experts %b, %w, %i
      gate [%g0, %g1] : tensor<4x2xf32>
      up [%u0, %u1] : tensor<4x2xf32>
      down [%d0, %d1] : tensor<2x4xf32>
      : tensor<?x2xf32>, tensor<?x2xf32>, tensor<?x2xi32>
  return %y : tensor<?x2xf32>
}
