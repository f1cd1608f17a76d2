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
    if (target != "cpu" && target != "cuda") {
      getOperation().emitError("moe-estimate-cost: target must be cpu or "
                               "cuda, got '")
          << target << "'";
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

    // Expert parallelism: the bytes each rank sends per step, expected under
    // uniform routing (a row goes to rank r with probability E_r / E),
    // summed over the layers: the counts, its slice's rows to other ranks
    // (H + 2 floats: the row, its expert and its weight), the rows it
    // received back (H floats), and its slice of the all-gather. The CUDA
    // target's plan sends only its partial sums of every token to every
    // other rank.
    SmallVector<double> sent;
    getOperation().walk([&](EpExchangeCountsOp counts) {
      ArrayRef<int64_t> first = counts.getFirstExpert();
      int64_t ranks = counts.getRanks();
      double experts = static_cast<double>(first.back());
      double k =
          static_cast<double>(counts.getIndices().getType().getDimSize(1));
      double h = 0;
      for (Operation *user : counts->getUsers())
        if (auto dispatch = dyn_cast<EpDispatchOp>(user))
          h = static_cast<double>(dispatch.getInput().getType().getDimSize(1));
      int64_t t = stepTokens;
      auto slice = [&](int64_t r) {
        return static_cast<double>(t * (r + 1) / ranks - t * r / ranks);
      };
      sent.resize(size_t(ranks), 0.0);
      if (target == "cuda") {
        for (double &bytes : sent)
          bytes += 4.0 * static_cast<double>(t) * h *
                   static_cast<double>(ranks - 1);
        return;
      }
      for (int64_t r = 0; r < ranks; ++r) {
        double mine = static_cast<double>(first[r + 1] - first[r]) / experts;
        double others = 0;
        for (int64_t q = 0; q < ranks; ++q)
          if (q != r)
            others += slice(q);
        sent[size_t(r)] +=
            4.0 * (static_cast<double>(ranks - 1) +
                   slice(r) * k * (1 - mine) * (h + 2) + others * k * mine * h +
                   slice(r) * h * static_cast<double>(ranks - 1));
      }
    });

    llvm::sort(reads);
    double bytesPerStep = 0;
    for (double read : reads)
      bytesPerStep += read;

    Builder b(&getContext());
    auto i64 = [&](double v) { return b.getI64IntegerAttr(std::llround(v)); };
    SmallVector<NamedAttribute> fields = {
        b.getNamedAttr("bytes_per_step", i64(bytesPerStep)),
        b.getNamedAttr("flops_per_step", i64(flopsPerStep)),
        b.getNamedAttr("step_tokens", i64(tokens)),
        b.getNamedAttr("weight_bytes", i64(weightBytes)),
    };
    if (!sent.empty()) {
      SmallVector<int64_t> perRank;
      for (double v : sent)
        perRank.push_back(std::llround(v));
      fields.push_back(b.getNamedAttr("ep_bytes_sent_per_rank",
                                      b.getDenseI64ArrayAttr(perRank)));
    }
    getOperation()->setAttr("moe.cost", b.getDictionaryAttr(fields));
  }
};

} // namespace
