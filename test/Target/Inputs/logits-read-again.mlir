// One layer whose logits are read again after the head (moe.linear %logits,
// %head2): the head must then compute every row (no moert.logits_from).
module attributes {moe.weight_dir = "/models/one-layer", moe.model = #moe.model<architecture = "mixtral", vocab_size = 256, hidden_size = 64, intermediate_size = 32, num_layers = 1, num_heads = 4, num_kv_heads = 4, head_dim = 16, num_experts = 2, top_k = 1, max_positions = 64>} {
  moe.weight_source "emb" in "m.safetensors" at 0 : tensor<256x64xf32>
  moe.weight_source "n" in "m.safetensors" at 65536 : tensor<64xf32>
  moe.weight_source "gate" in "m.safetensors" at 65792 : tensor<2x64xf32>
  moe.weight_source "w1" in "m.safetensors" at 66304 : tensor<32x64xf32>
  moe.weight_source "w3" in "m.safetensors" at 74496 : tensor<32x64xf32>
  moe.weight_source "w2" in "m.safetensors" at 82688 : tensor<64x32xf32>
  moe.weight_source "head" in "m.safetensors" at 90880 : tensor<256x64xf32>
  moe.weight_source "head2" in "m.safetensors" at 156416 : tensor<64x256xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>, %c0: !moe.kv_cache<4x?x16xf32>) -> (tensor<?x256xf32>, !moe.kv_cache<4x?x16xf32>) {
    %emb = moe.weight "emb" : tensor<256x64xf32>
    %h = moe.embedding %emb[%tokens] : tensor<256x64xf32>, tensor<?xi32>
    %n = moe.weight "n" : tensor<64xf32>
    %a = moe.rms_norm %h, %n eps 1.000000e-05 : tensor<?x64xf32>, tensor<64xf32>
    %o, %c = moe.attention %a, %a, %a, %c0 heads 4 {sliding_window = 8 : i64} : tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, !moe.kv_cache<4x?x16xf32>
    %gate = moe.weight "gate" : tensor<2x64xf32>
    %l = moe.linear %o, %gate : tensor<?x64xf32>, tensor<2x64xf32>
    %w, %i = moe.router %l top 1 softmax renormalize : tensor<?x2xf32>
    %w1 = moe.weight "w1" : tensor<32x64xf32>
    %w3 = moe.weight "w3" : tensor<32x64xf32>
    %w2 = moe.weight "w2" : tensor<64x32xf32>
    %e = moe.experts %o, %w, %i gate [%w1, %w1] : tensor<32x64xf32> up [%w3, %w3] : tensor<32x64xf32> down [%w2, %w2] : tensor<64x32xf32> : tensor<?x64xf32>, tensor<?x1xf32>, tensor<?x1xi32>
    %s = moe.add %e, %h : tensor<?x64xf32>
    %head = moe.weight "head" : tensor<256x64xf32>
    %logits = moe.linear %s, %head : tensor<?x64xf32>, tensor<256x64xf32>
    %head2 = moe.weight "head2" : tensor<64x256xf32>
    %z = moe.linear %logits, %head2 : tensor<?x256xf32>, tensor<64x256xf32>
    %zz = moe.add %z, %s : tensor<?x64xf32>
    return %logits, %c : tensor<?x256xf32>, !moe.kv_cache<4x?x16xf32>
  }
}
