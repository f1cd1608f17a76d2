// RUN: moe-opt %s --split-input-file | moe-opt --split-input-file | FileCheck %s
// RUN: moe-opt %s --split-input-file --mlir-print-op-generic | moe-opt --split-input-file | FileCheck %s

// Every op of the moe dialect round-trips through its custom assembly and
// through the generic form.

// CHECK-LABEL: func.func @weight
func.func @weight() -> (tensor<4x64xf32>, tensor<64xf16>, tensor<128x64xbf16>) {
  // CHECK: moe.weight "model.layers.0.block_sparse_moe.gate.weight" : tensor<4x64xf32>
  %0 = moe.weight "model.layers.0.block_sparse_moe.gate.weight" : tensor<4x64xf32>
  // CHECK: moe.weight "model.norm.weight" : tensor<64xf16>
  %1 = moe.weight "model.norm.weight" : tensor<64xf16>
  // CHECK: moe.weight "w" : tensor<128x64xbf16>
  %2 = moe.weight "w" : tensor<128x64xbf16>
  return %0, %1, %2 : tensor<4x64xf32>, tensor<64xf16>, tensor<128x64xbf16>
}

// -----

// CHECK-LABEL: func.func @embedding
// CHECK-SAME: (%[[IDS:.+]]: tensor<?xi32>, %[[IDS3:.+]]: tensor<3xi32>)
func.func @embedding(%ids: tensor<?xi32>, %ids3: tensor<3xi32>) -> (tensor<?x64xf32>, tensor<3x64xf32>) {
  // CHECK: %[[T:.+]] = moe.weight "model.embed_tokens.weight" : tensor<256x64xf16>
  %t = moe.weight "model.embed_tokens.weight" : tensor<256x64xf16>
  // CHECK: moe.embedding %[[T]][%[[IDS]]] : tensor<256x64xf16>, tensor<?xi32>
  %0 = moe.embedding %t[%ids] : tensor<256x64xf16>, tensor<?xi32>
  // CHECK: moe.embedding %[[T]][%[[IDS3]]] : tensor<256x64xf16>, tensor<3xi32>
  %1 = moe.embedding %t[%ids3] : tensor<256x64xf16>, tensor<3xi32>
  return %0, %1 : tensor<?x64xf32>, tensor<3x64xf32>
}

// -----

// CHECK-LABEL: func.func @rms_norm
func.func @rms_norm(%x: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %w = moe.weight "model.norm.weight" : tensor<64xbf16>
  // CHECK: moe.rms_norm %{{.+}}, %{{.+}} eps 1.000000e-05 : tensor<?x64xf32>, tensor<64xbf16>
  %0 = moe.rms_norm %x, %w eps 1.0e-05 : tensor<?x64xf32>, tensor<64xbf16>
  return %0 : tensor<?x64xf32>
}

// -----

// CHECK-LABEL: func.func @linear
func.func @linear(%x: tensor<?x64xf32>, %y: tensor<5x64xf32>) -> (tensor<?x128xf32>, tensor<5x128xf32>) {
  %w = moe.weight "q_proj" : tensor<128x64xf16>
  // CHECK: moe.linear %{{.+}}, %{{.+}} : tensor<?x64xf32>, tensor<128x64xf16>
  %0 = moe.linear %x, %w : tensor<?x64xf32>, tensor<128x64xf16>
  // CHECK: moe.linear %{{.+}}, %{{.+}} : tensor<5x64xf32>, tensor<128x64xf16>
  %1 = moe.linear %y, %w : tensor<5x64xf32>, tensor<128x64xf16>
  return %0, %1 : tensor<?x128xf32>, tensor<5x128xf32>
}

// -----

// CHECK-LABEL: func.func @rope
func.func @rope(%x: tensor<?x64xf32>, %pos: tensor<?xi32>) -> tensor<?x64xf32> {
  // CHECK: moe.rope %{{.+}}, %{{.+}} head_dim 16 theta 1.000000e+06 : tensor<?x64xf32>, tensor<?xi32>
  %0 = moe.rope %x, %pos head_dim 16 theta 1.0e+06 : tensor<?x64xf32>, tensor<?xi32>
  // CHECK: moe.rope %{{.+}}, %{{.+}} head_dim 16 theta 1.000000e+06 interleaved : tensor<?x64xf32>, tensor<?xi32>
  %1 = moe.rope %x, %pos head_dim 16 theta 1.0e+06 interleaved : tensor<?x64xf32>, tensor<?xi32>
  return %0 : tensor<?x64xf32>
}

// -----

// Scaled RoPE types: parameters in any order, printed in declaration order
// with exactly the digits that read back; interleaved after the scaling.
// CHECK-LABEL: func.func @rope_scaling
func.func @rope_scaling(%x: tensor<?x64xf32>, %pos: tensor<?xi32>) -> tensor<?x64xf32> {
  // CHECK: moe.rope %{{.+}}, %{{.+}} head_dim 16 theta 1.000000e+06 scaling <linear, factor = 2.000000e+00> : tensor<?x64xf32>, tensor<?xi32>
  %0 = moe.rope %x, %pos head_dim 16 theta 1.0e+06 scaling <linear, factor = 2.0> : tensor<?x64xf32>, tensor<?xi32>
  // CHECK: moe.rope %{{.+}}, %{{.+}} head_dim 16 theta 1.000000e+06 scaling <dynamic, factor = 4.000000e+00, max_positions = 64> interleaved : tensor<?x64xf32>, tensor<?xi32>
  %1 = moe.rope %x, %pos head_dim 16 theta 1.0e+06 scaling <dynamic, max_positions = 64, factor = 4.0> interleaved : tensor<?x64xf32>, tensor<?xi32>
  // CHECK: moe.rope %{{.+}}, %{{.+}} head_dim 16 theta 1.000000e+06 scaling <yarn, factor = 4.000000e+00, original_max_positions = 16, beta_fast = 3.200000e+01, beta_slow = 1.000000e+00, attention = 1.1386294361119891, truncate = true> : tensor<?x64xf32>, tensor<?xi32>
  %2 = moe.rope %x, %pos head_dim 16 theta 1.0e+06 scaling <yarn, truncate = true, factor = 4.0, original_max_positions = 16, beta_fast = 32.0, beta_slow = 1.0, attention = 1.1386294361119891> : tensor<?x64xf32>, tensor<?xi32>
  // CHECK: moe.rope %{{.+}}, %{{.+}} head_dim 16 theta 1.000000e+06 scaling <yarn, factor = 4.000000e+00, original_max_positions = 16, beta_fast = 3.200000e+01, beta_slow = 1.000000e+00, attention = 1.000000e+00> : tensor<?x64xf32>, tensor<?xi32>
  %3 = moe.rope %x, %pos head_dim 16 theta 1.0e+06 scaling <yarn, factor = 4.0, original_max_positions = 16, beta_fast = 32.0, beta_slow = 1.0, attention = 1.0, truncate = false> : tensor<?x64xf32>, tensor<?xi32>
  // CHECK: moe.rope %{{.+}}, %{{.+}} head_dim 16 theta 1.000000e+06 scaling <llama3, factor = 8.000000e+00, original_max_positions = 8192, low_freq_factor = 1.000000e+00, high_freq_factor = 4.000000e+00> : tensor<?x64xf32>, tensor<?xi32>
  %4 = moe.rope %x, %pos head_dim 16 theta 1.0e+06 scaling <llama3, factor = 8.0, original_max_positions = 8192, low_freq_factor = 1.0, high_freq_factor = 4.0> : tensor<?x64xf32>, tensor<?xi32>
  return %0 : tensor<?x64xf32>
}

// -----

// CHECK-LABEL: func.func @attention
func.func @attention(%q: tensor<?x64xf32>, %k: tensor<?x32xf32>, %v: tensor<?x32xf32>,
                     %c: !moe.kv_cache<2x?x16xf32>, %p: !moe.kv_cache<2x4096x16xf16>)
    -> (tensor<?x64xf32>, !moe.kv_cache<2x?x16xf32>, tensor<?x64xf32>, !moe.kv_cache<2x4096x16xf16>) {
  // CHECK: %{{.+}}, %{{.+}} = moe.attention %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} heads 4 : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>, !moe.kv_cache<2x?x16xf32>
  %0, %1 = moe.attention %q, %k, %v, %c heads 4
      : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>, !moe.kv_cache<2x?x16xf32>
  // CHECK: moe.attention %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} heads 4 {scale = 1.250000e-01 : f64, sliding_window = 8 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>, !moe.kv_cache<2x4096x16xf16>
  %2, %3 = moe.attention %q, %k, %v, %p heads 4 {sliding_window = 8 : i64, scale = 0.125 : f64}
      : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>, !moe.kv_cache<2x4096x16xf16>
  return %0, %1, %2, %3 : tensor<?x64xf32>, !moe.kv_cache<2x?x16xf32>, tensor<?x64xf32>, !moe.kv_cache<2x4096x16xf16>
}

// -----

// Multi-query attention (one kv head) with a cache of bf16.
// CHECK-LABEL: func.func @attention_mqa
func.func @attention_mqa(%q: tensor<3x64xf32>, %kv: tensor<3x16xf32>, %c: !moe.kv_cache<1x?x16xbf16>)
    -> (tensor<3x64xf32>, !moe.kv_cache<1x?x16xbf16>) {
  // CHECK: moe.attention {{.+}} heads 4 : tensor<3x64xf32>, tensor<3x16xf32>, tensor<3x16xf32>, !moe.kv_cache<1x?x16xbf16>
  %0, %1 = moe.attention %q, %kv, %kv, %c heads 4
      : tensor<3x64xf32>, tensor<3x16xf32>, tensor<3x16xf32>, !moe.kv_cache<1x?x16xbf16>
  return %0, %1 : tensor<3x64xf32>, !moe.kv_cache<1x?x16xbf16>
}

// -----

// CHECK-LABEL: func.func @add
func.func @add(%a: tensor<?x64xf32>, %b: tensor<?x64xf32>) -> tensor<?x64xf32> {
  // CHECK: moe.add %{{.+}}, %{{.+}} : tensor<?x64xf32>
  %0 = moe.add %a, %b : tensor<?x64xf32>
  return %0 : tensor<?x64xf32>
}

// -----

// CHECK-LABEL: func.func @router
func.func @router(%l: tensor<?x8xf32>) -> (tensor<?x2xf32>, tensor<?x2xi32>, tensor<?x8xf32>, tensor<?x8xi32>) {
  // CHECK: moe.router %{{.+}} top 2 softmax renormalize : tensor<?x8xf32>
  %w, %i = moe.router %l top 2 softmax renormalize : tensor<?x8xf32>
  // CHECK: moe.router %{{.+}} top 8 sigmoid : tensor<?x8xf32>
  %w2, %i2 = moe.router %l top 8 sigmoid : tensor<?x8xf32>
  return %w, %i, %w2, %i2 : tensor<?x2xf32>, tensor<?x2xi32>, tensor<?x8xf32>, tensor<?x8xi32>
}

// -----

// CHECK-LABEL: func.func @fused_router
func.func @fused_router(%b: tensor<?x64xf32>) -> (tensor<?x2xf32>, tensor<?x2xi32>) {
  %g = moe.weight "gate" : tensor<8x64xbf16>
  // CHECK: moe.fused_router %{{.+}}, %{{.+}} top 2 softmax renormalize : tensor<?x64xf32>, tensor<8x64xbf16>
  %w, %i = moe.fused_router %b, %g top 2 softmax renormalize : tensor<?x64xf32>, tensor<8x64xbf16>
  return %w, %i : tensor<?x2xf32>, tensor<?x2xi32>
}

// -----

// CHECK-LABEL: func.func @experts
func.func @experts(%b: tensor<?x64xf32>, %l: tensor<?x3xf32>) -> tensor<?x64xf32> {
  %w, %i = moe.router %l top 2 softmax renormalize : tensor<?x3xf32>
  // CHECK-DAG: %[[G0:.+]] = moe.weight "e0.w1"
  // CHECK-DAG: %[[G1:.+]] = moe.weight "e1.w1"
  // CHECK-DAG: %[[G2:.+]] = moe.weight "e2.w1"
  %g0 = moe.weight "e0.w1" : tensor<96x64xf16>
  %g1 = moe.weight "e1.w1" : tensor<96x64xf16>
  %g2 = moe.weight "e2.w1" : tensor<96x64xf16>
  %u0 = moe.weight "e0.w3" : tensor<96x64xf16>
  %u1 = moe.weight "e1.w3" : tensor<96x64xf16>
  %u2 = moe.weight "e2.w3" : tensor<96x64xf16>
  %d0 = moe.weight "e0.w2" : tensor<64x96xf16>
  %d1 = moe.weight "e1.w2" : tensor<64x96xf16>
  %d2 = moe.weight "e2.w2" : tensor<64x96xf16>
  // CHECK: moe.experts %{{.+}}, %{{.+}}, %{{.+}} gate [%[[G0]], %[[G1]], %[[G2]]] : tensor<96x64xf16> up [%{{.+}}, %{{.+}}, %{{.+}}] : tensor<96x64xf16> down [%{{.+}}, %{{.+}}, %{{.+}}] : tensor<64x96xf16> : tensor<?x64xf32>, tensor<?x2xf32>, tensor<?x2xi32>
  %y = moe.experts %b, %w, %i
      gate [%g0, %g1, %g2] : tensor<96x64xf16>
      up [%u0, %u1, %u2] : tensor<96x64xf16>
      down [%d0, %d1, %d2] : tensor<64x96xf16>
      : tensor<?x64xf32>, tensor<?x2xf32>, tensor<?x2xi32>
  return %y : tensor<?x64xf32>
}

// -----

// A weight manifest: moe.weight_dir plus one moe.weight_source per weight.
// CHECK-LABEL: module attributes {moe.weight_dir = "/models/tiny"}
// CHECK: moe.weight_source "model.norm.weight" in "model-00002-of-00002.safetensors" at 4096 : tensor<64xbf16>
// CHECK: moe.weight_source "lm_head.weight" in "model-00002-of-00002.safetensors" at 4224 : tensor<256x64xbf16>
// CHECK-LABEL: func.func @manifest
module attributes {moe.weight_dir = "/models/tiny"} {
  moe.weight_source "model.norm.weight" in "model-00002-of-00002.safetensors" at 4096 : tensor<64xbf16>
  moe.weight_source "lm_head.weight" in "model-00002-of-00002.safetensors" at 4224 : tensor<256x64xbf16>
  func.func @manifest(%h: tensor<?x64xf32>) -> tensor<?x256xf32> {
    %n = moe.weight "model.norm.weight" : tensor<64xbf16>
    %x = moe.rms_norm %h, %n eps 1.0e-05 : tensor<?x64xf32>, tensor<64xbf16>
    %w = moe.weight "lm_head.weight" : tensor<256x64xbf16>
    %l = moe.linear %x, %w : tensor<?x64xf32>, tensor<256x64xbf16>
    return %l : tensor<?x256xf32>
  }
}

// -----

// The fused expert path.
// CHECK-LABEL: func.func @fused_experts
func.func @fused_experts(%b: tensor<?x64xf32>, %w: tensor<?x2xf32>, %i: tensor<?x2xi32>) -> tensor<?x64xf32> {
  %g = moe.weight "g" : tensor<96x64xf32>
  %u = moe.weight "u" : tensor<96x64xf16>
  %d = moe.weight "d" : tensor<64x96xf32>
  // CHECK: %[[P:.+]], %[[O:.+]] = moe.expert_permute %{{.+}} experts 2 : tensor<?x2xi32>
  %p, %o = moe.expert_permute %i experts 2 : tensor<?x2xi32>
  // CHECK: %[[GU:.+]] = moe.grouped_matmul %{{.+}}[%[[P]]] gather, %[[O]] top 2 weights [%{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}] : (tensor<96x64xf32>, tensor<96x64xf16>, tensor<96x64xf32>, tensor<96x64xf16>) parts 2 : tensor<?x64xf32>, tensor<?xi32>, tensor<3xi32>
  %gu = moe.grouped_matmul %b[%p] gather, %o top 2 weights [%g, %u, %g, %u] : (tensor<96x64xf32>, tensor<96x64xf16>, tensor<96x64xf32>, tensor<96x64xf16>) parts 2 : tensor<?x64xf32>, tensor<?xi32>, tensor<3xi32>
  // CHECK: %[[H:.+]] = moe.silu_mul %[[GU]] : tensor<?x192xf32>
  %h = moe.silu_mul %gu : tensor<?x192xf32>
  // CHECK: %[[DN:.+]] = moe.grouped_matmul %[[H]][%[[P]]], %[[O]] top 2 weights [%{{.+}}, %{{.+}}] : tensor<64x96xf32> parts 1
  %dn = moe.grouped_matmul %h[%p], %o top 2 weights [%d, %d] : tensor<64x96xf32> parts 1 : tensor<?x96xf32>, tensor<?xi32>, tensor<3xi32>
  // CHECK: %[[Y:.+]] = moe.expert_combine %[[DN]][%[[P]]], %{{.+}} : tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>
  %y = moe.expert_combine %dn[%p], %w : tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>
  // CHECK: moe.expert_combine %[[DN]][%[[P]]], %{{.+}} residual %[[Y]] : tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>, tensor<?x64xf32>
  %z = moe.expert_combine %dn[%p], %w residual %y : tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>, tensor<?x64xf32>
  return %z : tensor<?x64xf32>
}

// -----

// A linear with a fused residual.
// CHECK-LABEL: func.func @linear_residual
// CHECK-SAME: (%[[X:.+]]: tensor<?x128xf32>, %[[R:.+]]: tensor<?x64xf32>)
// CHECK: %[[W:.+]] = moe.weight "wo" : tensor<64x128xbf16>
// CHECK: moe.linear %[[X]], %[[W]] residual %[[R]] : tensor<?x128xf32>, tensor<64x128xbf16>, tensor<?x64xf32>
func.func @linear_residual(%x: tensor<?x128xf32>, %r: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %w = moe.weight "wo" : tensor<64x128xbf16>
  %h = moe.linear %x, %w residual %r : tensor<?x128xf32>, tensor<64x128xbf16>, tensor<?x64xf32>
  return %h : tensor<?x64xf32>
}

// -----

// A gate_up GEMM that stores silu(gate) * up: [T * k, I].
// CHECK-LABEL: func.func @grouped_silu_mul
// CHECK: moe.grouped_matmul %{{.+}}[%{{.+}}] gather, %{{.+}} top 2 weights [%{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}] : tensor<96x64xbf16> parts 2 silu_mul : tensor<?x64xf32>, tensor<?xi32>, tensor<3xi32>
func.func @grouped_silu_mul(%b: tensor<?x64xf32>, %p: tensor<?xi32>, %o: tensor<3xi32>) -> tensor<?x96xf32> {
  %w = moe.weight "w" : tensor<96x64xbf16>
  %h = moe.grouped_matmul %b[%p] gather, %o top 2 weights [%w, %w, %w, %w] : tensor<96x64xbf16> parts 2 silu_mul : tensor<?x64xf32>, tensor<?xi32>, tensor<3xi32>
  return %h : tensor<?x96xf32>
}

// -----

// Sibling projections of one input in one op, a result each.
// CHECK-LABEL: func.func @fused_linear
// CHECK: %{{.+}}:2 = moe.fused_linear %{{.+}} weights [%{{.+}}, %{{.+}}] : (tensor<128x64xbf16>, tensor<32x64xf16>) : tensor<?x64xf32>
func.func @fused_linear(%a: tensor<?x64xf32>) -> (tensor<?x128xf32>, tensor<?x32xf32>) {
  %wq = moe.weight "q" : tensor<128x64xbf16>
  %wk = moe.weight "k" : tensor<32x64xf16>
  %q, %k = moe.fused_linear %a weights [%wq, %wk] : (tensor<128x64xbf16>, tensor<32x64xf16>) : tensor<?x64xf32>
  return %q, %k : tensor<?x128xf32>, tensor<?x32xf32>
}

// -----

// Projections with RoPE applied to some results.
// CHECK-LABEL: func.func @fused_linear_rope
// CHECK: moe.fused_linear %{{.+}} weights [%{{.+}}, %{{.+}}, %{{.+}}] : tensor<32x64xf16> rope [0, 1] at %{{.+}} head_dim 16 theta 1.000000e+06 : tensor<?x64xf32>, tensor<?xi32>
func.func @fused_linear_rope(%a: tensor<?x64xf32>, %pos: tensor<?xi32>) -> (tensor<?x32xf32>, tensor<?x32xf32>, tensor<?x32xf32>) {
  %w = moe.weight "w" : tensor<32x64xf16>
  %q, %k, %v = moe.fused_linear %a weights [%w, %w, %w] : tensor<32x64xf16> rope [0, 1] at %pos head_dim 16 theta 1.0e+06 : tensor<?x64xf32>, tensor<?xi32>
  return %q, %k, %v : tensor<?x32xf32>, tensor<?x32xf32>, tensor<?x32xf32>
}

// -----

// CHECK-LABEL: func.func @fused_linear_rope_scaling
// CHECK: moe.fused_linear %{{.+}} weights [%{{.+}}, %{{.+}}] : tensor<32x64xf16> rope [0, 1] at %{{.+}} head_dim 16 theta 1.000000e+06 scaling <linear, factor = 2.500000e-01> interleaved : tensor<?x64xf32>, tensor<?xi32>
func.func @fused_linear_rope_scaling(%a: tensor<?x64xf32>, %pos: tensor<?xi32>) -> (tensor<?x32xf32>, tensor<?x32xf32>) {
  %w = moe.weight "w" : tensor<32x64xf16>
  %q, %k = moe.fused_linear %a weights [%w, %w] : tensor<32x64xf16> rope [0, 1] at %pos head_dim 16 theta 1.0e+06 scaling <linear, factor = 0.25> interleaved : tensor<?x64xf32>, tensor<?xi32>
  return %q, %k : tensor<?x32xf32>, tensor<?x32xf32>
}
