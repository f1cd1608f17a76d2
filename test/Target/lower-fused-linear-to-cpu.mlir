// moe.fused_linear on the CPU target: two or three weights become one
// moert::fusedLinear (a table of the weights, a table of the outputs, the
// weight types and widths as template arguments, N2 = 0 and a placeholder
// type for a missing third), RoPE in place after it; more weights, one
// moert::linear each.
//
// RUN: moe-opt %S/Inputs/one-layer-f16.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory),moe-lower-to-cpu)' -o %t3.mlir
// RUN: FileCheck %s --check-prefix=THREE < %t3.mlir
// RUN: moe-translate --moe-to-cpp %t3.mlir | FileCheck %s --check-prefix=CPP
// RUN: moe-opt %S/Inputs/one-layer-f16-qk.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory),moe-lower-to-cpu)' | FileCheck %s --check-prefix=TWO
// RUN: moe-opt %S/Inputs/four-projections.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory),moe-lower-to-cpu)' | FileCheck %s --check-prefix=FOUR

// THREE: %[[WQ:.+]] = moert.weight "wq" : memref<64x64xf16>
// THREE: %[[WK:.+]] = moert.weight "wk" : memref<32x64xf16>
// THREE: %[[WV:.+]] = moert.weight "wv" : memref<32x64xf16>
// THREE: %[[Q:.+]] = moert.view offset {{[0-9]+}} size 64 : memref<?x64xf32>
// THREE: %[[K:.+]] = moert.view offset {{[0-9]+}} size 32 : memref<?x32xf32>
// THREE: %[[V:.+]] = moert.view offset {{[0-9]+}} size 32 : memref<?x32xf32>
// THREE: %[[N:.+]] = moert.tokens : index
// THREE: %[[OUTS:.+]] = moert.table %[[Q]], %[[K]], %[[V]] : (memref<?x64xf32>, memref<?x32xf32>, memref<?x32xf32>) -> !moert.table<3, f32, output = true>
// THREE: %[[WS:.+]] = moert.table %[[WQ]], %[[WK]], %[[WV]] : (memref<64x64xf16>, memref<32x64xf16>, memref<32x64xf16>) -> !moert.table<3, none>
// THREE: moert.call "moert::fusedLinear" [f16, f16, f16, 64, 64, 32, 32] threaded(%{{.+}}, %[[WS]], %[[N]], %[[OUTS]])
// THREE-NOT: moert::linear
// THREE: moert.call "moert::rope" [64, 16](%[[Q]], %{{.+}}, %{{.+}}, %{{.+}}, %[[Q]])
// THREE: moert.call "moert::rope" [32, 16](%[[K]], %{{.+}}, %{{.+}}, %{{.+}}, %[[K]])
// THREE-NOT: moert.call "moert::rope"
// THREE: moert.call "moert::attention"

// The output table is writable; the weight table is not.
// CPP: float *const [[OUTS:t[0-9]+]][] = {[[Q:b[0-9]+]], [[K:b[0-9]+]], [[V:b[0-9]+]]};
// CPP-NEXT: const void *const [[WS:t[0-9]+]][] = {[[WQ:W[0-9]+]], [[WK:W[0-9]+]], [[WV:W[0-9]+]]};
// CPP-NEXT: moert::fusedLinear<moert::f16, moert::f16, moert::f16, 64, 64, 32, 32>(pool, {{b[0-9]+}}, [[WS]], n, [[OUTS]]);

// TWO: %[[OUTS:.+]] = moert.table %[[Q:.+]], %[[K:.+]] : (memref<?x64xf32>, memref<?x32xf32>) -> !moert.table<2, f32, output = true>
// TWO: %[[WS:.+]] = moert.table %{{.+}}, %{{.+}} : (memref<64x64xf16>, memref<32x64xf16>) -> !moert.table<2, none>
// TWO: moert.call "moert::fusedLinear" [f16, f16, f32, 64, 64, 32, 0] threaded(%{{.+}}, %[[WS]], %{{.+}}, %[[OUTS]])
// TWO: moert.call "moert::rope" [64, 16](%[[Q]],
// TWO: moert.call "moert::rope" [32, 16](%[[K]],
// TWO: moert.call "moert::linear" [f16, 32, 64]

// FOUR-NOT: moert::fusedLinear
// FOUR: moert.call "moert::linear" [f32, 64, 64]
// FOUR: moert.call "moert::linear" [f16, 32, 64]
// FOUR: moert.call "moert::linear" [f32, 32, 64]
// FOUR: moert.call "moert::linear" [f32, 256, 64]
// FOUR-NOT: moert::fusedLinear
