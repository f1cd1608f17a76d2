// RUN: moe-opt %s --pass-pipeline='builtin.module(func.func(moe-plan-memory{max-batch-tokens=2}))' | FileCheck %s
// RUN: moe-opt %s --pass-pipeline='builtin.module(func.func(moe-plan-memory{max-batch-tokens=2 reuse=false}))' | FileCheck %s --check-prefix=NAIVE

// Live ranges, by op position (weights count as positions but hold no
// arena memory; the returned logits go to the caller's buffer, so their op
// has no placement):
//   a = rms_norm   64 floats/token, ops 1..6 (last used by the add)
//   b = linear    128,              ops 3..5
//   c = linear     64,              ops 5..6
//   d = add        64,              ops 6..8
// Largest first: b at 0; a overlaps b -> 128; c overlaps a and b -> 192;
// d overlaps a and c but not b -> back to 0. Arena 256 floats/token; the
// most live at once is a + b + c = 256 at op 5 (the lower bound); apart
// they would take 320. At 2 tokens x 4 bytes: 2048, 2048 and 2560 bytes.

// CHECK-LABEL: func.func @chain
// CHECK-SAME: moe.memory_plan = #moe.memory_plan<target = #moert.cpu, max_batch_tokens = 2, floats_per_token = 256, arena_bytes = 2048, lower_bound_bytes = 2048, naive_bytes = 2560>
// CHECK: moe.rms_norm {{.*}} {moe.placement = #moe.placement<results = [128]>}
// CHECK: moe.linear {{.*}} {moe.placement = #moe.placement<results = [0]>} : tensor<?x64xf32>, tensor<128x64xf32>
// CHECK: moe.linear {{.*}} {moe.placement = #moe.placement<results = [192]>} : tensor<?x128xf32>, tensor<64x128xf32>
// CHECK: moe.add {{.*}} {moe.placement = #moe.placement<results = [0]>}
// CHECK: moe.linear %{{[^ ]+}}, %{{[^ ]+}} : tensor<?x64xf32>, tensor<32x64xf32>

// Without reuse every buffer has its own range: arena = naive.
// NAIVE-LABEL: func.func @chain
// NAIVE-SAME: moe.memory_plan = #moe.memory_plan<target = #moert.cpu, max_batch_tokens = 2, floats_per_token = 320, arena_bytes = 2560, lower_bound_bytes = 2048, naive_bytes = 2560>
// NAIVE: moe.rms_norm {{.*}} {moe.placement = #moe.placement<results = [128]>}
// NAIVE: moe.linear {{.*}} {moe.placement = #moe.placement<results = [0]>}
// NAIVE: moe.linear {{.*}} {moe.placement = #moe.placement<results = [192]>}
// NAIVE: moe.add {{.*}} {moe.placement = #moe.placement<results = [256]>}
func.func @chain(%x: tensor<?x64xf32>) -> tensor<?x32xf32> {
  %wn = moe.weight "n" : tensor<64xf32>
  %a = moe.rms_norm %x, %wn eps 1.0e-05 : tensor<?x64xf32>, tensor<64xf32>
  %w1 = moe.weight "w1" : tensor<128x64xf32>
  %b = moe.linear %a, %w1 : tensor<?x64xf32>, tensor<128x64xf32>
  %w2 = moe.weight "w2" : tensor<64x128xf32>
  %c = moe.linear %b, %w2 : tensor<?x128xf32>, tensor<64x128xf32>
  %d = moe.add %c, %a : tensor<?x64xf32>
  %w3 = moe.weight "w3" : tensor<32x64xf32>
  %e = moe.linear %d, %w3 : tensor<?x64xf32>, tensor<32x64xf32>
  return %e : tensor<?x32xf32>
}
