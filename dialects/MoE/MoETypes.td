//===- MoETypes.td - moe dialect types ---------------------*- tablegen -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TYPES_TD
#define MOE_TYPES_TD

include "dialects/MoE/MoEDialect.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/BuiltinTypeInterfaces.td"

def MoE_KVCacheType : TypeDef<MoE_Dialect, "KVCache"> {
  let mnemonic = "kv_cache";
  let summary = "key/value cache of one attention layer";
  let description = [{
    The keys and values of the positions an attention layer has already
    seen, as `kv_heads x capacity x head_dim x element-type`:

    ```mlir
    !moe.kv_cache<2x?x16xf32>     // capacity not planned yet
    !moe.kv_cache<2x4096x16xf16>  // 4096 slots per head, stored as f16
    ```

    The capacity is `?` until `moe-plan-kv-cache` decides it: a rolling
    buffer of `min(window, max_seq)` slots for a sliding-window layer,
    `max_seq` slots for a full-attention layer. Keys are stored after RoPE.
    The value holds both the key and the value tensors, so one cache
    occupies `2 * kv_heads * capacity * head_dim * sizeof(element)` bytes.

    Semantically a cache value is the sequence of (key, value) pairs for
    positions `0 .. P-1` of the stream; a layer that reads it and appends
    `T` new tokens produces the cache for positions `0 .. P+T-1`.
  }];
  let parameters = (ins
    "int64_t":$numKvHeads,
    "int64_t":$capacity,
    "int64_t":$headDim,
    "::mlir::Type":$elementType
  );
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// True when `moe-plan-kv-cache` has fixed the number of slots.
    bool hasStaticCapacity() const {
      return !::mlir::ShapedType::isDynamic(getCapacity());
    }
    /// Bytes held by keys plus values, or std::nullopt while the capacity
    /// is dynamic.
    std::optional<int64_t> getSizeInBytes() const;
  }];
}

#endif // MOE_TYPES_TD
