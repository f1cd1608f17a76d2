//===- PlanKVCache.cpp - size each layer's KV cache ------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/MoEOps.h"
#include "passes/Passes.h"

#include "llvm/Support/CheckedArithmetic.h"

#include "mlir/IR/Builders.h"

namespace mlir::moe {
#define GEN_PASS_DEF_PLANKVCACHE
#include "passes/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

struct PlanKVCachePass : mlir::moe::impl::PlanKVCacheBase<PlanKVCachePass> {
  using Base::Base;

  void runOnOperation() override {
    func::FuncOp func = getOperation();
    int64_t seq = maxSeq;
    if (seq == 0)
      if (auto module = func->getParentOfType<ModuleOp>())
        if (ModelAttr model = getModel(module))
          seq = model.getMaxPositions();
    if (seq <= 0) {
      func.emitError("moe-plan-kv-cache: the longest sequence is unknown; "
                     "pass max-seq=N or plan a model imported by "
                     "moe-translate");
      return signalPassFailure();
    }
    if (seq > kMaxCacheCapacity) {
      func.emitError("moe-plan-kv-cache: max-seq must be at most ")
          << kMaxCacheCapacity << " (positions are int32), got " << seq;
      return signalPassFailure();
    }
    if (func.isExternal())
      return;

    Builder b(&getContext());
    Block &entry = func.getBody().front();
    SmallVector<int64_t> capacities, windows, layerBytes;
    int64_t total = 0;
    for (BlockArgument arg : entry.getArguments()) {
      auto type = dyn_cast<KVCacheType>(arg.getType());
      if (!type)
        continue;
      if (!arg.hasOneUse() || !isa<AttentionOp>(*arg.getUsers().begin())) {
        func.emitError("moe-plan-kv-cache: cache argument #")
            << arg.getArgNumber() << " must be read by exactly one "
            << "moe.attention";
        return signalPassFailure();
      }
      auto attention = cast<AttentionOp>(*arg.getUsers().begin());
      int64_t window = attention.getSlidingWindow().value_or(0);
      int64_t capacity = window ? std::min(window, seq) : seq;
      auto planned =
          KVCacheType::get(&getContext(), type.getNumKvHeads(), capacity,
                           type.getHeadDim(), type.getElementType());
      arg.setType(planned);
      attention.getCacheOut().setType(planned);
      // Each cache is at most 2^58 bytes (the kv_cache type's bounds); their
      // sum is checked.
      int64_t bytes = *planned.getSizeInBytes();
      std::optional<int64_t> sum = llvm::checkedAdd(total, bytes);
      if (!sum) {
        func.emitError("moe-plan-kv-cache: the KV caches for max-seq ")
            << seq << " need more than 2^63 bytes";
        return signalPassFailure();
      }
      total = *sum;
      ++numCaches;
      capacities.push_back(capacity);
      windows.push_back(window);
      layerBytes.push_back(bytes);
    }
    if (capacities.empty())
      return;
    // The function's signature follows the new argument and result types.
    Operation *terminator = entry.getTerminator();
    func.setType(b.getFunctionType(entry.getArgumentTypes(),
                                   terminator->getOperandTypes()));
    func->setAttr(kKVCachePlanAttrName,
                  KVCachePlanAttr::get(&getContext(), seq, total,
                                       b.getDenseI64ArrayAttr(capacities),
                                       b.getDenseI64ArrayAttr(windows),
                                       b.getDenseI64ArrayAttr(layerBytes)));
  }
};

} // namespace
