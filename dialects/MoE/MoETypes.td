//===- MoETypes.td - moe dialect types ---------------------*- tablegen -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TYPES_TD
#define MOE_TYPES_TD

include "dialects/MoE/MoEAttrs.td"
include "dialects/MoE/MoEDialect.td"
include "mlir/IR/EnumAttr.td"
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

def MoE_QuantType : TypeDef<MoE_Dialect, "Quant",
    [MemRefElementTypeInterface]> {
  let mnemonic = "quant";
  let summary = "block-quantised weight element";
  let description = [{
    The element type of a quantised weight: each run of consecutive
    elements of a row (a block: 32 elements, or 256 for the k-quants) is
    stored as integers with the block's scales, as llama.cpp stores the
    format of the same name (`runtime/include/moert/quant.h`;
    docs/quantisation.md):

    | format | block | bytes | element                                      |
    |--------|-------|-------|----------------------------------------------|
    | `q8_0` | 32    | 34    | `d * q`, q in [-127, 127]                    |
    | `q4_0` | 32    | 18    | `d * (q - 8)`, q in [0, 15]                  |
    | `q4_1` | 32    | 20    | `d * q + m`, q in [0, 15]                    |
    | `q4_K` | 256   | 144   | `d * s_j * q - dmin * m_j`, q in [0, 15], 6-bit `s_j`, `m_j` per 32 |
    | `q5_K` | 256   | 176   | `d * s_j * q - dmin * m_j`, q in [0, 31], 6-bit `s_j`, `m_j` per 32 |
    | `q6_K` | 256   | 210   | `d * s_j * (q - 32)`, q in [0, 63], int8 `s_j` per 16 |

    `moe-quantize-weights` makes the first three; the k-quants come from
    GGUF files as they are (docs/frontends.md).

    ```mlir
    %w = moe.weight "model.layers.0.block_sparse_moe.experts.0.w1.weight"
        : tensor<128x64x!moe.quant<q8_0>>
    ```

    A quantised weight is a rank-2 tensor whose rows (the last dimension,
    the one every weight op contracts over) are a whole number of blocks.
    docs/quantisation.md has the
    formats' rounding, the flags and the accuracy and speed tables.

    **Why not the `quant` dialect.** MLIR's `quant` dialect describes
    quantised *values*: `!quant.uniform<i8:f32, 0.5>` (per tensor),
    `!quant.uniform<i8:f32:0, {0.5, 0.25, ...}>` (per axis) and, since
    LLVM 20, `!quant.uniform<i8:f32:{1:32}, {{...}}>` (sub-channel, i.e.
    block-wise). In all three the scales and zero points are attribute
    values inside the type. A block-wise 4096 x 4096 Mixtral projection
    has 524,288 scales: in the type, the IR would hold weight data, which
    this dialect never does (weights are named and memory-mapped), every
    tensor would get a type of its own, and a pass over the module would
    touch megabytes of attributes. Two of the formats do not fit its model
    either: a `q4_1` block's minimum is a float offset, not an integer zero
    point in the storage type, and a `q4_0` block's offset of 8 is a fixed
    storage convention. What the compiler and the kernels need is the
    storage layout, so the type names the layout and the scales stay data,
    in the weights file beside the executable. A conversion to the `quant`
    dialect's types (for a per-axis format, where it would fit) can be
    added as a pass without changing this type.
  }];
  let parameters = (ins EnumParameter<MoE_QuantFormatAttr>:$format);
  let assemblyFormat = "`<` $format `>`";
  let extraClassDeclaration = [{
    /// Elements per block: 32, or 256 for the k-quants.
    int64_t getBlockSize() const;
    /// Bytes of one block.
    int64_t getBlockBytes() const;
    /// Bytes of `elements` elements (a multiple of the block size).
    int64_t getStorageBytes(int64_t elements) const {
      return elements / getBlockSize() * getBlockBytes();
    }
  }];
}

#endif // MOE_TYPES_TD
