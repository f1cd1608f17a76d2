//===- Passes.td - moe dialect passes ----------------------*- tablegen -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_PASSES_TD
#define MOE_PASSES_TD

include "mlir/Pass/PassBase.td"

def QuantizeWeights : Pass<"moe-quantize-weights", "::mlir::ModuleOp"> {
  let summary = "Store weights block-quantised (q8_0, q4_0, q4_1)";
  let description = [{
    Rewrites the type of every weight it may quantise to a `!moe.quant`
    tensor of the same shape, and marks its `moe.weight_source` `quantized
    to` that type. The IR never holds weight data: moe-compile writes the
    quantised tensors once, into one weights file beside the executable,
    and the user's files are left as they are (docs/quantisation.md).

    Which weights: a `moe.weight` is quantised when every op that uses it
    takes it quantised (`WeightCostOpInterface::getQuantizable`): with
    `only=all` (the default) the embedding table, the attention
    projections, the experts and lm_head; with `only=experts` the expert
    weights alone. Norm scales and router gates are never quantised, as
    llama.cpp leaves them too: they are small, and the router's choice is
    sensitive to them. A weight whose rows are not whole 32-element blocks
    is kept as it is, with a warning naming it.

    Before:

    ```mlir
    moe.weight_source "lm_head.weight" in "model.safetensors" at 128 : tensor<256x64xf32>
    func.func @head(%h: tensor<?x64xf32>) -> tensor<?x256xf32> {
      %w = moe.weight "lm_head.weight" : tensor<256x64xf32>
      %l = moe.linear %h, %w : tensor<?x64xf32>, tensor<256x64xf32>
      return %l : tensor<?x256xf32>
    }
    ```

    After `--moe-quantize-weights=format=q8_0`:

    ```mlir
    moe.weight_source "lm_head.weight" in "model.safetensors" at 128 : tensor<256x64xf32> quantized to tensor<256x64x!moe.quant<q8_0>>
    func.func @head(%h: tensor<?x64xf32>) -> tensor<?x256xf32> {
      %w = moe.weight "lm_head.weight" : tensor<256x64x!moe.quant<q8_0>>
      %l = moe.linear %h, %w : tensor<?x64xf32>, tensor<256x64x!moe.quant<q8_0>>
      return %l : tensor<?x256xf32>
    }
    ```
  }];
  let options = [
    Option<"format", "format", "std::string", /*default=*/"\"q8_0\"",
           "q8_0, q4_0 or q4_1">,
    Option<"only", "only", "std::string", /*default=*/"\"all\"",
           "all: every weight that may be quantised; experts: the expert "
           "weights only">,
  ];
}

def EstimateCost : Pass<"moe-estimate-cost", "::mlir::func::FuncOp"> {
  let summary = "Annotate a forward step with its weight traffic and FLOPs";
  let description = [{
    Computes, for each function, what one forward step over `step-tokens`
    tokens must read and compute because of its weights, and records it in a
    `moe.cost` dictionary on the function. Decode of an MoE model is bound by
    memory bandwidth, so `bytes_per_step / bandwidth` is the speed limit
    that benchmarks compare against.

    The pass knows no op: it sums what the ops report through
    `WeightCostOpInterface` (docs/interfaces.md), which every op that
    consumes a `moe.weight` implements. The figures describe the
    computation, not its partition into ops, so they are the same before
    and after any pipeline (the fusions of `--moe-default-pipeline`
    included).

    * `weight_bytes`: the storage of every `moe.weight` in the function.
    * `bytes_per_step`: weight bytes one step reads. A weight feeding
      `moe.linear`, `moe.fused_linear`, `moe.fused_router` or
      `moe.rms_norm` is read whole; an embedding table contributes
      `min(step-tokens, vocab)` rows; an expert weight (of `moe.experts` or
      `moe.grouped_matmul`) contributes the expected fraction of experts a
      step touches under uniform routing, `1 - (1 - k/E)^step-tokens`
      (exactly `k/E` for one token). A weight with several users counts
      once, at its largest read.
    * `flops_per_step`: multiply-adds ×2 of the products with weights:
      `2·N·K` per token for each `[N, K]` weight of a linear, fused linear
      or fused router, `6·k·I·H` per token for an expert bank, whether it is
      one `moe.experts` or the gate_up and down `moe.grouped_matmul`s.
      Elementwise work (norms, activations, RoPE, residual adds) and
      attention's score and value products, which depend on the context
      length, are not included.

    * `ep_bytes_sent_per_rank` (after `moe-shard-experts` only): the bytes
      each rank sends to the others in one step, summed over the layers,
      expected under uniform routing (a row goes to rank r with probability
      `E_r / E`); rank r owns the token slice `[T·r/R, T·(r+1)/R)`: the
      counts `4·(R−1)`, its rows to other ranks `slice·k·(1 − E_r/E)·(H+2)·4`
      (each row with its expert and weight), the rows it processed for the
      others back `Σ_{q≠r} slice_q·k·(E_r/E)·H·4`, and its slice of the
      all-gather `slice·H·4·(R−1)`. With `target=cuda`, the CUDA target's
      plan instead: no data moves for the dispatch (every rank gathers its
      own pairs), and each rank sends its partial sums of every token to
      every other rank, `T·H·4·(R−1)` a layer.

    A `moe.weight` used by an op that does not implement the interface is
    an error naming that op: the pass never reports a figure it cannot
    stand behind.

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
    Option<"target", "target", "std::string", /*default=*/"\"cpu\"",
           "The target whose expert-parallel plan ep_bytes_sent_per_rank "
           "models: cpu (all-to-alls) or cuda (an all-gather of partial "
           "sums)">,
  ];
  let statistics = [
    Statistic<"numWeights", "num-weights", "Number of moe.weight ops">,
    Statistic<"numCostedOps", "num-costed-ops",
              "Number of ops costed through WeightCostOpInterface">,
  ];
}

def FuseRouter : Pass<"moe-fuse-router", "::mlir::func::FuncOp"> {
  let summary = "Fuse the gate GEMM with scoring, top-k and renormalisation";
  let description = [{
    Rewrites a `moe.linear` whose only user is a `moe.router` into one
    `moe.fused_router`, which the targets run as one kernel (the gate GEMV,
    softmax or sigmoid, top-k and renormalisation without writing the
    logits). `k`, the scoring function and `renormalize` carry over
    unchanged, so the semantics of DESIGN.md section 4 are kept exactly. A
    gate whose logits have other users is left alone.

    Before:

    ```mlir
    %logits = moe.linear %b, %gate : tensor<?x64xf32>, tensor<4x64xf32>
    %w, %i = moe.router %logits top 2 softmax renormalize : tensor<?x4xf32>
    ```

    After `--moe-fuse-router`:

    ```mlir
    %w, %i = moe.fused_router %b, %gate top 2 softmax renormalize
        : tensor<?x64xf32>, tensor<4x64xf32>
    ```
  }];
  let statistics = [
    Statistic<"numFused", "num-fused", "Routers fused with their gate GEMM">,
  ];
}

def FuseExpertGemms : Pass<"moe-fuse-expert-gemms", "::mlir::func::FuncOp"> {
  let summary = "Rewrite the expert bank as permute, grouped GEMMs, combine";
  let description = [{
    Rewrites `moe.experts` into the fused expert path:

    1. `moe.expert_permute`: the (token, choice) pairs sorted by expert, with
       per-expert offsets;
    2. `moe.grouped_matmul ... parts 2`: one gate_up GEMM per expert over its
       rows, with w1 and w3 stacked along the output (`[2I, H]` per expert,
       `[E, 2I, H]` over the bank);
    3. `moe.silu_mul`: `silu(gate) * up`;
    4. `moe.grouped_matmul ... parts 1`: the down GEMM per expert;
    5. `moe.expert_combine`: the router-weighted sum back in token order.

    Packing: the stacked weight is a view, not a copy. Hugging Face stores
    each expert's w1, w3 and w2 as separate row-major `[out, in]` tensors,
    which is already the layout the grouped GEMM reads, so the op takes
    the per-expert weights in stacked order and the kernels address them
    where the files have them: no packed weight file at compile time, no
    repacking at load time, and the zero-copy path holds for every layout
    the frontends produce.

    The rewrite fires only where it keeps the semantics: the routing must
    come from a `moe.router` or `moe.fused_router` (so each token's k
    experts are distinct and in range) and k must be static; anything else
    is left alone.

    Before:

    ```mlir
    %w, %i = moe.fused_router %b, %g top 2 softmax renormalize : ...
    %y = moe.experts %b, %w, %i gate [%g0, %g1] : tensor<128x64xf32>
        up [%u0, %u1] : tensor<128x64xf32> down [%d0, %d1] : tensor<64x128xf32> : ...
    ```

    After `--moe-fuse-expert-gemms`:

    ```mlir
    %perm, %off = moe.expert_permute %i experts 2 : tensor<?x2xi32>
    %gu = moe.grouped_matmul %b[%perm] gather, %off top 2
        weights [%g0, %u0, %g1, %u1] : tensor<128x64xf32> parts 2 : ...
    %h = moe.silu_mul %gu : tensor<?x256xf32>
    %dn = moe.grouped_matmul %h[%perm], %off top 2
        weights [%d0, %d1] : tensor<64x128xf32> parts 1 : ...
    %y = moe.expert_combine %dn[%perm], %w : ...
    ```
  }];
  let statistics = [
    Statistic<"numFused", "num-fused", "Expert banks rewritten">,
  ];
}

def ExpertCapacity : Pass<"moe-expert-capacity", "::mlir::func::FuncOp"> {
  let summary = "Bound each expert's routed pairs per call (capacity factor)";
  let description = [{
    Inserts a `moe.expert_capacity` with `factor` between each expert bank
    and its routing: in a forward call of T tokens, expert e processes at
    most `ceil(factor * T * k / E)` of the (token, choice) pairs routed to
    it, first choices before second choices, each in token order; the pairs
    over the capacity are dropped (GShard and Switch Transformer
    semantics). The drops are visible in the IR and every target's expert
    ops skip them, so the bound limits the rows each expert's GEMMs and,
    with `moe-shard-experts`, the rows each rank receives.

    Run it before `moe-fuse-expert-gemms` and `moe-shard-experts`
    (moe-compile's `--capacity-factor C` does). The routing must come from
    a router (`moe.router` or `moe.fused_router`). Exactness is lost where
    pairs are dropped: this is a serving-time bound on the work per expert,
    off by default.

    ```mlir
    %w, %i = moe.fused_router %b, %gate top 2 softmax renormalize : ...
    %w2, %i2 = moe.expert_capacity %w, %i experts 4 factor 1.250000e+00
        : tensor<?x2xf32>, tensor<?x2xi32>
    %y = moe.experts %b, %w2, %i2 gate [...] up [...] down [...] : ...
    ```
  }];
  let options = [
    Option<"factor", "factor", "double", /*default=*/"1.0",
           "The capacity factor C: each expert takes at most "
           "ceil(C * tokens * k / experts) pairs per call (C > 0)">,
  ];
  let dependentDialects = ["::mlir::moe::MoEDialect"];
  let statistics = [
    Statistic<"numBounded", "num-bounded", "Expert banks given a capacity">,
  ];
}

def ShardExperts : Pass<"moe-shard-experts", "::mlir::func::FuncOp"> {
  let summary = "Split each expert bank across ranks (expert parallelism)";
  let description = [{
    Rewrites every `moe.experts` for `ranks` processes that all run the
    same program: rank r holds experts `[first_expert[r],
    first_expert[r+1])`, the experts split as evenly as they go, the first
    `E mod R` ranks taking one more (E = 3 on 2 ranks: rank 0 holds experts
    0 and 1, rank 1 expert 2). Attention, the norms, the router and
    lm_head stay replicated. Each bank becomes

    1. `moe.ep_exchange_counts`: per-destination row counts of this rank's
       token slice, exchanged all-to-all;
    2. `moe.ep_dispatch`: the rows all-to-all to the ranks of their experts;
    3. `moe.ep_experts`: this rank's experts over the rows it received;
    4. `moe.ep_combine`: the outputs all-to-all back, summed per token,
       and the token slices all-gathered.

    Run it after `moe-fuse-router` and before `moe-fuse-expert-gemms`
    (moe-compile's `--expert-parallel N` does). The routing must come from
    a router (distinct experts per token) with a static k; `ranks` must be
    in [1, E].

    ```mlir
    %c = moe.ep_exchange_counts %i ranks 2 first_expert [0, 2, 4]
        : tensor<?x2xi32> -> tensor<2x2xi32>
    %rows, %experts, %gates = moe.ep_dispatch %x, %i, %w, %c : ...
    %y = moe.ep_experts %rows, %experts, %gates, %c gate[...] up[...]
        down[...] first_expert [0, 2, 4] : ...
    %out = moe.ep_combine %y, %i, %c first_expert [0, 2, 4] : ...
    ```
  }];
  let options = [
    Option<"ranks", "ranks", "int64_t", /*default=*/"1",
           "Processes the experts are split across (1 to the number of "
           "experts)">,
  ];
  let dependentDialects = ["::mlir::moe::MoEDialect"];
  let statistics = [
    Statistic<"numSharded", "num-sharded", "Expert banks sharded">,
  ];
}

def FuseEpilogues : Pass<"moe-fuse-epilogues", "::mlir::func::FuncOp"> {
  let summary = "Fold elementwise ops into the GEMM or combine that feeds them";
  let description = [{
    Three rewrites, each of an elementwise op whose operand is produced by a
    GEMM (or the combine) with no other user, so the kernel applies the
    elementwise op as it stores each output element and the intermediate
    is never written (on the CUDA target: one decode launch fewer each, five
    per decoder layer):

    * `moe.add` of a value and a `moe.linear` or `moe.expert_combine`
      result becomes that op with a `residual` operand. Each element is the
      producer's value plus the residual, rounded once, as the add computed
      it: bit-identical.
    * `moe.silu_mul` of a two-part `moe.grouped_matmul` (the gate_up GEMM
      of moe-fuse-expert-gemms) becomes the GEMM with `silu_mul`: its
      result is `silu(gate) * up`, `[T * k, I]`, instead of `[T * k, 2I]`.
    * `moe.rope` of a `moe.fused_linear` result (q or k, after
      moe-fuse-projections) becomes `rope [i, ...] at %pos` on that op; two
      ropes share one op only with the same positions, head_dim, theta,
      scaling and pairing (the first in program order wins).

    A producer whose result has other users, or that already has a
    residual, is left alone. The fused op takes the position of the op it
    absorbs.

    Before:

    ```mlir
    %o = moe.linear %attn, %wo : tensor<?x64xf32>, tensor<64x64xf32>
    %h = moe.add %x, %o : tensor<?x64xf32>
    %gu = moe.grouped_matmul %b[%perm] gather, %off top 2
        weights [%g0, %u0, %g1, %u1] : tensor<128x64xf32> parts 2 : ...
    %act = moe.silu_mul %gu : tensor<?x256xf32>
    ...
    %y = moe.expert_combine %dn[%perm], %w : ...
    %out = moe.add %h, %y : tensor<?x64xf32>
    %q, %k, %v = moe.fused_linear %b weights [%wq, %wk, %wv] : ...
    %qr = moe.rope %q, %pos head_dim 16 theta 1.0e+06 : ...
    %kr = moe.rope %k, %pos head_dim 16 theta 1.0e+06 : ...
    ```

    After `--moe-fuse-epilogues`:

    ```mlir
    %h = moe.linear %attn, %wo residual %x
        : tensor<?x64xf32>, tensor<64x64xf32>, tensor<?x64xf32>
    %act = moe.grouped_matmul %b[%perm] gather, %off top 2
        weights [%g0, %u0, %g1, %u1] : tensor<128x64xf32> parts 2 silu_mul
        : ...
    ...
    %out = moe.expert_combine %dn[%perm], %w residual %h : ...
    %qr, %kr, %v = moe.fused_linear %b weights [%wq, %wk, %wv] : ...
        rope [0, 1] at %pos head_dim 16 theta 1.000000e+06 : ...
    ```
  }];
  let statistics = [
    Statistic<"numResidual", "num-residual",
              "Residual adds folded into their producer">,
    Statistic<"numSiluMul", "num-silu-mul",
              "silu_mul ops folded into the gate_up GEMM">,
    Statistic<"numRope", "num-rope",
              "moe.rope ops folded into the projection they rotate">,
  ];
}

def FuseProjections : Pass<"moe-fuse-projections", "::mlir::func::FuncOp"> {
  let summary = "Fuse linears that share their input (q, k, v) into one op";
  let description = [{
    Rewrites the `moe.linear` ops of a block that read the same input (and
    have no residual) into one `moe.fused_linear` with a result per weight,
    placed where the last of them was. A decoder layer's q, k and v
    projections become one op, which for a decode step the CUDA target runs
    as one kernel launch instead of three, and the CPU target (two or three
    weights, one token) as one parallel region of its thread pool. The
    arithmetic of each result
    is unchanged. A group is left alone if one of its results is used
    before the last linear of the group (the fused op could not be placed).

    Before:

    ```mlir
    %q = moe.linear %a, %wq : tensor<?x64xf32>, tensor<64x64xf32>
    %k = moe.linear %a, %wk : tensor<?x64xf32>, tensor<32x64xf32>
    %v = moe.linear %a, %wv : tensor<?x64xf32>, tensor<32x64xf32>
    ```

    After `--moe-fuse-projections`:

    ```mlir
    %q, %k, %v = moe.fused_linear %a weights [%wq, %wk, %wv]
        : (tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>)
        : tensor<?x64xf32>
    ```
  }];
  let statistics = [
    Statistic<"numFused", "num-fused", "Linears fused with their siblings">,
  ];
}

def PlanKVCache : Pass<"moe-plan-kv-cache", "::mlir::func::FuncOp"> {
  let summary = "Size each layer's KV cache and record the plan";
  let description = [{
    For every `!moe.kv_cache` argument of the function, read by one
    `moe.attention`, fixes the cache capacity: a rolling buffer of
    `min(window, max-seq)` slots for a sliding-window layer, `max-seq` slots
    for a full-attention layer. Layers are planned one by one, so models
    whose layers differ (alternating windows) get one size per layer. The
    capacity goes into the cache types (arguments, attention results,
    function results), and the plan into a typed `#moe.kv_cache_plan` on
    the function: `max_seq`, per layer capacity, window and bytes, and the
    total. The
    layout is `[kv_heads][capacity][head_dim]` for keys, then the same for
    values; position p lives in slot `p % capacity`.

    `max-seq` defaults to the `max_positions` of the module's `moe.model`.

    Before:

    ```mlir
    func.func @forward(%t: tensor<?xi32>, %p: tensor<?xi32>,
                       %c0: !moe.kv_cache<2x?x16xf32>) -> ... {
      %o, %c1 = moe.attention %q, %k, %v, %c0 heads 4 {sliding_window = 4 : i64} ...
    ```

    After `--moe-plan-kv-cache=max-seq=16`:

    ```mlir
    func.func @forward(%t: tensor<?xi32>, %p: tensor<?xi32>,
                       %c0: !moe.kv_cache<2x4x16xf32>) -> ...
        attributes {moe.kv_cache_plan = #moe.kv_cache_plan<max_seq = 16,
          total_bytes = 1024, capacities = [4], windows = [4],
          bytes = [1024]>} {
      %o, %c1 = moe.attention %q, %k, %v, %c0 heads 4 {sliding_window = 4 : i64} ...
    ```
  }];
  let options = [
    Option<"maxSeq", "max-seq", "int64_t", /*default=*/"0",
           "Longest sequence to plan for (0: moe.model's max_positions)">,
  ];
  let statistics = [
    Statistic<"numCaches", "num-caches", "KV caches planned">,
  ];
}

def PlanMemory : Pass<"moe-plan-memory", "::mlir::func::FuncOp"> {
  let summary = "Place every activation in one static arena by liveness";
  let description = [{
    Treats the function as the program the targets run (one kernel per op,
    in order) and computes each activation's live range: from the op that
    defines it to its last user. Ops whose kernels need working memory on
    the `target` get a scratch buffer live during the op: the target's
    attribute (`#moert.cpu`, `#moert.cuda`) says how much through
    `moert::TargetBufferAttrInterface`, whose model each target registers.
    The CPU kernels stage the expert bank's rows and the gathered rows of a
    grouped matmul; the CUDA kernels need none. Buffers are placed in one
    arena, largest first, at the lowest offset that does not overlap a
    buffer live at the same time (with `reuse=false`, each buffer gets its
    own range: the naive layout `-O0` uses). Every size is per token of the batch, so
    the plan holds for any batch up to `max-batch-tokens`.

    Each op with a buffer gets a typed `moe.placement` (`#moe.placement`:
    one offset per tensor result, in floats per batch token, and the
    `scratch` offset where its kernels need one); the op of the returned
    logits, which are written to the caller's buffer, gets none, and the
    caches are not in the arena. The function gets a `#moe.memory_plan`:
    the `target` it was made for (which the lowering checks),
    `max_batch_tokens`, `floats_per_token`, and for that batch
    `arena_bytes` (the plan's peak), `lower_bound_bytes` (the largest set of
    buffers live at once) and `naive_bytes` (every buffer separate).

    After `--moe-plan-memory`:

    ```mlir
    %a = moe.rms_norm %h, %w eps 1.0e-05 {moe.placement = #moe.placement<results = [64]>} : ...
    func.func @forward(...) attributes {moe.memory_plan = #moe.memory_plan<
        target = #moert.cpu, max_batch_tokens = 512, floats_per_token = ...,
        arena_bytes = ..., lower_bound_bytes = ..., naive_bytes = ...>}
    ```
  }];
  let options = [
    Option<"maxBatchTokens", "max-batch-tokens", "int64_t", /*default=*/"512",
           "Most tokens in one forward call (sizes the reported bytes)">,
    Option<"reuse", "reuse", "bool", /*default=*/"true",
           "Share memory between buffers whose live ranges do not overlap "
           "(false: every buffer gets its own range, the -O0 layout)">,
    Option<"target", "target", "std::string", /*default=*/"\"cpu\"",
           "The target whose kernels' scratch to plan: cpu or cuda">,
  ];
  let dependentDialects = ["::mlir::moe::MoEDialect",
                           "::mlir::moert::MoERTDialect"];
  let statistics = [
    Statistic<"numBuffers", "num-buffers", "Activation buffers placed">,
  ];
}

#endif // MOE_PASSES_TD
