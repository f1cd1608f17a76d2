// The CPU printer prints the launch plan: one C++ statement per moert op,
// nothing decided. The plan comes from --moe-lower-to-cpu on one layer.
//
// RUN: moe-opt %S/Inputs/one-layer-f32-unfused.mlir --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache,moe-plan-memory),moe-lower-to-cpu)' -o %t.mlir
// RUN: moe-translate --moe-to-cpp %t.mlir | FileCheck %s
//
// What it refuses: a callee that is not a kernel of the library, a module
// that is not lowered (or lowered for the other target), a view past the
// largest arena, a weight without a manifest entry.
// RUN: sed -e 's/"moert::add"/"system"/' %t.mlir | not moe-translate --moe-to-cpp 2>&1 | FileCheck %s --check-prefix=CALLEE
// RUN: not moe-translate --moe-to-cpp %S/Inputs/one-layer-f16.mlir 2>&1 | FileCheck %s --check-prefix=NOTLOWERED
// RUN: not moe-translate --moe-to-cuda %t.mlir 2>&1 | FileCheck %s --check-prefix=OTHER
// RUN: sed -e 's/moert.view offset 0 size 2 /moert.view offset 68719476736 size 2 /' %t.mlir | not moe-translate --moe-to-cpp 2>&1 | FileCheck %s --check-prefix=ARENA
// RUN: sed -e 's/moert.weight "gate"/moert.weight "nowhere"/' %t.mlir | not moe-translate --moe-to-cpp 2>&1 | FileCheck %s --check-prefix=WEIGHT
// RUN: sed -e 's/arith.constant 9.99999974E-6 : f32/arith.constant 0x7FC00000 : f32/' %t.mlir | not moe-translate --moe-to-cpp 2>&1 | FileCheck %s --check-prefix=NAN
// RUN: sed -e 's/moert.max_positions = 64 : i64/moert.max_positions = 18446744073709551617 : i128/' %t.mlir | not moe-translate --moe-to-cpp 2>&1 | FileCheck %s --check-prefix=WIDE
// moe-compile takes moe IR, not a launch plan.
// RUN: not moe-compile %t.mlir -o %t.bin 2>&1 | FileCheck %s --check-prefix=PLAN

// CHECK: #include "moert/kernels.h"
// CHECK: const moert_weight_desc kWeights[] = {
// CHECK-NEXT: {"emb", "m.safetensors", 0ull, 65536ull, MOERT_F32, 256, 64, 2, 0, 0ull},
// CHECK: const moert_cache_desc kCaches[] = {
// CHECK-NEXT: {4, 16, 8, 8},
// CHECK: int64_t scratchFloats(int64_t n_max) { return n_max * 386; }
// CHECK: void forward(
// CHECK: const float *W0 = static_cast<const float *>(ex->weights[0]);
// CHECK: float *[[H:b[0-9]+]] = arena + n_max * 192;
// CHECK-NEXT: moert::embedding<float, 64>(W0, tokens, n, [[H]]);
// CHECK: moert::rmsNorm<float, 64>([[H]], W1, 1e-05f, n, [[A:b[0-9]+]]);
// CHECK: moert::attention<4, 4, 16, 8, 8>(pool, [[A]], [[A]], [[A]], ex->caches[0], positions, 0.25f, n, [[O:b[0-9]+]]);
// CHECK: int32_t *[[I:b[0-9]+]] = reinterpret_cast<int32_t *>(arena + n_max * {{[0-9]+}});
// CHECK-NEXT: moert::router<2, 1, true, true>([[L:b[0-9]+]], n, [[W:b[0-9]+]], [[I]]);
// CHECK: float *[[SCRATCH:b[0-9]+]] = arena + n_max * 0;
// CHECK-NEXT: const float *const [[G:t[0-9]+]][] = {W3, W3};
// CHECK: moert::experts<float, float, float, 64, 32, 2, 1>(pool, [[O]], [[W]], [[I]], [[G]], t{{[0-9]+}}, t{{[0-9]+}}, n, [[SCRATCH]], [[E:b[0-9]+]]);
// CHECK: moert::add<64>([[E]], [[H]], n, [[S:b[0-9]+]]);
// CHECK: moert::lmHead<float, 256, 64>(pool, [[S]], W6, n, logits, ex->logits_from);
// CHECK-NEXT: }
// CHECK: MOERT_TARGET_CPU, nullptr, nullptr, 0, nullptr,
// CHECK-NEXT: nullptr, nullptr,
// CHECK-NEXT: nullptr, 0,
// No expert parallelism: no ranks, no table of weight ranks; the plan
// honours logits_from.
// CHECK-NEXT: 0, nullptr, 1, 0};

// CALLEE: error: 'moert.call' op calls 'system', which is not a kernel of the CPU library
// NOTLOWERED: error: the module is not lowered for the CPU target: run --moe-lower-to-cpu first
// OTHER: error: the module is not lowered for the CUDA target: run --moe-lower-to-cuda first
// ARENA: error: 'func.func' op the activation arena would need more than 68719476736 floats per token
// NAN: error: 'arith.constant' op the printers take finite f32 and f64 constants only
// WIDE: error: 'func.func' op needs moert.max_positions in [1, 2^31 - 1]
// PLAN: error: {{.*}}.mlir is a launch plan (moert IR, after --moe-lower-to-cpu/cuda); moe-compile takes moe IR (moe-translate's output or --emit=mlir), and moe-translate --moe-to-cpp prints a plan
// WEIGHT: error: 'moert.weight' op the CPU target needs a moe.weight_source for 'nowhere' (import the model with moe-translate)
