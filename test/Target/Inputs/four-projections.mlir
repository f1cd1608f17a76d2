// Four linears of one input fused into one moe.fused_linear (more than
// moert::fusedLinear takes), with weights of two types.
module attributes {moe.weight_dir = "/models/four", moe.model = #moe.model<architecture = "mixtral", vocab_size = 256, hidden_size = 64, intermediate_size = 128, num_layers = 1, num_heads = 4, num_kv_heads = 2, head_dim = 16, num_experts = 4, top_k = 2, max_positions = 1024>} {
  moe.weight_source "emb" in "m.safetensors" at 0 : tensor<256x64xf32>
  moe.weight_source "w0" in "m.safetensors" at 65536 : tensor<64x64xf32>
  moe.weight_source "w1" in "m.safetensors" at 81920 : tensor<32x64xf16>
  moe.weight_source "w2" in "m.safetensors" at 86016 : tensor<32x64xf32>
  moe.weight_source "w3" in "m.safetensors" at 94208 : tensor<256x64xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>, %c0: !moe.kv_cache<2x?x16xf32>) -> (tensor<?x256xf32>, !moe.kv_cache<2x?x16xf32>) {
    %emb = moe.weight "emb" : tensor<256x64xf32>
    %h = moe.embedding %emb[%tokens] : tensor<256x64xf32>, tensor<?xi32>
    %w0 = moe.weight "w0" : tensor<64x64xf32>
    %w1 = moe.weight "w1" : tensor<32x64xf16>
    %w2 = moe.weight "w2" : tensor<32x64xf32>
    %w3 = moe.weight "w3" : tensor<256x64xf32>
    %p:4 = moe.fused_linear %h weights [%w0, %w1, %w2, %w3] : (tensor<64x64xf32>, tensor<32x64xf16>, tensor<32x64xf32>, tensor<256x64xf32>) : tensor<?x64xf32>
    %o, %c = moe.attention %p#0, %p#1, %p#2, %c0 heads 4 : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>, !moe.kv_cache<2x?x16xf32>
    %s = moe.add %p#3, %p#3 : tensor<?x256xf32>
    return %s, %c : tensor<?x256xf32>, !moe.kv_cache<2x?x16xf32>
  }
}
