//===- Passes.td - lowerings to the targets' launch plans --*- tablegen -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_COMPILER_PASSES_TD
#define MOE_COMPILER_PASSES_TD

include "mlir/Pass/PassBase.td"

def LowerToCpu : Pass<"moe-lower-to-cpu", "::mlir::ModuleOp"> {
  let summary = "Lower a planned @forward to the CPU target's launch plan";
  let description = [{
    Converts every op of a planned `@forward` (after `moe-plan-kv-cache` and
    `moe-plan-memory{target=cpu}`) into `moert.call`s of the C++ kernels in
    `runtime/include/moert/kernels.h`, one conversion pattern per moe op.
    Each result becomes a `moert.view` at its planned offset; the scratch
    the CPU kernels stage rows in (`moe.experts`, gathering or `silu_mul`
    `moe.grouped_matmul`) becomes a view at the op's planned `scratch`.
    The function becomes destination-passing: the logits go to a new
    argument, and argument attributes (`moert.arg`, `moert.kv_layer`,
    `moert.kv_window`) replace positional conventions. Unplanned IR is an
    error. `moe-translate --moe-to-cpp` prints the result.

    Before (planned):

    ```mlir
    %n = moe.rms_norm %h, %w eps 1.0e-05 {moe.placement = #moe.placement<results = [64]>}
        : tensor<?x64xf32>, tensor<64xf32>
    ```

    After `--moe-lower-to-cpu`:

    ```mlir
    %0 = moert.view offset 64 size 64 : memref<?x64xf32>
    %cst = arith.constant 9.99999974E-6 : f32
    %1 = moert.tokens : index
    moert.call "moert::rmsNorm" [f32, 64 : i64] (%h, %w, %cst, %1, %0)
        : (memref<?x64xf32>, memref<64xf32>, f32, index, memref<?x64xf32>) -> ()
    ```
  }];
  let dependentDialects = ["::mlir::moert::MoERTDialect",
                           "::mlir::arith::ArithDialect"];
}

def LowerToCuda : Pass<"moe-lower-to-cuda", "::mlir::ModuleOp"> {
  let summary = "Lower a planned @forward to the CUDA target's launch plan";
  let description = [{
    Converts every op of a planned `@forward` (after `moe-plan-kv-cache` and
    `moe-plan-memory{target=cuda}`) into `moert.launch`es of `moert.kernel`s,
    each a specialisation of a template in
    `runtime/include/moert/cuda/kernels.cuh` declared once per module, one
    conversion pattern per moe op. The target's decisions are made here and
    are visible in the result, each controlled by an option:

    * the decode/prefill choice: `moert.if_decode max_tokens N` around the
      ops that have both variants (`decode-max-tokens`);
    * tensor cores: a 16-bit matmul whose input width is a multiple of 64
      and output width a multiple of 4 gets a `gemmMma` kernel for prefill,
      else the gemv kernel serves both (`tensor-cores=false`: gemv always);
    * attention key splits for decode: one per 256 keys a query can see, at
      most 32 (`attention-splits=N` forces N), and the `moert.workspace` of
      their partial results, `decode-max-tokens * heads * splits *
      (head_dim + 2)` floats;
    * the q/k/v decode kernel: up to three projections of one
      `moe.fused_linear` in one `gemvMulti` launch, RoPE applied as they
      are stored (`fuse-qkv-decode=false`: one gemv per projection).

    ```mlir
    moert.if_decode max_tokens 8 {
      moert.launch @linear_gemv_2 [affine_map<(n) -> (32)>, affine_map<(n) -> (1)>] (...)
    } else {
      moert.launch @linear_mma_3 [affine_map<(n) -> (n ceildiv 64)>, affine_map<(n) -> (2)>] (...)
    }
    ```

    `moe-translate --moe-to-cuda` prints the kernels, `--moe-to-cuda-host`
    the host plan. The unfused expert ops (`moe.router`, `moe.experts`) are
    an error: the CUDA target runs the fused path of the -O2 pipeline.
  }];
  let options = [
    Option<"decodeMaxTokens", "decode-max-tokens", "int64_t", /*default=*/"8",
           "Largest token count run with the decode kernels (gemv, "
           "per-query attention); larger chunks run the prefill kernels">,
    Option<"tensorCores", "tensor-cores", "bool", /*default=*/"true",
           "Use tensor-core (mma) kernels for the prefill matmuls whose "
           "weights allow it">,
    Option<"attentionSplits", "attention-splits", "int64_t", /*default=*/"0",
           "Key splits of the decode attention (0: one per 256 keys a query "
           "can see, at most 32)">,
    Option<"fuseQkvDecode", "fuse-qkv-decode", "bool", /*default=*/"true",
           "Run the projections of a moe.fused_linear as one gemvMulti "
           "launch for decode">,
  ];
  let dependentDialects = ["::mlir::moert::MoERTDialect",
                           "::mlir::arith::ArithDialect"];
}

#endif // MOE_COMPILER_PASSES_TD
