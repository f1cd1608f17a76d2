// Sizes given to the planning passes and the default pipeline are bounded:
// positions are int32 at run time, and a binary runs at most 2^20 tokens a
// call. A level that does not exist is an error (opt-level=1 used to run
// -O2 silently).

// RUN: not moe-opt %s --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache{max-seq=2147483648}))' 2>&1 | FileCheck %s --check-prefix=SEQ
// SEQ: error: moe-plan-kv-cache: max-seq must be at most 2147483647 (positions are int32), got 2147483648
// RUN: not moe-opt %s --pass-pipeline='builtin.module(func.func(moe-plan-memory{max-batch-tokens=4611686018427387904}))' 2>&1 | FileCheck %s --check-prefix=BATCH
// BATCH: error: moe-plan-memory: max-batch-tokens must be in [1, 1048576], got 4611686018427387904
// RUN: not moe-opt %s --moe-default-pipeline=opt-level=1 2>&1 | FileCheck %s --check-prefix=LEVEL
// LEVEL: moe-default-pipeline: opt-level=1 is not a level: use opt-level=0 or 2
// RUN: not moe-opt %s --moe-default-pipeline=max-seq=-1 2>&1 | FileCheck %s --check-prefix=PSEQ
// PSEQ: moe-default-pipeline: max-seq must be in [0, 2147483647] (0: the model's max_position_embeddings), got -1
// RUN: not moe-opt %s --moe-default-pipeline=max-batch-tokens=0 2>&1 | FileCheck %s --check-prefix=PBATCH
// PBATCH: moe-default-pipeline: max-batch-tokens must be in [1, 1048576], got 0
// RUN: not moe-opt %s --moe-default-pipeline=quantize=q3_k 2>&1 | FileCheck %s --check-prefix=PQUANT
// PQUANT: moe-default-pipeline: quantize must be q8_0, q4_0 or q4_1, got 'q3_k'
// RUN: not moe-opt %s --moe-default-pipeline="quantize=q8_0 quantize-only=dense" 2>&1 | FileCheck %s --check-prefix=PONLY
// PONLY: moe-default-pipeline: quantize-only must be all or experts, got 'dense'
// RUN: not moe-compile %s -O1 --emit=mlir 2>&1 | FileCheck %s --check-prefix=O1
// O1: error: -O1 is not a level: use -O0 or -O2
// RUN: moe-opt %s --moe-default-pipeline=opt-level=0 | FileCheck %s --check-prefix=OK
// OK: moe.kv_cache<2x64x16xf32>

module attributes {moe.model = #moe.model<architecture = "mixtral", vocab_size = 256, hidden_size = 64, intermediate_size = 128, num_layers = 2, num_heads = 4, num_kv_heads = 2, head_dim = 16, num_experts = 4, top_k = 2, max_positions = 64>} {
  func.func @forward(%q: tensor<?x64xf32>, %kv: tensor<?x32xf32>, %c: !moe.kv_cache<2x?x16xf32>) -> tensor<?x64xf32> {
    %o, %n = moe.attention %q, %kv, %kv, %c heads 4
        : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>, !moe.kv_cache<2x?x16xf32>
    return %o : tensor<?x64xf32>
  }
}
