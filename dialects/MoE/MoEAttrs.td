//===- MoEAttrs.td - moe dialect attributes ----------------*- tablegen -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_ATTRS_TD
#define MOE_ATTRS_TD

include "dialects/MoE/MoEDialect.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"

def MoE_ScoringSoftmax : I32EnumAttrCase<"Softmax", 0, "softmax">;
def MoE_ScoringSigmoid : I32EnumAttrCase<"Sigmoid", 1, "sigmoid">;

def MoE_ScoringFuncAttr : I32EnumAttr<"ScoringFunc",
    "how router logits become expert scores",
    [MoE_ScoringSoftmax, MoE_ScoringSigmoid]> {
  let cppNamespace = "::mlir::moe";
}

def MoE_ModelAttr : AttrDef<MoE_Dialect, "Model"> {
  let mnemonic = "model";
  let summary = "the hyper-parameters of the model a module was imported from";
  let description = [{
    The contract between a frontend and the later stages: a module imported
    by `moe-translate` (or loaded by `moe-compile`) carries it as its
    `moe.model` attribute. `moe-plan-kv-cache` takes its default `max-seq`
    from `max_positions`; the targets size the caller's logits buffer by
    `vocab_size`, check the embedding table against `vocab_size` and
    `hidden_size`, and expect one KV cache per layer (`num_layers`).

    ```mlir
    module attributes {moe.model = #moe.model<architecture = "mixtral",
        vocab_size = 256, hidden_size = 64, intermediate_size = 128,
        num_layers = 2, num_heads = 4, num_kv_heads = 2, head_dim = 16,
        num_experts = 4, top_k = 2, max_positions = 512>} {
    }
    ```

    Every field is required (the parser accepts them in any order). The
    verifier bounds each size as the op verifiers bound shapes, so that
    buffers sized from it fit in int64: `max_positions` in
    `[1, 2147483647]` (positions are int32 at run time), every other size in
    `[1, 16777216]`; `num_heads` is a multiple of `num_kv_heads` and
    `top_k` is at most `num_experts`. `architecture` is the family's name
    (`config.json`'s `model_type`), not empty.
  }];
  let parameters = (ins
    StringRefParameter<"the model family (`config.json`'s `model_type`)">:
        $architecture,
    AttrParameter<"int64_t", "tokens in the vocabulary">:$vocab_size,
    AttrParameter<"int64_t", "width H of the residual stream">:$hidden_size,
    AttrParameter<"int64_t", "width I of one expert's SwiGLU">:
        $intermediate_size,
    AttrParameter<"int64_t", "decoder layers (one KV cache each)">:$num_layers,
    AttrParameter<"int64_t", "query heads">:$num_heads,
    AttrParameter<"int64_t", "key/value heads (GQA)">:$num_kv_heads,
    AttrParameter<"int64_t", "width of one attention head">:$head_dim,
    AttrParameter<"int64_t", "experts E per MoE layer">:$num_experts,
    AttrParameter<"int64_t", "experts k each token is routed to">:$top_k,
    AttrParameter<"int64_t", "longest sequence the model supports">:
        $max_positions
  );
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

#endif // MOE_ATTRS_TD
