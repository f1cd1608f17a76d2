//===- MoEInterfaces.cpp - moe dialect op interfaces ------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/MoEInterfaces.h"

#include "dialects/MoE/MoEDialect.h"

#include "mlir/IR/BuiltinTypes.h"

#include <cmath>

using namespace mlir;
using namespace mlir::moe;

#include "dialects/MoE/MoEInterfaces.cpp.inc"

double mlir::moe::getWeightStorageBytes(Value weight) {
  return static_cast<double>(
      getStorageBytes(cast<RankedTensorType>(weight.getType())));
}

LogicalResult mlir::moe::verifyQuantizedWeightOperands(Operation *op) {
  auto iface = cast<WeightCostOpInterface>(op);
  for (OpOperand &operand : op->getOpOperands()) {
    auto type = dyn_cast<RankedTensorType>(operand.get().getType());
    auto quant = type ? dyn_cast<QuantType>(type.getElementType()) : nullptr;
    if (!quant)
      continue;
    unsigned i = operand.getOperandNumber();
    if (!iface.isWeightOperand(operand) ||
        iface.getQuantizable(operand) == QuantizableWeight::No)
      return op->emitOpError("operand #")
             << i << " cannot be quantised, got " << type;
    if (type.getRank() != 2 || type.getDimSize(1) % quant.getBlockSize() != 0)
      return op->emitOpError("quantised weight operand #")
             << i << " of type " << type << " must be rank 2 with rows of "
             << "whole " << quant.getBlockSize() << "-element blocks";
  }
  return success();
}

double mlir::moe::getExpectedExpertShare(int64_t k, int64_t numExperts,
                                         double stepTokens) {
  if (k >= numExperts)
    return 1.0;
  double miss = 1.0 - static_cast<double>(k) / static_cast<double>(numExperts);
  return 1.0 - std::pow(miss, stepTokens);
}
