// RUN: moe-opt %s | FileCheck %s
// RUN: moe-opt %s | moe-opt | FileCheck %s
// RUN: moe-opt %s --pass-pipeline='builtin.module(func.func(moe-estimate-cost))' | FileCheck %s --check-prefix=COST

// One full Mixtral decoder layer plus the final norm and lm_head, at the
// `tiny` sizes of DESIGN.md section 6: hidden 64, intermediate 128, 4 query
// heads and 2 kv heads of head_dim 16, 4 experts top-2, vocab 256,
// rope_theta 1e6, rms_norm_eps 1e-5, sliding window 32. Weight names are the
// Hugging Face MixtralForCausalLM names; all weights are f32.
//
// Cost, by hand, in elements of 4 bytes: embed 256*64 = 16384, two layer
// norms 128, q/k/v/o 4096 + 2048 + 2048 + 4096, gate 4*64 = 256, 4 experts
// of 3*128*64 = 98304, final norm 64, lm_head 16384: 143808 elements =
// 575232 bytes. One decode token reads one embedding row (64), the norms
// (192), attention (12288), gate (256), 2 of the 4 experts (49152) and
// lm_head (16384): 78336 elements = 313344 bytes. Weight flops per token:
// 2*(12288 + 256 + 16384) + 6*2*128*64 = 57856 + 98304 = 156160.

// COST-LABEL: func.func @mixtral_tiny
// COST-SAME: moe.cost = {bytes_per_step = 313344 : i64, flops_per_step = 156160 : i64, step_tokens = 1 : i64, weight_bytes = 575232 : i64}

// CHECK-LABEL: func.func @mixtral_tiny
// CHECK-SAME: (%[[IDS:.+]]: tensor<?xi32>, %[[POS:.+]]: tensor<?xi32>, %[[CACHE:.+]]: !moe.kv_cache<2x?x16xf32>)
// CHECK-SAME: -> (tensor<?x256xf32>, !moe.kv_cache<2x?x16xf32>)
func.func @mixtral_tiny(%ids: tensor<?xi32>, %pos: tensor<?xi32>,
                        %cache: !moe.kv_cache<2x?x16xf32>)
    -> (tensor<?x256xf32>, !moe.kv_cache<2x?x16xf32>) {
  // CHECK: %[[EMBED:.+]] = moe.weight "model.embed_tokens.weight" : tensor<256x64xf32>
  // CHECK: %[[H0:.+]] = moe.embedding %[[EMBED]][%[[IDS]]]
  %embed = moe.weight "model.embed_tokens.weight" : tensor<256x64xf32>
  %h0 = moe.embedding %embed[%ids] : tensor<256x64xf32>, tensor<?xi32>

  // Attention block.
  // CHECK: %[[LN1:.+]] = moe.weight "model.layers.0.input_layernorm.weight" : tensor<64xf32>
  // CHECK: %[[A:.+]] = moe.rms_norm %[[H0]], %[[LN1]] eps 1.000000e-05
  %ln1 = moe.weight "model.layers.0.input_layernorm.weight" : tensor<64xf32>
  %a = moe.rms_norm %h0, %ln1 eps 1.0e-05 : tensor<?x64xf32>, tensor<64xf32>
  // CHECK: moe.weight "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xf32>
  // CHECK: moe.weight "model.layers.0.self_attn.k_proj.weight" : tensor<32x64xf32>
  // CHECK: moe.weight "model.layers.0.self_attn.v_proj.weight" : tensor<32x64xf32>
  // CHECK: moe.weight "model.layers.0.self_attn.o_proj.weight" : tensor<64x64xf32>
  %wq = moe.weight "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xf32>
  %wk = moe.weight "model.layers.0.self_attn.k_proj.weight" : tensor<32x64xf32>
  %wv = moe.weight "model.layers.0.self_attn.v_proj.weight" : tensor<32x64xf32>
  %wo = moe.weight "model.layers.0.self_attn.o_proj.weight" : tensor<64x64xf32>
  // CHECK: %[[Q:.+]] = moe.linear %[[A]], %{{.+}} : tensor<?x64xf32>, tensor<64x64xf32>
  // CHECK: %[[K:.+]] = moe.linear %[[A]], %{{.+}} : tensor<?x64xf32>, tensor<32x64xf32>
  // CHECK: %[[V:.+]] = moe.linear %[[A]], %{{.+}} : tensor<?x64xf32>, tensor<32x64xf32>
  %q = moe.linear %a, %wq : tensor<?x64xf32>, tensor<64x64xf32>
  %k = moe.linear %a, %wk : tensor<?x64xf32>, tensor<32x64xf32>
  %v = moe.linear %a, %wv : tensor<?x64xf32>, tensor<32x64xf32>
  // CHECK: %[[QR:.+]] = moe.rope %[[Q]], %[[POS]] head_dim 16 theta 1.000000e+06
  // CHECK: %[[KR:.+]] = moe.rope %[[K]], %[[POS]] head_dim 16 theta 1.000000e+06
  %qr = moe.rope %q, %pos head_dim 16 theta 1.0e+06 : tensor<?x64xf32>, tensor<?xi32>
  %kr = moe.rope %k, %pos head_dim 16 theta 1.0e+06 : tensor<?x32xf32>, tensor<?xi32>
  // CHECK: %[[ATTN:.+]], %[[CACHE1:.+]] = moe.attention %[[QR]], %[[KR]], %[[V]], %[[CACHE]] heads 4 {sliding_window = 32 : i64}
  %attn, %cache1 = moe.attention %qr, %kr, %v, %cache heads 4 {sliding_window = 32 : i64}
      : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>, !moe.kv_cache<2x?x16xf32>
  // CHECK: %[[O:.+]] = moe.linear %[[ATTN]]
  // CHECK: %[[H1:.+]] = moe.add %[[H0]], %[[O]]
  %o = moe.linear %attn, %wo : tensor<?x64xf32>, tensor<64x64xf32>
  %h1 = moe.add %h0, %o : tensor<?x64xf32>

  // MoE block.
  // CHECK: %[[B:.+]] = moe.rms_norm %[[H1]]
  %ln2 = moe.weight "model.layers.0.post_attention_layernorm.weight" : tensor<64xf32>
  %b = moe.rms_norm %h1, %ln2 eps 1.0e-05 : tensor<?x64xf32>, tensor<64xf32>
  // CHECK: moe.weight "model.layers.0.block_sparse_moe.gate.weight" : tensor<4x64xf32>
  // CHECK: %[[LOGITS:.+]] = moe.linear %[[B]], %{{.+}} : tensor<?x64xf32>, tensor<4x64xf32>
  // CHECK: %[[RW:.+]], %[[RI:.+]] = moe.router %[[LOGITS]] top 2 softmax renormalize : tensor<?x4xf32>
  %wg = moe.weight "model.layers.0.block_sparse_moe.gate.weight" : tensor<4x64xf32>
  %logits = moe.linear %b, %wg : tensor<?x64xf32>, tensor<4x64xf32>
  %rw, %ri = moe.router %logits top 2 softmax renormalize : tensor<?x4xf32>
  // CHECK-DAG: %[[G0:.+]] = moe.weight "model.layers.0.block_sparse_moe.experts.0.w1.weight" : tensor<128x64xf32>
  // CHECK-DAG: %[[G3:.+]] = moe.weight "model.layers.0.block_sparse_moe.experts.3.w1.weight" : tensor<128x64xf32>
  // CHECK-DAG: %[[U0:.+]] = moe.weight "model.layers.0.block_sparse_moe.experts.0.w3.weight" : tensor<128x64xf32>
  // CHECK-DAG: %[[D3:.+]] = moe.weight "model.layers.0.block_sparse_moe.experts.3.w2.weight" : tensor<64x128xf32>
  %g0 = moe.weight "model.layers.0.block_sparse_moe.experts.0.w1.weight" : tensor<128x64xf32>
  %g1 = moe.weight "model.layers.0.block_sparse_moe.experts.1.w1.weight" : tensor<128x64xf32>
  %g2 = moe.weight "model.layers.0.block_sparse_moe.experts.2.w1.weight" : tensor<128x64xf32>
  %g3 = moe.weight "model.layers.0.block_sparse_moe.experts.3.w1.weight" : tensor<128x64xf32>
  %u0 = moe.weight "model.layers.0.block_sparse_moe.experts.0.w3.weight" : tensor<128x64xf32>
  %u1 = moe.weight "model.layers.0.block_sparse_moe.experts.1.w3.weight" : tensor<128x64xf32>
  %u2 = moe.weight "model.layers.0.block_sparse_moe.experts.2.w3.weight" : tensor<128x64xf32>
  %u3 = moe.weight "model.layers.0.block_sparse_moe.experts.3.w3.weight" : tensor<128x64xf32>
  %d0 = moe.weight "model.layers.0.block_sparse_moe.experts.0.w2.weight" : tensor<64x128xf32>
  %d1 = moe.weight "model.layers.0.block_sparse_moe.experts.1.w2.weight" : tensor<64x128xf32>
  %d2 = moe.weight "model.layers.0.block_sparse_moe.experts.2.w2.weight" : tensor<64x128xf32>
  %d3 = moe.weight "model.layers.0.block_sparse_moe.experts.3.w2.weight" : tensor<64x128xf32>
  // CHECK: %[[Y:.+]] = moe.experts %[[B]], %[[RW]], %[[RI]]
  // CHECK-SAME: gate [%[[G0]], %{{.+}}, %{{.+}}, %[[G3]]] : tensor<128x64xf32>
  // CHECK-SAME: up [%[[U0]], %{{.+}}, %{{.+}}, %{{.+}}] : tensor<128x64xf32>
  // CHECK-SAME: down [%{{.+}}, %{{.+}}, %{{.+}}, %[[D3]]] : tensor<64x128xf32>
  %y = moe.experts %b, %rw, %ri
      gate [%g0, %g1, %g2, %g3] : tensor<128x64xf32>
      up [%u0, %u1, %u2, %u3] : tensor<128x64xf32>
      down [%d0, %d1, %d2, %d3] : tensor<64x128xf32>
      : tensor<?x64xf32>, tensor<?x2xf32>, tensor<?x2xi32>
  // CHECK: %[[H2:.+]] = moe.add %[[H1]], %[[Y]]
  %h2 = moe.add %h1, %y : tensor<?x64xf32>

  // Final norm and lm_head.
  // CHECK: moe.weight "model.norm.weight" : tensor<64xf32>
  // CHECK: %[[HN:.+]] = moe.rms_norm %[[H2]]
  // CHECK: moe.weight "lm_head.weight" : tensor<256x64xf32>
  // CHECK: %[[LOGITS_OUT:.+]] = moe.linear %[[HN]], %{{.+}} : tensor<?x64xf32>, tensor<256x64xf32>
  // CHECK: return %[[LOGITS_OUT]], %[[CACHE1]] : tensor<?x256xf32>, !moe.kv_cache<2x?x16xf32>
  %wn = moe.weight "model.norm.weight" : tensor<64xf32>
  %hn = moe.rms_norm %h2, %wn eps 1.0e-05 : tensor<?x64xf32>, tensor<64xf32>
  %wlm = moe.weight "lm_head.weight" : tensor<256x64xf32>
  %out = moe.linear %hn, %wlm : tensor<?x64xf32>, tensor<256x64xf32>
  return %out, %cache1 : tensor<?x256xf32>, !moe.kv_cache<2x?x16xf32>
}
