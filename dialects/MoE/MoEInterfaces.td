//===- MoEInterfaces.td - moe dialect op interfaces --------*- tablegen -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_INTERFACES_TD
#define MOE_INTERFACES_TD

include "mlir/IR/OpBase.td"

def MoE_WeightCostOpInterface : OpInterface<"WeightCostOpInterface"> {
  let cppNamespace = "::mlir::moe";
  let description = [{
    An op that consumes `moe.weight` values says what one forward step over
    `stepTokens` tokens costs because of them: the weight bytes it reads and
    the FLOPs of its products with the weights. `moe-estimate-cost` sums
    these over a function, and refuses a function in which a `moe.weight`
    reaches an op without this interface, so every op that may consume a
    weight implements it.

    The figures are properties of the computation, not of how a pipeline
    splits it into ops: an unfused op and the ops a pass fuses it into (or
    splits it into) report the same totals. So

    * an expert's weights are read with the expected probability that a
      step touches that expert under uniform routing,
      `1 - (1 - k/E)^stepTokens` (`getExpectedExpertShare`), whether the
      expert bank is one `moe.experts` or `moe.grouped_matmul`s over a
      `moe.expert_permute`;
    * FLOPs count only products with weights, 2 per multiply-add: `2·N·K`
      a token for an `[N, K]` weight (`6·k·I·H` a token for an expert bank).
      Elementwise work (norms, activations, residual adds, RoPE, scoring)
      is left out, because the epilogue fusions move it between ops.

    ```mlir
    %w = moe.weight "lm_head.weight" : tensor<256x64xf16>
    %l = moe.linear %h, %w : tensor<?x64xf32>, tensor<256x64xf16>
    // getWeightBytesRead(operand 1, T) = 32768, getFlops(T) = 32768 * T
    ```
  }];
  let methods = [
    InterfaceMethod<[{
        Bytes of the weight bound to `weight` (an operand of this op,
        normally the result of a `moe.weight`) that one forward step over
        `stepTokens` tokens reads, in the weight's storage type. A weight
        read whole returns `getWeightStorageBytes(weight.get())`; an
        embedding table returns the rows a step looks up, an expert's
        weight its expected share (see the interface's description). A
        `moe.weight` bound to an activation operand (an `f32` weight is a
        valid activation) is read whole. The estimator takes, for a weight
        with several uses, the largest of their reads.
      }],
      "double", "getWeightBytesRead",
      (ins "::mlir::OpOperand &":$weight, "double":$stepTokens)>,
    InterfaceMethod<[{
        FLOPs of this op's products with its weights in one forward step
        over `stepTokens` tokens, 2 per multiply-add (expected values for
        expert weights: each token multiplies `k` experts). Ops that only
        scale by a weight (`moe.rms_norm`) or look rows up
        (`moe.embedding`) return 0.
      }],
      "double", "getFlops", (ins "double":$stepTokens)>,
    InterfaceMethod<[{
        Whether `operand` is one of this op's weights, which the targets
        read from the weight files (a `moe.weight` must be bound to it), and
        not an activation, which they read from the arena (a `moe.weight`
        must not be bound to it). The lowerings check both directions.
      }],
      "bool", "isWeightOperand", (ins "::mlir::OpOperand &":$operand)>,
    InterfaceMethod<[{
        Whether the weight `operand` may be block-quantised (`!moe.quant`),
        and as what: `Dense` for a weight the op multiplies by or gathers
        rows of (a projection, lm_head, the embedding table), `Expert` for
        an expert's weight, `No` for the others (norm scales, router gates,
        activations). `moe-quantize-weights` quantises a `moe.weight` only
        when every use takes it, and with `only=experts` only when every
        use is `Expert`.
      }],
      "::mlir::moe::QuantizableWeight", "getQuantizable",
      (ins "::mlir::OpOperand &":$operand), "",
      "return ::mlir::moe::QuantizableWeight::No;">,
  ];
  // A quantised weight operand must be one the op takes quantised, with
  // rows of whole blocks.
  let verify = [{
    return ::mlir::moe::verifyQuantizedWeightOperands($_op);
  }];
}

#endif // MOE_INTERFACES_TD
