// Every decision the CUDA target makes is in the launch plan, and each is an
// option of --moe-lower-to-cuda. The input is one layer with f16 weights
// (Inputs/one-layer-f16.mlir), planned for the CUDA target with max-seq 1024.
//
// RUN: moe-opt %S/Inputs/one-layer-f16.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory{target=cuda}),moe-lower-to-cuda)' | FileCheck %s
// No moe op is left (the manifest's moe.weight_source stays).
// RUN: moe-opt %S/Inputs/one-layer-f16.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory{target=cuda}),moe-lower-to-cuda)' | not grep -E "moe\.(embedding|rms_norm|linear|fused_linear|attention|router|fused_router|experts|expert_permute|grouped_matmul|silu_mul|expert_combine|add|rope|weight) "
// RUN: moe-opt %S/Inputs/one-layer-f16.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory{target=cuda}),moe-lower-to-cuda{decode-max-tokens=1})' | FileCheck %s --check-prefix=DECODE1
// RUN: moe-opt %S/Inputs/one-layer-f16.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory{target=cuda}),moe-lower-to-cuda{tensor-cores=false})' | FileCheck %s --check-prefix=NOTC
// RUN: moe-opt %S/Inputs/one-layer-f16.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory{target=cuda}),moe-lower-to-cuda{attention-splits=2})' | FileCheck %s --check-prefix=SPLIT2
// RUN: moe-opt %S/Inputs/one-layer-f16.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache{max-seq=200},moe-plan-memory{target=cuda}),moe-lower-to-cuda)' | FileCheck %s --check-prefix=SEQ200
// RUN: moe-opt %S/Inputs/one-layer-f16.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory{target=cuda}),moe-lower-to-cuda{fuse-qkv-decode=false})' | FileCheck %s --check-prefix=NOFUSE
// RUN: moe-opt %S/Inputs/one-layer-f16-qk.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory{target=cuda}),moe-lower-to-cuda)' | FileCheck %s --check-prefix=TWO

// Defaults. The q/k/v projections: one gemvMulti launch for a decode step
// (RoPE on q and k as they are stored: 64 / 2 + 32 / 2 + 32 = 80 warps,
// 10 blocks of 8), each projection's tensor-core kernel and RoPE for
// prefill (16-bit weights, input width 64: eligible). The attention: 1024
// keys a query can see -> 4 splits of 256, a workspace of 8 tokens x 4
// heads x 4 splits x (16 + 2) = 2304 floats. The head: gemv or mma.
// CHECK-LABEL: func.func @forward
// CHECK-SAME: %{{[^:]+}}: memref<?xi32> {moert.arg = "tokens"}, %[[POS:[^:]+]]: memref<?xi32> {moert.arg = "positions"}, %[[LOGITS:[^:]+]]: memref<?x256xf32> {moert.arg = "logits"}, %[[CACHE:[^:]+]]: !moe.kv_cache<2x1024x16xf32> {moert.kv_layer = 0 : i64, moert.kv_window = 0 : i64})
// CHECK-SAME: {{^}} attributes {
// CHECK: moert.if_decode max_tokens 8 {
// CHECK-NEXT: moert.launch @[[MULTI:fused_linear_gemv_[0-9]+]] [#{{.*}}, #{{.*}}]
// CHECK: } else {
// CHECK: moert.launch @[[QMMA:linear_mma_[0-9]+]]
// CHECK: moert.launch @rope_
// CHECK: }
// CHECK: moert.workspace 2304 : memref<?xf32>
// CHECK: moert.cache_plane %[[CACHE]] keys
// CHECK: moert.if_decode max_tokens 8 {
// CHECK-NEXT: moert.launch @[[DEC:attention_decode_[0-9]+]]
// CHECK: } else {
// CHECK: moert.launch @attention_prefill_
// CHECK: moert.launch @kv_append_
// CHECK: moert.if_decode max_tokens 8 {
// CHECK: moert.launch @linear_gemv_{{[0-9]+}} {{.*}}, %[[LOGITS]], %{{.*}})
// CHECK: } else {
// CHECK: moert.launch @linear_mma_{{[0-9]+}} {{.*}}, %[[LOGITS]], %{{.*}})
// CHECK: return
// The kernels, declared once each at the end of the module:
// CHECK-DAG: moert.kernel @embedding_0 "moert::cuda::embedding" [f16, 64] threads 256 : (memref<256x64xf16>, memref<?xi32>, memref<?xf32>) -> ()
// CHECK-DAG: moert.kernel @[[MULTI]] "moert::cuda::gemvMulti" [f16, f16, f16, 64, 64, 32, 32, true, true, false, 16] threads 256
// CHECK-DAG: moert.kernel @[[QMMA]] "moert::cuda::gemmMma" [f16, 64, 0, 64, 1, 1, false, false, false, 1] threads 256
// CHECK-DAG: moert.kernel @[[DEC]] "moert::cuda::attentionDecode" [4, 2, 16, 1024, 0, 4] threads 128
// CHECK-DAG: moert.kernel @{{.*}} "moert::cuda::attentionPrefill" [4, 2, 16, 1024, 0] threads 128
// CHECK-DAG: moert.kernel @{{.*}} "moert::cuda::gemv" [f16, f16, 256, 0, 64, 1, 1, false, false, false, 1] threads 256
// CHECK-DAG: moert.kernel @{{.*}} "moert::cuda::gemmMma" [f16, 256, 0, 64, 1, 1, false, false, false, 1] threads 256

// decode-max-tokens=1: the choice and the workspace (1 x 4 x 4 x 18) follow.
// DECODE1: moert.if_decode max_tokens 1 {
// DECODE1: moert.workspace 288 : memref<?xf32>
// DECODE1-NOT: max_tokens 8

// tensor-cores=false: the gemv kernels serve every size; no variant choice
// is left around the matmuls (the attention keeps its own).
// NOTC: moert.if_decode max_tokens 8 {
// NOTC-NEXT: moert.launch @fused_linear_gemv_
// NOTC: moert.launch @linear_gemv_
// NOTC: moert.launch @rope_
// NOTC: moert.workspace 2304
// NOTC-NOT: gemmMma

// attention-splits=2: the decode kernel and the workspace (8 x 4 x 2 x 18).
// SPLIT2: moert.workspace 1152 : memref<?xf32>
// SPLIT2: "moert::cuda::attentionDecode" [4, 2, 16, 1024, 0, 2]

// A 200-slot cache: one split (ceil(200 / 256)), workspace 8 x 4 x 1 x 18.
// SEQ200: moert.workspace 576 : memref<?xf32>
// SEQ200: "moert::cuda::attentionDecode" [4, 2, 16, 200, 0, 1]

// fuse-qkv-decode=false: no gemvMulti; each projection chooses its variant.
// NOFUSE: moert.if_decode max_tokens 8 {
// NOFUSE-NEXT: moert.launch @linear_gemv_
// NOFUSE: } else {
// NOFUSE-NEXT: moert.launch @linear_mma_
// NOFUSE: moert.launch @rope_
// NOFUSE: moert.if_decode max_tokens 8 {
// NOFUSE-NEXT: moert.launch @linear_gemv_
// NOFUSE-NOT: gemvMulti

// Two fused projections: gemvMulti's third part is absent (width 0, a null
// weight and output).
// TWO: %[[NONE:.+]] = moert.null : memref<?xf32>
// TWO: moert.table %{{.+}}, %{{.+}}, %[[NONE]] : (memref<64x64xf16>, memref<32x64xf16>, memref<?xf32>) -> !moert.table<3, none>
// TWO: "moert::cuda::gemvMulti" [f16, f16, f16, 64, 64, 32, 0, true, true, false, 16]
