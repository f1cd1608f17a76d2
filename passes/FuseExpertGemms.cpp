//===- FuseExpertGemms.cpp - the fused expert path -------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/MoEOps.h"
#include "passes/Passes.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::moe {
#define GEN_PASS_DEF_FUSEEXPERTGEMMS
#include "passes/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

struct FuseExpertBank : OpRewritePattern<ExpertsOp> {
  FuseExpertBank(MLIRContext *context, llvm::Statistic &fused)
      : OpRewritePattern(context), fused(fused) {}

  LogicalResult matchAndRewrite(ExpertsOp op,
                                PatternRewriter &rewriter) const override {
    // Distinct, in-range experts per token are what a router guarantees (and
    // a capacity keeps, marking drops -1); other index sources could repeat
    // or overflow, so leave them alone.
    Operation *router = op.getIndices().getDefiningOp();
    if (!isa_and_present<RouterOp, FusedRouterOp, ExpertCapacityOp>(router))
      return rewriter.notifyMatchFailure(op, "routing is not a router's");
    int64_t k = op.getWeights().getType().getDimSize(1);
    if (ShapedType::isDynamic(k))
      return rewriter.notifyMatchFailure(op, "k is not static");

    Location loc = op.getLoc();
    int64_t experts = op.getNumExperts();
    auto permute =
        ExpertPermuteOp::create(rewriter, loc, op.getIndices(), experts);
    SmallVector<Value> gateUp;
    for (int64_t e = 0; e < experts; ++e) {
      gateUp.push_back(op.getGateWeights()[e]);
      gateUp.push_back(op.getUpWeights()[e]);
    }
    auto kAttr = rewriter.getI64IntegerAttr(k);
    Value gu = GroupedMatmulOp::create(
        rewriter, loc, op.getInput(), permute.getPerm(), permute.getOffsets(),
        gateUp, kAttr, rewriter.getI64IntegerAttr(2), rewriter.getUnitAttr(),
        /*silu_mul=*/UnitAttr());
    Value hidden = SiluMulOp::create(rewriter, loc, gu);
    Value down = GroupedMatmulOp::create(
        rewriter, loc, hidden, permute.getPerm(), permute.getOffsets(),
        op.getDownWeights(), kAttr, rewriter.getI64IntegerAttr(1),
        /*gather=*/UnitAttr(), /*silu_mul=*/UnitAttr());
    rewriter.replaceOpWithNewOp<ExpertCombineOp>(op, down, permute.getPerm(),
                                                 op.getWeights());
    ++fused;
    return success();
  }

  llvm::Statistic &fused;
};

struct FuseExpertGemmsPass
    : mlir::moe::impl::FuseExpertGemmsBase<FuseExpertGemmsPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FuseExpertBank>(&getContext(), numFused);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
