// RUN: moe-opt %s --split-input-file --verify-diagnostics

func.func @view_static() {
  // expected-error @below {{views a batch: a memref of rank 1 or 2 with a dynamic first dimension}}
  %v = moert.view offset 0 size 64 : memref<4x64xf32>
  return
}

// -----

func.func @view_type() {
  // expected-error @below {{views f32 or i32 elements, not 'f16'}}
  %v = moert.view offset 0 size 64 : memref<?x64xf16>
  return
}

// -----

func.func @view_size() {
  // expected-error @below {{size 32 is not whole rows of 64 elements}}
  %v = moert.view offset 0 size 32 : memref<?x64xf32>
  return
}

// -----

func.func @view_rows() {
  // expected-error @below {{size 96 is not whole rows of 64 elements}}
  %v = moert.view offset 0 size 96 : memref<?x64xf32>
  return
}

// -----

func.func @view_width() {
  // expected-error @below {{rows of a static, positive width}}
  %v = moert.view offset 0 size 1 : memref<?x0xf32>
  return
}

// -----

func.func @view_offset() {
  // expected-error @below {{attribute 'offset' failed to satisfy constraint}}
  %v = moert.view offset -1 size 64 : memref<?x64xf32>
  return
}

// -----

func.func @weight_dynamic() {
  // expected-error @below {{a weight has a static shape of rank 1 or 2}}
  %w = moert.weight "w" : memref<?x64xf16>
  return
}

// -----

func.func @table_count(%w: memref<64xf16>) {
  // expected-error @below {{has 1 entries for a table of 2}}
  %t = moert.table %w : (memref<64xf16>) -> !moert.table<2, f16>
  return
}

// -----

func.func @table_kind(%v: memref<?x64xf32>) {
  // expected-error @below {{entries of a weight table are weights}}
  %t = moert.table %v : (memref<?x64xf32>) -> !moert.table<1, none>
  return
}

// -----

func.func @table_type(%w: memref<64xf16>) {
  // expected-error @below {{entry of 'f16' in a table of 'bf16'}}
  %t = moert.table %w : (memref<64xf16>) -> !moert.table<1, bf16>
  return
}

// -----

// expected-error @below {{an output table holds f32 buffers}}
func.func @table_output(%t: !moert.table<1, f16, output = true>) {
  return
}

// -----

func.func @call_targs() {
  // expected-error @below {{template arguments are types, integers or booleans, not "x"}}
  moert.call "moert::add" ["x"] () : () -> ()
  return
}

// -----

func.func @call_negative() {
  // expected-error @below {{integer template arguments are non-negative i64, not -64}}
  moert.call "moert::add" [-64] () : () -> ()
  return
}

// -----

func.func @call_wide() {
  // expected-error @below {{integer template arguments are non-negative i64, not 18446744073709551680 : i128}}
  moert.call "moert::add" [18446744073709551680 : i128] () : () -> ()
  return
}

// -----

// expected-error @below {{a kernel returns nothing}}
moert.kernel @k "moert::cuda::add" [64] threads 256 : (f32) -> f32

// -----

func.func @launch_undefined() {
  // expected-error @below {{launches 'nowhere', which is not a moert.kernel}}
  moert.launch @nowhere [affine_map<(n) -> (n)>, affine_map<(n) -> (1)>] () : () -> ()
  return
}

// -----

moert.kernel @k "moert::cuda::add" [64] threads 256 : (f32) -> ()
func.func @launch_types(%x: f64) {
  // expected-error @below {{passes ('f64') to a kernel of '(f32) -> ()'}}
  moert.launch @k [affine_map<(n) -> (n)>, affine_map<(n) -> (1)>] (%x) : (f64) -> ()
  return
}

// -----

moert.kernel @k "moert::cuda::add" [64] threads 256 : () -> ()
func.func @launch_grid() {
  // expected-error @below {{grid dimensions are maps of the token count}}
  moert.launch @k [affine_map<(n, m) -> (n)>, affine_map<(n) -> (1)>] () : () -> ()
  return
}

// -----

moert.kernel @k "moert::cuda::add" [64] threads 256 : () -> ()
func.func @launch_divisor() {
  // expected-error @below {{grid dimensions are at most 4 expressions of at most 64 terms, constants in [0, 2^31) and positive divisors}}
  moert.launch @k [affine_map<(n) -> (n floordiv 0)>, affine_map<(n) -> (1)>] () : () -> ()
  return
}

// -----

moert.kernel @k "moert::cuda::add" [64] threads 256 : () -> ()
func.func @launch_negative() {
  // expected-error @below {{grid dimensions are at most 4 expressions}}
  moert.launch @k [affine_map<(n) -> (-5)>, affine_map<(n) -> (1)>] () : () -> ()
  return
}

// -----

moert.kernel @k "moert::cuda::add" [64] threads 256 : () -> ()
func.func @launch_long() {
  // expected-error @below {{grid dimensions are at most 4 expressions}}
  moert.launch @k [affine_map<(n) -> (n ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2 ceildiv 2)>, affine_map<(n) -> (1)>] () : () -> ()
  return
}

// -----

moert.kernel @k "moert::cuda::add" [64] threads 256 : () -> ()
func.func @launch_dims() {
  // expected-error @below {{has a grid of two dimensions (x, y)}}
  moert.launch @k [affine_map<(n) -> (n)>] () : () -> ()
  return
}

// -----

// expected-error @below {{argument 0: moert.arg must be "tokens", "positions" or "logits"}}
func.func @arg_role(%x: memref<?xi32> {moert.arg = "weights"}) {
  return
}

// -----

// expected-error @below {{argument 0: moert.kv_layer must be a non-negative i64}}
func.func @arg_layer(%c: !moe.kv_cache<2x16x16xf32> {moert.kv_layer = -1 : i64}) {
  return
}

// -----

// expected-error @below {{argument 0: moert.kv_layer must be a non-negative i64}}
func.func @arg_layer_wide(%c: !moe.kv_cache<2x16x16xf32> {moert.kv_layer = 18446744073709551617 : i128}) {
  return
}

// -----

// expected-error @below {{unknown argument attribute "moert.other"}}
func.func @arg_unknown(%x: memref<?xi32> {moert.other = 1 : i64}) {
  return
}
