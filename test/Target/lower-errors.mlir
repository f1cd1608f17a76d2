// The lowerings refuse IR whose plans are missing or made for another
// target, and what a target does not run; a module is lowered once.
//
// RUN: not moe-opt %S/Inputs/one-layer-f16.mlir --moe-lower-to-cpu 2>&1 | FileCheck %s --check-prefix=UNPLANNED
// RUN: not moe-opt %S/Inputs/one-layer-f16.mlir --pass-pipeline='builtin.module(func.func(moe-plan-memory),moe-lower-to-cpu)' 2>&1 | FileCheck %s --check-prefix=NOKV
// RUN: not moe-opt %S/Inputs/one-layer-f16.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory{target=cuda}),moe-lower-to-cpu)' 2>&1 | FileCheck %s --check-prefix=OTHER
// RUN: not moe-opt %S/Inputs/one-layer-f16.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory),moe-lower-to-cpu,moe-lower-to-cpu)' 2>&1 | FileCheck %s --check-prefix=TWICE
// RUN: not moe-opt %S/Inputs/one-layer-f32-unfused.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory{target=cuda}),moe-lower-to-cuda)' 2>&1 | FileCheck %s --check-prefix=UNFUSED
// RUN: not moe-opt %S/Inputs/one-layer-f16.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory{target=cuda}),moe-lower-to-cuda{decode-max-tokens=0})' 2>&1 | FileCheck %s --check-prefix=OPTION
// RUN: not moe-opt %S/Inputs/one-layer-f16.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory{target=cuda}),moe-lower-to-cuda{attention-splits=-1})' 2>&1 | FileCheck %s --check-prefix=SPLITS
// A weight where an activation belongs: the embedding table as the gate's
// input (the types downstream made to match); and the logits of a static
// batch (here also a weight as lm_head's input).
// RUN: sed -e 's|%l = moe.linear %o, %gate : tensor<?x64xf32>|%l = moe.linear %emb, %gate : tensor<256x64xf32>|' -e 's|top 1 softmax renormalize : tensor<?x2xf32>|top 1 softmax renormalize : tensor<256x2xf32>|' -e 's|tensor<?x64xf32>, tensor<?x1xf32>, tensor<?x1xi32>|tensor<?x64xf32>, tensor<256x1xf32>, tensor<256x1xi32>|' %S/Inputs/one-layer-f32-unfused.mlir | not moe-opt --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory),moe-lower-to-cpu)' 2>&1 | FileCheck %s --check-prefix=WEIGHT-ACT
// RUN: sed -e 's/%logits = moe.linear %%s, %head : tensor<?x64xf32>/%logits = moe.linear %emb, %head : tensor<256x64xf32>/' -e 's/tensor<?x256xf32>/tensor<256x256xf32>/g' %S/Inputs/one-layer-f32-unfused.mlir | not moe-opt --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory),moe-lower-to-cpu)' 2>&1 | FileCheck %s --check-prefix=STATIC

// A plan the IR no longer matches (edited, or ops changed after
// moe-plan-memory): the lowering checks it before converting anything.
// RUN: moe-opt %S/Inputs/one-layer-f32-unfused.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory))' -o %t.planned.mlir
// RUN: sed -e '0,/#moe.placement<results = \[0\]>/s//#moe.placement<results = [192]>/' %t.planned.mlir | not moe-opt --moe-lower-to-cpu 2>&1 | FileCheck %s --check-prefix=OVERLAP
// RUN: sed -e 's/, scratch = 0>/>/' %t.planned.mlir | not moe-opt --moe-lower-to-cpu 2>&1 | FileCheck %s --check-prefix=SCRATCH
// RUN: sed -e 's/moe.placement = #moe.placement<results = \[256\]>, //' %t.planned.mlir | not moe-opt --moe-lower-to-cpu 2>&1 | FileCheck %s --check-prefix=NOBUFFER
// RUN: sed -e 's/floats_per_token = 386/floats_per_token = 300/' %t.planned.mlir | not moe-opt --moe-lower-to-cpu 2>&1 | FileCheck %s --check-prefix=PAST

// UNPLANNED: error: 'func.func' op has no memory plan: run moe-plan-memory before lowering
// NOKV: error: 'func.func' op has no KV-cache plan: run moe-plan-kv-cache before lowering
// OTHER: error: 'func.func' op has a memory plan for #moert.cuda, not #moert.cpu: run moe-plan-memory{target=...} for this target
// TWICE: error: the module is lowered already (moert.target)
// UNFUSED: error: 'moe.router' op is not supported by the CUDA target, which runs the fused expert path: compile with -O2
// OPTION: error: moe-lower-to-cuda: decode-max-tokens must be in [1, 4096], got 0
// SPLITS: error: moe-lower-to-cuda: attention-splits must be in [0, 256] (0: automatic), got -1
// WEIGHT-ACT: error: 'moe.linear' op operand 0 is a moe.weight where the targets need an activation
// STATIC: error: 'func.func' op @forward must take (tensor<?xi32> tokens, tensor<?xi32> positions, !moe.kv_cache...) and return (tensor<?xVOCABxf32> logits, !moe.kv_cache...)
// OVERLAP: error: 'moe.{{embedding|rms_norm}}' op has a buffer that overlaps one of another op live at the same time: run moe-plan-memory for this target after the last pass that changes ops
// OVERLAP: note: the other op
// SCRATCH: error: 'moe.experts' op needs 192 floats of scratch per token that the memory plan does not hold: run moe-plan-memory for this target after the last pass that changes ops
// NOBUFFER: error: 'moe.attention' op has no buffer in the memory plan: run moe-plan-memory for this target after the last pass that changes ops
// PAST: error: 'moe.{{[a-z_]+}}' op has a buffer past the planned arena of 300 floats per token: run moe-plan-memory
