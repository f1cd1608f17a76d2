//===- FuseEpilogues.cpp - elementwise ops into their producer -*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/MoEOps.h"
#include "passes/Passes.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::moe {
#define GEN_PASS_DEF_FUSEEPILOGUES
#include "passes/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// A rewrite of one op kind that counts what it fused in a pass statistic.
template <typename OpT> struct CountedPattern : OpRewritePattern<OpT> {
  CountedPattern(MLIRContext *context, llvm::Statistic &fused)
      : OpRewritePattern<OpT>(context), fused(fused) {}
  llvm::Statistic &fused;
};

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
struct FuseAddIntoProducer : CountedPattern<AddOp> {
  using CountedPattern::CountedPattern;

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
};

/// silu_mul(grouped_matmul(... parts 2))  ==>  grouped_matmul(...) silu_mul
/// when the gate_up product has no other user and its parts are equal.
struct FuseSiluMulIntoGemm : CountedPattern<SiluMulOp> {
  using CountedPattern::CountedPattern;

  LogicalResult matchAndRewrite(SiluMulOp silu,
                                PatternRewriter &rewriter) const override {
    auto gemm = silu.getInput().getDefiningOp<GroupedMatmulOp>();
    if (!gemm || gemm.getSiluMul() || gemm.getParts() != 2)
      return rewriter.notifyMatchFailure(
          silu, "the input is not a two-part moe.grouped_matmul");
    if (!gemm.getResult().hasOneUse())
      return rewriter.notifyMatchFailure(silu, "gate_up has other users");
    auto rows = [&](int i) {
      return cast<RankedTensorType>(gemm.getExpertWeights()[i].getType())
          .getDimSize(0);
    };
    if (rows(0) != rows(1))
      return rewriter.notifyMatchFailure(silu, "gate and up differ in width");
    rewriter.replaceOpWithNewOp<GroupedMatmulOp>(
        silu, gemm.getInput(), gemm.getPerm(), gemm.getOffsets(),
        gemm.getExpertWeights(), gemm.getKAttr(), gemm.getPartsAttr(),
        gemm.getGatherAttr(), rewriter.getUnitAttr());
    rewriter.eraseOp(gemm);
    ++fused;
    return success();
  }
};

/// rope(fused_linear(...)#i, pos)  ==>  fused_linear(...) rope [..., i] at pos
/// when result i has no other user and the op ropes nothing yet or with the
/// same positions, head_dim, theta, scaling and pairing.
struct FuseRopeIntoProjection : CountedPattern<RoPEOp> {
  using CountedPattern::CountedPattern;

  LogicalResult matchAndRewrite(RoPEOp rope,
                                PatternRewriter &rewriter) const override {
    auto result = dyn_cast<OpResult>(rope.getInput());
    auto linear =
        result ? dyn_cast<FusedLinearOp>(result.getOwner()) : FusedLinearOp();
    if (!linear)
      return rewriter.notifyMatchFailure(rope, "not a moe.fused_linear result");
    int64_t index = result.getResultNumber();
    if (!result.hasOneUse() || linear.hasRope(index))
      return rewriter.notifyMatchFailure(rope, "the projection is used else");
    Value pos = rope.getPositions();
    if (linear.getRope() &&
        (linear.getPositions() != pos ||
         *linear.getHeadDim() != rope.getHeadDim() ||
         linear.getThetaAttr() != rope.getThetaAttr() ||
         linear.getRopeScalingAttr() != rope.getScalingAttr() ||
         linear.getRopeInterleaved() != rope.getInterleaved()))
      return rewriter.notifyMatchFailure(rope, "ropes with other parameters");
    // The fused op stays where it is: the positions must be defined there.
    if (Operation *def = pos.getDefiningOp();
        def && (def->getBlock() != linear->getBlock() ||
                !def->isBeforeInBlock(linear)))
      return rewriter.notifyMatchFailure(rope, "positions defined later");
    SmallVector<int64_t> roped;
    if (linear.getRope())
      roped.assign(linear.getRope()->begin(), linear.getRope()->end());
    roped.insert(llvm::upper_bound(roped, index), index);
    rewriter.setInsertionPoint(linear);
    auto merged = FusedLinearOp::create(
        rewriter, linear.getLoc(), linear.getInput(), linear.getWeights(), pos,
        rewriter.getDenseI64ArrayAttr(roped), rope.getHeadDimAttr(),
        rope.getThetaAttr(), rope.getScalingAttr(), rope.getInterleavedAttr());
    rewriter.replaceOp(rope, merged.getResult(index));
    rewriter.replaceOp(linear, merged.getResults());
    ++fused;
    return success();
  }
};

struct FuseEpiloguesPass
    : mlir::moe::impl::FuseEpiloguesBase<FuseEpiloguesPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FuseAddIntoProducer>(&getContext(), numResidual);
    patterns.add<FuseSiluMulIntoGemm>(&getContext(), numSiluMul);
    patterns.add<FuseRopeIntoProjection>(&getContext(), numRope);
    // In program order, so where two ropes cannot share a projection op the
    // first one folds.
    GreedyRewriteConfig config;
    config.setUseTopDownTraversal(true);
    if (failed(
            applyPatternsGreedily(getOperation(), std::move(patterns), config)))
      signalPassFailure();
  }
};

} // namespace
