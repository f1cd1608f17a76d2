//===- FuseRouter.cpp - gate GEMM + routing in one op ----------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/MoEOps.h"
#include "passes/Passes.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::moe {
#define GEN_PASS_DEF_FUSEROUTER
#include "passes/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// linear(x, gate) -> router  ==>  fused_router(x, gate), when the logits
/// have no other user (otherwise they must be materialised anyway).
struct FuseGateIntoRouter : OpRewritePattern<RouterOp> {
  FuseGateIntoRouter(MLIRContext *context, llvm::Statistic &fused)
      : OpRewritePattern(context), fused(fused) {}

  LogicalResult matchAndRewrite(RouterOp router,
                                PatternRewriter &rewriter) const override {
    auto gate = router.getLogits().getDefiningOp<LinearOp>();
    if (!gate)
      return rewriter.notifyMatchFailure(router, "logits are not a moe.linear");
    if (!gate.getResult().hasOneUse())
      return rewriter.notifyMatchFailure(router, "logits have other users");
    rewriter.replaceOpWithNewOp<FusedRouterOp>(
        router, gate.getInput(), gate.getWeight(), router.getKAttr(),
        router.getScoringAttr(), router.getRenormalizeAttr());
    rewriter.eraseOp(gate);
    ++fused;
    return success();
  }

  llvm::Statistic &fused;
};

struct FuseRouterPass : mlir::moe::impl::FuseRouterBase<FuseRouterPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FuseGateIntoRouter>(&getContext(), numFused);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
