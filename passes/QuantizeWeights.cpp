//===- QuantizeWeights.cpp - moe-quantize-weights ---------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Retypes the weights every use of which takes a block-quantised weight, and
// marks their manifest entries: the data is quantised by whoever writes the
// artifact (moe-compile), never held in the IR.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/MoEOps.h"
#include "passes/Passes.h"

#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/StringMap.h"

namespace mlir::moe {
#define GEN_PASS_DEF_QUANTIZEWEIGHTS
#include "passes/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

bool mlir::moe::isQuantFormatName(llvm::StringRef name) {
  // The formats this pass makes; the k-quants come from GGUF files only.
  std::optional<QuantFormat> f = symbolizeQuantFormat(name);
  return f && (*f == QuantFormat::Q8_0 || *f == QuantFormat::Q4_0 ||
               *f == QuantFormat::Q4_1);
}

namespace {

/// Whether every use of `weight` takes it quantised (as an expert weight
/// when `expertsOnly`).
bool quantizable(WeightOp weight, bool expertsOnly) {
  if (weight->use_empty())
    return false;
  for (OpOperand &use : weight->getUses()) {
    auto iface = dyn_cast<WeightCostOpInterface>(use.getOwner());
    if (!iface || !iface.isWeightOperand(use))
      return false;
    QuantizableWeight role = iface.getQuantizable(use);
    if (role == QuantizableWeight::No ||
        (expertsOnly && role != QuantizableWeight::Expert))
      return false;
  }
  return true;
}

struct QuantizeWeightsPass
    : public mlir::moe::impl::QuantizeWeightsBase<QuantizeWeightsPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    std::optional<QuantFormat> parsed = symbolizeQuantFormat(format);
    if (!parsed || !isQuantFormatName(format)) {
      module.emitError("moe-quantize-weights: format must be q8_0, q4_0 or "
                       "q4_1, got '")
          << format << "'";
      return signalPassFailure();
    }
    if (only != "all" && only != "experts") {
      module.emitError("moe-quantize-weights: only must be all or experts, "
                       "got '")
          << only << "'";
      return signalPassFailure();
    }
    auto quant = QuantType::get(&getContext(), *parsed);

    // A name is quantised only if all its moe.weight ops may be.
    llvm::MapVector<StringRef, SmallVector<WeightOp>> byName;
    llvm::StringMap<bool> ok;
    module.walk([&](WeightOp w) {
      byName[w.getName()].push_back(w);
      auto [it, inserted] = ok.try_emplace(w.getName(), true);
      it->second = it->second && quantizable(w, only == "experts");
    });
    llvm::StringMap<WeightSourceOp> sources;
    for (auto source : module.getOps<WeightSourceOp>())
      sources[source.getName()] = source;

    int64_t quantised = 0;
    bool alreadyQuantised = false;
    for (auto &[name, weights] : byName) {
      auto type = weights.front().getResult().getType();
      if (auto already = dyn_cast<QuantType>(type.getElementType())) {
        // Quantised data is never quantised again (the error would add up).
        if (already != quant) {
          weights.front().emitError("weight '")
              << name << "' is already quantised to " << already
              << "; compile from the model's own weights to store it as "
              << quant;
          return signalPassFailure();
        }
        alreadyQuantised = true;
        continue;
      }
      if (!ok[name])
        continue;
      if (type.getRank() != 2 || type.getDimSize(1) % quant.getBlockSize()) {
        weights.front().emitWarning("weight '")
            << name << "' of type " << type << " is not quantised: its rows "
            << "are not whole " << quant.getBlockSize() << "-element blocks";
        continue;
      }
      ++quantised;
      auto to = RankedTensorType::get(type.getShape(), quant);
      for (WeightOp w : weights)
        w.getResult().setType(to);
      // Without a manifest (a hand-written test function) there is nothing
      // to mark.
      if (WeightSourceOp source = sources.lookup(name))
        source.setQuantizedAttr(TypeAttr::get(to));
    }
    if (quantised == 0 && !alreadyQuantised && !byName.empty())
      module.emitWarning("moe-quantize-weights: no weight was quantised to ")
          << quant << " (no weight that may be has rows of whole "
          << quant.getBlockSize() << "-element blocks)";
  }
};

} // namespace
