// RUN: moe-opt %S/Inputs/one-layer-f32-unfused.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory),moe-lower-to-cpu)' | FileCheck %s
// RUN: moe-opt %S/Inputs/logits-read-again.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory),moe-lower-to-cpu)' | FileCheck %s --check-prefix=READ

// One moert.call per moe op, each result a view at its planned offset, the
// scratch the CPU kernels need (the expert bank stages 2 x (32 + 64) floats
// per token) a view at the scratch of the op's #moe.placement, and the logits written
// to their argument. The function is destination-passing: argument
// attributes say which argument is what, and the window of each cache.

// CHECK: module attributes {{{.*}}moert.target = #moert.cpu}
// CHECK-LABEL: func.func @forward
// CHECK-SAME: (%[[TOK:[^:]+]]: memref<?xi32> {moert.arg = "tokens"}, %[[POS:[^:]+]]: memref<?xi32> {moert.arg = "positions"}, %[[LOGITS:[^:]+]]: memref<?x256xf32> {moert.arg = "logits"}, %[[CACHE:[^:]+]]: !moe.kv_cache<4x8x16xf32> {moert.kv_layer = 0 : i64, moert.kv_window = 8 : i64})
// CHECK-SAME: {{^}} attributes
// CHECK-SAME: moert.max_positions = 64 : i64
// CHECK: %[[EMB:.+]] = moert.weight "emb" : memref<256x64xf32>
// CHECK: %[[H:.+]] = moert.view offset [[HOFF:[0-9]+]] size 64 : memref<?x64xf32>
// CHECK: %[[N:.+]] = moert.tokens : index
// CHECK: moert.call "moert::embedding" [f32, 64](%[[EMB]], %[[TOK]], %[[N]], %[[H]])
// CHECK: %[[EPS:.+]] = arith.constant 9.99999974E-6 : f32
// CHECK: moert.call "moert::rmsNorm" [f32, 64](%[[H]], %{{.+}}, %[[EPS]], %{{.+}}, %[[A:[^)]+]])
// CHECK: %[[SCALE:.+]] = arith.constant 2.500000e-01 : f32
// CHECK: moert.call "moert::attention" [4, 4, 16, 8, 8] threaded(%[[A]], %[[A]], %[[A]], %[[CACHE]], %[[POS]], %[[SCALE]], %{{.+}}, %[[O:[^)]+]])
// CHECK: moert.call "moert::linear" [f32, 2, 64] threaded(%[[O]], %{{.+}}, %{{.+}}, %[[L:[^)]+]])
// CHECK: %[[W:.+]] = moert.view offset {{[0-9]+}} size 1 : memref<?x1xf32>
// CHECK: %[[I:.+]] = moert.view offset {{[0-9]+}} size 1 : memref<?x1xi32>
// CHECK: moert.call "moert::router" [2, 1, true, true](%[[L]], %{{.+}}, %[[W]], %[[I]])
// CHECK: %[[SCRATCH:.+]] = moert.view offset {{[0-9]+}} size 192 : memref<?xf32>
// CHECK: %[[G:.+]] = moert.table %[[W1:.+]], %[[W1]] : (memref<32x64xf32>, memref<32x64xf32>) -> !moert.table<2, f32>
// CHECK: moert.call "moert::experts" [f32, f32, f32, 64, 32, 2, 1] threaded(%[[O]], %[[W]], %[[I]], %[[G]], %{{.+}}, %{{.+}}, %{{.+}}, %[[SCRATCH]], %[[E:[^)]+]])
// CHECK: moert.call "moert::add" [64](%[[E]], %[[H]], %{{.+}}, %[[S:[^)]+]])
// The head writes the logits of rows [moert.logits_from, n) only.
// CHECK: %[[FROM:.+]] = moert.logits_from : i64
// CHECK-NEXT: moert.call "moert::lmHead" [f32, 256, 64] threaded(%[[S]], %{{.+}}, %{{.+}}, %[[LOGITS]], %[[FROM]])
// CHECK-NEXT: return{{$}}

// Logits that another op reads after the head: the head computes every row.
// READ-NOT: moert.logits_from
// READ: moert.call "moert::linear" [f32, 256, 64] threaded(%{{.+}}, %{{.+}}, %{{.+}}, %[[LOGITS:arg2]])
// READ-NOT: moert.logits_from
// READ: moert.call "moert::linear" [f32, 64, 256] threaded(%[[LOGITS]],
