//===- FuseResidual.cpp - residual adds into their producer ----*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/MoEOps.h"
#include "passes/Passes.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::moe {
#define GEN_PASS_DEF_FUSERESIDUAL
#include "passes/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// The producer of `v` that can take the other operand of an add as its
/// residual: a moe.linear or moe.expert_combine without one, whose result
/// the add is the only user of.
Operation *fusableProducer(Value v) {
  Operation *def = v.getDefiningOp();
  if (!def || !v.hasOneUse())
    return nullptr;
  if (auto linear = dyn_cast<LinearOp>(def))
    return linear.getResidual() ? nullptr : def;
  if (auto combine = dyn_cast<ExpertCombineOp>(def))
    return combine.getResidual() ? nullptr : def;
  return nullptr;
}

/// add(linear(x, W), r)          ==>  linear(x, W) residual r
/// add(expert_combine(...), r)   ==>  expert_combine(...) residual r
/// The fused op takes the add's place (every operand of the producer is
/// defined before the producer, so also before the add).
struct FuseAddIntoProducer : OpRewritePattern<AddOp> {
  FuseAddIntoProducer(MLIRContext *context, llvm::Statistic &fused)
      : OpRewritePattern(context), fused(fused) {}

  LogicalResult matchAndRewrite(AddOp add,
                                PatternRewriter &rewriter) const override {
    Value residual = add.getRhs();
    Operation *producer = fusableProducer(add.getLhs());
    if (!producer) {
      residual = add.getLhs();
      producer = fusableProducer(add.getRhs());
    }
    if (!producer)
      return rewriter.notifyMatchFailure(
          add, "no operand is a single-use moe.linear or moe.expert_combine");
    if (auto linear = dyn_cast<LinearOp>(producer))
      rewriter.replaceOpWithNewOp<LinearOp>(add, linear.getInput(),
                                            linear.getWeight(), residual);
    else {
      auto combine = cast<ExpertCombineOp>(producer);
      rewriter.replaceOpWithNewOp<ExpertCombineOp>(
          add, combine.getInput(), combine.getPerm(), combine.getWeights(),
          residual);
    }
    rewriter.eraseOp(producer);
    ++fused;
    return success();
  }

  llvm::Statistic &fused;
};

struct FuseResidualPass : mlir::moe::impl::FuseResidualBase<FuseResidualPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FuseAddIntoProducer>(&getContext(), numFused);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
