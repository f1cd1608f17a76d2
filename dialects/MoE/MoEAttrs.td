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

def MoE_QuantQ8_0 : I32EnumAttrCase<"Q8_0", 0, "q8_0">;
def MoE_QuantQ4_0 : I32EnumAttrCase<"Q4_0", 1, "q4_0">;
def MoE_QuantQ4_1 : I32EnumAttrCase<"Q4_1", 2, "q4_1">;
def MoE_QuantQ4_K : I32EnumAttrCase<"Q4_K", 3, "q4_K">;
def MoE_QuantQ6_K : I32EnumAttrCase<"Q6_K", 4, "q6_K">;
def MoE_QuantQ5_K : I32EnumAttrCase<"Q5_K", 5, "q5_K">;

def MoE_QuantFormatAttr : I32EnumAttr<"QuantFormat",
    "block-quantised weight format",
    [MoE_QuantQ8_0, MoE_QuantQ4_0, MoE_QuantQ4_1, MoE_QuantQ4_K,
     MoE_QuantQ6_K, MoE_QuantQ5_K]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}

def MoE_RopeLinear : I32EnumAttrCase<"Linear", 1, "linear">;
def MoE_RopeDynamic : I32EnumAttrCase<"Dynamic", 2, "dynamic">;
def MoE_RopeYarn : I32EnumAttrCase<"Yarn", 3, "yarn">;
def MoE_RopeLlama3 : I32EnumAttrCase<"Llama3", 4, "llama3">;

def MoE_RopeTypeAttr : I32EnumAttr<"RopeType",
    "a scaled RoPE type (transformers' rope_type other than default)",
    [MoE_RopeLinear, MoE_RopeDynamic, MoE_RopeYarn, MoE_RopeLlama3]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}

// A double (as an APFloat, which hashes), printed so that it reads back
// the same (AsmPrinter::printFloat).
class MoE_DoubleParameter<string desc> : APFloatParameter<desc> {
  let parser = [{ [&]() -> ::mlir::FailureOr<::llvm::APFloat> {
    double v;
    if ($_parser.parseFloat(v))
      return ::mlir::failure();
    return ::llvm::APFloat(v);
  }() }];
  let printer = [{ $_printer.printFloat($_self) }];
}
class MoE_OptionalDoubleParameter<string desc> : MoE_DoubleParameter<desc> {
  let defaultValue = "::llvm::APFloat(0.0)";
}
// `true` or `false`.
class MoE_BoolParameter<string desc> : AttrOrTypeParameter<"bool", desc> {
  let parser = [{ [&]() -> ::mlir::FailureOr<bool> {
    if (succeeded($_parser.parseOptionalKeyword("true")))
      return true;
    if (succeeded($_parser.parseOptionalKeyword("false")))
      return false;
    return $_parser.emitError($_parser.getCurrentLocation(),
                              "expected true or false");
  }() }];
  let printer = [{ $_printer << ($_self ? "true" : "false") }];
  let defaultValue = "false";
}

def MoE_RopeScalingAttr : AttrDef<MoE_Dialect, "RopeScaling"> {
  let mnemonic = "rope_scaling";
  let summary = "a scaled RoPE type and its parameters (transformers' rope_type)";
  let description = [{
    How `moe.rope` (and the RoPE of a `moe.fused_linear`) scales its
    frequencies, with transformers' semantics (modeling_rope_utils.py); the
    default RoPE has no attribute. With `inv_freq_i = theta^(-2i/D)`:

    * `linear`: `inv_freq_i / factor`.
    * `dynamic`: a forward call whose largest position + 1, `s`, exceeds
      `max_positions` (config.json's `max_position_embeddings`) uses the base
      `theta * (factor * s / max_positions - (factor - 1))^(D / (D - 2))`;
      other calls the default frequencies. Keys already in the KV cache keep
      the rotation they were written with.
    * `yarn`: pairs below the correction range of `beta_fast` and
      `beta_slow` (over `original_max_positions`; `truncate` rounds it to
      whole pairs) keep `inv_freq_i`, pairs above it take
      `inv_freq_i / factor`, a linear ramp between; cos and sin are
      multiplied by `attention` (the resolved attention factor).
    * `llama3`: wavelengths `2π / inv_freq_i` below `original_max_positions
      / high_freq_factor` keep `inv_freq_i`, above `original_max_positions /
      low_freq_factor` take `inv_freq_i / factor`, and those between blend
      the two by `(original_max_positions / wavelength - low_freq_factor) /
      (high_freq_factor - low_freq_factor)`.

    ```mlir
    %q2 = moe.rope %q, %pos head_dim 16 theta 1.000000e+04
        scaling <linear, factor = 2.000000e+00> : tensor<?x64xf32>, tensor<?xi32>
    %k2 = moe.rope %k, %pos head_dim 16 theta 1.000000e+04
        scaling <yarn, factor = 4.000000e+00, original_max_positions = 16,
                 beta_fast = 3.200000e+01, beta_slow = 1.000000e+00,
                 attention = 1.138629e+00, truncate = true>
        : tensor<?x64xf32>, tensor<?xi32>
    ```

    The verifier checks that `factor` is positive and finite, that
    `dynamic` has `max_positions`, `yarn` and `llama3`
    `original_max_positions` (each in `[1, 2147483647]`), that yarn's
    `beta_fast >= beta_slow > 0` and `attention > 0`, that llama3's
    `0 < low_freq_factor < high_freq_factor`, and that no parameter of
    another type is given.
  }];
  let parameters = (ins
    EnumParameter<MoE_RopeTypeAttr>:$type,
    MoE_DoubleParameter<"the scaling factor">:$factor,
    DefaultValuedParameter<"int64_t", "0",
        "dynamic: max_position_embeddings">:$max_positions,
    DefaultValuedParameter<"int64_t", "0",
        "yarn, llama3: original_max_position_embeddings">:
        $original_max_positions,
    MoE_OptionalDoubleParameter<"yarn: beta_fast">:$beta_fast,
    MoE_OptionalDoubleParameter<"yarn: beta_slow">:$beta_slow,
    MoE_OptionalDoubleParameter<"yarn: the factor of cos and sin">:$attention,
    MoE_BoolParameter<"yarn: round the correction range to whole pairs">:
        $truncate,
    MoE_OptionalDoubleParameter<"llama3: low_freq_factor">:$low_freq_factor,
    MoE_OptionalDoubleParameter<"llama3: high_freq_factor">:$high_freq_factor
  );
  let assemblyFormat = "`<` $type `,` struct($factor, $max_positions, $original_max_positions, $beta_fast, $beta_slow, $attention, $truncate, $low_freq_factor, $high_freq_factor) `>`";
  let genVerifyDecl = 1;
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

def MoE_PlacementAttr : AttrDef<MoE_Dialect, "Placement"> {
  let mnemonic = "placement";
  let summary = "where moe-plan-memory put an op's buffers in the arena";
  let description = [{
    The contract between `moe-plan-memory` and the lowerings, on each op it
    planned as its `moe.placement` attribute: `results` holds the offset of
    each tensor result's buffer, in floats per batch token, in result order
    (empty when the op's only tensor result is the returned logits, which
    go to the caller's buffer); `scratch` the offset of the working memory
    the target's kernels need during the op, when they need any.

    ```mlir
    %h = moe.rms_norm %x, %w eps 1.0e-05 {moe.placement = #moe.placement<results = array<i64: 64>>} : ...
    %g = moe.grouped_matmul ... {moe.placement = #moe.placement<results = array<i64: 320>, scratch = 0>} : ...
    ```

    Offsets are at most 2^36 floats per token; the dialect checks that an
    op's placement has one offset per tensor result.
  }];
  let parameters = (ins
    AttrParameter<"::mlir::DenseI64ArrayAttr",
                  "offset of each tensor result (floats per batch token)">:
        $results,
    OptionalParameter<"std::optional<int64_t>",
                      "offset of the op's scratch (floats per batch token)">:
        $scratch
  );
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

def MoE_MemoryPlanAttr : AttrDef<MoE_Dialect, "MemoryPlan"> {
  let mnemonic = "memory_plan";
  let summary = "the activation arena moe-plan-memory planned for a target";
  let description = [{
    On a planned function as its `moe.memory_plan` attribute: the `target`
    whose kernels' scratch the plan holds (`#moert.cpu`, `#moert.cuda`;
    the lowerings refuse a plan for another target), the largest batch it
    was sized for, the arena in floats per batch token, and for that batch
    the arena's bytes, the lower bound (the most bytes live at once) and
    the bytes of a plan without reuse.

    ```mlir
    func.func @forward(...) attributes {moe.memory_plan = #moe.memory_plan<
        target = #moert.cpu, max_batch_tokens = 512, floats_per_token = 777,
        arena_bytes = 1591296, lower_bound_bytes = 1591296,
        naive_bytes = 5287936>}
    ```
  }];
  let parameters = (ins
    AttrParameter<"::mlir::Attribute", "the target planned for">:$target,
    AttrParameter<"int64_t", "most tokens of one forward call">:
        $max_batch_tokens,
    AttrParameter<"int64_t", "arena floats per batch token">:
        $floats_per_token,
    AttrParameter<"int64_t", "arena bytes at max_batch_tokens">:$arena_bytes,
    AttrParameter<"int64_t", "most bytes live at one op">:$lower_bound_bytes,
    AttrParameter<"int64_t", "bytes of every buffer apart">:$naive_bytes
  );
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

def MoE_KVCachePlanAttr : AttrDef<MoE_Dialect, "KVCachePlan"> {
  let mnemonic = "kv_cache_plan";
  let summary = "the KV caches moe-plan-kv-cache planned";
  let description = [{
    On a planned function as its `moe.kv_cache_plan` attribute: the
    longest sequence a session may reach (`max_seq`), and per layer, in the
    order of the cache arguments, the slots of its cache (`capacities`),
    its sliding window (`windows`, 0 for full attention) and its bytes
    (`bytes`); `total_bytes` is their sum. The lowerings take `max_seq`
    from it, and the capacities are also in the `!moe.kv_cache` types.

    ```mlir
    func.func @forward(...) attributes {moe.kv_cache_plan = #moe.kv_cache_plan<
        max_seq = 512, total_bytes = 262144, capacities = [512, 512],
        windows = [0, 0], bytes = [131072, 131072]>}
    ```
  }];
  let parameters = (ins
    AttrParameter<"int64_t", "longest sequence a session may reach">:
        $max_seq,
    AttrParameter<"int64_t", "bytes of all the caches">:$total_bytes,
    AttrParameter<"::mlir::DenseI64ArrayAttr", "slots of each layer's cache">:
        $capacities,
    AttrParameter<"::mlir::DenseI64ArrayAttr",
                  "sliding window of each layer (0: full)">:$windows,
    AttrParameter<"::mlir::DenseI64ArrayAttr", "bytes of each layer's cache">:
        $bytes
  );
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

#endif // MOE_ATTRS_TD
