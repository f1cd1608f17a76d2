//===- EstimateCost.cpp - weight traffic and FLOPs of a step ----*- C++ -*-===//
//
// Part of moe-compile.
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

/// Experts chosen per token by an expert bank; the whole bank when the
/// routing width is not static.
int64_t expertsPerToken(ExpertsOp op) {
  int64_t k = op.getWeights().getType().getDimSize(1);
  return ShapedType::isDynamic(k) ? op.getNumExperts() : k;
}

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
    int64_t weightBytes = 0;
    double bytesPerStep = 0;
    double flopsPerStep = 0;

    getOperation().walk([&](Operation *op) {
      if (auto weight = dyn_cast<WeightOp>(op)) {
        ++numWeights;
        RankedTensorType type = weight.getResult().getType();
        int64_t bytes =
            type.getNumElements() * type.getElementTypeBitWidth() / 8;
        weightBytes += bytes;
        double read = 0;
        for (Operation *user : weight->getUsers())
          read = std::max(read, bytesReadPerStep(user, type, bytes, tokens));
        bytesPerStep += read;
      } else if (auto linear = dyn_cast<LinearOp>(op)) {
        ArrayRef<int64_t> w = linear.getWeight().getType().getShape();
        flopsPerStep += 2.0 * w[0] * w[1] * tokens;
      } else if (auto fused = dyn_cast<FusedLinearOp>(op)) {
        for (Value weight : fused.getWeights()) {
          ArrayRef<int64_t> w =
              cast<RankedTensorType>(weight.getType()).getShape();
          flopsPerStep += 2.0 * w[0] * w[1] * tokens;
        }
      } else if (auto experts = dyn_cast<ExpertsOp>(op)) {
        ++numExpertBanks;
        ArrayRef<int64_t> gate =
            cast<RankedTensorType>(experts.getGateWeights().front().getType())
                .getShape();
        flopsPerStep +=
            6.0 * expertsPerToken(experts) * gate[0] * gate[1] * tokens;
      }
    });

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

  /// Bytes of a weight of `type` (`bytes` in all) that `user` reads in one
  /// step of `tokens` tokens.
  static double bytesReadPerStep(Operation *user, RankedTensorType type,
                                 int64_t bytes, double tokens) {
    if (isa<EmbeddingOp>(user)) {
      double rows = static_cast<double>(type.getDimSize(0));
      return bytes / rows * std::min(tokens, rows);
    }
    if (auto experts = dyn_cast<ExpertsOp>(user)) {
      double share = static_cast<double>(expertsPerToken(experts)) /
                     static_cast<double>(experts.getNumExperts());
      return bytes * (1.0 - std::pow(1.0 - share, tokens));
    }
    return static_cast<double>(bytes);
  }
};

} // namespace
