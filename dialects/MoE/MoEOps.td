//===- MoEOps.td - moe dialect operations ------------------*- tablegen -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_OPS_TD
#define MOE_OPS_TD

include "dialects/MoE/MoEDialect.td"
include "dialects/MoE/MoEAttrs.td"
include "dialects/MoE/MoEInterfaces.td"
include "dialects/MoE/MoETypes.td"
include "mlir/IR/CommonAttrConstraints.td"
include "mlir/IR/CommonTypeConstraints.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

//===----------------------------------------------------------------------===//
// Type constraints
//===----------------------------------------------------------------------===//

/// Activations: [tokens, features] in f32; the token dimension may be `?`.
def MoE_ActTensor : 2DTensorOf<[F32]>;
/// Weights: statically shaped, in one of the storage types we support. The
/// ops that multiply by a weight (or gather its rows) also take it
/// block-quantised (`!moe.quant`); norm scales and router gates do not.
def MoE_WeightTensor : StaticShapeTensorOf<[F32, F16, BF16, MoE_QuantType]>;
def MoE_FloatWeightTensor : StaticShapeTensorOf<[F32, F16, BF16]>;
/// Token ids and positions: [tokens].
def MoE_TokenIdTensor : 1DTensorOf<[I32]>;
/// Expert indices chosen by the router: [tokens, k].
def MoE_ExpertIdTensor : 2DTensorOf<[I32]>;

//===----------------------------------------------------------------------===//
// moe.weight
//===----------------------------------------------------------------------===//

def MoE_WeightOp : MoE_Op<"weight", [Pure]> {
  let summary = "reference to a named weight tensor of the model";
  let description = [{
    Names one tensor of the model, by the name it has in the model's own
    files (the Hugging Face name for a `config.json` + safetensors model),
    and gives its static type. The IR never holds the data: the compiler
    records `(file, offset, dtype, shape)` for each name in the artifact's
    weight manifest and the runtime memory-maps the user's files.

    ```mlir
    %wq = moe.weight "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xbf16>
    ```
  }];
  let arguments = (ins StrAttr:$name);
  let results = (outs MoE_WeightTensor:$result);
  let assemblyFormat = "$name attr-dict `:` type($result)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// moe.weight_source
//===----------------------------------------------------------------------===//

def MoE_WeightSourceOp : MoE_Op<"weight_source",
    [HasParent<"::mlir::ModuleOp">]> {
  let summary = "where the bytes of a named weight live";
  let description = [{
    One entry of the weight manifest: the weight `name` is stored, in the
    layout and storage type of `type`, in `file` (relative to the module's
    `moe.weight_dir`) starting at byte `offset`. Its size follows from the
    type. Frontends emit one per weight at the top of the module; the runtime
    memory-maps the files instead of copying the data.

    ```mlir
    module attributes {moe.weight_dir = "/models/mixtral"} {
      moe.weight_source "model.norm.weight" in "model-00019-of-00019.safetensors" at 1024 : tensor<4096xbf16>
    }
    ```

    `moe-quantize-weights` marks a weight it quantises with the type its
    `moe.weight` now has; the bytes in `file` are still the original ones:

    ```mlir
    moe.weight_source "lm_head.weight" in "model.safetensors" at 128 : tensor<256x64xf32> quantized to tensor<256x64x!moe.quant<q8_0>>
    ```

    A weight whose bytes are not stored as `type` says how they are laid
    out in `file` (a frontend's importer emits this; rank 2 only, floats
    only). `transposed`: the file holds the row-major transpose of `type`
    (ONNX's `MatMul(x, W)` stores W [in, out]; the dialect's linear layers
    take [out, in]), `size(type)` bytes at `offset`:

    ```mlir
    moe.weight_source "w" in "model.onnx.data" at 0 : tensor<64x32xf32> transposed
    ```

    `rows S step K of T`: the file holds the row-major tensor `T` (same
    element type and columns as `type`) at `offset`, and the weight is its
    rows S, S + K, ..., S + (N - 1) * K, N being the rows of `type` (ONNX
    Runtime's `swiglu_fusion = 1` interleaves an expert's gate and up rows):

    ```mlir
    moe.weight_source "fc1[0].gate" in "model.onnx.data" at 0 : tensor<128x64xf32> rows 0 step 2 of tensor<256x64xf32>
    moe.weight_source "fc1[0].up" in "model.onnx.data" at 0 : tensor<128x64xf32> rows 1 step 2 of tensor<256x64xf32>
    ```

    `with scales at OFFSET : tensor<RxBxf16>` (a quantised `type`, q8_0 or
    q4_0, alone or with a row selection): the file holds the blocks as ONNX
    Runtime's QMoE stores them, values and scales apart. At `offset`, R
    rows of the values, offset binary (q8_0: one byte `u`, the value
    `d * (u - 128)`; q4_0: two per byte, the low nibble first, `d * (n -
    8)`); at OFFSET, R x B scales `d` (f32, f16 or bf16), B per row, each
    for `cols / B` values (a multiple of 32). Written as our blocks, that is
    exact when every scale is an f16 (moe-compile checks each one):

    ```mlir
    moe.weight_source "fc2[0]" in "model.onnx.data" at 0 : tensor<64x128x!moe.quant<q4_0>> with scales at 4096 : tensor<64x4xf16>
    ```

    Such a weight is not mapped in place: moe-compile reads it once and
    writes it, in the layout of `type`, into the artifact's weights file
    (below). Passes see only `type` (and `quantized`): a layout composes
    with `moe-quantize-weights`, which quantises the re-laid-out rows.
    Sources with a layout may share bytes with others; they are exempt
    from the manifest's overlap check.

    moe-compile writes the re-laid-out and the quantised tensors into one
    weights file beside the executable and points each such source at it:
    `artifact` says that `file` is that file (beside the executable, not in
    `moe.weight_dir`), and `type` is then the stored type (the quantised
    type, or the float type, now laid out as `type`).

    ```mlir
    moe.weight_source "lm_head.weight" in artifact "model.bin.weights.safetensors" at 96 : tensor<256x64x!moe.quant<q8_0>>
    ```
  }];
  let arguments = (ins StrAttr:$name, UnitAttr:$artifact, StrAttr:$file,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$offset,
                       TypeAttrOf<MoE_WeightTensor>:$type,
                       UnitAttr:$transposed,
                       OptionalAttr<ConfinedAttr<I64Attr, [IntNonNegative]>>:$row_start,
                       OptionalAttr<ConfinedAttr<I64Attr, [IntPositive]>>:$row_step,
                       OptionalAttr<TypeAttrOf<MoE_WeightTensor>>:$rows_of,
                       OptionalAttr<ConfinedAttr<I64Attr, [IntNonNegative]>>:$scales_offset,
                       OptionalAttr<TypeAttrOf<MoE_WeightTensor>>:$scales,
                       OptionalAttr<TypeAttrOf<MoE_WeightTensor>>:$quantized);
  let assemblyFormat = [{
    $name `in` (`artifact` $artifact^)? $file `at` $offset attr-dict `:` $type
    (`transposed` $transposed^)?
    (`rows` $row_start^ `step` $row_step `of` $rows_of)?
    (`with` `scales` `at` $scales_offset^ `:` $scales)?
    (`quantized` `to` $quantized^)?
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// Bytes the weight occupies in its file at `offset` (with a row
    /// selection, the whole `rows_of` tensor; with separate scales, the
    /// values alone).
    int64_t getSizeInBytes();
    /// With separate scales, the bytes they occupy at `scales_offset`.
    int64_t getScalesSizeInBytes();
    /// Whether the file's bytes are laid out otherwise than `type`
    /// (`transposed` or a row selection): moe-compile re-lays them out
    /// into the artifact's weights file.
    bool hasLayout() {
      return getTransposed() || getRowsOf().has_value() ||
             getScales().has_value();
    }
    /// The tensor the file holds at `offset`: `type`, its transpose, or
    /// `rows_of`.
    ::mlir::RankedTensorType getStoredType() {
      auto type = ::llvm::cast<::mlir::RankedTensorType>(getType());
      if (auto of = getRowsOf())
        return ::llvm::cast<::mlir::RankedTensorType>(*of);
      if (getTransposed() && type.getRank() == 2)
        return type.clone({type.getDimSize(1), type.getDimSize(0)});
      return type;
    }
    /// The type the module's moe.weight of this name has: the quantised
    /// type while a quantisation is pending, else `type`.
    ::mlir::RankedTensorType getWeightType() {
      return ::llvm::cast<::mlir::RankedTensorType>(
          getQuantized() ? *getQuantized() : getType());
    }
  }];
}

//===----------------------------------------------------------------------===//
// moe.embedding
//===----------------------------------------------------------------------===//

def MoE_EmbeddingOp : MoE_Op<"embedding",
    [Pure, InferTypeOpAdaptor,
     DeclareOpInterfaceMethods<MoE_WeightCostOpInterface,
         ["getQuantizable"]>]> {
  let summary = "token-embedding lookup";
  let description = [{
    Gathers one row of the `[vocab, hidden]` table per token id. Rows are
    converted to `f32`. An id outside `[0, vocab)` is a runtime error of
    the generated program, never an out-of-bounds read.

    ```mlir
    %h = moe.embedding %table[%ids] : tensor<256x64xf16>, tensor<?xi32>
    // %h : tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_WeightTensor:$table, MoE_TokenIdTensor:$ids);
  let results = (outs MoE_ActTensor:$result);
  let assemblyFormat = [{
    $table `[` $ids `]` attr-dict `:` type($table) `,` type($ids)
  }];
  }

//===----------------------------------------------------------------------===//
// moe.rms_norm
//===----------------------------------------------------------------------===//

def MoE_RMSNormOp : MoE_Op<"rms_norm",
    [Pure, InferTypeOpAdaptor,
     DeclareOpInterfaceMethods<MoE_WeightCostOpInterface>]> {
  let summary = "RMS normalisation with a learned scale";
  let description = [{
    For each token row `x` of width `H`:
    `y = x / sqrt(mean(x²) + epsilon) * weight`, computed in `f32`.

    ```mlir
    %a = moe.rms_norm %h, %w eps 1.000000e-05 : tensor<?x64xf32>, tensor<64xf32>
    ```
  }];
  let arguments = (ins MoE_ActTensor:$input, MoE_FloatWeightTensor:$weight,
                       F64Attr:$epsilon);
  let results = (outs MoE_ActTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight `eps` $epsilon attr-dict `:` type($input) `,` type($weight)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// moe.linear
//===----------------------------------------------------------------------===//

def MoE_LinearOp : MoE_Op<"linear",
    [Pure, InferTypeOpAdaptor,
     DeclareOpInterfaceMethods<MoE_WeightCostOpInterface,
         ["getQuantizable"]>]> {
  let summary = "linear map x @ Wᵀ without bias";
  let description = [{
    `input` is `[T, K]` and `weight` is `[N, K]` (the Hugging Face
    `[out, in]` layout); the result is `[T, N]`, accumulated in `f32`
    whatever the weight's storage type.

    ```mlir
    %q = moe.linear %a, %wq : tensor<?x64xf32>, tensor<128x64xf16>
    // %q : tensor<?x128xf32>
    ```

    With a `residual` (`[T, N]`, what `moe-fuse-epilogues` folds in from a
    following `moe.add`), the result is `x @ Wᵀ + residual`: each output
    element is the dot product plus its residual element, rounded exactly
    as the unfused add rounds it.

    ```mlir
    %h = moe.linear %attn, %wo residual %x
        : tensor<?x128xf32>, tensor<64x128xf32>, tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_ActTensor:$input, MoE_WeightTensor:$weight,
                       Optional<MoE_ActTensor>:$residual);
  let results = (outs MoE_ActTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight (`residual` $residual^)? attr-dict `:` type($input) `,`
    type($weight) (`,` type($residual)^)?
  }];
  let builders = [
    OpBuilder<(ins "Value":$input, "Value":$weight), [{
      build($_builder, $_state, input, weight, Value());
    }]>,
  ];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// moe.fused_linear
//===----------------------------------------------------------------------===//

def MoE_FusedLinearOp : MoE_Op<"fused_linear",
    [Pure, AttrSizedOperandSegments, InferTypeOpAdaptor,
     DeclareOpInterfaceMethods<MoE_WeightCostOpInterface,
         ["getQuantizable"]>]> {
  let summary = "several linear maps of one input in one op";
  let description = [{
    `moe.linear` of one input by each of two or more weights, as one op:
    result i is `input @ weights[i]ᵀ`, `[T, N_i]`. `moe-fuse-projections`
    produces it from sibling linears (a layer's q, k and v projections), so
    a target can read the input once and, for a decode step, run every
    projection in one kernel launch.

    ```mlir
    %q, %k, %v = moe.fused_linear %a weights [%wq, %wk, %wv]
        : (tensor<128x64xf16>, tensor<32x64xf16>, tensor<32x64xf16>)
        : tensor<?x64xf32>
    // %q : tensor<?x128xf32>, %k, %v : tensor<?x32xf32>
    ```

    With `rope [i, ...] at %positions head_dim D theta θ` (what
    `moe-fuse-epilogues` folds in from the `moe.rope` ops that read the
    results), results i, ... are returned with RoPE applied exactly as
    `moe.rope` applies it, so a kernel can rotate each pair of features as
    it stores them; `scaling <...>` after it is `moe.rope`'s scaled RoPE
    type, and `interleaved` its pairing of adjacent features.

    ```mlir
    %q, %k, %v = moe.fused_linear %a weights [%wq, %wk, %wv]
        : (tensor<128x64xf16>, tensor<32x64xf16>, tensor<32x64xf16>)
        rope [0, 1] at %pos head_dim 16 theta 1.000000e+06
        : tensor<?x64xf32>, tensor<?xi32>
    ```
  }];
  let arguments = (ins MoE_ActTensor:$input,
                       Variadic<MoE_WeightTensor>:$weights,
                       Optional<MoE_TokenIdTensor>:$positions,
                       OptionalAttr<DenseI64ArrayAttr>:$rope,
                       OptionalAttr<ConfinedAttr<I64Attr, [IntPositive]>>:$head_dim,
                       OptionalAttr<F64Attr>:$theta,
                       OptionalAttr<MoE_RopeScalingAttr>:$rope_scaling,
                       UnitAttr:$rope_interleaved);
  let results = (outs Variadic<MoE_ActTensor>:$results);
  let assemblyFormat = [{
    $input `weights` custom<ExpertList>($weights, type($weights))
    (`rope` $rope^ `at` $positions `head_dim` $head_dim `theta` $theta)?
    (`scaling` $rope_scaling^)?
    (`interleaved` $rope_interleaved^)?
    attr-dict `:` type($input) (`,` type($positions)^)?
  }];
  let builders = [
    OpBuilder<(ins "Value":$input, "ValueRange":$weights), [{
      build($_builder, $_state, input, weights, Value(), nullptr, nullptr,
            nullptr, nullptr, nullptr);
    }]>,
  ];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// Whether result `i` has RoPE applied.
    bool hasRope(int64_t i) {
      return getRope() && ::llvm::is_contained(*getRope(), i);
    }
  }];
}

//===----------------------------------------------------------------------===//
// moe.rope
//===----------------------------------------------------------------------===//

def MoE_RoPEOp : MoE_Op<"rope",
    [Pure, AllTypesMatch<["input", "result"]>]> {
  let summary = "rotary position embedding (rotate-half or interleaved pairs)";
  let description = [{
    Applies RoPE independently to each head of width `head_dim` in a
    `[T, heads * head_dim]` tensor. Within a head, pair `i`
    (`i < head_dim/2`) is rotated by the angle `pos * theta^(-2i/head_dim)`
    where `pos` is the token's absolute position. Pair `i` is elements `i`
    and `i + head_dim/2` (the Hugging Face "rotate half" convention), or,
    with `interleaved`, elements `2i` and `2i + 1` (the GPT-J / llama.cpp
    convention, for weights whose q and k rows are stored permuted that
    way, as GGUF files store them).

    ```mlir
    %qr = moe.rope %q, %pos head_dim 16 theta 1.000000e+06 : tensor<?x64xf32>, tensor<?xi32>
    %kr = moe.rope %k, %pos head_dim 16 theta 1.000000e+06 interleaved : tensor<?x64xf32>, tensor<?xi32>
    ```

    `scaling <...>` (a `#moe.rope_scaling`) gives a scaled RoPE type of
    transformers (`linear`, `dynamic`, `yarn`, `llama3`), which changes the
    frequency of each pair and, for yarn, multiplies cos and sin by an
    attention factor; without it the RoPE is transformers' `default`. The
    verifier also needs head_dim > 2 for `dynamic` (its base grows with the
    exponent D / (D - 2)) and theta != 1 for `yarn` (its correction range
    divides by ln theta).

    ```mlir
    %qs = moe.rope %q, %pos head_dim 16 theta 1.000000e+04 scaling <linear, factor = 2.000000e+00> : tensor<?x64xf32>, tensor<?xi32>
    ```
  }];
  let arguments = (ins MoE_ActTensor:$input, MoE_TokenIdTensor:$positions,
                       ConfinedAttr<I64Attr, [IntPositive]>:$head_dim,
                       F64Attr:$theta,
                       OptionalAttr<MoE_RopeScalingAttr>:$scaling,
                       UnitAttr:$interleaved);
  let results = (outs MoE_ActTensor:$result);
  let assemblyFormat = [{
    $input `,` $positions `head_dim` $head_dim `theta` $theta
    (`scaling` $scaling^)? (`interleaved` $interleaved^)? attr-dict
    `:` type($input) `,` type($positions)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// moe.attention
//===----------------------------------------------------------------------===//

def MoE_AttentionOp : MoE_Op<"attention",
    [Pure, InferTypeOpAdaptor]> {
  let summary = "causal grouped-query attention over a KV cache";
  let description = [{
    Scaled dot-product attention of `T` new tokens. `query` is
    `[T, num_heads * head_dim]`, `key` and `value` are
    `[T, kv_heads * head_dim]`; `kv_heads` and `head_dim` come from the
    cache type. Query head `j` attends with kv head
    `j / (num_heads / kv_heads)` (GQA).

    The cache operand holds the keys and values of positions `0 .. P-1`; the
    new tokens are positions `P .. P+T-1`. They are appended, and the op
    returns the grown cache as its second result. A query at position `i`
    sees keys at positions `j` with `j <= i` (causal) and, when
    `sliding_window = W` is present, also `j > i - W`. Scores are
    multiplied by `scale` (default `1/sqrt(head_dim)`) before the softmax,
    which runs in `f32`.

    ```mlir
    %o, %c1 = moe.attention %q, %k, %v, %c0 heads 4 {sliding_window = 8 : i64}
        : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>, !moe.kv_cache<2x?x16xf32>
    // %o : tensor<?x64xf32>, %c1 : !moe.kv_cache<2x?x16xf32>
    ```
  }];
  let arguments = (ins MoE_ActTensor:$query, MoE_ActTensor:$key,
                       MoE_ActTensor:$value, MoE_KVCacheType:$cache,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_heads,
                       OptionalAttr<ConfinedAttr<I64Attr, [IntPositive]>>:$sliding_window,
                       OptionalAttr<F64Attr>:$scale);
  let results = (outs MoE_ActTensor:$result, MoE_KVCacheType:$cache_out);
  let assemblyFormat = [{
    $query `,` $key `,` $value `,` $cache `heads` $num_heads attr-dict
    `:` type($query) `,` type($key) `,` type($value) `,` qualified(type($cache))
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The scale applied to q·k: the attribute if set, else 1/sqrt(head_dim).
    double getEffectiveScale();
  }];
}

//===----------------------------------------------------------------------===//
// moe.add
//===----------------------------------------------------------------------===//

def MoE_AddOp : MoE_Op<"add",
    [Pure, Commutative, SameOperandsAndResultType]> {
  let summary = "elementwise addition (residual connection)";
  let description = [{
    `result = lhs + rhs`, elementwise on activations of the same type.
    Adding a splat-zero constant folds away; like fast-math `nsz`, the fold
    does not preserve the sign of a zero result.

    ```mlir
    %h1 = moe.add %h0, %attn : tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_ActTensor:$lhs, MoE_ActTensor:$rhs);
  let results = (outs MoE_ActTensor:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` type($result)";
  let hasFolder = 1;
}

//===----------------------------------------------------------------------===//
// moe.router
//===----------------------------------------------------------------------===//

def MoE_RouterOp : MoE_Op<"router",
    [Pure, InferTypeOpAdaptor]> {
  let summary = "top-k expert selection from router logits";
  let description = [{
    Turns the `[T, E]` router logits (the output of the gate `moe.linear`)
    into the `k` experts each token is sent to and their mixing weights.

    * `scoring = softmax`: `p = softmax(logits)` over all `E` experts, in
      `f32`; `sigmoid`: `p = sigmoid(logits)` elementwise.
    * The `k` largest scores are kept (ties go to the lower expert index),
      in descending order of score.
    * With `renormalize`, the `k` weights are divided by their sum (Mixtral's
      behaviour; `norm_topk_prob = false` models omit it).

    Results are the weights `[T, k] f32` and the expert indices
    `[T, k] i32`.

    ```mlir
    %logits = moe.linear %b, %gate : tensor<?x64xf32>, tensor<8x64xf32>
    %w, %idx = moe.router %logits top 2 softmax renormalize : tensor<?x8xf32>
    // %w : tensor<?x2xf32>, %idx : tensor<?x2xi32>
    ```
  }];
  let arguments = (ins MoE_ActTensor:$logits,
                       ConfinedAttr<I64Attr, [IntPositive]>:$k,
                       MoE_ScoringFuncAttr:$scoring,
                       UnitAttr:$renormalize);
  let results = (outs MoE_ActTensor:$weights, MoE_ExpertIdTensor:$indices);
  let assemblyFormat = [{
    $logits `top` $k $scoring (`renormalize` $renormalize^)? attr-dict
    `:` type($logits)
  }];
  let hasVerifier = 1;
  let hasCanonicalizer = 1;
  let extraClassDeclaration = [{
    /// The number of experts the router chooses among.
    int64_t getNumExperts() {
      return ::llvm::cast<::mlir::RankedTensorType>(getLogits().getType())
          .getDimSize(1);
    }
  }];
}

//===----------------------------------------------------------------------===//
// moe.fused_router
//===----------------------------------------------------------------------===//

def MoE_FusedRouterOp : MoE_Op<"fused_router",
    [Pure, InferTypeOpAdaptor,
     DeclareOpInterfaceMethods<MoE_WeightCostOpInterface>]> {
  let summary = "gate GEMM, scoring, top-k and renormalisation in one op";
  let description = [{
    `moe.linear` with the router's gate weight followed by `moe.router`, as
    one op: `moe-fuse-router` produces it, and targets run it as one kernel
    that never materialises the `[T, E]` logits. Attributes and results mean
    exactly what they mean on `moe.router`.

    ```mlir
    %w, %idx = moe.fused_router %b, %gate top 2 softmax renormalize
        : tensor<?x64xf32>, tensor<8x64xbf16>
    // %w : tensor<?x2xf32>, %idx : tensor<?x2xi32>
    ```
  }];
  let arguments = (ins MoE_ActTensor:$input, MoE_FloatWeightTensor:$gate,
                       ConfinedAttr<I64Attr, [IntPositive]>:$k,
                       MoE_ScoringFuncAttr:$scoring,
                       UnitAttr:$renormalize);
  let results = (outs MoE_ActTensor:$weights, MoE_ExpertIdTensor:$indices);
  let assemblyFormat = [{
    $input `,` $gate `top` $k $scoring (`renormalize` $renormalize^)? attr-dict
    `:` type($input) `,` type($gate)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    int64_t getNumExperts() {
      return ::llvm::cast<::mlir::RankedTensorType>(getGate().getType())
          .getDimSize(0);
    }
  }];
}

//===----------------------------------------------------------------------===//
// moe.expert_capacity
//===----------------------------------------------------------------------===//

def MoE_ExpertCapacityOp : MoE_Op<"expert_capacity",
    [Pure, InferTypeOpAdaptor]> {
  let summary = "drop the routed pairs over each expert's capacity (GShard/Switch)";
  let description = [{
    Bounds the (token, choice) pairs each expert receives in one forward
    call of `T` tokens to its capacity `C = ceil(factor * T * k / E)`, as
    GShard and the Switch Transformer do (`moe-expert-capacity` inserts it
    between the router and the expert bank). `C` is clamped to `[1, T]`: no
    expert could take more than one pair a token, and a factor whose
    product underflows still leaves one place.

    The pairs claim their expert's places in priority order: every token's
    first choice in token order, then every token's second choice, and so
    on; a pair that finds its expert full is *dropped*. A dropped pair's
    index becomes -1 and its weight 0 in the results: the expert ops skip
    it, so the token's output has no part from that expert (the weights of
    the others are not renormalised; the residual carries the token on).
    Kept pairs are unchanged. With one token per call (decode) every
    capacity is at least 1 and nothing is dropped.

    ```mlir
    %w2, %idx2 = moe.expert_capacity %w, %idx experts 8 factor 1.25
        : tensor<?x2xf32>, tensor<?x2xi32>
    // %w2 : tensor<?x2xf32>, %idx2 : tensor<?x2xi32>
    ```
  }];
  let arguments = (ins MoE_ActTensor:$weights, MoE_ExpertIdTensor:$indices,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_experts,
                       F64Attr:$factor);
  let results = (outs MoE_ActTensor:$kept_weights,
                      MoE_ExpertIdTensor:$kept_indices);
  let assemblyFormat = [{
    $weights `,` $indices `experts` $num_experts `factor` $factor attr-dict
    `:` type($weights) `,` type($indices)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// moe.experts
//===----------------------------------------------------------------------===//

def MoE_ExpertsOp : MoE_Op<"experts",
    [Pure, AttrSizedOperandSegments,
     InferTypeOpAdaptor, DeclareOpInterfaceMethods<MoE_WeightCostOpInterface,
         ["getQuantizable"]>]> {
  let summary = "bank of SwiGLU experts mixed by router weights";
  let description = [{
    The feed-forward block of an MoE layer. Expert `e` computes
    `down_e(silu(gate_e(x)) * up_e(x))` (Mixtral's `w2(silu(w1 x) * w3 x)`),
    and each token's output is `Σ_j weights[t, j] * expert_{indices[t, j]}(x_t)`.

    There is one `gate` (`w1`, `[I, H]`), `up` (`w3`, `[I, H]`) and `down`
    (`w2`, `[H, I]`) weight per expert; all experts have the same shapes, so
    each list prints its type once. `weights` and `indices` are `[T, k]`,
    normally the results of a `moe.router` whose `E` equals the number of
    experts here. An index of -1 is a pair `moe.expert_capacity` dropped:
    it adds nothing. Any other index outside `[0, E)` is a runtime error.

    ```mlir
    %y = moe.experts %b, %w, %idx
        gate [%g0, %g1, %g2, %g3] : tensor<128x64xf32>
        up [%u0, %u1, %u2, %u3] : tensor<128x64xf32>
        down [%d0, %d1, %d2, %d3] : tensor<64x128xf32>
        : tensor<?x64xf32>, tensor<?x2xf32>, tensor<?x2xi32>
    // %y : tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_ActTensor:$input, MoE_ActTensor:$weights,
                       MoE_ExpertIdTensor:$indices,
                       Variadic<MoE_WeightTensor>:$gate_weights,
                       Variadic<MoE_WeightTensor>:$up_weights,
                       Variadic<MoE_WeightTensor>:$down_weights);
  let results = (outs MoE_ActTensor:$result);
  let assemblyFormat = [{
    $input `,` $weights `,` $indices
    `gate` custom<ExpertList>($gate_weights, type($gate_weights))
    `up` custom<ExpertList>($up_weights, type($up_weights))
    `down` custom<ExpertList>($down_weights, type($down_weights))
    attr-dict `:` type($input) `,` type($weights) `,` type($indices)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    int64_t getNumExperts() { return getGateWeights().size(); }
  }];
}

//===----------------------------------------------------------------------===//
// Fused expert path: permute, grouped GEMMs, silu·up, combine
//===----------------------------------------------------------------------===//

def MoE_ExpertPermuteOp : MoE_Op<"expert_permute",
    [Pure, InferTypeOpAdaptor]> {
  let summary = "sort (token, choice) pairs by expert";
  let description = [{
    The first step of the fused expert path (`moe-fuse-expert-gemms`). Of
    the `T * k` (token, choice) pairs of a `[T, k]` index tensor, `perm`
    lists the flat pair indices `t * k + j` grouped by expert (stable, so in
    token order within an expert), and `offsets[e] .. offsets[e + 1]` is
    expert e's range of `perm`. Pairs `moe.expert_capacity` dropped (index
    -1) belong to no expert: the entries of `perm` from `offsets[E]` on are
    -1, one per dropped pair.

    ```mlir
    %perm, %offsets = moe.expert_permute %idx experts 8 : tensor<?x2xi32>
    // %perm : tensor<?xi32> (T * k), %offsets : tensor<9xi32>
    ```
  }];
  let arguments = (ins MoE_ExpertIdTensor:$indices,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_experts);
  let results = (outs 1DTensorOf<[I32]>:$perm, 1DTensorOf<[I32]>:$offsets);
  let assemblyFormat = "$indices `experts` $num_experts attr-dict `:` type($indices)";
  let hasVerifier = 1;
}

def MoE_GroupedMatmulOp : MoE_Op<"grouped_matmul",
    [Pure, InferTypeOpAdaptor,
     DeclareOpInterfaceMethods<MoE_WeightCostOpInterface,
         ["getQuantizable"]>]> {
  let summary = "one GEMM per expert over its rows of the permuted batch";
  let description = [{
    For each expert e, the rows `offsets[e] .. offsets[e + 1]` of the
    permuted batch are multiplied by expert e's weight: `parts` weights per
    expert, stacked along the output (so `parts = 2` with `w1_e, w3_e` is the
    `[2I, H]` gate_up weight of expert e, and the list as a whole the
    `[E, 2I, H]` stacked weight). The weights stay where the model file has
    them: the stacking is a view, no bytes are copied.

    With `gather`, row r of the input is token `perm[r] / k` of a `[T, K]`
    activation; without, the input is already the `[T * k, K]` permuted
    batch. The result is `[T * k, N]`, N the stacked output width.

    With `silu_mul` (two parts of equal width I; what `moe-fuse-epilogues`
    folds in from a following `moe.silu_mul`), the result is `[T * k, I]`:
    `silu(gate) * up` of the two parts, so the `[T * k, 2I]` product is
    never stored.

    ```mlir
    %gu = moe.grouped_matmul %b[%perm] gather, %offsets top 2
        weights [%w1_0, %w3_0, %w1_1, %w3_1] parts 2
        : tensor<?x64xf32>, tensor<?xi32>, tensor<3xi32>, tensor<128x64xf32>
    // %gu : tensor<?x256xf32>
    ```
  }];
  let arguments = (ins MoE_ActTensor:$input, 1DTensorOf<[I32]>:$perm,
                       1DTensorOf<[I32]>:$offsets,
                       Variadic<MoE_WeightTensor>:$expert_weights,
                       ConfinedAttr<I64Attr, [IntPositive]>:$k,
                       ConfinedAttr<I64Attr, [IntPositive]>:$parts,
                       UnitAttr:$gather, UnitAttr:$silu_mul);
  let results = (outs MoE_ActTensor:$result);
  let assemblyFormat = [{
    $input `[` $perm `]` (`gather` $gather^)? `,` $offsets `top` $k
    `weights` custom<ExpertList>($expert_weights, type($expert_weights))
    `parts` $parts (`silu_mul` $silu_mul^)? attr-dict `:` type($input) `,`
    type($perm) `,` type($offsets)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    int64_t getNumExperts() {
      return ::llvm::cast<::mlir::RankedTensorType>(getOffsets().getType())
                 .getDimSize(0) - 1;
    }
  }];
}

def MoE_SiluMulOp : MoE_Op<"silu_mul", [Pure, InferTypeOpAdaptor]> {
  let summary = "silu(gate) * up on a stacked [rows, 2I] gate_up result";
  let description = [{
    Splits each row of `[rows, 2I]` into gate (first I) and up (last I) and
    returns `silu(gate) * up`, `[rows, I]`.

    ```mlir
    %h = moe.silu_mul %gu : tensor<?x256xf32>
    // %h : tensor<?x128xf32>
    ```
  }];
  let arguments = (ins MoE_ActTensor:$input);
  let results = (outs MoE_ActTensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
  let hasVerifier = 1;
}

def MoE_ExpertCombineOp : MoE_Op<"expert_combine",
    [Pure, InferTypeOpAdaptor]> {
  let summary = "weighted sum of each token's expert outputs, in token order";
  let description = [{
    The last step of the fused expert path: `y` holds one row per (token,
    choice) pair in `perm` order; token t's output is
    `Σ_j weights[t, j] * y[r]` over the rows r with `perm[r] = t * k + j`
    (a dropped pair has no such row: it adds nothing).

    ```mlir
    %out = moe.expert_combine %y[%perm], %w : tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>
    // %out : tensor<?x64xf32>
    ```

    With a `residual` (`[T, H]`, folded in by `moe-fuse-epilogues`), the
    weighted sum is computed first and the residual added to it, as the
    unfused `moe.add` would.

    ```mlir
    %h = moe.expert_combine %y[%perm], %w residual %x
        : tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>, tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_ActTensor:$input, 1DTensorOf<[I32]>:$perm,
                       MoE_ActTensor:$weights,
                       Optional<MoE_ActTensor>:$residual);
  let results = (outs MoE_ActTensor:$result);
  let assemblyFormat = [{
    $input `[` $perm `]` `,` $weights (`residual` $residual^)? attr-dict `:`
    type($input) `,` type($perm) `,` type($weights) (`,` type($residual)^)?
  }];
  let builders = [
    OpBuilder<(ins "Value":$input, "Value":$perm, "Value":$weights), [{
      build($_builder, $_state, input, perm, weights, Value());
    }]>,
  ];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Expert parallelism (moe-shard-experts)
//===----------------------------------------------------------------------===//
//
// After moe-shard-experts{ranks=R}, each MoE layer runs across R ranks that
// all run the same program: attention and the dense parts are replicated;
// rank r holds experts [first_expert[r], first_expert[r+1]) and owns the
// token slice [T*r/R, T*(r+1)/R) of the MoE layer.
//

def MoE_EpExchangeCountsOp : MoE_Op<"ep_exchange_counts", [Pure]> {
  let summary = "exchange per-destination row counts across the ranks";
  let description = [{
    The first step of an expert-parallel MoE layer. Each rank counts the
    (token, choice) rows of its own token slice that go to each rank (the
    owner of the row's expert, by `first_expert`) and exchanges the counts
    all-to-all, so that every rank knows how many rows it receives (a pair
    `moe.expert_capacity` dropped, index -1, goes nowhere). The
    result is `[2, R]`: row 0 what this rank sends to each rank, row 1 what
    it receives from each.

    ```mlir
    %c = moe.ep_exchange_counts %idx ranks 2 first_expert [0, 2, 4]
        : tensor<?x2xi32> -> tensor<2x2xi32>
    ```
  }];
  let arguments = (ins 2DTensorOf<[I32]>:$indices, I64Attr:$ranks,
                       DenseI64ArrayAttr:$first_expert);
  let results = (outs 2DTensorOf<[I32]>:$counts);
  let assemblyFormat = [{
    $indices `ranks` $ranks `first_expert` $first_expert attr-dict `:`
    type($indices) `->` type($counts)
  }];
  let hasVerifier = 1;
}

def MoE_EpDispatchOp : MoE_Op<"ep_dispatch", [Pure]> {
  let summary = "all-to-all the routed rows to the ranks of their experts";
  let description = [{
    Sends each (token, choice) row of this rank's token slice (the token's
    hidden state, its expert and its routing weight) to the rank that holds
    the expert, grouped by destination rank and in (token, choice) order
    within it, as the exchanged `counts` say. The results hold the rows this
    rank received, grouped by source rank: at most `k` per batch token.

    ```mlir
    %rows, %experts, %gates = moe.ep_dispatch %x, %idx, %w, %c
        : tensor<?x64xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<2x2xi32>
        -> tensor<?x64xf32>, tensor<?xi32>, tensor<?xf32>
    ```
  }];
  let arguments = (ins MoE_ActTensor:$input, 2DTensorOf<[I32]>:$indices,
                       MoE_ActTensor:$weights, 2DTensorOf<[I32]>:$counts);
  let results = (outs MoE_ActTensor:$rows, 1DTensorOf<[I32]>:$experts,
                      1DTensorOf<[F32]>:$gates);
  let assemblyFormat = [{
    $input `,` $indices `,` $weights `,` $counts attr-dict `:`
    type($input) `,` type($indices) `,` type($weights) `,` type($counts)
    `->` type($rows) `,` type($experts) `,` type($gates)
  }];
  let hasVerifier = 1;
}

def MoE_EpExpertsOp : MoE_Op<"ep_experts",
    [Pure, AttrSizedOperandSegments,
     DeclareOpInterfaceMethods<MoE_WeightCostOpInterface,
                               ["getQuantizable"]>]> {
  let summary = "this rank's experts over the rows it received";
  let description = [{
    `down(silu(gate(x)) * up(x)) * gate_weight` for each received row, with
    the row's expert. The weight lists hold every expert of the layer (one
    program runs as every rank); a rank reads only those of its own experts,
    `[first_expert[r], first_expert[r+1])`, and maps no other.

    ```mlir
    %y = moe.ep_experts %rows, %experts, %gates, %c
        gate[%g0, %g1, %g2, %g3] up[%u0, ...] down[%d0, ...]
        first_expert [0, 2, 4] : ... -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_ActTensor:$rows, 1DTensorOf<[I32]>:$experts,
                       1DTensorOf<[F32]>:$gates, 2DTensorOf<[I32]>:$counts,
                       Variadic<MoE_WeightTensor>:$gate_weights,
                       Variadic<MoE_WeightTensor>:$up_weights,
                       Variadic<MoE_WeightTensor>:$down_weights,
                       DenseI64ArrayAttr:$first_expert);
  let results = (outs MoE_ActTensor:$result);
  let assemblyFormat = [{
    $rows `,` $experts `,` $gates `,` $counts
    `gate` `[` $gate_weights `]` `up` `[` $up_weights `]`
    `down` `[` $down_weights `]` `first_expert` $first_expert attr-dict `:`
    type($rows) `,` type($experts) `,` type($gates) `,` type($counts)
    `,` `(` type($gate_weights) `)` `,` `(` type($up_weights) `)` `,`
    `(` type($down_weights) `)` `->` type($result)
  }];
  let hasVerifier = 1;
}

def MoE_EpCombineOp : MoE_Op<"ep_combine", [Pure]> {
  let summary = "all-to-all the expert outputs back, sum them, share the result";
  let description = [{
    Returns each processed row to the rank it came from (the reverse of
    `moe.ep_dispatch`, with the same counts), sums each of this rank's
    tokens' rows in choice order (`k` per token; `indices` and `first_expert`
    recover where each came back), adds the `residual` if there is one, and
    all-gathers the token slices so that every rank holds the whole `[T, H]`
    result for the replicated layers that follow.

    ```mlir
    %h = moe.ep_combine %y, %idx, %c first_expert [0, 2, 4] residual %x
        : tensor<?x64xf32>, tensor<?x2xi32>, tensor<2x2xi32>, tensor<?x64xf32>
        -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_ActTensor:$input, 2DTensorOf<[I32]>:$indices,
                       2DTensorOf<[I32]>:$counts,
                       DenseI64ArrayAttr:$first_expert,
                       Optional<MoE_ActTensor>:$residual);
  let results = (outs MoE_ActTensor:$result);
  let assemblyFormat = [{
    $input `,` $indices `,` $counts `first_expert` $first_expert
    (`residual` $residual^)? attr-dict `:` type($input) `,` type($indices)
    `,` type($counts) (`,` type($residual)^)? `->` type($result)
  }];
  let hasVerifier = 1;
}

#endif // MOE_OPS_TD
