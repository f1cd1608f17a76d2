//===- ShardExperts.cpp - expert parallelism across ranks ------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Rewrites each moe.experts into the expert-parallel plan: exchange counts,
// dispatch, this rank's experts, combine (docs/distributed.md).
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/MoEOps.h"
#include "passes/Passes.h"

#include "mlir/IR/Builders.h"

namespace mlir::moe {
#define GEN_PASS_DEF_SHARDEXPERTS
#include "passes/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

struct ShardExpertsPass : mlir::moe::impl::ShardExpertsBase<ShardExpertsPass> {
  using Base::Base;

  void runOnOperation() override {
    func::FuncOp func = getOperation();
    if (ranks < 1) {
      func.emitError("moe-shard-experts: ranks must be at least 1, got ")
          << int64_t(ranks);
      return signalPassFailure();
    }
    SmallVector<ExpertsOp> banks;
    func.walk([&](ExpertsOp op) { banks.push_back(op); });
    if (banks.empty()) {
      if (!func.getOps<ExpertPermuteOp>().empty()) {
        func.emitError("moe-shard-experts: the expert banks are already "
                       "fused (moe.expert_permute); run moe-shard-experts "
                       "before moe-fuse-expert-gemms");
        return signalPassFailure();
      }
      return;
    }
    for (ExpertsOp op : banks) {
      int64_t experts = op.getNumExperts();
      if (ranks > experts) {
        op.emitOpError("moe-shard-experts: ")
            << int64_t(ranks) << " ranks for " << experts
            << " experts: each rank must hold at least one expert, so "
               "ranks must be at most "
            << experts;
        return signalPassFailure();
      }
      if (!isa_and_present<RouterOp, FusedRouterOp, ExpertCapacityOp>(
              op.getIndices().getDefiningOp())) {
        op.emitOpError("moe-shard-experts: the routing must come from "
                       "moe.router, moe.fused_router or moe.expert_capacity");
        return signalPassFailure();
      }
      int64_t k = op.getIndices().getType().getDimSize(1);
      if (ShapedType::isDynamic(k)) {
        op.emitOpError("moe-shard-experts: k must be static");
        return signalPassFailure();
      }
      OpBuilder b(op);
      Location loc = op.getLoc();
      SmallVector<int64_t> first = splitExperts(experts, ranks);
      auto firstAttr = b.getDenseI64ArrayAttr(first);
      auto counts = EpExchangeCountsOp::create(
          b, loc, RankedTensorType::get({2, int64_t(ranks)}, b.getI32Type()),
          op.getIndices(), b.getI64IntegerAttr(ranks), firstAttr);
      auto rowsType = op.getInput().getType();
      auto dispatch = EpDispatchOp::create(
          b, loc, rowsType,
          RankedTensorType::get({ShapedType::kDynamic}, b.getI32Type()),
          RankedTensorType::get({ShapedType::kDynamic}, b.getF32Type()),
          op.getInput(), op.getIndices(), op.getWeights(), counts);
      auto local = EpExpertsOp::create(
          b, loc, op.getResult().getType(), dispatch.getRows(),
          dispatch.getExperts(), dispatch.getGates(), counts,
          op.getGateWeights(), op.getUpWeights(), op.getDownWeights(),
          firstAttr);
      auto combine =
          EpCombineOp::create(b, loc, op.getResult().getType(), local,
                              op.getIndices(), counts, firstAttr, Value());
      op.getResult().replaceAllUsesWith(combine.getResult());
      op.erase();
      ++numSharded;
    }
  }
};

} // namespace
