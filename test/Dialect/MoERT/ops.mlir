// RUN: moe-opt %s | moe-opt | FileCheck %s
// RUN: moe-opt %s --mlir-print-op-generic | moe-opt | FileCheck %s

// Every moert op round-trips through its custom form.

// CHECK-LABEL: module
// CHECK: moert.kernel @rms_norm_0 "moert::cuda::rmsNorm" [f16, 64] threads 256 : (memref<?xf32>, memref<64xf16>, f32, memref<?xf32>) -> ()
// CHECK-LABEL: func.func @plan
// CHECK-SAME: (%[[T:.+]]: memref<?xi32> {moert.arg = "tokens"}, %[[L:.+]]: memref<?x64xf32> {moert.arg = "logits"}, %[[C:.+]]: !moe.kv_cache<2x16x16xf32> {moert.kv_layer = 0 : i64, moert.kv_window = 8 : i64})
// CHECK: %[[V:.+]] = moert.view offset 128 size 64 : memref<?x64xf32>
// CHECK: %[[I:.+]] = moert.view offset 192 size 2 : memref<?x2xi32>
// CHECK: %[[WS:.+]] = moert.workspace 4352 : memref<?xf32>
// CHECK: %[[W:.+]] = moert.weight "norm" : memref<64xf16>
// CHECK: %[[NONE:.+]] = moert.null : memref<?xf32>
// CHECK: moert.table %[[W]], %[[W]] : (memref<64xf16>, memref<64xf16>) -> !moert.table<2, f16>
// CHECK: moert.table %[[V]], %[[NONE]] : (memref<?x64xf32>, memref<?xf32>) -> !moert.table<2, f32, output = true>
// CHECK: moert.cache_plane %[[C]] keys : !moe.kv_cache<2x16x16xf32> -> memref<?xf32>
// CHECK: moert.cache_plane %[[C]] values : !moe.kv_cache<2x16x16xf32> -> memref<?xf32>
// CHECK: %[[N:.+]] = moert.tokens : i32
// CHECK: moert.tokens times 2 : index
// CHECK: moert.call "moert::rmsNorm" [f16, 64] threaded(%[[V]], %[[W]], %{{.+}}, %{{.+}}, %[[L]])
// CHECK: moert.if_decode max_tokens 8 {
// CHECK-NEXT: moert.launch @rms_norm_0 [#{{.+}}, #{{.+}}](%[[V]], %[[W]], %{{.+}}, %[[L]])
// CHECK-NEXT: } else {
// CHECK-NEXT: }
module {
  moert.kernel @rms_norm_0 "moert::cuda::rmsNorm" [f16, 64] threads 256 : (memref<?xf32>, memref<64xf16>, f32, memref<?xf32>) -> ()
  func.func @plan(%tokens: memref<?xi32> {moert.arg = "tokens"}, %logits: memref<?x64xf32> {moert.arg = "logits"},
                  %cache: !moe.kv_cache<2x16x16xf32> {moert.kv_layer = 0 : i64, moert.kv_window = 8 : i64}) {
    %v = moert.view offset 128 size 64 : memref<?x64xf32>
    %i = moert.view offset 192 size 2 : memref<?x2xi32>
    %ws = moert.workspace 4352 : memref<?xf32>
    %w = moert.weight "norm" : memref<64xf16>
    %none = moert.null : memref<?xf32>
    %t = moert.table %w, %w : (memref<64xf16>, memref<64xf16>) -> !moert.table<2, f16>
    %o = moert.table %v, %none : (memref<?x64xf32>, memref<?xf32>) -> !moert.table<2, f32, output = true>
    %k = moert.cache_plane %cache keys : !moe.kv_cache<2x16x16xf32> -> memref<?xf32>
    %vv = moert.cache_plane %cache values : !moe.kv_cache<2x16x16xf32> -> memref<?xf32>
    %n = moert.tokens : i32
    %rows = moert.tokens times 2 : index
    %eps = arith.constant 1.0e-05 : f32
    moert.call "moert::rmsNorm" [f16, 64] threaded (%v, %w, %eps, %rows, %logits) : (memref<?x64xf32>, memref<64xf16>, f32, index, memref<?x64xf32>) -> ()
    moert.if_decode max_tokens 8 {
      moert.launch @rms_norm_0 [affine_map<(n) -> (n)>, affine_map<(n) -> (1)>] (%v, %w, %eps, %logits) : (memref<?x64xf32>, memref<64xf16>, f32, memref<?x64xf32>) -> ()
    } else {
    }
    return
  }
}
