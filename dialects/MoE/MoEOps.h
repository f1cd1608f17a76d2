//===- MoEOps.h - moe dialect operations ------------------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECTS_MOE_MOEOPS_H
#define MOE_DIALECTS_MOE_MOEOPS_H

#include "dialects/MoE/MoEDialect.h"
#include "dialects/MoE/MoEInterfaces.h"
#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include <optional>

#define GET_OP_CLASSES
#include "dialects/MoE/MoEOps.h.inc"

namespace mlir::moe {

/// Floats per batch token that the activation `value` occupies once lowered
/// to a buffer: its width times its rows per token (k for values of the
/// permuted (token, choice) domain of the fused expert path). The expert
/// offsets, a fixed E + 1 entries, are counted as E + 1 per token, which
/// covers them for any batch.
int64_t getFloatsPerToken(Value value);

/// Rows per batch token of an activation: k for values of the permuted
/// (token, choice) domain of the fused expert path, else 1.
int64_t getRowsPerToken(Value value);

/// Tensor results of `op` (the ones that can have an arena buffer).
int64_t getNumTensorResults(Operation *op);

/// The arena offset moe-plan-memory gave `result` (its `#moe.placement`
/// entry, one per tensor result in result order), if it gave one.
std::optional<int64_t> getPlannedOffset(OpResult result);

} // namespace mlir::moe

#endif // MOE_DIALECTS_MOE_MOEOPS_H
