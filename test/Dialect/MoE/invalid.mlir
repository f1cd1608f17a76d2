// RUN: moe-opt %s --split-input-file --verify-diagnostics

// One case per verifier rule of the moe dialect (ops and types).

//===----------------------------------------------------------------------===//
// moe.weight
//===----------------------------------------------------------------------===//

func.func @weight_empty_name() {
  // expected-error @below {{'moe.weight' op weight name must not be empty}}
  %0 = moe.weight "" : tensor<4xf32>
  return
}

// -----

func.func @weight_rank0() {
  // expected-error @below {{'moe.weight' op weight 'w' must have rank 1 or 2, got 'tensor<f32>'}}
  %0 = moe.weight "w" : tensor<f32>
  return
}

// -----

func.func @weight_rank3() {
  // expected-error @below {{'moe.weight' op weight 'w' must have rank 1 or 2, got 'tensor<2x2x2xf32>'}}
  %0 = moe.weight "w" : tensor<2x2x2xf32>
  return
}

// -----

func.func @weight_huge_dim() {
  // expected-error @below {{'moe.weight' op weight 'w' has a dimension above 16777216 in 'tensor<16777217x4xf32>'}}
  %0 = moe.weight "w" : tensor<16777217x4xf32>
  return
}

// -----

func.func @weight_nul_name() {
  // expected-error @below {{'moe.weight' op weight name must not contain a NUL byte}}
  %0 = moe.weight "w\00x" : tensor<4xf32>
  return
}

// -----

func.func @weight_empty_dim() {
  // expected-error @below {{'moe.weight' op weight 'w' has an empty dimension in 'tensor<0x4xf32>'}}
  %0 = moe.weight "w" : tensor<0x4xf32>
  return
}

// -----

func.func @weight_dynamic() {
  // expected-error @below {{'moe.weight' op result #0 must be statically shaped tensor of 32-bit float or 16-bit float or bfloat16 type or block-quantised weight element values}}
  %0 = moe.weight "w" : tensor<?x4xf32>
  return
}

// -----

func.func @weight_int8() {
  // expected-error @below {{'moe.weight' op result #0 must be statically shaped tensor of 32-bit float or 16-bit float or bfloat16 type or block-quantised weight element values}}
  %0 = moe.weight "w" : tensor<4xi8>
  return
}

//===----------------------------------------------------------------------===//
// moe.embedding
//===----------------------------------------------------------------------===//

// -----

func.func @embedding_table_rank(%ids: tensor<?xi32>) {
  %t = moe.weight "t" : tensor<256xf32>
  // expected-error @below {{embedding table must be a rank-2 tensor, got 'tensor<256xf32>'}}
  %0 = moe.embedding %t[%ids] : tensor<256xf32>, tensor<?xi32>
  return
}

// -----

func.func @embedding_ids_rank(%ids: tensor<2x3xi32>) {
  %t = moe.weight "t" : tensor<256x64xf32>
  // expected-error @below {{token ids must be a rank-1 tensor, got 'tensor<2x3xi32>'}}
  %0 = moe.embedding %t[%ids] : tensor<256x64xf32>, tensor<2x3xi32>
  return
}

// -----

func.func @embedding_ids_i64(%ids: tensor<?xi64>) {
  %t = moe.weight "t" : tensor<256x64xf32>
  // expected-error @below {{'moe.embedding' op operand #1 must be 1D tensor of 32-bit signless integer values}}
  %0 = moe.embedding %t[%ids] : tensor<256x64xf32>, tensor<?xi64>
  return
}

//===----------------------------------------------------------------------===//
// moe.rms_norm
//===----------------------------------------------------------------------===//

// -----

func.func @rms_norm_weight_rank(%x: tensor<?x64xf32>) {
  %w = moe.weight "w" : tensor<1x64xf32>
  // expected-error @below {{'moe.rms_norm' op weight must be rank 1 [hidden], got 'tensor<1x64xf32>'}}
  %0 = moe.rms_norm %x, %w eps 1.0e-05 : tensor<?x64xf32>, tensor<1x64xf32>
  return
}

// -----

func.func @rms_norm_weight_size(%x: tensor<?x64xf32>) {
  %w = moe.weight "w" : tensor<32xf32>
  // expected-error @below {{'moe.rms_norm' op weight has 32 elements but the input has hidden size 64}}
  %0 = moe.rms_norm %x, %w eps 1.0e-05 : tensor<?x64xf32>, tensor<32xf32>
  return
}

// -----

func.func @rms_norm_eps_zero(%x: tensor<?x64xf32>) {
  %w = moe.weight "w" : tensor<64xf32>
  // expected-error @below {{'moe.rms_norm' op epsilon must be a positive finite number, got 0}}
  %0 = moe.rms_norm %x, %w eps 0.0 : tensor<?x64xf32>, tensor<64xf32>
  return
}

// -----

func.func @rms_norm_eps_inf(%x: tensor<?x64xf32>) {
  %w = moe.weight "w" : tensor<64xf32>
  // expected-error @below {{'moe.rms_norm' op epsilon must be a positive finite number, got INF}}
  %0 = moe.rms_norm %x, %w eps 0x7FF0000000000000 : tensor<?x64xf32>, tensor<64xf32>
  return
}

// -----

func.func @rms_norm_eps_f32_overflow(%x: tensor<?x64xf32>) {
  %w = moe.weight "w" : tensor<64xf32>
  // expected-error @below {{'moe.rms_norm' op epsilon 1.000000e+308 is not a positive finite f32 number}}
  %0 = moe.rms_norm %x, %w eps 1.0e+308 : tensor<?x64xf32>, tensor<64xf32>
  return
}

// -----

func.func @rms_norm_eps_f32_underflow(%x: tensor<?x64xf32>) {
  %w = moe.weight "w" : tensor<64xf32>
  // expected-error @below {{'moe.rms_norm' op epsilon 4.940656e-324 is not a positive finite f32 number}}
  %0 = moe.rms_norm %x, %w eps 4.9406564584124654E-324 : tensor<?x64xf32>, tensor<64xf32>
  return
}

// -----

func.func @rms_norm_input_rank(%x: tensor<64xf32>) {
  %w = moe.weight "w" : tensor<64xf32>
  // expected-error @below {{'moe.rms_norm' op operand #0 must be 2D tensor of 32-bit float values, but got 'tensor<64xf32>'}}
  %0 = moe.rms_norm %x, %w eps 1.0e-05 : tensor<64xf32>, tensor<64xf32>
  return
}

//===----------------------------------------------------------------------===//
// moe.linear
//===----------------------------------------------------------------------===//

// -----

func.func @linear_in_mismatch(%x: tensor<?x64xf32>) {
  %w = moe.weight "w" : tensor<128x32xf32>
  // expected-error @below {{'moe.linear' op weight 'tensor<128x32xf32>' is [out, in] with in = 32, but the input has 64 features}}
  %0 = moe.linear %x, %w : tensor<?x64xf32>, tensor<128x32xf32>
  return
}

// -----

func.func @linear_residual_type(%x: tensor<?x64xf32>, %r: tensor<?x32xf32>) {
  %w = moe.weight "w" : tensor<128x64xf32>
  // expected-error @below {{'moe.linear' op residual 'tensor<?x32xf32>' must have the result's type 'tensor<?x128xf32>'}}
  %0 = moe.linear %x, %w residual %r : tensor<?x64xf32>, tensor<128x64xf32>, tensor<?x32xf32>
  return
}

// -----

func.func @combine_residual_type(%y: tensor<?x64xf32>, %p: tensor<?xi32>, %w: tensor<?x2xf32>, %r: tensor<4x64xf32>) {
  // expected-error @below {{'moe.expert_combine' op residual 'tensor<4x64xf32>' must have the result's type 'tensor<?x64xf32>'}}
  %0 = moe.expert_combine %y[%p], %w residual %r : tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>, tensor<4x64xf32>
  return
}

// -----

func.func @fused_linear_one(%x: tensor<?x64xf32>) {
  %w = moe.weight "w" : tensor<32x64xf32>
  // expected-error @below {{'moe.fused_linear' op needs at least two weights, got 1}}
  %0 = moe.fused_linear %x weights [%w] : tensor<32x64xf32> : tensor<?x64xf32>
  return
}

// -----

func.func @fused_linear_in(%x: tensor<?x64xf32>) {
  %a = moe.weight "a" : tensor<32x64xf32>
  %b = moe.weight "b" : tensor<32x48xf32>
  // expected-error @below {{'moe.fused_linear' op weight 1 'tensor<32x48xf32>' is [out, in] with in = 48, but the input has 64 features}}
  %0:2 = moe.fused_linear %x weights [%a, %b] : (tensor<32x64xf32>, tensor<32x48xf32>) : tensor<?x64xf32>
  return
}

// -----

func.func @fused_linear_rope_index(%x: tensor<?x64xf32>, %pos: tensor<?xi32>) {
  %a = moe.weight "a" : tensor<32x64xf32>
  // expected-error @below {{'moe.fused_linear' op rope lists result 2; it needs increasing indices of the 2 results}}
  %0:2 = moe.fused_linear %x weights [%a, %a] : tensor<32x64xf32> rope [0, 2] at %pos head_dim 16 theta 1.0e+04 : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

func.func @fused_linear_rope_width(%x: tensor<?x64xf32>, %pos: tensor<?xi32>) {
  %a = moe.weight "a" : tensor<32x64xf32>
  %b = moe.weight "b" : tensor<24x64xf32>
  // expected-error @below {{'moe.fused_linear' op result 1 width 24 is not a multiple of head_dim 16}}
  %0:2 = moe.fused_linear %x weights [%a, %b] : (tensor<32x64xf32>, tensor<24x64xf32>) rope [0, 1] at %pos head_dim 16 theta 1.0e+04 : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

func.func @fused_linear_interleaved_alone(%x: tensor<?x64xf32>) {
  %a = moe.weight "a" : tensor<32x64xf32>
  // expected-error @below {{'moe.fused_linear' op interleaved needs rope}}
  %0:2 = moe.fused_linear %x weights [%a, %a] : tensor<32x64xf32> interleaved : tensor<?x64xf32>
  return
}

// -----

func.func @fused_linear_rope_odd(%x: tensor<?x64xf32>, %pos: tensor<?xi32>) {
  %a = moe.weight "a" : tensor<30x64xf32>
  // expected-error @below {{'moe.fused_linear' op head_dim must be even for rotate-half RoPE, got 15}}
  %0:2 = moe.fused_linear %x weights [%a, %a] : tensor<30x64xf32> rope [0] at %pos head_dim 15 theta 1.0e+04 : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

func.func @linear_weight_rank(%x: tensor<?x64xf32>) {
  %w = moe.weight "w" : tensor<64xf32>
  // expected-error @below {{linear weight must be a rank-2 tensor, got 'tensor<64xf32>'}}
  %0 = moe.linear %x, %w : tensor<?x64xf32>, tensor<64xf32>
  return
}

// -----

func.func @linear_input_rank(%x: tensor<2x3x64xf32>) {
  %w = moe.weight "w" : tensor<8x64xf32>
  // expected-error @below {{linear input must be a rank-2 tensor, got 'tensor<2x3x64xf32>'}}
  %0 = moe.linear %x, %w : tensor<2x3x64xf32>, tensor<8x64xf32>
  return
}

//===----------------------------------------------------------------------===//
// moe.rope
//===----------------------------------------------------------------------===//

// -----

func.func @rope_odd_head_dim(%x: tensor<?x60xf32>, %p: tensor<?xi32>) {
  // expected-error @below {{'moe.rope' op head_dim must be even for rotate-half RoPE, got 15}}
  %0 = moe.rope %x, %p head_dim 15 theta 1.0e+04 : tensor<?x60xf32>, tensor<?xi32>
  return
}

// -----

func.func @rope_width(%x: tensor<?x40xf32>, %p: tensor<?xi32>) {
  // expected-error @below {{'moe.rope' op input width 40 is not a multiple of head_dim 16}}
  %0 = moe.rope %x, %p head_dim 16 theta 1.0e+04 : tensor<?x40xf32>, tensor<?xi32>
  return
}

// -----

func.func @rope_positions(%x: tensor<3x64xf32>, %p: tensor<4xi32>) {
  // expected-error @below {{'moe.rope' op has 4 positions for 3 tokens}}
  %0 = moe.rope %x, %p head_dim 16 theta 1.0e+04 : tensor<3x64xf32>, tensor<4xi32>
  return
}

// -----

func.func @rope_scaling_factor(%x: tensor<?x64xf32>, %p: tensor<?xi32>) {
  // expected-error @below {{#moe.rope_scaling<linear> factor must be positive and finite, got 0}}
  %0 = moe.rope %x, %p head_dim 16 theta 1.0e+04 scaling <linear, factor = 0.0> : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

func.func @rope_scaling_tiny_factor(%x: tensor<?x64xf32>, %p: tensor<?xi32>) {
  // expected-error @below {{#moe.rope_scaling<linear> factor is so small that the angles overflow, got 1.000000e-308}}
  %0 = moe.rope %x, %p head_dim 16 theta 1.0e+04 scaling <linear, factor = 1.0e-308> : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

func.func @rope_scaling_negative_factor(%x: tensor<?x64xf32>, %p: tensor<?xi32>) {
  // expected-error @below {{#moe.rope_scaling<yarn> factor must be positive and finite, got -2}}
  %0 = moe.rope %x, %p head_dim 16 theta 1.0e+04 scaling <yarn, factor = -2.0, original_max_positions = 16, beta_fast = 32.0, beta_slow = 1.0, attention = 1.0> : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

func.func @rope_scaling_foreign(%x: tensor<?x64xf32>, %p: tensor<?xi32>) {
  // expected-error @below {{#moe.rope_scaling<linear> takes no beta_fast}}
  %0 = moe.rope %x, %p head_dim 16 theta 1.0e+04 scaling <linear, factor = 2.0, beta_fast = 32.0> : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

func.func @rope_scaling_foreign_truncate(%x: tensor<?x64xf32>, %p: tensor<?xi32>) {
  // expected-error @below {{#moe.rope_scaling<llama3> takes no truncate}}
  %0 = moe.rope %x, %p head_dim 16 theta 1.0e+04 scaling <llama3, factor = 8.0, original_max_positions = 64, low_freq_factor = 1.0, high_freq_factor = 4.0, truncate = true> : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

func.func @rope_scaling_dynamic_positions(%x: tensor<?x64xf32>, %p: tensor<?xi32>) {
  // expected-error @below {{#moe.rope_scaling<dynamic> max_positions must be an integer in [1, 2147483647], got 0}}
  %0 = moe.rope %x, %p head_dim 16 theta 1.0e+04 scaling <dynamic, factor = 2.0> : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

func.func @rope_scaling_yarn_positions(%x: tensor<?x64xf32>, %p: tensor<?xi32>) {
  // expected-error @below {{#moe.rope_scaling<yarn> original_max_positions must be an integer in [1, 2147483647], got -4}}
  %0 = moe.rope %x, %p head_dim 16 theta 1.0e+04 scaling <yarn, factor = 2.0, original_max_positions = -4, beta_fast = 32.0, beta_slow = 1.0, attention = 1.0> : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

func.func @rope_scaling_yarn_betas(%x: tensor<?x64xf32>, %p: tensor<?xi32>) {
  // expected-error @below {{#moe.rope_scaling<yarn> needs beta_fast >= beta_slow > 0 (finite), got 1.000000e+00 and 3.200000e+01}}
  %0 = moe.rope %x, %p head_dim 16 theta 1.0e+04 scaling <yarn, factor = 2.0, original_max_positions = 16, beta_fast = 1.0, beta_slow = 32.0, attention = 1.0> : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

func.func @rope_scaling_yarn_attention(%x: tensor<?x64xf32>, %p: tensor<?xi32>) {
  // expected-error @below {{#moe.rope_scaling<yarn> attention must be positive and finite, got 0}}
  %0 = moe.rope %x, %p head_dim 16 theta 1.0e+04 scaling <yarn, factor = 2.0, original_max_positions = 16, beta_fast = 32.0, beta_slow = 1.0> : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

func.func @rope_scaling_llama3_factors(%x: tensor<?x64xf32>, %p: tensor<?xi32>) {
  // expected-error @below {{#moe.rope_scaling<llama3> needs 0 < low_freq_factor < high_freq_factor (finite), got 4.000000e+00 and 1.000000e+00}}
  %0 = moe.rope %x, %p head_dim 16 theta 1.0e+04 scaling <llama3, factor = 8.0, original_max_positions = 64, low_freq_factor = 4.0, high_freq_factor = 1.0> : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

func.func @rope_scaling_unknown_type(%x: tensor<?x64xf32>, %p: tensor<?xi32>) {
  // expected-error @below {{expected ::mlir::moe::RopeType to be one of: linear, dynamic, yarn, llama3}}
  // expected-error @below {{failed to parse MoE_RopeScalingAttr parameter 'type' which is to be a `::mlir::moe::RopeType`}}
  %0 = moe.rope %x, %p head_dim 16 theta 1.0e+04 scaling <longrope, factor = 2.0> : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

func.func @rope_scaling_dynamic_head_dim(%x: tensor<?x64xf32>, %p: tensor<?xi32>) {
  // expected-error @below {{'moe.rope' op dynamic RoPE scaling needs head_dim > 2, got 2}}
  %0 = moe.rope %x, %p head_dim 2 theta 1.0e+04 scaling <dynamic, factor = 2.0, max_positions = 8> : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

func.func @rope_scaling_yarn_theta(%x: tensor<?x64xf32>, %p: tensor<?xi32>) {
  // expected-error @below {{'moe.rope' op yarn RoPE scaling needs theta != 1}}
  %0 = moe.rope %x, %p head_dim 16 theta 1.0 scaling <yarn, factor = 2.0, original_max_positions = 16, beta_fast = 32.0, beta_slow = 1.0, attention = 1.0> : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

func.func @fused_linear_scaling_without_rope(%x: tensor<?x64xf32>) {
  %a = moe.weight "a" : tensor<32x64xf32>
  // expected-error @below {{'moe.fused_linear' op scaling needs rope}}
  %0:2 = moe.fused_linear %x weights [%a, %a] : tensor<32x64xf32> scaling <linear, factor = 2.0> : tensor<?x64xf32>
  return
}

// -----

func.func @rope_theta(%x: tensor<?x64xf32>, %p: tensor<?xi32>) {
  // expected-error @below {{'moe.rope' op theta must be a positive finite number, got -1}}
  %0 = moe.rope %x, %p head_dim 16 theta -1.0 : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

func.func @rope_head_dim_zero(%x: tensor<?x64xf32>, %p: tensor<?xi32>) {
  // expected-error @below {{'moe.rope' op attribute 'head_dim' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %0 = moe.rope %x, %p head_dim 0 theta 1.0e+04 : tensor<?x64xf32>, tensor<?xi32>
  return
}

//===----------------------------------------------------------------------===//
// moe.attention and !moe.kv_cache
//===----------------------------------------------------------------------===//

// -----

func.func @attention_gqa(%q: tensor<?x48xf32>, %kv: tensor<?x32xf32>, %c: !moe.kv_cache<2x?x16xf32>) {
  // expected-error @below {{'moe.attention' op num_heads 3 is not a multiple of the cache's kv_heads 2}}
  %0, %1 = moe.attention %q, %kv, %kv, %c heads 3
      : tensor<?x48xf32>, tensor<?x32xf32>, tensor<?x32xf32>, !moe.kv_cache<2x?x16xf32>
  return
}

// -----

func.func @attention_query_width(%q: tensor<?x60xf32>, %kv: tensor<?x32xf32>, %c: !moe.kv_cache<2x?x16xf32>) {
  // expected-error @below {{'moe.attention' op query width 60 != num_heads * head_dim = 4 * 16}}
  %0, %1 = moe.attention %q, %kv, %kv, %c heads 4
      : tensor<?x60xf32>, tensor<?x32xf32>, tensor<?x32xf32>, !moe.kv_cache<2x?x16xf32>
  return
}

// -----

func.func @attention_key_width(%q: tensor<?x64xf32>, %k: tensor<?x64xf32>, %v: tensor<?x32xf32>, %c: !moe.kv_cache<2x?x16xf32>) {
  // expected-error @below {{'moe.attention' op key width 64 != kv_heads * head_dim = 2 * 16}}
  %0, %1 = moe.attention %q, %k, %v, %c heads 4
      : tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x32xf32>, !moe.kv_cache<2x?x16xf32>
  return
}

// -----

func.func @attention_value_width(%q: tensor<?x64xf32>, %k: tensor<?x32xf32>, %v: tensor<?x16xf32>, %c: !moe.kv_cache<2x?x16xf32>) {
  // expected-error @below {{'moe.attention' op value width 16 != kv_heads * head_dim = 2 * 16}}
  %0, %1 = moe.attention %q, %k, %v, %c heads 4
      : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x16xf32>, !moe.kv_cache<2x?x16xf32>
  return
}

// -----

func.func @attention_tokens(%q: tensor<3x64xf32>, %k: tensor<2x32xf32>, %v: tensor<3x32xf32>, %c: !moe.kv_cache<2x?x16xf32>) {
  // expected-error @below {{'moe.attention' op key has 2 tokens but the query has 3}}
  %0, %1 = moe.attention %q, %k, %v, %c heads 4
      : tensor<3x64xf32>, tensor<2x32xf32>, tensor<3x32xf32>, !moe.kv_cache<2x?x16xf32>
  return
}

// -----

func.func @attention_scale(%q: tensor<?x64xf32>, %kv: tensor<?x32xf32>, %c: !moe.kv_cache<2x?x16xf32>) {
  // expected-error @below {{'moe.attention' op scale must be a positive finite number, got 0}}
  %0, %1 = moe.attention %q, %kv, %kv, %c heads 4 {scale = 0.0 : f64}
      : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>, !moe.kv_cache<2x?x16xf32>
  return
}

// -----

func.func @attention_window(%q: tensor<?x64xf32>, %kv: tensor<?x32xf32>, %c: !moe.kv_cache<2x?x16xf32>) {
  // expected-error @below {{'moe.attention' op attribute 'sliding_window' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %0, %1 = moe.attention %q, %kv, %kv, %c heads 4 {sliding_window = 0 : i64}
      : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>, !moe.kv_cache<2x?x16xf32>
  return
}

// -----

func.func @attention_heads_zero(%q: tensor<?x64xf32>, %kv: tensor<?x32xf32>, %c: !moe.kv_cache<2x?x16xf32>) {
  // expected-error @below {{'moe.attention' op attribute 'num_heads' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %0, %1 = moe.attention %q, %kv, %kv, %c heads 0
      : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>, !moe.kv_cache<2x?x16xf32>
  return
}

// -----

// expected-error @below {{kv_cache kv_heads must be positive, got 0}}
func.func @kv_cache_heads(%c: !moe.kv_cache<0x?x16xf32>) {
  return
}

// -----

// expected-error @below {{kv_cache head_dim must be positive, got 0}}
func.func @kv_cache_head_dim(%c: !moe.kv_cache<2x?x0xf32>) {
  return
}

// -----

// expected-error @below {{kv_cache capacity must be positive or '?', got 0}}
func.func @kv_cache_capacity(%c: !moe.kv_cache<2x0x16xf32>) {
  return
}

// -----

// expected-error @below {{kv_cache kv_heads * head_dim must be at most 16777216, got 8192 x 4096}}
func.func @kv_cache_width(%c: !moe.kv_cache<8192x?x4096xf32>) {
  return
}

// -----

// expected-error @below {{kv_cache capacity must be at most 2147483647, got 2147483648}}
func.func @kv_cache_huge_capacity(%c: !moe.kv_cache<2x2147483648x16xf32>) {
  return
}

// -----

// expected-error @below {{kv_cache element type must be f32, f16 or bf16, got 'i8'}}
func.func @kv_cache_element(%c: !moe.kv_cache<2x?x16xi8>) {
  return
}

// -----

// expected-error @below {{expected kv_heads x capacity x head_dim x element-type, got 2 dimension(s)}}
func.func @kv_cache_dims(%c: !moe.kv_cache<2x16xf32>) {
  return
}

//===----------------------------------------------------------------------===//
// moe.add
//===----------------------------------------------------------------------===//

// -----

func.func @add_types(%a: tensor<?x64xf32>, %b: tensor<?x32xf32>) {
  // expected-error @below {{'moe.add' op requires the same type for all operands and results}}
  %0 = "moe.add"(%a, %b) : (tensor<?x64xf32>, tensor<?x32xf32>) -> tensor<?x64xf32>
  return
}

//===----------------------------------------------------------------------===//
// moe.router
//===----------------------------------------------------------------------===//

// -----

func.func @router_k_above_e(%l: tensor<?x4xf32>) {
  // expected-error @below {{'moe.router' op k = 5 exceeds the number of experts 4}}
  %w, %i = moe.router %l top 5 softmax renormalize : tensor<?x4xf32>
  return
}

// -----

func.func @router_k_zero(%l: tensor<?x4xf32>) {
  // expected-error @below {{'moe.router' op attribute 'k' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %w, %i = moe.router %l top 0 softmax : tensor<?x4xf32>
  return
}

// -----

func.func @router_dynamic_experts(%l: tensor<?x?xf32>) {
  // expected-error @below {{'moe.router' op the number of experts (logits dim 1) must be static}}
  %w, %i = moe.router %l top 2 softmax : tensor<?x?xf32>
  return
}

// -----

func.func @router_logits_rank(%l: tensor<4xf32>) {
  // expected-error @below {{router logits must be a rank-2 tensor, got 'tensor<4xf32>'}}
  %w, %i = moe.router %l top 2 softmax : tensor<4xf32>
  return
}

// -----

func.func @router_scoring(%l: tensor<?x4xf32>) {
  // expected-error @below {{custom op 'moe.router' expected string or keyword containing one of the following enum values for attribute 'scoring' [softmax, sigmoid]}}
  %w, %i = moe.router %l top 2 relu : tensor<?x4xf32>
  return
}

//===----------------------------------------------------------------------===//
// moe.experts
//===----------------------------------------------------------------------===//

// -----

func.func @experts_none(%b: tensor<?x64xf32>, %w: tensor<?x1xf32>, %i: tensor<?x1xi32>) {
  // expected-error @below {{'moe.experts' op needs at least one expert}}
  %y = moe.experts %b, %w, %i
      gate [] : tensor<96x64xf32> up [] : tensor<96x64xf32> down [] : tensor<64x96xf32>
      : tensor<?x64xf32>, tensor<?x1xf32>, tensor<?x1xi32>
  return
}

// -----

func.func @experts_counts(%b: tensor<?x64xf32>, %w: tensor<?x1xf32>, %i: tensor<?x1xi32>) {
  %g = moe.weight "g" : tensor<96x64xf32>
  %d = moe.weight "d" : tensor<64x96xf32>
  // expected-error @below {{'moe.experts' op has 2 gate, 1 up and 2 down weights; every expert needs one of each}}
  %y = moe.experts %b, %w, %i
      gate [%g, %g] : tensor<96x64xf32> up [%g] : tensor<96x64xf32> down [%d, %d] : tensor<64x96xf32>
      : tensor<?x64xf32>, tensor<?x1xf32>, tensor<?x1xi32>
  return
}

// -----

func.func @experts_mixed_types(%b: tensor<?x64xf32>, %w: tensor<?x1xf32>, %i: tensor<?x1xi32>) {
  %g = moe.weight "g" : tensor<96x64xf32>
  %g16 = moe.weight "g16" : tensor<96x64xf16>
  %d = moe.weight "d" : tensor<64x96xf32>
  // expected-error @below {{'moe.experts' op all gate weights must have one type, got 'tensor<96x64xf32>' and 'tensor<96x64xf16>'}}
  %y = "moe.experts"(%b, %w, %i, %g, %g16, %g, %g, %d, %d) {operandSegmentSizes = array<i32: 1, 1, 1, 2, 2, 2>}
      : (tensor<?x64xf32>, tensor<?x1xf32>, tensor<?x1xi32>, tensor<96x64xf32>, tensor<96x64xf16>,
         tensor<96x64xf32>, tensor<96x64xf32>, tensor<64x96xf32>, tensor<64x96xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @experts_weight_rank(%b: tensor<?x64xf32>, %w: tensor<?x1xf32>, %i: tensor<?x1xi32>) {
  %g = moe.weight "g" : tensor<96x64xf32>
  %d = moe.weight "d" : tensor<6144xf32>
  // expected-error @below {{'moe.experts' op down weights must be rank 2, got 'tensor<6144xf32>'}}
  %y = moe.experts %b, %w, %i
      gate [%g] : tensor<96x64xf32> up [%g] : tensor<96x64xf32> down [%d] : tensor<6144xf32>
      : tensor<?x64xf32>, tensor<?x1xf32>, tensor<?x1xi32>
  return
}

// -----

func.func @experts_gate_hidden(%b: tensor<?x64xf32>, %w: tensor<?x1xf32>, %i: tensor<?x1xi32>) {
  %g = moe.weight "g" : tensor<96x32xf32>
  %d = moe.weight "d" : tensor<64x96xf32>
  // expected-error @below {{'moe.experts' op gate weights are [96, 32] but [intermediate, hidden] needs hidden = 64}}
  %y = moe.experts %b, %w, %i
      gate [%g] : tensor<96x32xf32> up [%g] : tensor<96x32xf32> down [%d] : tensor<64x96xf32>
      : tensor<?x64xf32>, tensor<?x1xf32>, tensor<?x1xi32>
  return
}

// -----

func.func @experts_up_shape(%b: tensor<?x64xf32>, %w: tensor<?x1xf32>, %i: tensor<?x1xi32>) {
  %g = moe.weight "g" : tensor<96x64xf32>
  %u = moe.weight "u" : tensor<80x64xf32>
  %d = moe.weight "d" : tensor<64x96xf32>
  // expected-error @below {{'moe.experts' op up weights are [80, 64], expected [96, 64] like the gate weights}}
  %y = moe.experts %b, %w, %i
      gate [%g] : tensor<96x64xf32> up [%u] : tensor<80x64xf32> down [%d] : tensor<64x96xf32>
      : tensor<?x64xf32>, tensor<?x1xf32>, tensor<?x1xi32>
  return
}

// -----

func.func @experts_down_shape(%b: tensor<?x64xf32>, %w: tensor<?x1xf32>, %i: tensor<?x1xi32>) {
  %g = moe.weight "g" : tensor<96x64xf32>
  // expected-error @below {{'moe.experts' op down weights are [96, 64], expected [hidden, intermediate] = [64, 96]}}
  %y = moe.experts %b, %w, %i
      gate [%g] : tensor<96x64xf32> up [%g] : tensor<96x64xf32> down [%g] : tensor<96x64xf32>
      : tensor<?x64xf32>, tensor<?x1xf32>, tensor<?x1xi32>
  return
}

// -----

func.func @experts_tokens(%b: tensor<3x64xf32>, %w: tensor<4x1xf32>, %i: tensor<4x1xi32>) {
  %g = moe.weight "g" : tensor<96x64xf32>
  %d = moe.weight "d" : tensor<64x96xf32>
  // expected-error @below {{'moe.experts' op routing weights 'tensor<4x1xf32>' and indices 'tensor<4x1xi32>' must have one row per token of the input 'tensor<3x64xf32>'}}
  %y = moe.experts %b, %w, %i
      gate [%g] : tensor<96x64xf32> up [%g] : tensor<96x64xf32> down [%d] : tensor<64x96xf32>
      : tensor<3x64xf32>, tensor<4x1xf32>, tensor<4x1xi32>
  return
}

// -----

func.func @experts_k_mismatch(%b: tensor<?x64xf32>, %w: tensor<?x2xf32>, %i: tensor<?x1xi32>) {
  %g = moe.weight "g" : tensor<96x64xf32>
  %d = moe.weight "d" : tensor<64x96xf32>
  // expected-error @below {{'moe.experts' op routing weights choose 2 experts per token but the indices choose 1}}
  %y = moe.experts %b, %w, %i
      gate [%g, %g] : tensor<96x64xf32> up [%g, %g] : tensor<96x64xf32> down [%d, %d] : tensor<64x96xf32>
      : tensor<?x64xf32>, tensor<?x2xf32>, tensor<?x1xi32>
  return
}

// -----

func.func @experts_k_above_e(%b: tensor<?x64xf32>, %w: tensor<?x2xf32>, %i: tensor<?x2xi32>) {
  %g = moe.weight "g" : tensor<96x64xf32>
  %d = moe.weight "d" : tensor<64x96xf32>
  // expected-error @below {{'moe.experts' op routes each token to 2 experts but the bank has only 1}}
  %y = moe.experts %b, %w, %i
      gate [%g] : tensor<96x64xf32> up [%g] : tensor<96x64xf32> down [%d] : tensor<64x96xf32>
      : tensor<?x64xf32>, tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @experts_router_e(%b: tensor<?x64xf32>, %l: tensor<?x3xf32>) {
  %w, %i = moe.router %l top 1 softmax : tensor<?x3xf32>
  %g = moe.weight "g" : tensor<96x64xf32>
  %d = moe.weight "d" : tensor<64x96xf32>
  // expected-error @below {{'moe.experts' op router chooses among 3 experts but the bank has 2}}
  %y = moe.experts %b, %w, %i
      gate [%g, %g] : tensor<96x64xf32> up [%g, %g] : tensor<96x64xf32> down [%d, %d] : tensor<64x96xf32>
      : tensor<?x64xf32>, tensor<?x1xf32>, tensor<?x1xi32>
  return
}

// -----

func.func @experts_two_routers(%b: tensor<?x64xf32>, %l: tensor<?x2xf32>) {
  %w, %i = moe.router %l top 1 softmax : tensor<?x2xf32>
  %w2, %i2 = moe.router %l top 1 sigmoid : tensor<?x2xf32>
  %g = moe.weight "g" : tensor<96x64xf32>
  %d = moe.weight "d" : tensor<64x96xf32>
  // expected-error @below {{'moe.experts' op weights and indices must come from the same router}}
  %y = moe.experts %b, %w2, %i
      gate [%g, %g] : tensor<96x64xf32> up [%g, %g] : tensor<96x64xf32> down [%d, %d] : tensor<64x96xf32>
      : tensor<?x64xf32>, tensor<?x1xf32>, tensor<?x1xi32>
  return
}

//===----------------------------------------------------------------------===//
// moe.weight_source and the weight manifest (moe.weight_dir)
//===----------------------------------------------------------------------===//

// -----

// expected-error @below {{'moe.weight_source' op weight name must not be empty}}
moe.weight_source "" in "model.safetensors" at 0 : tensor<4xf32>

// -----

// expected-error @below {{'moe.weight_source' op file of weight 'w' is empty}}
moe.weight_source "w" in "" at 0 : tensor<4xf32>

// -----

// expected-error @below {{'moe.weight_source' op attribute 'offset' failed to satisfy constraint: 64-bit signless integer attribute whose value is non-negative}}
moe.weight_source "w" in "model.safetensors" at -8 : tensor<4xf32>

// -----

// expected-error @below {{'moe.weight_source' op offset 6 of weight 'w' is not a multiple of its element size (4 bytes)}}
moe.weight_source "w" in "model.safetensors" at 6 : tensor<4xf32>

// -----

// expected-error @below {{'moe.weight_source' op weight 'w' ends beyond 2^63 bytes}}
moe.weight_source "w" in "model.safetensors" at 9223372036854775800 : tensor<4xf32>

// -----

// expected-error @below {{'moe.weight_source' op file of weight 'w' must be a plain file name in moe.weight_dir, got '../etc/passwd'}}
moe.weight_source "w" in "../etc/passwd" at 0 : tensor<4xf32>

// -----

// expected-error @below {{'moe.weight_source' op file of weight 'w' must be a plain file name in moe.weight_dir, got '..'}}
moe.weight_source "w" in ".." at 0 : tensor<4xf32>

// -----

// expected-error @below {{'moe.weight_source' op file of weight 'w' must be a plain file name in moe.weight_dir, got 'a\00b'}}
moe.weight_source "w" in "a\00b" at 0 : tensor<4xf32>

// -----

// expected-error @below {{'moe.weight_source' op weight 'w' must have rank 1 or 2, got 'tensor<2x2x2xf32>'}}
moe.weight_source "w" in "model.safetensors" at 0 : tensor<2x2x2xf32>

// -----

// expected-error @below {{'moe.weight_source' op attribute 'type' failed to satisfy constraint: type attribute of statically shaped tensor of 32-bit float or 16-bit float or bfloat16 type or block-quantised weight element values}}
moe.weight_source "w" in "model.safetensors" at 0 : tensor<?x4xf32>

// -----

func.func @source_in_func() {
  // expected-error @below {{'moe.weight_source' op expects parent op 'builtin.module'}}
  "moe.weight_source"() {name = "w", file = "f", offset = 0 : i64, type = tensor<4xf32>} : () -> ()
  return
}

// -----

module attributes {moe.weight_dir = "/m"} {
  // expected-note @below {{first source here}}
  moe.weight_source "w" in "a.safetensors" at 0 : tensor<4xf32>
  // expected-error @below {{'moe.weight_source' op duplicate source for weight 'w'}}
  moe.weight_source "w" in "b.safetensors" at 0 : tensor<4xf32>
}

// -----

// expected-error @below {{'moe.weight_dir' must be an absolute path, got "bin"}}
module attributes {moe.weight_dir = "bin"} {
}

// -----

module attributes {moe.weight_dir = "/m"} {
  // expected-error @below {{'moe.weight_source' op weight 'b' at bytes [8, 24) overlaps weight 'a' at [0, 16) of a.safetensors}}
  moe.weight_source "b" in "a.safetensors" at 8 : tensor<4xf32>
  moe.weight_source "a" in "a.safetensors" at 0 : tensor<4xf32>
  moe.weight_source "c" in "b.safetensors" at 8 : tensor<4xf32>
}

// -----

// #moe.model: every size is bounded as the op verifiers bound shapes.
// expected-error @below {{#moe.model vocab_size must be an integer in [1, 16777216], got 0}}
module attributes {moe.model = #moe.model<architecture = "mixtral", vocab_size = 0, hidden_size = 64, intermediate_size = 128, num_layers = 2, num_heads = 4, num_kv_heads = 2, head_dim = 16, num_experts = 4, top_k = 2, max_positions = 512>} {
}

// -----

// expected-error @below {{#moe.model num_layers must be an integer in [1, 16777216], got -1}}
module attributes {moe.model = #moe.model<architecture = "mixtral", vocab_size = 256, hidden_size = 64, intermediate_size = 128, num_layers = -1, num_heads = 4, num_kv_heads = 2, head_dim = 16, num_experts = 4, top_k = 2, max_positions = 512>} {
}

// -----

// expected-error @below {{#moe.model hidden_size must be an integer in [1, 16777216], got 16777217}}
module attributes {moe.model = #moe.model<architecture = "mixtral", vocab_size = 256, hidden_size = 16777217, intermediate_size = 128, num_layers = 2, num_heads = 4, num_kv_heads = 2, head_dim = 16, num_experts = 4, top_k = 2, max_positions = 512>} {
}

// -----

// Positions are int32 at run time.
// expected-error @below {{#moe.model max_positions must be an integer in [1, 2147483647], got 4294967296}}
module attributes {moe.model = #moe.model<architecture = "mixtral", vocab_size = 256, hidden_size = 64, intermediate_size = 128, num_layers = 2, num_heads = 4, num_kv_heads = 2, head_dim = 16, num_experts = 4, top_k = 2, max_positions = 4294967296>} {
}

// -----

// expected-error @below {{#moe.model architecture must not be empty}}
module attributes {moe.model = #moe.model<architecture = "", vocab_size = 256, hidden_size = 64, intermediate_size = 128, num_layers = 2, num_heads = 4, num_kv_heads = 2, head_dim = 16, num_experts = 4, top_k = 2, max_positions = 512>} {
}

// -----

// expected-error @below {{#moe.model num_heads (4) must be a multiple of num_kv_heads (3)}}
module attributes {moe.model = #moe.model<architecture = "mixtral", vocab_size = 256, hidden_size = 64, intermediate_size = 128, num_layers = 2, num_heads = 4, num_kv_heads = 3, head_dim = 16, num_experts = 4, top_k = 2, max_positions = 512>} {
}

// -----

// expected-error @below {{#moe.model top_k (5) exceeds num_experts (4)}}
module attributes {moe.model = #moe.model<architecture = "mixtral", vocab_size = 256, hidden_size = 64, intermediate_size = 128, num_layers = 2, num_heads = 4, num_kv_heads = 2, head_dim = 16, num_experts = 4, top_k = 5, max_positions = 512>} {
}

// -----

// Every field is required; the upstream struct parser reports a missing one
// as a missing comma, an unknown or repeated one by name.
// expected-error @below {{expected ','}}
module attributes {moe.model = #moe.model<architecture = "mixtral", vocab_size = 256, hidden_size = 64, intermediate_size = 128, num_layers = 2, num_heads = 4, num_kv_heads = 2, head_dim = 16, num_experts = 4, top_k = 2>} {
}

// -----

// expected-error @below {{duplicate or unknown struct parameter name: num_layer}}
module attributes {moe.model = #moe.model<architecture = "mixtral", vocab_size = 256, hidden_size = 64, intermediate_size = 128, num_layer = 2, num_heads = 4, num_kv_heads = 2, head_dim = 16, num_experts = 4, top_k = 2, max_positions = 512>} {
}

// -----

// The untyped dictionary moe.model once was is no longer accepted.
// expected-error @below {{'moe.model' must be a #moe.model attribute, got {vocab_size = 256 : i64}}}
module attributes {moe.model = {vocab_size = 256 : i64}} {
}

// -----

func.func @model_attr_on_func() attributes {moe.model = #moe.model<architecture = "mixtral", vocab_size = 256, hidden_size = 64, intermediate_size = 128, num_layers = 2, num_heads = 4, num_kv_heads = 2, head_dim = 16, num_experts = 4, top_k = 2, max_positions = 512>} {
  // expected-error @above {{'moe.model' belongs on a builtin.module}}
  return
}

// -----

module attributes {moe.weight_dir = "/m"} {
  func.func @no_source() {
    // expected-error @below {{'moe.weight' op weight 'w' has no moe.weight_source in the module}}
    %0 = moe.weight "w" : tensor<4xf32>
    return
  }
}

// -----

module attributes {moe.weight_dir = "/m"} {
  moe.weight_source "w" in "a.safetensors" at 0 : tensor<4xbf16>
  func.func @source_type() {
    // expected-error @below {{'moe.weight' op type 'tensor<4xf32>' differs from its moe.weight_source type 'tensor<4xbf16>'}}
    %0 = moe.weight "w" : tensor<4xf32>
    return
  }
}

// -----

// expected-error @below {{'moe.weight_dir' must be a string, got 3 : i64}}
module attributes {moe.weight_dir = 3} {
}

// -----

// expected-error @below {{'moe.weight_dir' belongs on a builtin.module}}
func.func @weight_dir_on_func() attributes {moe.weight_dir = "/m"} {
  return
}

//===----------------------------------------------------------------------===//
// moe.fused_router
//===----------------------------------------------------------------------===//

// -----

func.func @fused_router_k(%b: tensor<?x64xf32>) {
  %g = moe.weight "g" : tensor<4x64xf32>
  // expected-error @below {{'moe.fused_router' op k = 5 exceeds the number of experts 4}}
  %w, %i = moe.fused_router %b, %g top 5 softmax : tensor<?x64xf32>, tensor<4x64xf32>
  return
}

// -----

func.func @fused_router_hidden(%b: tensor<?x64xf32>) {
  %g = moe.weight "g" : tensor<4x32xf32>
  // expected-error @below {{'moe.fused_router' op gate weight 'tensor<4x32xf32>' does not match the input's hidden size 64}}
  %w, %i = moe.fused_router %b, %g top 2 softmax : tensor<?x64xf32>, tensor<4x32xf32>
  return
}

// -----

func.func @fused_router_rank(%b: tensor<?x64xf32>) {
  %g = moe.weight "g" : tensor<256xf32>
  // expected-error @below {{'moe.fused_router' op gate weight must be rank 2 [experts, hidden], got 'tensor<256xf32>'}}
  %w, %i = moe.fused_router %b, %g top 2 softmax : tensor<?x64xf32>, tensor<256xf32>
  return
}

// -----

func.func @fused_router_experts(%b: tensor<?x64xf32>) {
  %g = moe.weight "g" : tensor<3x64xf32>
  %w, %i = moe.fused_router %b, %g top 1 sigmoid : tensor<?x64xf32>, tensor<3x64xf32>
  %e = moe.weight "e" : tensor<96x64xf32>
  %d = moe.weight "d" : tensor<64x96xf32>
  // expected-error @below {{'moe.experts' op router chooses among 3 experts but the bank has 2}}
  %y = moe.experts %b, %w, %i
      gate [%e, %e] : tensor<96x64xf32> up [%e, %e] : tensor<96x64xf32> down [%d, %d] : tensor<64x96xf32>
      : tensor<?x64xf32>, tensor<?x1xf32>, tensor<?x1xi32>
  return
}

//===----------------------------------------------------------------------===//
// The fused expert path
//===----------------------------------------------------------------------===//

// -----

func.func @permute_k(%i: tensor<?x3xi32>) {
  // expected-error @below {{'moe.expert_permute' op each token chooses 3 experts but there are only 2}}
  %p, %o = moe.expert_permute %i experts 2 : tensor<?x3xi32>
  return
}

// -----

func.func @grouped_count(%x: tensor<?x64xf32>, %p: tensor<?xi32>, %o: tensor<3xi32>) {
  %w = moe.weight "w" : tensor<96x64xf32>
  // expected-error @below {{'moe.grouped_matmul' op has 3 weights for 2 experts of 2 parts}}
  %y = moe.grouped_matmul %x[%p] gather, %o top 2 weights [%w, %w, %w] : tensor<96x64xf32> parts 2 : tensor<?x64xf32>, tensor<?xi32>, tensor<3xi32>
  return
}

// -----

func.func @grouped_in(%x: tensor<?x32xf32>, %p: tensor<?xi32>, %o: tensor<3xi32>) {
  %w = moe.weight "w" : tensor<96x64xf32>
  // expected-error @below {{'moe.grouped_matmul' op expert weight 'tensor<96x64xf32>' does not take the input's 32 features}}
  %y = moe.grouped_matmul %x[%p] gather, %o top 2 weights [%w, %w] : tensor<96x64xf32> parts 1 : tensor<?x32xf32>, tensor<?xi32>, tensor<3xi32>
  return
}

// -----

func.func @grouped_parts(%x: tensor<?x64xf32>, %p: tensor<?xi32>, %o: tensor<3xi32>) {
  %a = moe.weight "a" : tensor<96x64xf32>
  %b = moe.weight "b" : tensor<80x64xf32>
  // expected-error @below {{'moe.grouped_matmul' op part 0 of expert 1 differs in type from expert 0's}}
  %y = moe.grouped_matmul %x[%p] gather, %o top 2 weights [%a, %b] : (tensor<96x64xf32>, tensor<80x64xf32>) parts 1 : tensor<?x64xf32>, tensor<?xi32>, tensor<3xi32>
  return
}

// -----

func.func @grouped_silu_one_part(%x: tensor<?x64xf32>, %p: tensor<?xi32>, %o: tensor<3xi32>) {
  %w = moe.weight "w" : tensor<96x64xf32>
  // expected-error @below {{'moe.grouped_matmul' op silu_mul needs two parts of equal width (gate, up)}}
  %y = moe.grouped_matmul %x[%p] gather, %o top 2 weights [%w, %w] : tensor<96x64xf32> parts 1 silu_mul : tensor<?x64xf32>, tensor<?xi32>, tensor<3xi32>
  return
}

// -----

func.func @grouped_silu_widths(%x: tensor<?x64xf32>, %p: tensor<?xi32>, %o: tensor<3xi32>) {
  %a = moe.weight "a" : tensor<96x64xf32>
  %b = moe.weight "b" : tensor<80x64xf32>
  // expected-error @below {{'moe.grouped_matmul' op silu_mul needs two parts of equal width (gate, up)}}
  %y = moe.grouped_matmul %x[%p] gather, %o top 2 weights [%a, %b, %a, %b] : (tensor<96x64xf32>, tensor<80x64xf32>, tensor<96x64xf32>, tensor<80x64xf32>) parts 2 silu_mul : tensor<?x64xf32>, tensor<?xi32>, tensor<3xi32>
  return
}

// -----

func.func @grouped_offsets(%x: tensor<?x64xf32>, %p: tensor<?xi32>, %o: tensor<1xi32>) {
  %a = moe.weight "a" : tensor<96x64xf32>
  // expected-error @below {{'moe.grouped_matmul' op offsets must have num_experts + 1 >= 2 entries}}
  %y = moe.grouped_matmul %x[%p] gather, %o top 2 weights [%a] : tensor<96x64xf32> parts 1 : tensor<?x64xf32>, tensor<?xi32>, tensor<1xi32>
  return
}

// -----

func.func @silu_odd(%x: tensor<?x65xf32>) {
  // expected-error @below {{'moe.silu_mul' op input width 65 is odd; it must be gate and up side by side}}
  %y = moe.silu_mul %x : tensor<?x65xf32>
  return
}

// -----

func.func @placement_count(%x: tensor<?x64xf32>, %w: tensor<64xf32>) {
  // expected-error @below {{'moe.placement' has 2 offsets for 1 tensor results}}
  %a = moe.rms_norm %x, %w eps 1.0e-05 {moe.placement = #moe.placement<results = [0, 64]>} : tensor<?x64xf32>, tensor<64xf32>
  return
}

// -----

func.func @placement_negative(%x: tensor<?x64xf32>, %w: tensor<64xf32>) {
  // expected-error @below {{#moe.placement offsets are in [0, 68719476736]}}
  %a = moe.rms_norm %x, %w eps 1.0e-05 {moe.placement = #moe.placement<results = [-1]>} : tensor<?x64xf32>, tensor<64xf32>
  return
}

// -----

func.func @placement_type(%x: tensor<?x64xf32>, %w: tensor<64xf32>) {
  // expected-error @below {{'moe.placement' must be a #moe.placement, got array<i64: 0>}}
  %a = moe.rms_norm %x, %w eps 1.0e-05 {moe.placement = array<i64: 0>} : tensor<?x64xf32>, tensor<64xf32>
  return
}

// -----

// expected-error @below {{'moe.memory_plan' must be a #moe.memory_plan, got {arena_bytes = 0 : i64}}}
func.func @memory_plan_dict() attributes {moe.memory_plan = {arena_bytes = 0 : i64}} {
  return
}

// -----

// expected-error @below {{#moe.memory_plan max_batch_tokens is in [1, 2^20]}}
func.func @memory_plan_batch() attributes {moe.memory_plan = #moe.memory_plan<target = #moert.cpu, max_batch_tokens = 0, floats_per_token = 0, arena_bytes = 0, lower_bound_bytes = 0, naive_bytes = 0>} {
  return
}

// -----

// expected-error @below {{'moe.kv_cache_plan' must be a #moe.kv_cache_plan, got {max_seq = 4 : i64}}}
func.func @kv_plan_dict() attributes {moe.kv_cache_plan = {max_seq = 4 : i64}} {
  return
}

// -----

// expected-error @below {{#moe.kv_cache_plan total_bytes 100 is not the layers' sum 1536}}
func.func @kv_plan_total() attributes {moe.kv_cache_plan = #moe.kv_cache_plan<max_seq = 4, total_bytes = 100, capacities = [4, 4], windows = [8, 0], bytes = [1024, 512]>} {
  return
}

// -----

// expected-error @below {{#moe.kv_cache_plan has one capacity, window and byte count per layer}}
func.func @kv_plan_layers() attributes {moe.kv_cache_plan = #moe.kv_cache_plan<max_seq = 4, total_bytes = 1024, capacities = [4, 4], windows = [8], bytes = [1024]>} {
  return
}
