//===- ExpertCapacity.cpp - a capacity per expert --------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Puts a moe.expert_capacity between each expert bank and its router, so
// that each expert takes at most ceil(factor * T * k / E) pairs per call
// (GShard / Switch Transformer capacity; docs/passes.md).
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/MoEOps.h"
#include "passes/Passes.h"

#include "mlir/IR/Builders.h"

#include <cmath>

namespace mlir::moe {
#define GEN_PASS_DEF_EXPERTCAPACITY
#include "passes/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

struct ExpertCapacityPass
    : mlir::moe::impl::ExpertCapacityBase<ExpertCapacityPass> {
  using Base::Base;

  void runOnOperation() override {
    func::FuncOp func = getOperation();
    if (!std::isfinite(double(factor)) || factor <= 0) {
      func.emitError("moe-expert-capacity: factor must be a finite number "
                     "above 0, got ")
          << double(factor);
      return signalPassFailure();
    }
    // A bank fused or sharded without a capacity would stay unbounded.
    auto unbounded = [](Value indices) {
      return !isa_and_present<ExpertCapacityOp>(indices.getDefiningOp());
    };
    for (ExpertPermuteOp op : func.getOps<ExpertPermuteOp>())
      if (unbounded(op.getIndices())) {
        op.emitOpError("moe-expert-capacity: the expert bank is already "
                       "fused; run moe-expert-capacity before "
                       "moe-fuse-expert-gemms");
        return signalPassFailure();
      }
    for (EpExchangeCountsOp op : func.getOps<EpExchangeCountsOp>())
      if (unbounded(op.getIndices())) {
        op.emitOpError("moe-expert-capacity: the expert bank is already "
                       "sharded; run moe-expert-capacity before "
                       "moe-shard-experts");
        return signalPassFailure();
      }
    WalkResult walk = func.walk([&](ExpertsOp op) {
      Operation *router = op.getIndices().getDefiningOp();
      if (isa_and_present<ExpertCapacityOp>(router))
        return WalkResult::advance(); // Already bounded.
      if (!isa_and_present<RouterOp, FusedRouterOp>(router) ||
          op.getWeights().getDefiningOp() != router) {
        op.emitOpError("moe-expert-capacity: the weights and indices must "
                       "come from one moe.router or moe.fused_router");
        return WalkResult::interrupt();
      }
      OpBuilder b(op);
      auto capacity = ExpertCapacityOp::create(
          b, op.getLoc(), op.getWeights(), op.getIndices(),
          b.getI64IntegerAttr(op.getNumExperts()), b.getF64FloatAttr(factor));
      op.getWeightsMutable().assign(capacity.getKeptWeights());
      op.getIndicesMutable().assign(capacity.getKeptIndices());
      ++numBounded;
      return WalkResult::advance();
    });
    if (walk.wasInterrupted())
      signalPassFailure();
  }
};

} // namespace
