//===- EstimateCost.cpp - weight traffic and FLOPs of a step ----*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Sums what the ops of a function report through WeightCostOpInterface. The
// pass knows no op: an op that consumes a moe.weight and cannot say what it
// costs is an error, never a silent zero.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/MoEOps.h"
#include "passes/Passes.h"

#include "mlir/IR/Builders.h"

#include <algorithm>
#include <cmath>

namespace mlir::moe {
#define GEN_PASS_DEF_ESTIMATECOST
#include "passes/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

struct EstimateCostPass : mlir::moe::impl::EstimateCostBase<EstimateCostPass> {
  using Base::Base;

  void runOnOperation() override {
    if (stepTokens < 1 || stepTokens > kMaxBatchTokensLimit) {
      getOperation().emitError("moe-estimate-cost: step-tokens must be in "
                               "[1, ")
          << kMaxBatchTokensLimit << "], got "
          << static_cast<int64_t>(stepTokens);
      return signalPassFailure();
    }
    double tokens = static_cast<double>(stepTokens);
    double weightBytes = 0;
    // Bytes each weight reads, summed in sorted order at the end so that
    // the total does not depend on the order of the ops.
    SmallVector<double> reads;
    double flopsPerStep = 0;

    WalkResult result = getOperation().walk([&](Operation *op) {
      if (auto cost = dyn_cast<WeightCostOpInterface>(op)) {
        ++numCostedOps;
        flopsPerStep += cost.getFlops(tokens);
      }
      auto weight = dyn_cast<WeightOp>(op);
      if (!weight)
        return WalkResult::advance();
      ++numWeights;
      weightBytes += getWeightStorageBytes(weight.getResult());
      // A weight with several uses is read once, at its largest read.
      double read = 0;
      for (OpOperand &use : weight->getUses()) {
        auto cost = dyn_cast<WeightCostOpInterface>(use.getOwner());
        if (!cost) {
          use.getOwner()->emitOpError("uses moe.weight '")
              << weight.getName()
              << "' but does not implement WeightCostOpInterface, so "
                 "moe-estimate-cost cannot cost it";
          return WalkResult::interrupt();
        }
        read = std::max(read, cost.getWeightBytesRead(use, tokens));
      }
      reads.push_back(read);
      return WalkResult::advance();
    });
    if (result.wasInterrupted())
      return signalPassFailure();

    llvm::sort(reads);
    double bytesPerStep = 0;
    for (double read : reads)
      bytesPerStep += read;

    Builder b(&getContext());
    auto i64 = [&](double v) { return b.getI64IntegerAttr(std::llround(v)); };
    getOperation()->setAttr(
        "moe.cost", b.getDictionaryAttr({
                        b.getNamedAttr("bytes_per_step", i64(bytesPerStep)),
                        b.getNamedAttr("flops_per_step", i64(flopsPerStep)),
                        b.getNamedAttr("step_tokens", i64(tokens)),
                        b.getNamedAttr("weight_bytes", i64(weightBytes)),
                    }));
  }
};

} // namespace
