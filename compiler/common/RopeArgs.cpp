//===- RopeArgs.cpp - the RoPE kernels' scaling arguments -------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Resolves a #moe.rope_scaling into what the kernels take, with the formulas
// of runtime/include/moert/kernel_math.h (whose namespace ::moert is not the
// dialect's mlir::moert: this file keeps them apart).
//
//===----------------------------------------------------------------------===//

#include "compiler/common/Lowering.h"

#include "moert/kernel_math.h"

using namespace mlir;
using namespace mlir::moe;

void mlir::moe::appendRopeScaling(OpBuilder &b, Location loc,
                                  RopeScalingAttr scaling, int64_t headDim,
                                  double theta, TemplateArgs &targs,
                                  SmallVectorImpl<Value> &args) {
  if (!scaling)
    return;
  ::moert::RopeScaling s;
  s.factor = scaling.getFactor().convertToDouble();
  switch (scaling.getType()) {
  case RopeType::Linear:
    s.kind = ::moert::RopeLinear;
    break;
  case RopeType::Dynamic:
    s.kind = ::moert::RopeDynamic;
    s.context = double(scaling.getMaxPositions());
    break;
  case RopeType::Yarn:
    s.kind = ::moert::RopeYarn;
    ::moert::ropeYarnRange(headDim, theta,
                           scaling.getBetaFast().convertToDouble(),
                           scaling.getBetaSlow().convertToDouble(),
                           double(scaling.getOriginalMaxPositions()),
                           scaling.getTruncate(), s.low, s.high);
    s.attention = scaling.getAttention().convertToDouble();
    break;
  case RopeType::Llama3:
    s.kind = ::moert::RopeLlama3;
    s.low = scaling.getLowFreqFactor().convertToDouble();
    s.high = scaling.getHighFreqFactor().convertToDouble();
    s.context = double(scaling.getOriginalMaxPositions());
    break;
  }
  targs.i(s.kind);
  for (double v : {s.factor, s.low, s.high, s.context, s.attention})
    args.push_back(constantF64(b, loc, v));
}
