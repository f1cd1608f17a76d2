// RUN: moe-opt %s --split-input-file --verify-diagnostics --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache))' | FileCheck %s
// RUN: moe-opt %s --split-input-file --verify-diagnostics --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache{max-seq=4}))' | FileCheck %s --check-prefix=SEQ4

// Layers that differ: layer 0 slides a window of 8 over f32 keys, layer 1
// attends fully over bf16 keys; max-seq comes from moe.model (64).
// Bytes = 2 (k, v) x kv_heads x capacity x head_dim x sizeof:
//   layer 0: 2 x 2 x min(8, 64) x 16 x 4 = 2048
//   layer 1: 2 x 2 x 64 x 16 x 2         = 8192
// and with max-seq=4 both hold 4 slots: 2 x 2 x 4 x 16 x 4 = 1024 and 512.

// CHECK-LABEL: func.func @forward
// CHECK-SAME: %[[C0:[^:]+]]: !moe.kv_cache<2x8x16xf32>, %[[C1:[^:]+]]: !moe.kv_cache<2x64x16xbf16>)
// CHECK-SAME: -> (tensor<?x64xf32>, !moe.kv_cache<2x8x16xf32>, !moe.kv_cache<2x64x16xbf16>)
// CHECK-SAME: moe.kv_cache_plan = #moe.kv_cache_plan<max_seq = 64, total_bytes = 10240, capacities = [8, 64], windows = [8, 0], bytes = [2048, 8192]>
// CHECK: moe.attention {{.*}}, %[[C0]] heads 4 {sliding_window = 8 : i64} : {{.*}}, !moe.kv_cache<2x8x16xf32>
// CHECK: moe.attention {{.*}}, %[[C1]] heads 4 : {{.*}}, !moe.kv_cache<2x64x16xbf16>
// CHECK: return {{.*}} : tensor<?x64xf32>, !moe.kv_cache<2x8x16xf32>, !moe.kv_cache<2x64x16xbf16>

// SEQ4-LABEL: func.func @forward
// SEQ4-SAME: !moe.kv_cache<2x4x16xf32>, %{{[^:]+}}: !moe.kv_cache<2x4x16xbf16>)
// SEQ4-SAME: moe.kv_cache_plan = #moe.kv_cache_plan<max_seq = 4, total_bytes = 1536, capacities = [4, 4], windows = [8, 0], bytes = [1024, 512]>
module attributes {moe.model = #moe.model<architecture = "mixtral", vocab_size = 256, hidden_size = 64, intermediate_size = 128, num_layers = 2, num_heads = 4, num_kv_heads = 2, head_dim = 16, num_experts = 4, top_k = 2, max_positions = 64>} {
  func.func @forward(%q: tensor<?x64xf32>, %kv: tensor<?x32xf32>,
                     %c0: !moe.kv_cache<2x?x16xf32>, %c1: !moe.kv_cache<2x?x16xbf16>)
      -> (tensor<?x64xf32>, !moe.kv_cache<2x?x16xf32>, !moe.kv_cache<2x?x16xbf16>) {
    %o0, %n0 = moe.attention %q, %kv, %kv, %c0 heads 4 {sliding_window = 8 : i64}
        : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>, !moe.kv_cache<2x?x16xf32>
    %o1, %n1 = moe.attention %o0, %kv, %kv, %c1 heads 4
        : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>, !moe.kv_cache<2x?x16xbf16>
    return %o1, %n0, %n1 : tensor<?x64xf32>, !moe.kv_cache<2x?x16xf32>, !moe.kv_cache<2x?x16xbf16>
  }
}

// -----

// Negative: a function without caches is left alone.
// CHECK-LABEL: func.func @no_cache
// CHECK-NOT: moe.kv_cache_plan
module attributes {moe.model = #moe.model<architecture = "mixtral", vocab_size = 256, hidden_size = 64, intermediate_size = 128, num_layers = 2, num_heads = 4, num_kv_heads = 2, head_dim = 16, num_experts = 4, top_k = 2, max_positions = 64>} {
  func.func @no_cache(%x: tensor<?x64xf32>) -> tensor<?x64xf32> {
    return %x : tensor<?x64xf32>
  }
}

// -----

// A cache read by two attention ops cannot be planned as one layer's.
module attributes {moe.model = #moe.model<architecture = "mixtral", vocab_size = 256, hidden_size = 64, intermediate_size = 128, num_layers = 2, num_heads = 4, num_kv_heads = 2, head_dim = 16, num_experts = 4, top_k = 2, max_positions = 64>} {
  // expected-error @below {{moe-plan-kv-cache: cache argument #2 must be read by exactly one moe.attention}}
  func.func @shared(%q: tensor<?x64xf32>, %kv: tensor<?x32xf32>, %c: !moe.kv_cache<2x?x16xf32>) {
    %o0, %n0 = moe.attention %q, %kv, %kv, %c heads 4
        : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>, !moe.kv_cache<2x?x16xf32>
    %o1, %n1 = moe.attention %q, %kv, %kv, %c heads 4
        : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>, !moe.kv_cache<2x?x16xf32>
    return
  }
}
