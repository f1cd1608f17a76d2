//===- MoEDialect.td - moe dialect definition --------------*- tablegen -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_TD
#define MOE_DIALECT_TD

include "mlir/IR/OpBase.td"

def MoE_Dialect : Dialect {
  let name = "moe";
  let cppNamespace = "::mlir::moe";
  let summary = "Mixture-of-Experts language models with first-class router and experts";
  let description = [{
    The `moe` dialect describes one forward step of a Mixture-of-Experts
    decoder (Mixtral first) on tensors. Routing (`moe.router`) and the expert
    bank (`moe.experts`) are single ops, so passes can fuse and schedule them
    as units instead of rediscovering them in a sea of matmuls.

    Conventions:

    * Activations are `f32` tensors whose first dimension is the token
      dimension (static or `?`); all other dimensions are static.
    * Weights are never stored in the IR. `moe.weight` names a tensor of the
      model (its Hugging Face name) and gives its static type; weights may be
      `f32`, `f16` or `bf16`, or block-quantised (`!moe.quant<q8_0>`,
      `q4_0`, `q4_1`) where an op multiplies by them, and every op
      accumulates in `f32`.
    * Every linear map is `x @ Wᵀ` with `W` in the Hugging Face `[out, in]`
      layout.
    * A module imported from a model file carries the model's
      hyper-parameters as `moe.model = #moe.model<...>`, and
      `moe.weight_dir` (the directory the weights live in) and one
      `moe.weight_source` per weight: together these two are the weight
      manifest. In such a module every
      `moe.weight` must have a source of the same type.
    * The key/value cache of one attention layer is an SSA value of type
      `!moe.kv_cache`; `moe.attention` consumes the cache holding the earlier
      positions and returns it with the new tokens appended.
  }];
  let useDefaultTypePrinterParser = 1;
  let useDefaultAttributePrinterParser = 1;
  // Checks `moe.model` and `moe.weight_dir` on a module: see MoEDialect::
  // verifyOperationAttribute.
  let hasOperationAttrVerify = 1;
  let extraClassDeclaration = [{
  private:
    void registerAttributes();
    void registerTypes();
  public:
  }];
}

class MoE_Op<string mnemonic, list<Trait> traits = []>
    : Op<MoE_Dialect, mnemonic, traits>;

#endif // MOE_DIALECT_TD
