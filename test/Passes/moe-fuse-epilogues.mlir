// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-fuse-epilogues))' | FileCheck %s

// A decoder layer's two residual connections: the o_proj GEMM takes the
// layer input as its residual, the combine takes the attention block's sum.
// The adds are gone and each fused op sits where its add was.
// CHECK-LABEL: func.func @layer
// CHECK-SAME: (%[[X:[^:]+]]: tensor<?x64xf32>, %[[A:[^:]+]]: tensor<?x64xf32>, %[[DN:[^:]+]]: tensor<?x64xf32>, %[[P:[^:]+]]: tensor<?xi32>, %[[W:[^:]+]]: tensor<?x2xf32>)
// CHECK-NOT: moe.add
// CHECK: %[[H:.+]] = moe.linear %[[A]], %{{.+}} residual %[[X]] : tensor<?x64xf32>, tensor<64x64xf16>, tensor<?x64xf32>
// CHECK-NEXT: %[[OUT:.+]] = moe.expert_combine %[[DN]][%[[P]]], %[[W]] residual %[[H]] : tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>, tensor<?x64xf32>
// CHECK-NEXT: return %[[OUT]]
func.func @layer(%x: tensor<?x64xf32>, %attn: tensor<?x64xf32>, %dn: tensor<?x64xf32>, %p: tensor<?xi32>, %w: tensor<?x2xf32>) -> tensor<?x64xf32> {
  %wo = moe.weight "wo" : tensor<64x64xf16>
  %o = moe.linear %attn, %wo : tensor<?x64xf32>, tensor<64x64xf16>
  %h = moe.add %x, %o : tensor<?x64xf32>
  %y = moe.expert_combine %dn[%p], %w : tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>
  %out = moe.add %h, %y : tensor<?x64xf32>
  return %out : tensor<?x64xf32>
}

// -----

// The residual may be defined after the GEMM: the fused op is placed at the
// add, below both.
// CHECK-LABEL: func.func @residual_after
// CHECK: %[[R:.+]] = moe.rms_norm
// CHECK-NEXT: moe.linear %{{.+}}, %{{.+}} residual %[[R]]
func.func @residual_after(%a: tensor<?x64xf32>, %x: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %wo = moe.weight "wo" : tensor<64x64xf32>
  %n = moe.weight "n" : tensor<64xf32>
  %o = moe.linear %a, %wo : tensor<?x64xf32>, tensor<64x64xf32>
  %r = moe.rms_norm %x, %n eps 1.0e-05 : tensor<?x64xf32>, tensor<64xf32>
  %h = moe.add %o, %r : tensor<?x64xf32>
  return %h : tensor<?x64xf32>
}

// -----

// Negative: the GEMM's result has another user, so it must exist anyway.
// CHECK-LABEL: func.func @gemm_used
// CHECK: %[[O:.+]] = moe.linear %{{.+}}, %{{.+}} : tensor<?x64xf32>, tensor<64x64xf32>
// CHECK-NOT: residual
// CHECK: moe.add %{{.+}}, %[[O]]
// CHECK: return %{{.+}}, %[[O]]
func.func @gemm_used(%a: tensor<?x64xf32>, %x: tensor<?x64xf32>) -> (tensor<?x64xf32>, tensor<?x64xf32>) {
  %wo = moe.weight "wo" : tensor<64x64xf32>
  %o = moe.linear %a, %wo : tensor<?x64xf32>, tensor<64x64xf32>
  %h = moe.add %x, %o : tensor<?x64xf32>
  return %h, %o : tensor<?x64xf32>, tensor<?x64xf32>
}

// -----

// Negative: neither operand comes from a GEMM or a combine.
// CHECK-LABEL: func.func @plain_add
// CHECK: moe.add
func.func @plain_add(%a: tensor<?x64xf32>, %b: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %h = moe.add %a, %b : tensor<?x64xf32>
  return %h : tensor<?x64xf32>
}

// -----

// Negative: a GEMM that already has a residual cannot take a second one.
// CHECK-LABEL: func.func @has_residual
// CHECK: %[[O:.+]] = moe.linear %{{.+}}, %{{.+}} residual %{{.+}}
// CHECK-NEXT: moe.add %[[O]], %{{.+}}
func.func @has_residual(%a: tensor<?x64xf32>, %x: tensor<?x64xf32>, %y: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %wo = moe.weight "wo" : tensor<64x64xf32>
  %o = moe.linear %a, %wo residual %x : tensor<?x64xf32>, tensor<64x64xf32>, tensor<?x64xf32>
  %h = moe.add %o, %y : tensor<?x64xf32>
  return %h : tensor<?x64xf32>
}

// -----

// Negative: the add uses the GEMM's result twice.
// CHECK-LABEL: func.func @twice
// CHECK: %[[O:.+]] = moe.linear %{{.+}}, %{{.+}} : tensor<?x64xf32>, tensor<64x64xf32>
// CHECK-NEXT: moe.add %[[O]], %[[O]]
func.func @twice(%a: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %wo = moe.weight "wo" : tensor<64x64xf32>
  %o = moe.linear %a, %wo : tensor<?x64xf32>, tensor<64x64xf32>
  %h = moe.add %o, %o : tensor<?x64xf32>
  return %h : tensor<?x64xf32>
}

// -----

// The gate_up GEMM stores silu(gate) * up: the silu_mul is gone and the
// GEMM's result is [T * k, I], read by the down GEMM.
// CHECK-LABEL: func.func @silu_mul
// CHECK-NOT: moe.silu_mul
// CHECK: %[[ACT:.+]] = moe.grouped_matmul %{{.+}}[%{{.+}}] gather, %{{.+}} top 2 weights [%{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}] : tensor<96x64xf16> parts 2 silu_mul : tensor<?x64xf32>, tensor<?xi32>, tensor<3xi32>
// CHECK-NEXT: moe.grouped_matmul %[[ACT]][%{{.+}}], %{{.+}} top 2 weights [%{{.+}}, %{{.+}}] : tensor<64x96xf16> parts 1 : tensor<?x96xf32>
func.func @silu_mul(%b: tensor<?x64xf32>, %p: tensor<?xi32>, %o: tensor<3xi32>) -> tensor<?x64xf32> {
  %g = moe.weight "g" : tensor<96x64xf16>
  %u = moe.weight "u" : tensor<96x64xf16>
  %d = moe.weight "d" : tensor<64x96xf16>
  %gu = moe.grouped_matmul %b[%p] gather, %o top 2 weights [%g, %u, %g, %u] : tensor<96x64xf16> parts 2 : tensor<?x64xf32>, tensor<?xi32>, tensor<3xi32>
  %h = moe.silu_mul %gu : tensor<?x192xf32>
  %dn = moe.grouped_matmul %h[%p], %o top 2 weights [%d, %d] : tensor<64x96xf16> parts 1 : tensor<?x96xf32>, tensor<?xi32>, tensor<3xi32>
  return %dn : tensor<?x64xf32>
}

// -----

// Negative: the gate_up product has another user.
// CHECK-LABEL: func.func @gate_up_used
// CHECK: %[[GU:.+]] = moe.grouped_matmul {{.+}} parts 2 :
// CHECK-NEXT: moe.silu_mul %[[GU]]
func.func @gate_up_used(%b: tensor<?x64xf32>, %p: tensor<?xi32>, %o: tensor<3xi32>) -> (tensor<?x96xf32>, tensor<?x192xf32>) {
  %g = moe.weight "g" : tensor<96x64xf32>
  %gu = moe.grouped_matmul %b[%p] gather, %o top 2 weights [%g, %g, %g, %g] : tensor<96x64xf32> parts 2 : tensor<?x64xf32>, tensor<?xi32>, tensor<3xi32>
  %h = moe.silu_mul %gu : tensor<?x192xf32>
  return %h, %gu : tensor<?x96xf32>, tensor<?x192xf32>
}

// -----

// Negative: a one-part GEMM's output split in halves is not gate and up of
// the same rows.
// CHECK-LABEL: func.func @one_part
// CHECK: moe.grouped_matmul {{.+}} parts 1 :
// CHECK-NEXT: moe.silu_mul
func.func @one_part(%b: tensor<?x64xf32>, %p: tensor<?xi32>, %o: tensor<3xi32>) -> tensor<?x96xf32> {
  %w = moe.weight "w" : tensor<192x64xf32>
  %gu = moe.grouped_matmul %b[%p] gather, %o top 2 weights [%w, %w] : tensor<192x64xf32> parts 1 : tensor<?x64xf32>, tensor<?xi32>, tensor<3xi32>
  %h = moe.silu_mul %gu : tensor<?x192xf32>
  return %h : tensor<?x96xf32>
}

// -----

// RoPE of q and k folds into the projections that make them; v stays
// plain. Each rope's users now read the fused op's result.
// CHECK-LABEL: func.func @rope
// CHECK-SAME: (%[[A:[^:]+]]: tensor<?x64xf32>, %[[POS:[^:]+]]: tensor<?xi32>)
// CHECK-NOT: moe.rope
// CHECK: %[[R:.+]]:3 = moe.fused_linear %[[A]] weights [%{{.+}}, %{{.+}}, %{{.+}}] : (tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>) rope [0, 1] at %[[POS]] head_dim 16 theta 1.000000e+06 : tensor<?x64xf32>, tensor<?xi32>
// CHECK-NEXT: return %[[R]]#0, %[[R]]#1, %[[R]]#2
func.func @rope(%a: tensor<?x64xf32>, %pos: tensor<?xi32>) -> (tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>) {
  %wq = moe.weight "q" : tensor<64x64xf32>
  %wk = moe.weight "k" : tensor<32x64xf32>
  %wv = moe.weight "v" : tensor<32x64xf32>
  %q, %k, %v = moe.fused_linear %a weights [%wq, %wk, %wv] : (tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>) : tensor<?x64xf32>
  %qr = moe.rope %q, %pos head_dim 16 theta 1.0e+06 : tensor<?x64xf32>, tensor<?xi32>
  %kr = moe.rope %k, %pos head_dim 16 theta 1.0e+06 : tensor<?x32xf32>, tensor<?xi32>
  return %qr, %kr, %v : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>
}

// -----

// Negative: a second rope with another theta cannot share the op's one,
// and a projection used besides its rope must stay unrotated.
// CHECK-LABEL: func.func @rope_mismatch
// CHECK: %[[R:.+]]:3 = moe.fused_linear {{.+}} rope [0] at %{{.+}} head_dim 16 theta 1.000000e+06
// CHECK: moe.rope %[[R]]#1, %{{.+}} head_dim 16 theta 1.000000e+04
// CHECK: moe.rope %[[R]]#2, %{{.+}} head_dim 16 theta 1.000000e+06
func.func @rope_mismatch(%a: tensor<?x64xf32>, %pos: tensor<?xi32>) -> (tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>, tensor<?x32xf32>) {
  %wq = moe.weight "q" : tensor<64x64xf32>
  %wk = moe.weight "k" : tensor<32x64xf32>
  %q, %k, %v = moe.fused_linear %a weights [%wq, %wk, %wk] : (tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>) : tensor<?x64xf32>
  %qr = moe.rope %q, %pos head_dim 16 theta 1.0e+06 : tensor<?x64xf32>, tensor<?xi32>
  %kr = moe.rope %k, %pos head_dim 16 theta 1.0e+04 : tensor<?x32xf32>, tensor<?xi32>
  %vr = moe.rope %v, %pos head_dim 16 theta 1.0e+06 : tensor<?x32xf32>, tensor<?xi32>
  return %qr, %kr, %vr, %v : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>, tensor<?x32xf32>
}

// -----

// Interleaved RoPE (GGUF's q/k row order) folds in with its pairing; a rope
// of the other pairing does not share the op's one.
// CHECK-LABEL: func.func @rope_interleaved
// CHECK: %[[R:.+]]:3 = moe.fused_linear {{.+}} rope [0] at %{{.+}} head_dim 16 theta 1.000000e+06 interleaved :
// CHECK-NEXT: moe.rope %[[R]]#1, %{{.+}} head_dim 16 theta 1.000000e+06 :
func.func @rope_interleaved(%a: tensor<?x64xf32>, %pos: tensor<?xi32>) -> (tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>) {
  %wq = moe.weight "q" : tensor<64x64xf32>
  %wk = moe.weight "k" : tensor<32x64xf32>
  %q, %k, %v = moe.fused_linear %a weights [%wq, %wk, %wk] : (tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>) : tensor<?x64xf32>
  %qr = moe.rope %q, %pos head_dim 16 theta 1.0e+06 interleaved : tensor<?x64xf32>, tensor<?xi32>
  %kr = moe.rope %k, %pos head_dim 16 theta 1.0e+06 : tensor<?x32xf32>, tensor<?xi32>
  return %qr, %kr, %v : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>
}

// -----

// Scaled RoPE folds in with its scaling; ropes of equal scaling share the
// op, one of another scaling (another factor, or none) does not.
// CHECK-LABEL: func.func @rope_scaling
// CHECK: %[[R:.+]]:3 = moe.fused_linear {{.+}} rope [0, 2] at %{{.+}} head_dim 16 theta 1.000000e+06 scaling <yarn, factor = 4.000000e+00, original_max_positions = 16, beta_fast = 3.200000e+01, beta_slow = 1.000000e+00, attention = 1.1386294361119891, truncate = true> :
// CHECK-NEXT: moe.rope %[[R]]#1, %{{.+}} head_dim 16 theta 1.000000e+06 scaling <yarn, factor = 2.000000e+00, original_max_positions = 16, beta_fast = 3.200000e+01, beta_slow = 1.000000e+00, attention = 1.1386294361119891, truncate = true> :
// CHECK-NEXT: %[[S:.+]]:2 = moe.fused_linear {{.+}} rope [0] at %{{.+}} head_dim 16 theta 1.000000e+06 :
// CHECK-NEXT: moe.rope %[[S]]#1, %{{.+}} head_dim 16 theta 1.000000e+06 scaling <linear, factor = 2.000000e+00> :
func.func @rope_scaling(%a: tensor<?x64xf32>, %pos: tensor<?xi32>) -> (tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>, tensor<?x32xf32>, tensor<?x32xf32>) {
  %wq = moe.weight "q" : tensor<64x64xf32>
  %wk = moe.weight "k" : tensor<32x64xf32>
  %q, %k, %v = moe.fused_linear %a weights [%wq, %wk, %wk] : (tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>) : tensor<?x64xf32>
  %qr = moe.rope %q, %pos head_dim 16 theta 1.0e+06 scaling <yarn, factor = 4.0, original_max_positions = 16, beta_fast = 32.0, beta_slow = 1.0, attention = 1.1386294361119891, truncate = true> : tensor<?x64xf32>, tensor<?xi32>
  %kr = moe.rope %k, %pos head_dim 16 theta 1.0e+06 scaling <yarn, factor = 2.0, original_max_positions = 16, beta_fast = 32.0, beta_slow = 1.0, attention = 1.1386294361119891, truncate = true> : tensor<?x32xf32>, tensor<?xi32>
  %vr = moe.rope %v, %pos head_dim 16 theta 1.0e+06 scaling <yarn, factor = 4.0, original_max_positions = 16, beta_fast = 32.0, beta_slow = 1.0, attention = 1.1386294361119891, truncate = true> : tensor<?x32xf32>, tensor<?xi32>
  %x, %y = moe.fused_linear %a weights [%wk, %wk] : tensor<32x64xf32> : tensor<?x64xf32>
  %xr = moe.rope %x, %pos head_dim 16 theta 1.0e+06 : tensor<?x32xf32>, tensor<?xi32>
  %yr = moe.rope %y, %pos head_dim 16 theta 1.0e+06 scaling <linear, factor = 2.0> : tensor<?x32xf32>, tensor<?xi32>
  return %qr, %kr, %vr, %xr, %yr : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>, tensor<?x32xf32>, tensor<?x32xf32>
}
