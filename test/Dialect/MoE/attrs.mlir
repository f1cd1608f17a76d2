// RUN: moe-opt %s --split-input-file | moe-opt --split-input-file | FileCheck %s
// RUN: moe-opt %s --split-input-file --mlir-print-op-generic | moe-opt --split-input-file | FileCheck %s

// Every attribute of the moe dialect round-trips through its assembly. The
// verifier's rules have their expected-error cases in invalid.mlir.

// #moe.model prints its fields in declaration order, whatever order they
// were written in.
// CHECK-LABEL: module attributes
// CHECK-SAME: moe.model = #moe.model<architecture = "mixtral", vocab_size = 256, hidden_size = 64, intermediate_size = 128, num_layers = 2, num_heads = 4, num_kv_heads = 2, head_dim = 16, num_experts = 4, top_k = 2, max_positions = 512>
module attributes {moe.model = #moe.model<max_positions = 512, top_k = 2, num_experts = 4, head_dim = 16, num_kv_heads = 2, num_heads = 4, num_layers = 2, intermediate_size = 128, hidden_size = 64, vocab_size = 256, architecture = "mixtral">} {
}

// -----

// The bounds are inclusive: Mixtral 8x7B's sizes, the largest dimension and
// the largest int32 position.
// CHECK-LABEL: module attributes
// CHECK-SAME: moe.model = #moe.model<architecture = "mixtral", vocab_size = 16777216, hidden_size = 4096, intermediate_size = 14336, num_layers = 32, num_heads = 32, num_kv_heads = 8, head_dim = 128, num_experts = 8, top_k = 8, max_positions = 2147483647>
module attributes {moe.model = #moe.model<architecture = "mixtral", vocab_size = 16777216, hidden_size = 4096, intermediate_size = 14336, num_layers = 32, num_heads = 32, num_kv_heads = 8, head_dim = 128, num_experts = 8, top_k = 8, max_positions = 2147483647>} {
}

// -----

// A model of one of everything; the architecture is any non-empty string.
// CHECK-LABEL: module attributes
// CHECK-SAME: moe.model = #moe.model<architecture = "my \22model\22", vocab_size = 1, hidden_size = 1, intermediate_size = 1, num_layers = 1, num_heads = 1, num_kv_heads = 1, head_dim = 1, num_experts = 1, top_k = 1, max_positions = 1>
module attributes {moe.model = #moe.model<architecture = "my \"model\"", vocab_size = 1, hidden_size = 1, intermediate_size = 1, num_layers = 1, num_heads = 1, num_kv_heads = 1, head_dim = 1, num_experts = 1, top_k = 1, max_positions = 1>} {
}

// -----

// The plans of moe-plan-memory: a placement per op (one offset per tensor
// result, the scratch optional) and the memory plan of the function.
// CHECK-LABEL: func.func @planned
// CHECK-SAME: moe.memory_plan = #moe.memory_plan<target = #moert.cuda, max_batch_tokens = 4, floats_per_token = 128, arena_bytes = 2048, lower_bound_bytes = 2048, naive_bytes = 4096>
// CHECK: moe.rms_norm {{.*}} {moe.placement = #moe.placement<results = [64]>}
// CHECK: moe.rms_norm {{.*}} {moe.placement = #moe.placement<results = [0], scratch = 64>}
func.func @planned(%x: tensor<?x64xf32>) -> tensor<?x64xf32> attributes {moe.memory_plan = #moe.memory_plan<naive_bytes = 4096, lower_bound_bytes = 2048, arena_bytes = 2048, floats_per_token = 128, max_batch_tokens = 4, target = #moert.cuda>} {
  %w = moe.weight "n" : tensor<64xf32>
  %a = moe.rms_norm %x, %w eps 1.0e-05 {moe.placement = #moe.placement<results = [64]>} : tensor<?x64xf32>, tensor<64xf32>
  %b = moe.rms_norm %a, %w eps 1.0e-05 {moe.placement = #moe.placement<scratch = 64, results = [0]>} : tensor<?x64xf32>, tensor<64xf32>
  return %b : tensor<?x64xf32>
}

// -----

// CHECK-LABEL: func.func @kv_planned
// CHECK-SAME: moe.kv_cache_plan = #moe.kv_cache_plan<max_seq = 4, total_bytes = 1536, capacities = [4, 4], windows = [8, 0], bytes = [1024, 512]>
func.func @kv_planned() attributes {moe.kv_cache_plan = #moe.kv_cache_plan<bytes = [1024, 512], windows = [8, 0], capacities = [4, 4], total_bytes = 1536, max_seq = 4>} {
  return
}
