//===- Lowering.cpp - what the targets' lowerings share ---------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "compiler/common/Lowering.h"

#include "dialects/MoE/MoEInterfaces.h"

#include "mlir/Dialect/Arith/IR/Arith.h"

using namespace mlir;
using namespace mlir::moe;

MemRefType mlir::moe::bufferType(RankedTensorType t) {
  SmallVector<int64_t> shape(t.getShape());
  if (!shape.empty())
    shape[0] = ShapedType::kDynamic;
  return MemRefType::get(shape, t.getElementType());
}

LoweringTypeConverter::LoweringTypeConverter() {
  addConversion([](Type t) { return t; });
  // A weight (static, float or block-quantised) keeps its shape; an
  // activation (f32 or i32) is a batch of rows, whatever its static size
  // (expert offsets have one).
  addConversion([](RankedTensorType t) -> Type {
    if (t.hasStaticShape() && isa<FloatType, QuantType>(t.getElementType()))
      return MemRefType::get(t.getShape(), t.getElementType());
    return bufferType(t);
  });
}

int64_t mlir::moe::width(Value v) {
  auto type = cast<ShapedType>(v.getType());
  return type.getRank() > 1 ? type.getDimSize(1) : 1;
}

Type mlir::moe::elementType(Value v) {
  return cast<ShapedType>(v.getType()).getElementType();
}

FailureOr<Value> mlir::moe::resultBuffer(ConversionPatternRewriter &rewriter,
                                         LoweringState &state,
                                         OpResult result) {
  if (result == state.logitsTensor)
    return state.logitsBuffer;
  Operation *op = result.getOwner();
  std::optional<int64_t> offset = getPlannedOffset(result);
  if (!offset)
    return op->emitOpError("has no buffer in the memory plan: run "
                           "moe-plan-memory before lowering");
  return moert::ViewOp::create(
             rewriter, op->getLoc(),
             bufferType(cast<RankedTensorType>(result.getType())), *offset,
             getFloatsPerToken(result))
      .getResult();
}

FailureOr<SmallVector<Value>>
mlir::moe::resultBuffers(ConversionPatternRewriter &rewriter,
                         LoweringState &state, Operation *op) {
  SmallVector<Value> buffers;
  for (OpResult r : op->getResults()) {
    if (!isa<RankedTensorType>(r.getType()))
      continue;
    FailureOr<Value> b = resultBuffer(rewriter, state, r);
    if (failed(b))
      return failure();
    buffers.push_back(*b);
  }
  return buffers;
}

FailureOr<Value> mlir::moe::scratchBuffer(ConversionPatternRewriter &rewriter,
                                          Operation *op, int64_t floats) {
  auto placement = op->getAttrOfType<PlacementAttr>(kPlacementAttrName);
  if (!placement || !placement.getScratch())
    return op->emitOpError("needs ")
           << floats
           << " floats of scratch per token that the memory plan does not "
              "hold: run moe-plan-memory for this target before lowering";
  return moert::ViewOp::create(
             rewriter, op->getLoc(),
             MemRefType::get({ShapedType::kDynamic}, rewriter.getF32Type()),
             *placement.getScratch(), floats)
      .getResult();
}

Value mlir::moe::tokens(OpBuilder &b, Location loc, Type type, int64_t times) {
  return moert::TokensOp::create(b, loc, type, times);
}

Value mlir::moe::constantF32(OpBuilder &b, Location loc, double v) {
  return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v));
}

Value mlir::moe::constantF64(OpBuilder &b, Location loc, double v) {
  return arith::ConstantOp::create(b, loc, b.getF64FloatAttr(v));
}

Value mlir::moe::constantI64(OpBuilder &b, Location loc, int64_t v) {
  return arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(v));
}

Value mlir::moe::nullBuffer(OpBuilder &b, Location loc, Type element) {
  return moert::NullOp::create(
      b, loc, MemRefType::get({ShapedType::kDynamic}, element));
}

namespace {

/// Fails with a message on `user` unless `indices` are the expert indices of
/// a router over at most `experts` experts choosing `k` each: what the
/// kernels index weight tables and offsets with.
LogicalResult checkExpertIndices(Operation *user, Value indices,
                                 int64_t experts, int64_t k) {
  int64_t routed = 0, chosen = 0;
  // A capacity keeps a router's indices or marks them -1 (dropped), which
  // every kernel skips.
  if (auto c = indices.getDefiningOp<ExpertCapacityOp>();
      c && indices == c.getKeptIndices()) {
    // Its kernel keeps a counter per expert: the bank's experts, no more.
    if (int64_t(c.getNumExperts()) != experts)
      return user->emitOpError("takes the indices of a moe.expert_capacity "
                               "for ")
             << c.getNumExperts() << " experts, but has " << experts;
    return checkExpertIndices(user, c.getIndices(), experts, k);
  }
  if (auto r = indices.getDefiningOp<RouterOp>();
      r && indices == r.getIndices())
    routed = r.getNumExperts(), chosen = r.getK();
  else if (auto f = indices.getDefiningOp<FusedRouterOp>();
           f && indices == f.getIndices())
    routed = f.getNumExperts(), chosen = f.getK();
  else
    return user->emitOpError("the targets need expert indices computed by "
                             "a moe.router or moe.fused_router (through at "
                             "most a moe.expert_capacity)");
  if (routed > experts || chosen != k)
    return user->emitOpError("routes top ")
           << k << " of " << experts << " experts, but its indices choose "
           << chosen << " of " << routed;
  return success();
}

/// Fails unless `perm` (and `offsets`, when given) are the results of one
/// moe.expert_permute over `experts` experts (any, when 0) with `k` choices.
LogicalResult checkPermutation(Operation *user, Value perm, Value offsets,
                               int64_t experts, int64_t k) {
  auto permute = perm.getDefiningOp<ExpertPermuteOp>();
  if (!permute || perm != permute.getPerm() ||
      (offsets && offsets != permute.getOffsets()))
    return user->emitOpError("the targets need the permutation")
           << (offsets ? " and offsets" : "") << " of one moe.expert_permute";
  int64_t permuted = permute.getIndices().getType().getDimSize(1);
  if ((experts && int64_t(permute.getNumExperts()) != experts) || permuted != k)
    return user->emitOpError("takes top ")
           << k << (experts ? " of " + std::to_string(experts) : "")
           << " experts, but its permutation is of top " << permuted << " of "
           << permute.getNumExperts();
  return success();
}

/// Checks what the kernels rely on beyond the op verifiers, so that
/// whatever lowers compiles into a memory-safe binary: forward's signature,
/// logits of vocab_size, embeddings of the token ids, expert indices and
/// permutations from the ops that make them in range, the caches planned
/// and each read by one attention, and arena offsets that fit.
LogicalResult verifyContract(ModuleOp module, func::FuncOp func,
                             int64_t maxPositions) {
  // The verifier has bounded every field of #moe.model to [1, ...].
  ModelAttr model = getModel(module);
  int64_t vocab = model.getVocabSize(), hidden = model.getHiddenSize();
  FunctionType type = func.getFunctionType();
  auto isIds = [](Type t) {
    auto r = dyn_cast<RankedTensorType>(t);
    return r && r.getRank() == 1 && r.isDynamicDim(0) &&
           r.getElementType().isInteger(32);
  };
  auto logits = type.getNumResults()
                    ? dyn_cast<RankedTensorType>(type.getResult(0))
                    : RankedTensorType();
  int64_t layers = int64_t(type.getNumInputs()) - 2;
  if (int64_t n = model.getNumLayers(); n != layers)
    return func.emitOpError("has ")
           << layers << " cache arguments, but moe.model's num_layers is " << n;
  if (layers < 1 || type.getNumResults() != size_t(layers) + 1 ||
      !isIds(type.getInput(0)) || !isIds(type.getInput(1)) || !logits ||
      logits.getRank() != 2 || !logits.isDynamicDim(0) ||
      !logits.getElementType().isF32() ||
      llvm::any_of(
          type.getInputs().drop_front(2),
          [](Type t) { return !isa<KVCacheType>(t); }) ||
      llvm::any_of(
          type.getResults().drop_front(1),
          [](Type t) { return !isa<KVCacheType>(t); }))
    return func.emitOpError("@forward must take (tensor<?xi32> tokens, "
                            "tensor<?xi32> positions, !moe.kv_cache...) and "
                            "return (tensor<?xVOCABxf32> logits, "
                            "!moe.kv_cache...)");
  if (logits.getDimSize(1) != vocab)
    return func.emitOpError("returns logits of width ")
           << logits.getDimSize(1) << ", but moe.model's vocab_size is "
           << vocab;
  Block &entry = func.getBody().front();
  auto ret = cast<func::ReturnOp>(entry.getTerminator());
  Value returned = ret.getOperand(0);
  if (!returned.getDefiningOp() || isa<WeightOp>(returned.getDefiningOp()))
    return func.emitOpError("the logits must be computed by an op of "
                            "@forward");
  // The caller's logits buffer holds one row per token: a value of the
  // permuted domain (k rows a token) would overflow it.
  if (getRowsPerToken(returned) != 1)
    return func.emitOpError("returns logits of ")
           << getRowsPerToken(returned)
           << " rows per token; the caller's buffer holds one";
  SmallVector<AttentionOp> readers(layers);
  Value tokens = func.getArgument(0);
  WalkResult r = func.walk([&](Operation *op) -> WalkResult {
    if (op != func && !isa<func::ReturnOp>(op) &&
        !isa<MoEDialect>(op->getDialect()))
      return op->emitOpError("cannot be lowered: @forward holds moe ops "
                             "only");
    for (Value result : op->getResults()) {
      if (!isa<RankedTensorType>(result.getType()) || isa<WeightOp>(op))
        continue;
      int64_t floats = getFloatsPerToken(result);
      if (floats < 0 || floats > kMaxArenaFloatsPerToken)
        return op->emitOpError("a result of ")
               << floats << " floats per token does not fit the arena";
    }
    // Weights are read from the files, activations from the arena: a
    // weight in an activation's place (or the reverse) would be read with
    // the wrong size.
    for (OpOperand &o : op->getOpOperands()) {
      bool fromWeight = o.get().getDefiningOp<WeightOp>() != nullptr;
      auto cost = dyn_cast<WeightCostOpInterface>(op);
      if (isa<WeightOp, func::ReturnOp>(op) || op == func ||
          fromWeight == (cost && cost.isWeightOperand(o)))
        continue;
      return op->emitOpError("operand ")
             << o.getOperandNumber()
             << (fromWeight ? " is a moe.weight where the targets need an "
                              "activation"
                            : " is an activation where the targets need a "
                              "moe.weight");
    }
    for (Value operand : op->getOperands())
      if (isa<RankedTensorType>(operand.getType()) &&
          !isa<func::ReturnOp>(op) && isa<BlockArgument>(operand) &&
          operand != func.getArgument(0) && operand != func.getArgument(1))
        return op->emitOpError("uses an argument of @forward that is not the "
                               "tokens or the positions");
    if (auto a = dyn_cast<AttentionOp>(op)) {
      auto arg = dyn_cast<BlockArgument>(a.getCache());
      int64_t layer = arg ? int64_t(arg.getArgNumber()) - 2 : -1;
      if (layer < 0 || layer >= layers || readers[layer])
        return a.emitOpError("the targets need each attention to read its "
                             "own cache argument of @forward");
      readers[layer] = a;
      auto cache = cast<KVCacheType>(a.getCache().getType());
      if (!cache.getElementType().isF32())
        return a.emitOpError("the targets keep KV caches in f32, not ")
               << cache.getElementType();
      if (!cache.hasStaticCapacity())
        return a.emitOpError("reads a cache of unplanned capacity: run "
                             "moe-plan-kv-cache before lowering");
      int64_t window = a.getSlidingWindow().value_or(0);
      int64_t capacity = cache.getCapacity();
      if (window && capacity < std::min(window, maxPositions))
        return a.emitOpError("cache capacity ")
               << capacity << " is smaller than the window it must hold";
      if (!window && capacity < maxPositions)
        return a.emitOpError("cache capacity ")
               << capacity << " cannot hold " << maxPositions << " positions";
    } else if (auto e = dyn_cast<EmbeddingOp>(op)) {
      // The runtime checks token ids against vocab_size only.
      if (e.getIds() != tokens)
        return op->emitOpError("the targets look up the token ids of "
                               "@forward's first argument only");
      if (e.getTable().getType().getDimSize(0) != vocab)
        return op->emitOpError("has ")
               << e.getTable().getType().getDimSize(0)
               << " table rows, but moe.model's vocab_size is " << vocab;
      if (e.getTable().getType().getDimSize(1) != hidden)
        return op->emitOpError("has ")
               << e.getTable().getType().getDimSize(1)
               << " table columns, but moe.model's hidden_size is " << hidden;
    } else if (auto e = dyn_cast<ExpertsOp>(op)) {
      return checkExpertIndices(op, e.getIndices(), e.getNumExperts(),
                                width(e.getWeights()));
    } else if (auto p = dyn_cast<ExpertPermuteOp>(op)) {
      return checkExpertIndices(op, p.getIndices(), p.getNumExperts(),
                                width(p.getIndices()));
    } else if (auto g = dyn_cast<GroupedMatmulOp>(op)) {
      if (g.getParts() > 2)
        return op->emitOpError("the targets handle at most 2 parts, not ")
               << g.getParts();
      if (failed(checkPermutation(op, g.getPerm(), g.getOffsets(),
                                  g.getNumExperts(), g.getK())))
        return failure();
      // Without gather the input is the permuted batch: k rows a token.
      int64_t rows = g.getGather() ? 1 : int64_t(g.getK());
      if (getRowsPerToken(g.getInput()) != rows)
        return op->emitOpError("needs an input of ")
               << rows << " row(s) per token, got one of "
               << getRowsPerToken(g.getInput());
    } else if (auto c = dyn_cast<ExpertCombineOp>(op)) {
      int64_t k = width(c.getWeights());
      if (failed(checkPermutation(op, c.getPerm(), Value(), 0, k)))
        return failure();
      if (getRowsPerToken(c.getInput()) != k)
        return op->emitOpError("needs the permuted batch (")
               << k << " rows per token) as input, got "
               << getRowsPerToken(c.getInput()) << " row(s) per token";
    }
    return WalkResult::advance();
  });
  if (r.wasInterrupted())
    return failure();
  for (int64_t l = 0; l < layers; ++l) {
    if (!readers[l])
      return func.emitOpError("cache argument ") << (2 + l) << " is never used";
    if (ret.getOperand(1 + l) != readers[l].getCacheOut())
      return func.emitOpError("result ")
             << (1 + l) << " must be the cache of layer " << l;
  }
  return success();
}

/// Checks that the memory plan still fits the IR, before any op is
/// converted: every tensor result but the logits has its buffer, every op
/// has the scratch the target's kernels need, each buffer lies inside the
/// planned arena, and no two buffers live at the same time overlap. A pass
/// run between moe-plan-memory and the lowering may have added, moved or
/// merged ops; their old offsets would then alias.
LogicalResult verifyPlan(func::FuncOp func, MemoryPlanAttr plan,
                         moert::TargetBufferAttrInterface target) {
  Block &entry = func.getBody().front();
  Value logits = entry.getTerminator()->getOperand(0);
  llvm::DenseMap<Operation *, int64_t> position;
  for (auto [i, op] : llvm::enumerate(entry))
    position[&op] = int64_t(i);
  struct Buffer {
    int64_t offset, size, first, last;
    Operation *op;
  };
  std::vector<Buffer> buffers;
  auto stale = [&](Operation *op, const Twine &why) {
    return op->emitOpError(why) << ": run moe-plan-memory for this target "
                                   "after the last pass that changes ops";
  };
  for (Operation &op : entry) {
    if (isa<WeightOp, func::ReturnOp>(op))
      continue;
    auto placement = op.getAttrOfType<PlacementAttr>(kPlacementAttrName);
    int64_t at = position[&op];
    int64_t tensors = getNumTensorResults(&op);
    for (OpResult r : op.getResults()) {
      if (!isa<RankedTensorType>(r.getType()) || (r == logits && tensors == 1))
        continue;
      std::optional<int64_t> offset = getPlannedOffset(r);
      if (!offset)
        return stale(&op, "has no buffer in the memory plan");
      int64_t last = at;
      for (Operation *user : r.getUsers())
        last = std::max(last, position.lookup(user));
      buffers.push_back({*offset, getFloatsPerToken(r), at, last, &op});
    }
    if (int64_t needed = target.getScratchFloatsPerToken(&op)) {
      if (!placement || !placement.getScratch())
        return stale(&op, "needs " + Twine(needed) +
                              " floats of scratch per token that the memory "
                              "plan does not hold");
      buffers.push_back({*placement.getScratch(), needed, at, at, &op});
    }
  }
  for (const Buffer &b : buffers)
    if (b.offset + b.size > plan.getFloatsPerToken())
      return stale(b.op, "has a buffer past the planned arena of " +
                             Twine(plan.getFloatsPerToken()) +
                             " floats per token");
  // Pairs live at once must not share floats: by offset, each buffer
  // against the ones that start before it ends.
  std::vector<size_t> order(buffers.size());
  for (size_t i = 0; i < order.size(); ++i)
    order[i] = i;
  llvm::sort(order, [&](size_t a, size_t b) {
    return buffers[a].offset < buffers[b].offset;
  });
  for (size_t x = 0; x < order.size(); ++x) {
    const Buffer &a = buffers[order[x]];
    for (size_t y = x + 1; y < order.size(); ++y) {
      const Buffer &b = buffers[order[y]];
      if (b.offset >= a.offset + a.size)
        break;
      if (a.first <= b.last && b.first <= a.last)
        return stale(b.op, "has a buffer that overlaps one of another op "
                           "live at the same time")
                   .attachNote(a.op->getLoc())
               << "the other op";
    }
  }
  return success();
}

/// func.return (logits, caches...) -> func.return: the logits were written
/// to their argument, the caches in place.
struct ReturnLowering : public OpConversionPattern<func::ReturnOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(func::ReturnOp op, OpAdaptor,
                  ConversionPatternRewriter &rewriter) const override {
    rewriter.replaceOpWithNewOp<func::ReturnOp>(op);
    return success();
  }
};

/// @forward's signature in destination-passing style: (tokens, positions,
/// caches...) -> (logits, caches...) becomes (tokens, positions, logits,
/// caches...) -> (), with argument attributes saying which is which, and
/// the window of each layer's cache. Runs first (the function is converted
/// before its body), so the body's patterns find the new arguments.
struct ForwardLowering : public OpConversionPattern<func::FuncOp> {
  ForwardLowering(const TypeConverter &converter, MLIRContext *context,
                  LoweringState &state, int64_t maxPositions)
      : OpConversionPattern(converter, context), state(state),
        maxPositions(maxPositions) {}

  LogicalResult
  matchAndRewrite(func::FuncOp func, OpAdaptor,
                  ConversionPatternRewriter &rewriter) const override {
    using moert::MoERTDialect;
    Block &entry = func.getBody().front();
    unsigned layers = entry.getNumArguments() - 2;
    Builder b(getContext());
    auto role = [&](StringRef name) {
      return b.getDictionaryAttr(
          b.getNamedAttr(MoERTDialect::kArgAttrName, b.getStringAttr(name)));
    };
    TypeConverter::SignatureConversion signature(entry.getNumArguments());
    SmallVector<Attribute> argAttrs;
    for (unsigned i = 0; i < 2; ++i) {
      signature.addInputs(
          i, getTypeConverter()->convertType(entry.getArgument(i).getType()));
      argAttrs.push_back(role(i == 0 ? "tokens" : "positions"));
    }
    signature.addInputs(
        bufferType(cast<RankedTensorType>(state.logitsTensor.getType())));
    argAttrs.push_back(role("logits"));
    for (unsigned l = 0; l < layers; ++l) {
      BlockArgument cache = entry.getArgument(2 + l);
      signature.addInputs(2 + l, cache.getType());
      // The contract checked that one moe.attention reads each cache.
      auto reader = cast<AttentionOp>(*cache.getUsers().begin());
      argAttrs.push_back(b.getDictionaryAttr(
          {b.getNamedAttr(MoERTDialect::kKvLayerAttrName,
                          b.getI64IntegerAttr(l)),
           b.getNamedAttr(
               MoERTDialect::kKvWindowAttrName,
               b.getI64IntegerAttr(reader.getSlidingWindow().value_or(0)))}));
    }
    Block *converted = rewriter.applySignatureConversion(&entry, signature,
                                                         getTypeConverter());
    state.positions = converted->getArgument(1);
    state.logitsBuffer = converted->getArgument(2);
    rewriter.modifyOpInPlace(func, [&] {
      func.setFunctionType(
          FunctionType::get(getContext(), signature.getConvertedTypes(), {}));
      func.setAllArgAttrs(argAttrs);
      func.setAllResultAttrs(ArrayRef<Attribute>{});
      func->setAttr("moert.max_positions", b.getI64IntegerAttr(maxPositions));
    });
    return success();
  }

  LoweringState &state;
  int64_t maxPositions;
};

/// moe.weight -> moert.weight.
struct WeightLowering : public OpConversionPattern<WeightOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(WeightOp op, OpAdaptor,
                  ConversionPatternRewriter &rewriter) const override {
    RankedTensorType t = op.getType();
    rewriter.replaceOpWithNewOp<moert::WeightOp>(
        op, MemRefType::get(t.getShape(), t.getElementType()), op.getName());
    return success();
  }
};

} // namespace

LogicalResult mlir::moe::lowerModule(
    ModuleOp module, Attribute target,
    function_ref<void(RewritePatternSet &, const TypeConverter &,
                      LoweringState &)>
        populate) {
  MLIRContext *context = module.getContext();
  if (module->hasAttr("moert.target"))
    return module.emitError("the module is lowered already (moert.target)");
  auto func = module.lookupSymbol<func::FuncOp>("forward");
  if (!func || func.isExternal())
    return module.emitError("no func.func @forward to lower");
  if (!getModel(module))
    return module.emitError("lowering needs a model imported by "
                            "moe-translate (moe.model with vocab_size)");
  // The plans this lowering relies on, made for this target.
  auto memory = func->getAttrOfType<MemoryPlanAttr>(kMemoryPlanAttrName);
  if (!memory)
    return func.emitOpError("has no memory plan: run moe-plan-memory before "
                            "lowering");
  if (memory.getTarget() != target)
    return func.emitOpError("has a memory plan for ")
           << memory.getTarget() << ", not " << target
           << ": run moe-plan-memory{target=...} for this target";
  auto kv = func->getAttrOfType<KVCachePlanAttr>(kKVCachePlanAttrName);
  if (!kv)
    return func.emitOpError("has no KV-cache plan: run moe-plan-kv-cache "
                            "before lowering");
  int64_t maxSeq = kv.getMaxSeq();
  auto buffers = dyn_cast<moert::TargetBufferAttrInterface>(target);
  if (!buffers)
    return module.emitError("the target ")
           << target << " registered no buffer model in this tool";
  if (failed(verifyContract(module, func, maxSeq)) ||
      failed(verifyPlan(func, memory, buffers)))
    return failure();

  LoweringState state;
  state.module = module;
  Block &entry = func.getBody().front();
  state.logitsTensor =
      cast<func::ReturnOp>(entry.getTerminator()).getOperand(0);
  LoweringTypeConverter converter;
  RewritePatternSet patterns(context);
  patterns.add<ReturnLowering, WeightLowering>(converter, context);
  patterns.add<ForwardLowering>(converter, context, state, maxSeq);
  populate(patterns, converter, state);
  ConversionTarget legal(*context);
  legal.addLegalDialect<moert::MoERTDialect, arith::ArithDialect>();
  // @forward is lowered once its signature is (the pattern below).
  legal.addDynamicallyLegalOp<func::FuncOp>(
      [](func::FuncOp f) { return f->hasAttr("moert.max_positions"); });
  legal.addDynamicallyLegalOp<func::ReturnOp>(
      [](func::ReturnOp r) { return r.getNumOperands() == 0; });
  if (failed(applyFullConversion(func, legal, std::move(patterns))))
    return failure();
  module->setAttr("moert.target", target);
  return success();
}
