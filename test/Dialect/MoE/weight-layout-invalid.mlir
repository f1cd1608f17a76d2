// RUN: moe-opt %s --split-input-file --verify-diagnostics

// Every verifier rule about a weight source's layout (`transposed`, `rows S
// step K of T`).

// The last row selected lies beyond the tensor: rows 1, 3, ..., 257 of 256.
// expected-error @below {{'moe.weight_source' op weight 'w': rows 1 step 2 of its 129 rows reach row 257, beyond the 256 rows of 'tensor<256x64xf32>'}}
moe.weight_source "w" in "m.onnx.data" at 0 : tensor<129x64xf32> rows 1 step 2 of tensor<256x64xf32>

// -----

// The start alone out of range.
// expected-error @below {{'moe.weight_source' op weight 'w': rows 256 step 1 of its 1 rows reach row 256, beyond the 256 rows of 'tensor<256x64xf32>'}}
moe.weight_source "w" in "m.onnx.data" at 0 : tensor<1x64xf32> rows 256 step 1 of tensor<256x64xf32>

// -----

// A step so large that the last row overflows 64 bits.
// expected-error @below {{'moe.weight_source' op weight 'w': rows 0 step 4611686018427387904 of its 4 rows reach row 2^63 or more, beyond the 256 rows of 'tensor<256x64xf32>'}}
moe.weight_source "w" in "m.onnx.data" at 0 : tensor<4x64xf32> rows 0 step 4611686018427387904 of tensor<256x64xf32>

// -----

// expected-error @below {{'moe.weight_source' op attribute 'row_step' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
moe.weight_source "w" in "m.onnx.data" at 0 : tensor<4x64xf32> rows 0 step 0 of tensor<256x64xf32>

// -----

// expected-error @below {{'moe.weight_source' op attribute 'row_start' failed to satisfy constraint: 64-bit signless integer attribute whose value is non-negative}}
moe.weight_source "w" in "m.onnx.data" at 0 : tensor<4x64xf32> rows -1 step 2 of tensor<256x64xf32>

// -----

// Rows of a tensor of other columns or another element type.
// expected-error @below {{'moe.weight_source' op weight 'w' selects rows of 'tensor<256x32xf32>', which must be rank 2 with the element type and columns of 'tensor<128x64xf32>'}}
moe.weight_source "w" in "m.onnx.data" at 0 : tensor<128x64xf32> rows 0 step 2 of tensor<256x32xf32>

// -----

// expected-error @below {{'moe.weight_source' op weight 'w' selects rows of 'tensor<256x64xf16>', which must be rank 2 with the element type and columns of 'tensor<128x64xf32>'}}
moe.weight_source "w" in "m.onnx.data" at 0 : tensor<128x64xf32> rows 0 step 2 of tensor<256x64xf16>

// -----

// A row selection of a row selection's parts, given one by one (generic
// form): all three or none.
// expected-error @below {{'moe.weight_source' op weight 'w': a row selection needs row_start, row_step and rows_of together}}
"moe.weight_source"() {name = "w", file = "f", offset = 0 : i64, type = tensor<4x64xf32>, row_step = 2 : i64, rows_of = tensor<8x64xf32>} : () -> ()

// -----

// expected-error @below {{'moe.weight_source' op weight 'w' is either transposed or a row selection, not both}}
"moe.weight_source"() {name = "w", file = "f", offset = 0 : i64, type = tensor<4x64xf32>, transposed, row_start = 0 : i64, row_step = 2 : i64, rows_of = tensor<8x64xf32>} : () -> ()

// -----

// Layouts are of matrices of floats.
// expected-error @below {{'moe.weight_source' op weight 'w' with a layout must be a rank-2 float tensor, got 'tensor<64xf32>'}}
moe.weight_source "w" in "m.onnx.data" at 0 : tensor<64xf32> transposed

// -----

// expected-error @below {{'moe.weight_source' op weight 'w' with a layout must be a rank-2 float tensor, got 'tensor<64x64x!moe.quant<q8_0>>'}}
moe.weight_source "w" in "m.gguf" at 0 : tensor<64x64x!moe.quant<q8_0>> transposed

// -----

// The artifact's weights file holds the written layout.
// expected-error @below {{'moe.weight_source' op weight 'w' in the artifact's weights file is stored as its type: it takes no layout and no pending quantisation}}
moe.weight_source "w" in artifact "m.bin.weights.safetensors" at 96 : tensor<64x32xf32> transposed

// -----

// Values and scales apart (ONNX Runtime's QMoE): q8_0 or q4_0 blocks, each
// scale over whole 32-value blocks of its row.
// expected-error @below {{'moe.weight_source' op weight 'w' with separate scales must be a rank-2 q8_0 or q4_0 tensor, not transposed, got 'tensor<64x64x!moe.quant<q4_1>>'}}
moe.weight_source "w" in "m.onnx.data" at 0 : tensor<64x64x!moe.quant<q4_1>> with scales at 4096 : tensor<64x2xf16>

// -----

// expected-error @below {{'moe.weight_source' op weight 'w' with separate scales must be a rank-2 q8_0 or q4_0 tensor, not transposed, got 'tensor<64x64xf32>'}}
moe.weight_source "w" in "m.onnx.data" at 0 : tensor<64x64xf32> with scales at 4096 : tensor<64x2xf16>

// -----

// No scale columns (found by the IR fuzzer: a division by zero).
// expected-error @below {{'moe.weight_source' op weight 'w': its scales 'tensor<64x0xf16>' must be [64, B] floats, B dividing its 64 columns into groups of a multiple of 32}}
moe.weight_source "w" in "m.onnx.data" at 0 : tensor<64x64x!moe.quant<q8_0>> with scales at 4096 : tensor<64x0xf16>

// -----

// expected-error @below {{'moe.weight_source' op weight 'w': its scales 'tensor<64x4xf16>' must be [64, B] floats, B dividing its 64 columns into groups of a multiple of 32}}
moe.weight_source "w" in "m.onnx.data" at 0 : tensor<64x64x!moe.quant<q8_0>> with scales at 4096 : tensor<64x4xf16>

// -----

// One scale row per stored row: the row selection's tensor has 256.
// expected-error @below {{'moe.weight_source' op weight 'w': its scales 'tensor<128x2xf32>' must be [256, B] floats, B dividing its 64 columns into groups of a multiple of 32}}
moe.weight_source "w" in "m.onnx.data" at 0 : tensor<128x64x!moe.quant<q8_0>> rows 0 step 2 of tensor<256x64x!moe.quant<q8_0>> with scales at 16384 : tensor<128x2xf32>

// -----

// expected-error @below {{'moe.weight_source' op scales offset 4098 of weight 'w' is not a multiple of their element size (4 bytes)}}
moe.weight_source "w" in "m.onnx.data" at 0 : tensor<64x64x!moe.quant<q8_0>> with scales at 4098 : tensor<64x2xf32>

// -----

// The range a row selection reads (the whole `of` tensor) must end below
// 2^63 bytes.
// expected-error @below {{'moe.weight_source' op weight 'w' ends beyond 2^63 bytes}}
moe.weight_source "w" in "m.onnx.data" at 9223372036854775000 : tensor<4x64xf32> rows 0 step 2 of tensor<8x64xf32>

// -----

// Sources with a layout may share bytes (gate and up rows of one block, a
// table used as it is and transposed); sources without one may not.
module attributes {moe.weight_dir = "/models/onnx"} {
  moe.weight_source "gate" in "a.data" at 0 : tensor<4x64xf32> rows 0 step 2 of tensor<8x64xf32>
  moe.weight_source "up" in "a.data" at 0 : tensor<4x64xf32> rows 1 step 2 of tensor<8x64xf32>
  moe.weight_source "emb" in "a.data" at 2048 : tensor<64x64xf32>
  moe.weight_source "head" in "a.data" at 2048 : tensor<64x64xf32> transposed
  // expected-error @below {{'moe.weight_source' op weight 'b' at bytes [2304, 2560) overlaps weight 'emb' at [2048, 18432) of a.data}}
  moe.weight_source "b" in "a.data" at 2304 : tensor<64xf32>
}
