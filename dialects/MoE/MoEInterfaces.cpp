//===- MoEInterfaces.cpp - moe dialect op interfaces ------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/MoEInterfaces.h"

#include "mlir/IR/BuiltinTypes.h"

#include <cmath>

using namespace mlir;
using namespace mlir::moe;

#include "dialects/MoE/MoEInterfaces.cpp.inc"

double mlir::moe::getWeightStorageBytes(Value weight) {
  auto type = cast<RankedTensorType>(weight.getType());
  return static_cast<double>(type.getNumElements()) *
         static_cast<double>(type.getElementTypeBitWidth()) / 8.0;
}

double mlir::moe::getExpectedExpertShare(int64_t k, int64_t numExperts,
                                         double stepTokens) {
  if (k >= numExperts)
    return 1.0;
  double miss = 1.0 - static_cast<double>(k) / static_cast<double>(numExperts);
  return 1.0 - std::pow(miss, stepTokens);
}
