// RUN: moe-opt %s --moe-default-pipeline="opt-level=0 max-seq=64" | FileCheck %s

// A function without a single moe op still gets its (empty) plan: the pass
// loads the dialects of the attributes it writes (the IR fuzzer found the
// crash when it did not).
// CHECK-LABEL: func.func @no_moe_ops
// CHECK-SAME: moe.memory_plan = #moe.memory_plan<target = #moert.cpu, max_batch_tokens = 512, floats_per_token = 0, arena_bytes = 0, lower_bound_bytes = 0, naive_bytes = 0>
func.func @no_moe_ops() {
  return
}
