//===- MoEDialect.h - moe dialect -------------------------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// The `moe` dialect: Mixture-of-Experts models with first-class router and
// expert ops. Include this header for the dialect, its attributes, types and
// enums; include MoEOps.h for the operations.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECTS_MOE_MOEDIALECT_H
#define MOE_DIALECTS_MOE_MOEDIALECT_H

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/DialectImplementation.h"

#include "dialects/MoE/MoEDialect.h.inc"
#include "dialects/MoE/MoEEnums.h.inc"

#include <cstdint>

namespace mlir::moe {
/// Bounds the verifiers put on sizes, so that every element, byte and
/// arena count computed from verified IR fits in int64 (docs/hardening.md).
/// Largest dimension of a weight.
constexpr int64_t kMaxWeightDim = int64_t(1) << 24;
/// Largest kv_heads * head_dim of a KV cache.
constexpr int64_t kMaxCacheWidth = int64_t(1) << 24;
/// Largest cache capacity: positions are int32 at run time.
constexpr int64_t kMaxCacheCapacity = 2147483647;
} // namespace mlir::moe

#define GET_ATTRDEF_CLASSES
#include "dialects/MoE/MoEAttrs.h.inc"

#define GET_TYPEDEF_CLASSES
#include "dialects/MoE/MoETypes.h.inc"

namespace mlir {
class ModuleOp;
} // namespace mlir

namespace mlir::moe {
/// Bytes a statically shaped weight of `type` occupies in its storage type:
/// elements times their size, or whole blocks of a `!moe.quant` format.
/// The verifiers bound weight shapes so that this cannot overflow.
int64_t getStorageBytes(ShapedType type);
} // namespace mlir::moe

namespace mlir::moe {
/// The module attribute that holds a `#moe.model`.
constexpr llvm::StringLiteral kModelAttrName = "moe.model";

/// The `#moe.model` of `module`, or null when it has none (a module not
/// imported from a model file). The dialect verifier guarantees that a
/// verified module's `moe.model` is a ModelAttr.
ModelAttr getModel(ModuleOp module);

/// The op attribute that holds a `#moe.placement` (moe-plan-memory).
constexpr llvm::StringLiteral kPlacementAttrName = "moe.placement";
/// The function attribute that holds a `#moe.kv_cache_plan`.
constexpr llvm::StringLiteral kKVCachePlanAttrName = "moe.kv_cache_plan";
/// The function attribute that holds a `#moe.memory_plan`.
constexpr llvm::StringLiteral kMemoryPlanAttrName = "moe.memory_plan";
/// Largest offset (and scratch) a placement holds, in floats per batch
/// token: times the 2^20 tokens a forward call may take, it fits in int64.
constexpr int64_t kMaxArenaFloatsPerToken = int64_t(1) << 36;
} // namespace mlir::moe

#endif // MOE_DIALECTS_MOE_MOEDIALECT_H
