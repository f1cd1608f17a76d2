//===- PlanMemory.cpp - one static arena by liveness -----------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/MoEOps.h"
#include "dialects/MoERT/MoERT.h"
#include "passes/Passes.h"

#include "llvm/Support/CheckedArithmetic.h"

#include "mlir/IR/Builders.h"

#include <algorithm>

namespace mlir::moe {
#define GEN_PASS_DEF_PLANMEMORY
#include "passes/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// Largest buffer planned, in floats per batch token.
constexpr int64_t kMaxBufferFloats = kMaxArenaFloatsPerToken;

/// A buffer of `size` floats per batch token, live over ops [first, last].
struct Buffer {
  int64_t size = 0, first = 0, last = 0;
  int64_t offset = -1;
};

struct PlanMemoryPass : mlir::moe::impl::PlanMemoryBase<PlanMemoryPass> {
  using Base::Base;

  void runOnOperation() override {
    func::FuncOp func = getOperation();
    if (func.isExternal())
      return;
    if (maxBatchTokens < 1 || maxBatchTokens > kMaxBatchTokensLimit) {
      func.emitError("moe-plan-memory: max-batch-tokens must be in [1, ")
          << kMaxBatchTokensLimit << "], got " << int64_t(maxBatchTokens);
      return signalPassFailure();
    }
    Attribute targetAttr = moert::getTargetAttr(&getContext(), target);
    auto buffers_ =
        dyn_cast_or_null<moert::TargetBufferAttrInterface>(targetAttr);
    if (!targetAttr) {
      func.emitError("moe-plan-memory: target must be cpu or cuda, got '")
          << target << "'";
      return signalPassFailure();
    }
    if (!buffers_) {
      func.emitError("moe-plan-memory: the ")
          << target
          << " target registered no buffer model "
             "(moert::TargetBufferAttrInterface) in this tool";
      return signalPassFailure();
    }
    Block &entry = func.getBody().front();
    Operation *terminator = entry.getTerminator();
    // The first result (the logits) goes straight to the caller's buffer.
    Value output =
        terminator->getNumOperands() ? terminator->getOperand(0) : Value();

    llvm::DenseMap<Operation *, int64_t> position;
    for (auto [i, op] : llvm::enumerate(entry))
      position[&op] = int64_t(i);

    std::vector<Buffer> buffers;
    llvm::DenseMap<Value, size_t> bufferOf;
    llvm::DenseMap<Operation *, size_t> scratchOf;
    for (Operation &op : entry) {
      if (isa<WeightOp>(op))
        continue;
      int64_t at = position[&op];
      int64_t tensors = getNumTensorResults(&op);
      for (Value result : op.getResults()) {
        // The logits need no buffer when they are all the op makes (an op
        // with more results gets one for each, the logits' unused).
        if (!isa<RankedTensorType>(result.getType()) ||
            (result == output && tensors == 1))
          continue;
        Buffer buffer{getFloatsPerToken(result), at, at};
        if (buffer.size < 0 || buffer.size > kMaxBufferFloats) {
          op.emitOpError("moe-plan-memory: a result of ")
              << buffer.size << " floats per token is too large to plan";
          return signalPassFailure();
        }
        for (Operation *user : result.getUsers())
          buffer.last = std::max(buffer.last, position[user]);
        bufferOf[result] = buffers.size();
        buffers.push_back(buffer);
      }
      if (int64_t scratch = buffers_.getScratchFloatsPerToken(&op)) {
        scratchOf[&op] = buffers.size();
        buffers.push_back(Buffer{scratch, at, at});
      }
    }

    // Largest first, each at the lowest offset clear of every placed buffer
    // whose live range overlaps its own.
    std::vector<size_t> order(buffers.size());
    for (size_t i = 0; i < order.size(); ++i)
      order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return buffers[a].size > buffers[b].size;
    });
    std::vector<size_t> placed;
    int64_t arena = 0, naive = 0;
    for (size_t i : order) {
      Buffer &buf = buffers[i];
      std::vector<std::pair<int64_t, int64_t>> taken;
      for (size_t j : placed) {
        const Buffer &other = buffers[j];
        if (!reuse || (other.first <= buf.last && buf.first <= other.last))
          taken.push_back({other.offset, other.offset + other.size});
      }
      std::sort(taken.begin(), taken.end());
      int64_t offset = 0;
      for (auto [begin, end] : taken) {
        if (offset + buf.size <= begin)
          break;
        offset = std::max(offset, end);
      }
      buf.offset = offset;
      arena = std::max(arena, offset + buf.size);
      naive += buf.size;
      placed.push_back(i);
      ++numBuffers;
    }
    // The lower bound: the most floats live at any one op.
    int64_t lowerBound = 0;
    for (int64_t at = 0; at < int64_t(position.size()); ++at) {
      int64_t live = 0;
      for (const Buffer &buf : buffers)
        if (buf.first <= at && at <= buf.last)
          live += buf.size;
      lowerBound = std::max(lowerBound, live);
    }

    if (arena > kMaxArenaFloatsPerToken) {
      func.emitError("moe-plan-memory: the activation arena would need ")
          << arena << " floats per token, more than "
          << kMaxArenaFloatsPerToken;
      return signalPassFailure();
    }
    MLIRContext *context = &getContext();
    for (Operation &op : entry) {
      op.removeAttr(kPlacementAttrName);
      if (isa<WeightOp>(op))
        continue;
      SmallVector<int64_t> offsets;
      for (Value result : op.getResults())
        if (auto it = bufferOf.find(result); it != bufferOf.end())
          offsets.push_back(buffers[it->second].offset);
      std::optional<int64_t> scratch;
      if (auto it = scratchOf.find(&op); it != scratchOf.end())
        scratch = buffers[it->second].offset;
      if (offsets.empty() && !scratch)
        continue;
      op.setAttr(kPlacementAttrName,
                 PlacementAttr::get(context,
                                    DenseI64ArrayAttr::get(context, offsets),
                                    scratch));
    }
    // The arena is at most 2^36 floats per token; the byte counts are
    // checked.
    int64_t bytesPerFloatToken = 4 * maxBatchTokens;
    for (int64_t floats : {arena, naive, lowerBound})
      if (!llvm::checkedMul(floats, bytesPerFloatToken)) {
        func.emitError("moe-plan-memory: the activation arena for ")
            << int64_t(maxBatchTokens) << " tokens needs more than 2^63 bytes";
        return signalPassFailure();
      }
    func->setAttr(kMemoryPlanAttrName,
                  MemoryPlanAttr::get(context, targetAttr, maxBatchTokens,
                                      arena, arena * bytesPerFloatToken,
                                      lowerBound * bytesPerFloatToken,
                                      naive * bytesPerFloatToken));
  }
};

} // namespace
