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

/// silu_mul(grouped_matmul(... parts 2))  ==>  grouped_matmul(...) silu_mul
/// when the gate_up product has no other user and its parts are equal.
struct FuseSiluMulIntoGemm : OpRewritePattern<SiluMulOp> {
  FuseSiluMulIntoGemm(MLIRContext *context, llvm::Statistic &fused)
      : OpRewritePattern(context), fused(fused) {}

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

  llvm::Statistic &fused;
};

struct FuseEpiloguesPass
    : mlir::moe::impl::FuseEpiloguesBase<FuseEpiloguesPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FuseAddIntoProducer>(&getContext(), numResidual);
    patterns.add<FuseSiluMulIntoGemm>(&getContext(), numSiluMul);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
