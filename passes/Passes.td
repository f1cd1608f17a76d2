//===- Passes.td - moe dialect passes ----------------------*- tablegen -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_PASSES_TD
#define MOE_PASSES_TD

include "mlir/Pass/PassBase.td"

def EstimateCost : Pass<"moe-estimate-cost", "::mlir::func::FuncOp"> {
  let summary = "Annotate a forward step with its weight traffic and FLOPs";
  let description = [{
    Computes, for each function, what one forward step over `step-tokens`
    tokens must read and compute because of its weights, and records it in a
    `moe.cost` dictionary on the function. Decode of an MoE model is bound by
    memory bandwidth, so `bytes_per_step / bandwidth` is the speed limit
    that benchmarks compare against.

    * `weight_bytes`: the storage of every `moe.weight` in the function.
    * `bytes_per_step`: weight bytes one step reads. A weight feeding
      `moe.linear` or `moe.rms_norm` is read whole; an embedding table
      contributes `min(step-tokens, vocab)` rows; an expert weight
      contributes the expected fraction of experts a step touches under
      uniform routing, `1 - (1 - k/E)^step-tokens` (exactly `k/E` for one
      token). A weight with several users counts once, at its largest read.
    * `flops_per_step`: multiply-adds ×2 of the weight GEMMs: `2·N·K` per
      token for each `moe.linear`, `6·k·I·H` per token for `moe.experts`.
      Attention's score and value products depend on the context length and
      are not included.

    Before:

    ```mlir
    func.func @head(%h: tensor<?x64xf32>) -> tensor<?x256xf32> {
      %w = moe.weight "lm_head.weight" : tensor<256x64xf16>
      %l = moe.linear %h, %w : tensor<?x64xf32>, tensor<256x64xf16>
      return %l : tensor<?x256xf32>
    }
    ```

    After `--moe-estimate-cost`:

    ```mlir
    func.func @head(%h: tensor<?x64xf32>) -> tensor<?x256xf32>
        attributes {moe.cost = {bytes_per_step = 32768 : i64,
                                flops_per_step = 32768 : i64,
                                step_tokens = 1 : i64,
                                weight_bytes = 32768 : i64}} {
      ...
    }
    ```
  }];
  let options = [
    Option<"stepTokens", "step-tokens", "int64_t", /*default=*/"1",
           "Tokens processed by one step (1 for batch-1 decode)">,
  ];
  let statistics = [
    Statistic<"numWeights", "num-weights", "Number of moe.weight ops">,
    Statistic<"numExpertBanks", "num-expert-banks",
              "Number of moe.experts ops">,
  ];
}

#endif // MOE_PASSES_TD
