//===- MoEInterfaces.h - moe dialect op interfaces --------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Op interfaces of the moe dialect (MoEInterfaces.td) and the helpers their
// implementations share.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECTS_MOE_MOEINTERFACES_H
#define MOE_DIALECTS_MOE_MOEINTERFACES_H

#include "mlir/IR/OpDefinition.h"

#include <cstdint>

namespace mlir::moe {

/// What moe-quantize-weights may make of a weight operand
/// (WeightCostOpInterface::getQuantizable).
enum class QuantizableWeight { No, Dense, Expert };

/// The WeightCostOpInterface verifier: every operand of `op` with a
/// `!moe.quant` element type is a weight the op takes quantised, of rank 2,
/// whose rows are a whole number of blocks.
LogicalResult verifyQuantizedWeightOperands(Operation *op);

/// Bytes `weight` (a statically shaped tensor) occupies in its storage
/// type: what an op that reads it whole reads.
double getWeightStorageBytes(Value weight);

/// The expected fraction of an expert bank's experts that one step over
/// `stepTokens` tokens touches when each token picks `k` of `numExperts`
/// uniformly: 1 - (1 - k/E)^stepTokens, and 1 when k >= E. Every op that
/// reads expert weights weighs them by this, so that the unfused and the
/// fused expert paths report the same traffic.
double getExpectedExpertShare(int64_t k, int64_t numExperts, double stepTokens);

} // namespace mlir::moe

#include "dialects/MoE/MoEInterfaces.h.inc"

#endif // MOE_DIALECTS_MOE_MOEINTERFACES_H
