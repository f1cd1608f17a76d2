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
