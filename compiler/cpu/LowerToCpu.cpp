//===- LowerToCpu.cpp - moe to the CPU target's launch plan -----*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// One conversion pattern per moe op: each becomes a moert.call of a kernel
// template in runtime/include/moert/kernels.h, over views of the arena.
//
//===----------------------------------------------------------------------===//

#include "compiler/Passes.h"
#include "compiler/common/Lowering.h"
#include "passes/Passes.h"

namespace mlir::moe {
#define GEN_PASS_DEF_LOWERTOCPU
#include "compiler/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// Scratch floats per batch token the CPU kernels stage rows in.
int64_t cpuScratch(Operation *op) {
  if (auto experts = dyn_cast<ExpertsOp>(op)) {
    auto gate =
        cast<RankedTensorType>(experts.getGateWeights().front().getType());
    return 2 * (gate.getDimSize(0) + gate.getDimSize(1));
  }
  if (auto gemm = dyn_cast<GroupedMatmulOp>(op)) {
    // The gathered rows, then (silu_mul) the up part's rows.
    int64_t gathered =
        gemm.getGather() ? gemm.getInput().getType().getDimSize(1) : 0;
    int64_t up =
        gemm.getSiluMul() ? gemm.getResult().getType().getDimSize(1) : 0;
    return gemm.getK() * (gathered + up);
  }
  return 0;
}

struct CpuBufferModel : public moert::TargetBufferAttrInterface::ExternalModel<
                            CpuBufferModel, moert::CpuTargetAttr> {
  int64_t getScratchFloatsPerToken(Attribute, Operation *op) const {
    return cpuScratch(op);
  }
};

void call(ConversionPatternRewriter &rw, Location loc, StringRef callee,
          const TemplateArgs &targs, bool threaded, ValueRange args,
          bool collective = false) {
  moert::CallOp::create(rw, loc, rw.getStringAttr(callee),
                        rw.getArrayAttr(targs.args),
                        threaded ? rw.getUnitAttr() : UnitAttr(),
                        collective ? rw.getUnitAttr() : UnitAttr(), args);
}

/// A CPU pattern: the kernels take the token count `n` as an index.
template <typename OpTy> struct CpuPattern : public TargetPattern<OpTy> {
  using TargetPattern<OpTy>::TargetPattern;
  using OpAdaptor = typename TargetPattern<OpTy>::OpAdaptor;

  LogicalResult lower(OpTy op, OpAdaptor a, ConversionPatternRewriter &rw,
                      ArrayRef<Value> outs) const final {
    return lowerCpu(op, a, rw, outs,
                    tokens(rw, op.getLoc(), rw.getIndexType()));
  }
  virtual LogicalResult lowerCpu(OpTy op, OpAdaptor a,
                                 ConversionPatternRewriter &rw,
                                 ArrayRef<Value> outs, Value n) const = 0;
};

#define CPU_PATTERN(Name, OpTy)                                                \
  struct Name : public CpuPattern<OpTy> {                                      \
    using CpuPattern::CpuPattern;                                              \
    LogicalResult lowerCpu(OpTy op, OpAdaptor a,                               \
                           ConversionPatternRewriter &rw,                      \
                           ArrayRef<Value> outs, Value n) const override;      \
  };                                                                           \
  LogicalResult Name::lowerCpu(OpTy op, OpAdaptor a,                           \
                               ConversionPatternRewriter &rw,                  \
                               ArrayRef<Value> outs, Value n) const

CPU_PATTERN(EmbeddingToCpu, EmbeddingOp) {
  call(rw, op.getLoc(), "moert::embedding",
       TemplateArgs(rw).type(op.getTable()).i(width(op.getResult())), false,
       {a.getTable(), a.getIds(), n, outs[0]});
  return success();
}

CPU_PATTERN(RMSNormToCpu, RMSNormOp) {
  Value eps = constantF32(rw, op.getLoc(), op.getEpsilon().convertToDouble());
  call(rw, op.getLoc(), "moert::rmsNorm",
       TemplateArgs(rw).type(op.getWeight()).i(width(op.getResult())), false,
       {a.getInput(), a.getWeight(), eps, n, outs[0]});
  return success();
}

/// result = input @ weightᵀ (+ residual).
void linear(ConversionPatternRewriter &rw, Location loc, Value input,
            Value weight, Value n, Value out, Value residual = {}) {
  ArrayRef<int64_t> shape = cast<MemRefType>(weight.getType()).getShape();
  SmallVector<Value> args = {input, weight, n, out};
  if (residual) {
    args.push_back(constantI64(rw, loc, shape[0]));
    args.push_back(residual);
  }
  call(rw, loc, "moert::linear",
       TemplateArgs(rw).type(weight).i(shape[0]).i(shape[1]), true, args);
}

CPU_PATTERN(LinearToCpu, LinearOp) {
  // The language-model head: rows [moert.logits_from, n) only, so that a
  // prefill whose caller reads the last token's logits does not compute the
  // others (at a 32k vocabulary, a sixth of a prefill's FLOPs on mini).
  // Only when nothing but the return reads them: another reader would see
  // the rows left out.
  if (!a.getResidual() && outs[0] == state.logitsBuffer &&
      op.getResult().hasOneUse()) {
    ArrayRef<int64_t> shape =
        cast<MemRefType>(a.getWeight().getType()).getShape();
    Value from = moert::LogitsFromOp::create(rw, op.getLoc(), rw.getI64Type());
    call(rw, op.getLoc(), "moert::lmHead",
         TemplateArgs(rw).type(a.getWeight()).i(shape[0]).i(shape[1]), true,
         {a.getInput(), a.getWeight(), n, outs[0], from});
    return success();
  }
  linear(rw, op.getLoc(), a.getInput(), a.getWeight(), n, outs[0],
         a.getResidual());
  return success();
}

/// RoPE on `in` into `out`; the interleaved pairing is a third template
/// argument (absent for rotate-half, the kernel's default, unless a scaled
/// RoPE type follows it with its parameters: appendRopeScaling).
void rope(ConversionPatternRewriter &rw, Location loc, Value in, Value pos,
          double theta, int64_t headDim, bool interleaved,
          RopeScalingAttr scaling, Value n, Value out) {
  TemplateArgs targs = TemplateArgs(rw).i(width(out)).i(headDim);
  if (interleaved || scaling)
    targs.flag(interleaved);
  SmallVector<Value> args = {in, pos, constantF64(rw, loc, theta), n, out};
  appendRopeScaling(rw, loc, scaling, headDim, theta, targs, args);
  call(rw, loc, "moert::rope", targs, false, args);
}

/// A table of weight pointers, typed by the first entry's element type when
/// `typed`.
Value table(ConversionPatternRewriter &rw, Location loc, ValueRange weights,
            bool typed) {
  Type element = typed ? elementType(weights.front()) : rw.getNoneType();
  return moert::TableOp::create(rw, loc,
                                moert::TableType::get(rw.getContext(),
                                                      int64_t(weights.size()),
                                                      element, false),
                                weights);
}

CPU_PATTERN(FusedLinearToCpu, FusedLinearOp) {
  // Two or three weights: one moert::fusedLinear, whose decode step runs
  // every weight's rows in one parallel region (a weight table, an output
  // table; a missing third weight has N = 0). More: one linear per weight.
  // Then RoPE in place (each pair is read before it is written).
  Location loc = op.getLoc();
  ValueRange weights = a.getWeights();
  if (weights.size() == 2 || weights.size() == 3) {
    TemplateArgs targs(rw);
    SmallVector<int64_t> rows;
    for (size_t i = 0; i < 3; ++i) {
      targs.type(i < weights.size() ? elementType(weights[i])
                                    : Type(rw.getF32Type()));
      rows.push_back(i < weights.size()
                         ? cast<MemRefType>(weights[i].getType()).getDimSize(0)
                         : 0);
    }
    targs.i(width(a.getInput())).i(rows[0]).i(rows[1]).i(rows[2]);
    Value dests = moert::TableOp::create(
        rw, loc,
        moert::TableType::get(rw.getContext(), int64_t(outs.size()),
                              rw.getF32Type(), true),
        outs);
    call(rw, loc, "moert::fusedLinear", targs, true,
         {a.getInput(), table(rw, loc, weights, false), n, dests});
  } else {
    for (auto [i, w] : llvm::enumerate(weights))
      linear(rw, loc, a.getInput(), w, n, outs[i]);
  }
  for (size_t i = 0; i < outs.size(); ++i)
    if (op.hasRope(int64_t(i)))
      rope(rw, loc, outs[i], a.getPositions(),
           op.getThetaAttr().getValueAsDouble(), *op.getHeadDim(),
           op.getRopeInterleaved(), op.getRopeScalingAttr(), n, outs[i]);
  return success();
}

CPU_PATTERN(RoPEToCpu, RoPEOp) {
  rope(rw, op.getLoc(), a.getInput(), a.getPositions(),
       op.getTheta().convertToDouble(), op.getHeadDim(), op.getInterleaved(),
       op.getScalingAttr(), n, outs[0]);
  return success();
}

CPU_PATTERN(AttentionToCpu, AttentionOp) {
  auto cache = cast<KVCacheType>(op.getCache().getType());
  call(rw, op.getLoc(), "moert::attention",
       TemplateArgs(rw)
           .i(op.getNumHeads())
           .i(cache.getNumKvHeads())
           .i(cache.getHeadDim())
           .i(cache.getCapacity())
           .i(op.getSlidingWindow().value_or(0)),
       true,
       {a.getQuery(), a.getKey(), a.getValue(), a.getCache(),
        this->state.positions,
        constantF32(rw, op.getLoc(), op.getEffectiveScale()), n, outs[0]});
  return success();
}

CPU_PATTERN(AddToCpu, AddOp) {
  call(rw, op.getLoc(), "moert::add", TemplateArgs(rw).i(width(op.getResult())),
       false, {a.getLhs(), a.getRhs(), n, outs[0]});
  return success();
}

CPU_PATTERN(RouterToCpu, RouterOp) {
  call(rw, op.getLoc(), "moert::router",
       TemplateArgs(rw)
           .i(op.getNumExperts())
           .i(op.getK())
           .flag(op.getScoring() == ScoringFunc::Softmax)
           .flag(op.getRenormalize()),
       false, {a.getLogits(), n, outs[0], outs[1]});
  return success();
}

CPU_PATTERN(FusedRouterToCpu, FusedRouterOp) {
  call(rw, op.getLoc(), "moert::fusedRouter",
       TemplateArgs(rw)
           .type(op.getGate())
           .i(width(op.getInput()))
           .i(op.getNumExperts())
           .i(op.getK())
           .flag(op.getScoring() == ScoringFunc::Softmax)
           .flag(op.getRenormalize()),
       false, {a.getInput(), a.getGate(), n, outs[0], outs[1]});
  return success();
}

CPU_PATTERN(ExpertCapacityToCpu, ExpertCapacityOp) {
  Location loc = op.getLoc();
  Value stats = moert::RouteStatsOp::create(
      rw, loc, MemRefType::get({ShapedType::kDynamic}, rw.getI64Type()));
  call(rw, loc, "moert::expertCapacity",
       TemplateArgs(rw).i(op.getNumExperts()).i(width(op.getIndices())), false,
       {a.getWeights(), a.getIndices(),
        constantF64(rw, loc, op.getFactor().convertToDouble()), n, stats,
        outs[0], outs[1]});
  return success();
}

CPU_PATTERN(ExpertsToCpu, ExpertsOp) {
  FailureOr<Value> scratch = scratchBuffer(rw, op, cpuScratch(op));
  if (failed(scratch))
    return failure();
  ArrayRef<int64_t> gate =
      cast<RankedTensorType>(op.getGateWeights().front().getType()).getShape();
  Location loc = op.getLoc();
  Value g = table(rw, loc, a.getGateWeights(), true);
  Value u = table(rw, loc, a.getUpWeights(), true);
  Value d = table(rw, loc, a.getDownWeights(), true);
  call(rw, loc, "moert::experts",
       TemplateArgs(rw)
           .type(op.getGateWeights().front())
           .type(op.getUpWeights().front())
           .type(op.getDownWeights().front())
           .i(width(op.getResult()))
           .i(gate[0])
           .i(op.getNumExperts())
           .i(width(op.getWeights())),
       true,
       {a.getInput(), a.getWeights(), a.getIndices(), g, u, d, n, *scratch,
        outs[0]});
  return success();
}

CPU_PATTERN(ExpertPermuteToCpu, ExpertPermuteOp) {
  call(rw, op.getLoc(), "moert::expertPermute",
       TemplateArgs(rw).i(op.getNumExperts()).i(width(op.getIndices())), false,
       {a.getIndices(), n, outs[0], outs[1]});
  return success();
}

CPU_PATTERN(GroupedMatmulToCpu, GroupedMatmulOp) {
  // At most 2 parts (the lowering contract).
  int64_t parts = op.getParts();
  Location loc = op.getLoc();
  auto part = [&](int64_t i) {
    return cast<RankedTensorType>(op.getExpertWeights()[i].getType());
  };
  // Scratch: the gathered rows, then the up rows of a silu_mul GEMM.
  int64_t gathered = op.getGather() ? op.getK() * width(op.getInput()) : 0;
  int64_t up = op.getSiluMul() ? op.getK() * width(op.getResult()) : 0;
  Value gatherBuf = nullBuffer(rw, loc, rw.getF32Type());
  Value upBuf;
  // What cpuScratch reserved for the op, in two parts.
  assert(gathered + up == cpuScratch(op) && "the CPU scratch of the op");
  if (gathered + up) {
    FailureOr<Value> scratch = scratchBuffer(rw, op, cpuScratch(op));
    if (failed(scratch))
      return failure();
    if (gathered)
      gatherBuf = *scratch;
    if (up)
      upBuf = gathered
                  ? moert::ViewOp::create(
                        rw, loc, cast<MemRefType>(scratch->getType()),
                        scratch->getDefiningOp<moert::ViewOp>().getOffset() +
                            gathered,
                        up)
                        .getResult()
                  : *scratch;
  }
  SmallVector<Value> args = {
      a.getInput(),   a.getPerm(),
      a.getOffsets(), table(rw, loc, a.getExpertWeights(), false),
      gatherBuf,      outs[0]};
  if (upBuf)
    args.push_back(upBuf);
  call(rw, loc, "moert::groupedMatmul",
       TemplateArgs(rw)
           .type(part(0).getElementType())
           .type(part(parts - 1).getElementType())
           .i(part(0).getDimSize(0))
           .i(parts == 2 ? part(1).getDimSize(0) : 0)
           .i(width(op.getInput()))
           .i(op.getNumExperts())
           .i(op.getK())
           .flag(op.getGather())
           .flag(op.getSiluMul()),
       true, args);
  return success();
}

CPU_PATTERN(SiluMulToCpu, SiluMulOp) {
  int64_t rows = getFloatsPerToken(op.getResult()) / width(op.getResult());
  call(rw, op.getLoc(), "moert::siluMul",
       TemplateArgs(rw).i(width(op.getResult())), false,
       {a.getInput(), tokens(rw, op.getLoc(), rw.getIndexType(), rows),
        outs[0]});
  return success();
}

CPU_PATTERN(ExpertCombineToCpu, ExpertCombineOp) {
  SmallVector<Value> args = {a.getInput(), a.getPerm(), a.getWeights(), n,
                             outs[0]};
  if (a.getResidual())
    args.push_back(a.getResidual());
  call(rw, op.getLoc(), "moert::expertCombine",
       TemplateArgs(rw).i(width(op.getResult())).i(width(op.getWeights())),
       false, args);
  return success();
}

/// The EP kernels (moert/ep.h) split the experts as moe-shard-experts does;
/// (E, R) of an op's first_expert, or failure for another split.
FailureOr<std::pair<int64_t, int64_t>> epSplit(Operation *op,
                                               ArrayRef<int64_t> first) {
  int64_t ranks = int64_t(first.size()) - 1, experts = first.back();
  if (ranks < 1 || llvm::ArrayRef(splitExperts(experts, ranks)) != first)
    return op->emitOpError("the CPU target runs the split of "
                           "moe-shard-experts only (E / R experts a rank, "
                           "the first E % R ranks one more)");
  return std::make_pair(experts, ranks);
}

CPU_PATTERN(EpExchangeCountsToCpu, EpExchangeCountsOp) {
  auto split = epSplit(op, op.getFirstExpert());
  if (failed(split))
    return failure();
  call(rw, op.getLoc(), "moert::epExchangeCounts",
       TemplateArgs(rw)
           .i(split->first)
           .i(width(op.getIndices()))
           .i(split->second),
       false, {a.getIndices(), n, outs[0]}, true);
  return success();
}

CPU_PATTERN(EpDispatchToCpu, EpDispatchOp) {
  auto counts = op.getCounts().getDefiningOp<EpExchangeCountsOp>();
  auto split = epSplit(op, counts.getFirstExpert());
  if (failed(split))
    return failure();
  call(rw, op.getLoc(), "moert::epDispatch",
       TemplateArgs(rw)
           .i(width(op.getInput()))
           .i(split->first)
           .i(width(op.getIndices()))
           .i(split->second),
       false,
       {a.getInput(), a.getIndices(), a.getWeights(), a.getCounts(), n, outs[0],
        outs[1], outs[2]},
       true);
  return success();
}

CPU_PATTERN(EpExpertsToCpu, EpExpertsOp) {
  auto split = epSplit(op, op.getFirstExpert());
  if (failed(split))
    return failure();
  Location loc = op.getLoc();
  auto gate = cast<RankedTensorType>(op.getGateWeights().front().getType());
  call(rw, loc, "moert::epExperts",
       TemplateArgs(rw)
           .type(op.getGateWeights().front())
           .type(op.getUpWeights().front())
           .type(op.getDownWeights().front())
           .i(width(op.getResult()))
           .i(gate.getDimSize(0))
           .i(split->first)
           .i(split->second),
       true,
       {a.getRows(), a.getExperts(), a.getGates(), a.getCounts(),
        table(rw, loc, a.getGateWeights(), true),
        table(rw, loc, a.getUpWeights(), true),
        table(rw, loc, a.getDownWeights(), true), outs[0]},
       true);
  return success();
}

CPU_PATTERN(EpCombineToCpu, EpCombineOp) {
  auto split = epSplit(op, op.getFirstExpert());
  if (failed(split))
    return failure();
  SmallVector<Value> args = {a.getInput(), a.getIndices(), a.getCounts(), n,
                             outs[0]};
  if (a.getResidual())
    args.push_back(a.getResidual());
  call(rw, op.getLoc(), "moert::epCombine",
       TemplateArgs(rw)
           .i(width(op.getResult()))
           .i(split->first)
           .i(width(op.getIndices()))
           .i(split->second),
       false, args, true);
  return success();
}

struct LowerToCpuPass : public mlir::moe::impl::LowerToCpuBase<LowerToCpuPass> {
  void runOnOperation() override {
    auto populate = [this](RewritePatternSet &patterns,
                           const TypeConverter &converter,
                           LoweringState &state) {
      patterns.add<EmbeddingToCpu, RMSNormToCpu, LinearToCpu, FusedLinearToCpu,
                   RoPEToCpu, AttentionToCpu, AddToCpu, RouterToCpu,
                   FusedRouterToCpu, ExpertCapacityToCpu, ExpertsToCpu,
                   ExpertPermuteToCpu, GroupedMatmulToCpu, SiluMulToCpu,
                   ExpertCombineToCpu, EpExchangeCountsToCpu, EpDispatchToCpu,
                   EpExpertsToCpu, EpCombineToCpu>(converter, &getContext(),
                                                   state);
    };
    if (failed(lowerModule(getOperation(),
                           moert::CpuTargetAttr::get(&getContext()), populate)))
      signalPassFailure();
  }
};

} // namespace

void mlir::moe::registerCpuTargetModels(DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *context, moert::MoERTDialect *) {
    moert::CpuTargetAttr::attachInterface<CpuBufferModel>(*context);
  });
}
