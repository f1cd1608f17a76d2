// Inputs/one-layer-f16.mlir with q and k fused (two parts) and v on its own.
module attributes {moe.weight_dir = "/models/one-layer", moe.model = #moe.model<architecture = "mixtral", vocab_size = 256, hidden_size = 64, intermediate_size = 128, num_layers = 1, num_heads = 4, num_kv_heads = 2, head_dim = 16, num_experts = 4, top_k = 2, max_positions = 1024>} {
  moe.weight_source "emb" in "m.safetensors" at 0 : tensor<256x64xf16>
  moe.weight_source "wq" in "m.safetensors" at 32768 : tensor<64x64xf16>
  moe.weight_source "wk" in "m.safetensors" at 40960 : tensor<32x64xf16>
  moe.weight_source "wv" in "m.safetensors" at 45056 : tensor<32x64xf16>
  moe.weight_source "head" in "m.safetensors" at 49152 : tensor<256x64xf16>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>, %c0: !moe.kv_cache<2x?x16xf32>) -> (tensor<?x256xf32>, !moe.kv_cache<2x?x16xf32>) {
    %emb = moe.weight "emb" : tensor<256x64xf16>
    %h = moe.embedding %emb[%tokens] : tensor<256x64xf16>, tensor<?xi32>
    %wq = moe.weight "wq" : tensor<64x64xf16>
    %wk = moe.weight "wk" : tensor<32x64xf16>
    %wv = moe.weight "wv" : tensor<32x64xf16>
    %qk:2 = moe.fused_linear %h weights [%wq, %wk] : (tensor<64x64xf16>, tensor<32x64xf16>) rope [0, 1] at %pos head_dim 16 theta 1.000000e+04 : tensor<?x64xf32>, tensor<?xi32>
    %v = moe.linear %h, %wv : tensor<?x64xf32>, tensor<32x64xf16>
    %o, %c = moe.attention %qk#0, %qk#1, %v, %c0 heads 4 : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>, !moe.kv_cache<2x?x16xf32>
    %head = moe.weight "head" : tensor<256x64xf16>
    %logits = moe.linear %o, %head : tensor<?x64xf32>, tensor<256x64xf16>
    return %logits, %c : tensor<?x256xf32>, !moe.kv_cache<2x?x16xf32>
  }
}
