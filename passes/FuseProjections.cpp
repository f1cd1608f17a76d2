//===- FuseProjections.cpp - sibling linears into one op -------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/MoEOps.h"
#include "passes/Passes.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/MapVector.h"

namespace mlir::moe {
#define GEN_PASS_DEF_FUSEPROJECTIONS
#include "passes/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

struct FuseProjectionsPass
    : mlir::moe::impl::FuseProjectionsBase<FuseProjectionsPass> {
  void runOnOperation() override {
    getOperation().walk([&](Block *block) {
      // Linears without a residual, grouped by input, in block order.
      llvm::MapVector<Value, SmallVector<LinearOp>> siblings;
      for (Operation &op : *block)
        if (auto linear = dyn_cast<LinearOp>(op);
            linear && !linear.getResidual())
          siblings[linear.getInput()].push_back(linear);
      for (auto &[input, group] : siblings)
        if (group.size() >= 2)
          fuse(input, group);
    });
  }

  /// Replaces `group` by one moe.fused_linear at the last of them, where
  /// every weight is defined; that is only valid if no result is used
  /// before it.
  void fuse(Value input, ArrayRef<LinearOp> group) {
    LinearOp last = group.back();
    Block *block = last->getBlock();
    for (LinearOp linear : group)
      for (Operation *user : linear.getResult().getUsers())
        if (Operation *at = block->findAncestorOpInBlock(*user);
            at && at->isBeforeInBlock(last))
          return;
    SmallVector<Value> weights;
    for (LinearOp linear : group)
      weights.push_back(linear.getWeight());
    OpBuilder b(last);
    auto fused = FusedLinearOp::create(b, last.getLoc(), input, weights);
    for (auto [i, linear] : llvm::enumerate(group)) {
      LinearOp op = linear;
      op.getResult().replaceAllUsesWith(fused.getResult(i));
      op.erase();
    }
    numFused += group.size();
  }
};

} // namespace
