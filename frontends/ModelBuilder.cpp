//===- ModelBuilder.cpp - build moe IR for a ModelSpec ----------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "frontends/ModelBuilder.h"

#include "dialects/MoE/MoEOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"

#include <numeric>

using namespace mlir;
using namespace mlir::moe;

namespace {

class ModelIRBuilder {
public:
  ModelIRBuilder(MLIRContext &context, const ModelSpec &spec, WeightNamer names,
                 const llvm::StringMap<WeightSource> &weights)
      : b(&context), spec(spec), names(names), weights(weights) {}

  llvm::Expected<OwningOpRef<ModuleOp>> build(StringRef weightDir);

private:
  Type elementType(WeightDType type) {
    switch (type) {
    case WeightDType::F32:
      return b.getF32Type();
    case WeightDType::F16:
      return b.getF16Type();
    case WeightDType::BF16:
      return b.getBF16Type();
    case WeightDType::Q8_0:
    case WeightDType::Q4_0:
    case WeightDType::Q4_1:
    case WeightDType::Q4_K:
    case WeightDType::Q5_K:
    case WeightDType::Q6_K:
      // The enum's spelling is the format's.
      return QuantType::get(b.getContext(),
                            *symbolizeQuantFormat(stringifyWeightDType(type)));
    }
    llvm_unreachable("unknown WeightDType");
  }

  /// `moe.weight` for the tensor playing `role`; records a missing name.
  Value weight(WeightRole role, int64_t layer = -1, int64_t expert = -1) {
    std::string name = names(role, layer, expert);
    auto it = weights.find(name);
    SmallVector<int64_t, 2> shape = weightShape(spec, role);
    if (it == weights.end() ||
        ArrayRef<int64_t>(it->second.shape) != ArrayRef<int64_t>(shape)) {
      if (missing.empty())
        missing = name;
      // Keep building with a placeholder type; the error is reported after.
      return WeightOp::create(
          b, loc, RankedTensorType::get(shape, b.getF32Type()), name);
    }
    used.push_back(name);
    return WeightOp::create(
        b, loc, RankedTensorType::get(shape, elementType(it->second.dtype)),
        name);
  }

  Value layer(int64_t l, Value h, Value positions, Value cache,
              Value &cacheOut);
  ModelAttr modelAttr();
  /// The RoPE scaling of the spec (null for the default RoPE).
  RopeScalingAttr ropeScalingAttr();
  void emitManifest(ModuleOp module);

  OpBuilder b;
  Location loc = b.getUnknownLoc();
  const ModelSpec &spec;
  WeightNamer names;
  const llvm::StringMap<WeightSource> &weights;
  std::string missing;
  std::vector<std::string> used;
};

Value ModelIRBuilder::layer(int64_t l, Value h, Value positions, Value cache,
                            Value &cacheOut) {
  // Attention block: h += o_proj(attention(rope(q), rope(k), v)).
  Value a = RMSNormOp::create(b, loc, h, weight(WeightRole::AttnNorm, l),
                              b.getF64FloatAttr(spec.rmsNormEps));
  Value q = LinearOp::create(b, loc, a, weight(WeightRole::QProj, l));
  Value k = LinearOp::create(b, loc, a, weight(WeightRole::KProj, l));
  Value v = LinearOp::create(b, loc, a, weight(WeightRole::VProj, l));
  auto theta = b.getF64FloatAttr(spec.ropeTheta);
  auto headDim = b.getI64IntegerAttr(spec.headDim);
  UnitAttr interleaved = spec.ropeInterleaved ? b.getUnitAttr() : UnitAttr();
  RopeScalingAttr scaling = ropeScalingAttr();
  q = RoPEOp::create(b, loc, q, positions, headDim, theta, scaling,
                     interleaved);
  k = RoPEOp::create(b, loc, k, positions, headDim, theta, scaling,
                     interleaved);
  IntegerAttr window;
  if (std::optional<int64_t> w = spec.layerWindows[l])
    window = b.getI64IntegerAttr(*w);
  auto attention = AttentionOp::create(
      b, loc, q, k, v, cache, b.getI64IntegerAttr(spec.numHeads), window,
      /*scale=*/FloatAttr());
  cacheOut = attention.getCacheOut();
  Value o = LinearOp::create(b, loc, attention.getResult(),
                             weight(WeightRole::OProj, l));
  h = AddOp::create(b, loc, h, o);

  // MoE block: h += experts(router(gate(rmsnorm(h)))).
  Value x = RMSNormOp::create(b, loc, h, weight(WeightRole::FfnNorm, l),
                              b.getF64FloatAttr(spec.rmsNormEps));
  Value logits = LinearOp::create(b, loc, x, weight(WeightRole::RouterGate, l));
  auto router = RouterOp::create(b, loc, logits, spec.topK,
                                 ScoringFunc::Softmax, spec.normTopKProb);
  SmallVector<Value> gate, up, down;
  for (int64_t e = 0; e < spec.numExperts; ++e) {
    gate.push_back(weight(WeightRole::ExpertGate, l, e));
    up.push_back(weight(WeightRole::ExpertUp, l, e));
    down.push_back(weight(WeightRole::ExpertDown, l, e));
  }
  Value y = ExpertsOp::create(b, loc, x, router.getWeights(),
                              router.getIndices(), gate, up, down);
  return AddOp::create(b, loc, h, y);
}

RopeScalingAttr ModelIRBuilder::ropeScalingAttr() {
  // buildModel has validated the spec, in the ranges the verifier checks.
  const RopeScalingSpec &r = spec.ropeScaling;
  using Type = RopeScalingSpec::Type;
  if (r.type == Type::Default)
    return {};
  bool yarn = r.type == Type::Yarn, llama3 = r.type == Type::Llama3;
  RopeType type = r.type == Type::Linear    ? RopeType::Linear
                  : r.type == Type::Dynamic ? RopeType::Dynamic
                  : yarn                    ? RopeType::Yarn
                                            : RopeType::Llama3;
  auto f = [](double v) { return APFloat(v); };
  return RopeScalingAttr::get(
      b.getContext(), type, f(r.factor),
      r.type == Type::Dynamic ? spec.maxPositions : 0,
      yarn || llama3 ? r.originalMaxPositions : 0, f(yarn ? r.betaFast : 0),
      f(yarn ? r.betaSlow : 0), f(yarn ? r.attention : 0), yarn && r.truncate,
      f(llama3 ? r.lowFreqFactor : 0), f(llama3 ? r.highFreqFactor : 0));
}

ModelAttr ModelIRBuilder::modelAttr() {
  // buildModel has validated the spec: ModelAttr::verify checks no more.
  return ModelAttr::get(b.getContext(), spec.architecture, spec.vocabSize,
                        spec.hiddenSize, spec.intermediateSize, spec.numLayers,
                        spec.numHeads, spec.numKvHeads, spec.headDim,
                        spec.numExperts, spec.topK, spec.maxPositions);
}

void ModelIRBuilder::emitManifest(ModuleOp module) {
  // One source per weight (a tied lm_head uses the embedding twice), in
  // file order.
  llvm::sort(used);
  used.erase(std::unique(used.begin(), used.end()), used.end());
  std::vector<const WeightSource *> order;
  for (const std::string &name : used)
    order.push_back(&weights.find(name)->second);
  std::vector<size_t> perm(used.size());
  std::iota(perm.begin(), perm.end(), 0);
  llvm::stable_sort(perm, [&](size_t x, size_t y) {
    return std::tie(order[x]->file, order[x]->offset) <
           std::tie(order[y]->file, order[y]->offset);
  });
  b.setInsertionPointToStart(module.getBody());
  for (size_t i : perm) {
    const WeightSource &w = *order[i];
    auto type = RankedTensorType::get(w.shape, elementType(w.dtype));
    IntegerAttr rowStart, rowStep;
    TypeAttr rowsOf;
    if (w.rowStep > 0) {
      rowStart = b.getI64IntegerAttr(w.rowStart);
      rowStep = b.getI64IntegerAttr(w.rowStep);
      rowsOf = TypeAttr::get(
          RankedTensorType::get({w.rowsOf, w.shape[1]}, elementType(w.dtype)));
    }
    IntegerAttr scalesOffset;
    TypeAttr scales;
    if (w.scalesPerRow > 0) {
      int64_t rows = w.rowStep > 0 ? w.rowsOf : w.shape[0];
      scalesOffset = b.getI64IntegerAttr(int64_t(w.scalesOffset));
      scales = TypeAttr::get(RankedTensorType::get({rows, w.scalesPerRow},
                                                   elementType(w.scalesDType)));
    }
    WeightSourceOp::create(b, b.getUnknownLoc(), used[i], /*artifact=*/false,
                           w.file, w.offset, type, w.transposed, rowStart,
                           rowStep, rowsOf, scalesOffset, scales,
                           /*quantized=*/nullptr);
  }
}

llvm::Expected<OwningOpRef<ModuleOp>>
ModelIRBuilder::build(StringRef weightDir) {
  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  b.setInsertionPointToEnd(module->getBody());

  Type f32 = b.getF32Type();
  auto ids = RankedTensorType::get({ShapedType::kDynamic}, b.getI32Type());
  auto cacheType = KVCacheType::get(b.getContext(), spec.numKvHeads,
                                    ShapedType::kDynamic, spec.headDim, f32);
  auto logitsType =
      RankedTensorType::get({ShapedType::kDynamic, spec.vocabSize}, f32);
  SmallVector<Type> inputs = {ids, ids};
  SmallVector<Type> results = {logitsType};
  inputs.append(spec.numLayers, cacheType);
  results.append(spec.numLayers, cacheType);
  auto func = func::FuncOp::create(b, loc, "forward",
                                   b.getFunctionType(inputs, results));
  Block *entry = func.addEntryBlock();
  b.setInsertionPointToEnd(entry);

  Value tokens = entry->getArgument(0), positions = entry->getArgument(1);
  Value h = EmbeddingOp::create(b, loc, weight(WeightRole::Embedding), tokens);
  SmallVector<Value> returned = {Value()};
  for (int64_t l = 0; l < spec.numLayers; ++l) {
    loc = NameLoc::get(b.getStringAttr("layer " + std::to_string(l)));
    Value cacheOut;
    h = layer(l, h, positions, entry->getArgument(2 + l), cacheOut);
    returned.push_back(cacheOut);
  }
  loc = NameLoc::get(b.getStringAttr("head"));
  h = RMSNormOp::create(b, loc, h, weight(WeightRole::FinalNorm),
                        b.getF64FloatAttr(spec.rmsNormEps));
  returned[0] = LinearOp::create(b, loc, h, weight(WeightRole::LmHead));
  func::ReturnOp::create(b, loc, returned);

  if (!missing.empty())
    return llvm::createStringError("model builder: weight '" + missing +
                                   "' is missing or has the wrong shape");
  (*module)->setAttr(kModelAttrName, modelAttr());
  (*module)->setAttr("moe.weight_dir", b.getStringAttr(weightDir));
  emitManifest(*module);
  return module;
}

} // namespace

llvm::Expected<OwningOpRef<ModuleOp>> mlir::moe::buildModel(
    MLIRContext &context, const ModelSpec &spec, WeightNamer names,
    const llvm::StringMap<WeightSource> &weights, StringRef weightDir) {
  // The module's #moe.model is built from the spec: it must verify.
  if (llvm::Error e = spec.validate("model builder"))
    return std::move(e);
  context.loadDialect<MoEDialect, func::FuncDialect>();
  return ModelIRBuilder(context, spec, names, weights).build(weightDir);
}
