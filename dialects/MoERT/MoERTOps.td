//===- MoERTOps.td - the moert launch-plan dialect ---------*- tablegen -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_OPS_TD
#define MOERT_OPS_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/BuiltinAttributeInterfaces.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

//===----------------------------------------------------------------------===//
// Dialect
//===----------------------------------------------------------------------===//

def MoERT_Dialect : Dialect {
  let name = "moert";
  let cppNamespace = "::mlir::moert";
  let summary = "A target's launch plan: kernels, launches and arena views";
  let description = [{
    The level below the `moe` dialect's memory plan. `--moe-lower-to-cpu`
    and `--moe-lower-to-cuda` turn a planned `@forward` into a straight-line
    sequence of kernel calls (CPU) or launches (CUDA) over views of one
    activation arena. Every decision a target makes is an attribute or an op
    here: which kernel and template arguments each op becomes, the grid of
    each launch, the decode/prefill variant choice (`moert.if_decode`),
    tensor-core kernels, attention key splits, scratch and workspace. The
    translations `--moe-to-cpp` and `--moe-to-cuda` only print this IR.

    Conventions:

    * Buffers are `memref`s. An activation has a dynamic first dimension
      (the batch's rows); a weight has a fully static shape and is never
      written; the workspace is `memref<?xf32>`.
    * `@forward` is in destination-passing style: its arguments carry
      `moert.arg = "tokens" | "positions" | "logits"` and `moert.kv_layer =
      L`, which the verifier checks, and it returns nothing.
  }];
  let useDefaultTypePrinterParser = 1;
  let useDefaultAttributePrinterParser = 1;
  let hasRegionArgAttrVerify = 1;
  let dependentDialects = ["::mlir::arith::ArithDialect"];
  let extraClassDeclaration = [{
    /// The argument attribute naming forward's token ids, positions and
    /// logits buffer.
    static constexpr ::llvm::StringLiteral kArgAttrName = "moert.arg";
    /// The argument attribute naming the layer of a KV-cache argument.
    static constexpr ::llvm::StringLiteral kKvLayerAttrName = "moert.kv_layer";
    /// The argument attribute giving a KV cache's sliding window (0: none).
    static constexpr ::llvm::StringLiteral kKvWindowAttrName = "moert.kv_window";
  }];
}

class MoERT_Op<string mnemonic, list<Trait> traits = []>
    : Op<MoERT_Dialect, mnemonic, traits>;

//===----------------------------------------------------------------------===//
// Target attributes and their buffer interface
//===----------------------------------------------------------------------===//

def MoERT_TargetBufferAttrInterface
    : AttrInterface<"TargetBufferAttrInterface"> {
  let cppNamespace = "::mlir::moert";
  let description = [{
    What a target needs, beyond the results of the ops, to run an op of the
    `moe` dialect: the scratch memory of its kernels, in floats per batch
    token. `moe-plan-memory{target=...}` asks the target's attribute and
    places that scratch in the arena. Each target registers its model
    (`registerCpuTargetModels`, `registerCudaTargetModels`), so a target
    that has none cannot be planned for.
  }];
  let methods = [
    InterfaceMethod<"Scratch floats per batch token that `op` needs.",
      "int64_t", "getScratchFloatsPerToken",
      (ins "::mlir::Operation *":$op)>,
  ];
}

class MoERT_Attr<string name, string attrMnemonic>
    : AttrDef<MoERT_Dialect, name> {
  let mnemonic = attrMnemonic;
}

def MoERT_CpuTargetAttr : MoERT_Attr<"CpuTarget", "cpu"> {
  let summary = "the CPU target (C++ kernels of runtime/include/moert/kernels.h)";
}

def MoERT_CudaTargetAttr : MoERT_Attr<"CudaTarget", "cuda"> {
  let summary = "the CUDA target (kernels of runtime/include/moert/cuda/kernels.cuh)";
}

//===----------------------------------------------------------------------===//
// Types
//===----------------------------------------------------------------------===//

def MoERT_TableType : TypeDef<MoERT_Dialect, "Table"> {
  let mnemonic = "table";
  let summary = "a constant table of buffer pointers passed to a kernel";
  let description = [{
    `!moert.table<N, T>`: `N` pointers to weights of element type `T`
    (`none`: untyped, `const void *`), as the expert kernels take their
    banks. `!moert.table<N, f32, output = true>`: `N` output buffers.

    ```mlir
    %t = moert.table %w0, %w1 : (memref<128x64xf16>, memref<128x64xf16>) -> !moert.table<2, none>
    ```
  }];
  let parameters = (ins "int64_t":$size, "::mlir::Type":$elementType,
                        DefaultValuedParameter<"bool", "false">:$output);
  let assemblyFormat = "`<` $size `,` $elementType (`,` `output` `=` $output^)? `>`";
  let genVerifyDecl = 1;
}

//===----------------------------------------------------------------------===//
// Buffers
//===----------------------------------------------------------------------===//

def MoERT_ViewOp : MoERT_Op<"view", [Pure]> {
  let summary = "a buffer in the activation arena";
  let description = [{
    The buffer that starts `offset` floats per batch token into the
    activation arena and spans `size` floats per batch token: for a batch of
    `n_max` tokens, `arena + n_max * offset` up to `n_max * (offset + size)`.
    Offsets are moe-plan-memory's; the printer declares one pointer per view.

    ```mlir
    %h = moert.view offset 128 size 64 : memref<?x64xf32>
    %i = moert.view offset 192 size 2 : memref<?x2xi32>
    ```
  }];
  let arguments = (ins ConfinedAttr<I64Attr, [IntNonNegative, IntMaxValue<68719476736>]>:$offset,
                       ConfinedAttr<I64Attr, [IntPositive, IntMaxValue<68719476736>]>:$size);
  let results = (outs AnyMemRef:$result);
  let assemblyFormat = "`offset` $offset `size` $size attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def MoERT_WorkspaceOp : MoERT_Op<"workspace", [Pure]> {
  let summary = "target workspace after the arena, independent of the batch";
  let description = [{
    `size` floats after the activation arena (the CUDA decode attention's
    partial results). The printer sizes the arena's tail with the largest
    workspace of the function.

    ```mlir
    %ws = moert.workspace 4352 : memref<?xf32>
    ```
  }];
  let arguments = (ins ConfinedAttr<I64Attr, [IntPositive, IntMaxValue<68719476736>]>:$size);
  let results = (outs MemRefRankOf<[F32], [1]>:$result);
  let assemblyFormat = "$size attr-dict `:` type($result)";
}

/// A block-quantised weight element (the moe dialect's `!moe.quant`).
def MoERT_QuantElement : Type<CPred<"::llvm::isa<::mlir::moe::QuantType>($_self)">,
                              "block-quantised weight element">;

def MoERT_WeightOp : MoERT_Op<"weight", [Pure]> {
  let summary = "a weight of the manifest";
  let description = [{
    The weight `name`, memory-mapped from the model's files: its
    `moe.weight_source` must exist in the module with the same shape and
    element type.

    ```mlir
    %w = moert.weight "lm_head.weight" : memref<256x64xf16>
    ```
  }];
  let arguments = (ins StrAttr:$name);
  let results = (outs MemRefOf<[F32, F16, BF16, MoERT_QuantElement]>:$result);
  let assemblyFormat = "$name attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def MoERT_NullOp : MoERT_Op<"null", [Pure]> {
  let summary = "no buffer (an absent optional kernel argument)";
  let description = [{
    ```mlir
    %none = moert.null : memref<?xf32>
    ```
  }];
  let results = (outs AnyMemRef:$result);
  let assemblyFormat = "attr-dict `:` type($result)";
}

def MoERT_TableOp : MoERT_Op<"table", [Pure]> {
  let summary = "a table of buffer pointers";
  let description = [{
    ```mlir
    %t = moert.table %w0, %w1 : (memref<128x64xf16>, memref<128x64xf16>) -> !moert.table<2, none>
    ```
  }];
  let arguments = (ins Variadic<AnyMemRef>:$entries);
  let results = (outs MoERT_TableType:$result);
  let assemblyFormat = "$entries attr-dict `:` functional-type($entries, $result)";
  let hasVerifier = 1;
}

def MoERT_CachePlaneOp : MoERT_Op<"cache_plane", [Pure]> {
  let summary = "the keys or the values of a KV cache";
  let description = [{
    ```mlir
    %k = moert.cache_plane %cache keys : !moe.kv_cache<2x16x16xf32> -> memref<?xf32>
    ```
  }];
  let arguments = (ins AnyType:$cache, UnitAttr:$values);
  let results = (outs MemRefRankOf<[F32], [1]>:$result);
  let assemblyFormat = "$cache (`values` $values^):(`keys`)? attr-dict `:` type($cache) `->` type($result)";
}

def MoERT_TokensOp : MoERT_Op<"tokens", [Pure]> {
  let summary = "the token count of the forward call, times a factor";
  let description = [{
    `n * times`, where `n` is the number of tokens the forward call runs.

    ```mlir
    %n = moert.tokens : i32
    %rows = moert.tokens times 2 : i32
    ```
  }];
  let arguments = (ins DefaultValuedAttr<ConfinedAttr<I64Attr, [IntPositive, IntMaxValue<1048576>]>, "1">:$times);
  let results = (outs AnySignlessIntegerOrIndex:$result);
  let assemblyFormat = "(`times` $times^)? attr-dict `:` type($result)";
}

def MoERT_LogitsFromOp : MoERT_Op<"logits_from", [Pure]> {
  let summary = "the first row of the logits the caller reads (CPU target)";
  let description = [{
    The first row, `from`, of the forward call's logits that the caller
    reads: the runtime sets it to `n - 1` when only the last token's logits
    are wanted (the binary's generation, `moert_prefill_last`), to `n` for
    the earlier chunks of a chunked prefill, and to 0 otherwise. The call
    that writes the logits (`moert::lmHead`) computes rows `[from, n)` only,
    into the logits buffer from its start. A plan that reads it is marked as
    honouring it in the program descriptor; the runtime gives every other
    plan a buffer of all `n` rows.

    ```mlir
    %from = moert.logits_from : i64
    moert.call "moert::lmHead" [f32, 32000, 1024] threaded(%x, %w, %n, %logits, %from) : ...
    ```
  }];
  let results = (outs I64:$result);
  let assemblyFormat = "attr-dict `:` type($result)";
}

def MoERT_EpRankOp : MoERT_Op<"ep_rank", [Pure]> {
  let summary = "this process's rank (expert parallelism, CUDA target)";
  let description = [{
    The rank of the runtime's communicator, a kernel argument of the
    expert-parallel kernels of the CUDA target (which rows a rank gathers
    and sums). One program runs as every rank, so it is a run-time value.

    ```mlir
    %r = moert.ep_rank : i32
    ```
  }];
  let results = (outs I32:$result);
  let assemblyFormat = "attr-dict `:` type($result)";
}

def MoERT_RouteStatsOp : MoERT_Op<"route_stats", [Pure]> {
  let summary = "the session's routing counters";
  let description = [{
    Two counters the runtime keeps per session: the (token, choice) pairs
    routed and those a capacity dropped (`moert_exec::route_stats`: host
    memory for the CPU target, device memory for CUDA). The kernel of
    `moe.expert_capacity` adds to them, and the binary reports the drop rate
    from them. The program descriptor records the capacity factor.

    ```mlir
    %stats = moert.route_stats : memref<?xi64>
    moert.call "moert::expertCapacity" [4, 2] (%w, %i, %factor, %n, %stats, %w2, %i2) : ...
    ```
  }];
  let results = (outs MemRefOf<[I64]>:$result);
  let assemblyFormat = "attr-dict `:` type($result)";
}

//===----------------------------------------------------------------------===//
// Kernels, calls and launches
//===----------------------------------------------------------------------===//

def MoERT_CallOp : MoERT_Op<"call"> {
  let summary = "a call of a host kernel (CPU target)";
  let description = [{
    Calls the C++ function template `callee` with `template_args` (types,
    integers, booleans) and the operands in order. `threaded` kernels take
    the runtime's thread pool as their first argument; `collective` ones
    (expert parallelism) then the runtime's communicator.

    ```mlir
    moert.call "moert::rmsNorm" [f32, 64] (%x, %w, %eps, %n, %out)
        : (memref<?x64xf32>, memref<64xf32>, f32, index, memref<?x64xf32>) -> ()
    ```
  }];
  let arguments = (ins StrAttr:$callee, ArrayAttr:$template_args,
                       UnitAttr:$threaded, UnitAttr:$collective,
                       Variadic<AnyType>:$args);
  let assemblyFormat = [{
    $callee $template_args (`threaded` $threaded^)?
    (`collective` $collective^)? `(` $args `)` attr-dict
    `:` functional-type($args, results)
  }];
  let hasVerifier = 1;
}

def MoERT_KernelOp : MoERT_Op<"kernel", [Symbol, HasParent<"::mlir::ModuleOp">]> {
  let summary = "a device kernel: one specialisation of a kernel template";
  let description = [{
    Declares the `__global__` kernel `sym_name`, whose body calls the device
    function template `callee` with `template_args` and its parameters in
    order, with `threads` threads per block. The parameter types come from
    `function_type`: an activation memref is a `T *`, a weight (static
    shape) a `const T *`, a table a `moert::cuda::Ptrs<N>` or `Outs<N>`.
    The lowering declares each distinct specialisation once.

    ```mlir
    moert.kernel @rms_norm_1 "moert::cuda::rmsNorm" [f16, 64] threads 256
        : (memref<?x64xf32>, memref<64xf16>, f32, memref<?x64xf32>) -> ()
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, StrAttr:$callee,
                       ArrayAttr:$template_args,
                       ConfinedAttr<I64Attr, [IntMinValue<1>, IntMaxValue<1024>]>:$threads,
                       TypeAttrOf<FunctionType>:$function_type);
  let assemblyFormat = [{
    $sym_name $callee $template_args `threads` $threads attr-dict `:` $function_type
  }];
  let hasVerifier = 1;
}

def MoERT_LaunchOp : MoERT_Op<"launch", [DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "a launch of a device kernel (CUDA target)";
  let description = [{
    Launches `kernel` on a grid of `grid` blocks (x, y), with the operands
    as its parameters. Each grid dimension is an affine map of the token
    count `n`; a map with several results is their minimum.

    ```mlir
    moert.launch @rms_norm_1 [affine_map<(n) -> (n)>, affine_map<(n) -> (1)>]
        (%x, %w, %eps, %out) : (memref<?x64xf32>, memref<64xf16>, f32, memref<?x64xf32>) -> ()
    ```
  }];
  let arguments = (ins FlatSymbolRefAttr:$kernel, AffineMapArrayAttr:$grid,
                       Variadic<AnyType>:$args);
  let assemblyFormat = [{
    $kernel $grid `(` $args `)` attr-dict `:` functional-type($args, results)
  }];
  let hasVerifier = 1;
}

def MoERT_IfDecodeOp : MoERT_Op<"if_decode", [NoTerminator, NoRegionArguments]> {
  let summary = "the decode/prefill variant choice";
  let description = [{
    Runs `decode` when the forward call has at most `max_tokens` tokens and
    `prefill` otherwise. The CUDA lowering puts the gemv and per-query
    attention kernels in the first region and the tensor-core and tiled
    attention kernels in the second; `max_tokens` is its
    `decode-max-tokens` option.

    ```mlir
    moert.if_decode max_tokens 8 {
      moert.launch @linear_gemv_3 ...
    } else {
      moert.launch @linear_mma_4 ...
    }
    ```
  }];
  let arguments = (ins ConfinedAttr<I64Attr, [IntPositive, IntMaxValue<1048576>]>:$max_tokens);
  let regions = (region MaxSizedRegion<1>:$decode, MaxSizedRegion<1>:$prefill);
  let assemblyFormat = "`max_tokens` $max_tokens $decode `else` $prefill attr-dict";
}

#endif // MOERT_OPS_TD
