//===- LowerToCuda.cpp - moe to the CUDA target's launch plan ---*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// One conversion pattern per moe op: each becomes moert.launches of
// moert.kernels (specialisations of the templates in
// runtime/include/moert/cuda/kernels.cuh, declared once per module), with
// the decode/prefill choice, tensor-core eligibility, attention key splits
// and workspace decided here from the pass options.
//
//===----------------------------------------------------------------------===//

#include "compiler/Passes.h"
#include "compiler/common/Lowering.h"
#include "passes/Passes.h"

#include "mlir/IR/AffineExpr.h"
#include "mlir/IR/AffineMap.h"

#include <algorithm>
#include <optional>

namespace mlir::moe {
#define GEN_PASS_DEF_LOWERTOCUDA
#include "compiler/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// Scratch floats per batch token of an op on the CUDA target. The kernels
/// gather in their loads and apply silu in their stores, so only the
/// expert-parallel ops need any: this rank's experts stage the permutation
/// of their rows, its offsets, the silu(gate) * up rows and the products
/// (k rows a token); the combine the ranks' partial sums (R rows a token).
int64_t cudaScratch(Operation *op) {
  if (auto experts = dyn_cast<EpExpertsOp>(op)) {
    auto gate =
        cast<RankedTensorType>(experts.getGateWeights().front().getType());
    int64_t k = getRowsPerToken(experts.getRows());
    int64_t e = int64_t(experts.getGateWeights().size());
    return k + (e + 1) + k * gate.getDimSize(0) +
           k * experts.getResult().getType().getDimSize(1);
  }
  if (auto combine = dyn_cast<EpCombineOp>(op))
    return int64_t(combine.getFirstExpert().size() - 1) *
           combine.getResult().getType().getDimSize(1);
  return 0;
}

struct CudaBufferModel : public moert::TargetBufferAttrInterface::ExternalModel<
                             CudaBufferModel, moert::CudaTargetAttr> {
  int64_t getScratchFloatsPerToken(Attribute, Operation *op) const {
    return cudaScratch(op);
  }
};

struct CudaOptions {
  int64_t decodeMaxTokens = 8;
  bool tensorCores = true;
  int64_t attentionSplits = 0;
  bool fuseQkvDecode = true;
};

/// Grid dimensions: affine maps of the token count n.
AffineExpr nExpr(MLIRContext *c) { return getAffineDimExpr(0, c); }
AffineMap grid(AffineExpr e) { return AffineMap::get(1, 0, e); }
AffineMap grid(MLIRContext *c, int64_t v) {
  return grid(getAffineConstantExpr(v, c));
}

/// The shared machinery of the CUDA patterns.
class CudaLowering {
public:
  CudaLowering(LoweringState &state, const CudaOptions &options)
      : state(state), options(options) {}

  /// The kernel `kind_<i>` calling `callee<targs>` with parameters of the
  /// types of `args`, declared once per distinct specialisation.
  FlatSymbolRefAttr kernel(OpBuilder &b, StringRef kind, StringRef callee,
                           const TemplateArgs &targs, int64_t threads,
                           ValueRange args) const {
    SmallVector<Type> params;
    for (Value a : args)
      params.push_back(moert::kernelParamType(a.getType()));
    auto type = FunctionType::get(b.getContext(), params, {});
    ArrayAttr targsAttr = b.getArrayAttr(targs.args);
    std::string key;
    llvm::raw_string_ostream k(key);
    k << callee << targsAttr << type << threads;
    auto [it, inserted] = state.kernels.try_emplace(key, "");
    if (inserted) {
      it->second = (kind + "_" + Twine(state.numKernels++)).str();
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToEnd(state.module.getBody());
      moert::KernelOp::create(b, state.module.getLoc(), it->second, callee,
                              targsAttr, threads, type);
    }
    return FlatSymbolRefAttr::get(b.getContext(), it->second);
  }

  void launch(OpBuilder &b, Location loc, FlatSymbolRefAttr kernel, AffineMap x,
              AffineMap y, ValueRange args) const {
    moert::LaunchOp::create(b, loc, kernel, b.getAffineMapArrayAttr({x, y}),
                            args);
  }

  /// Emits `decode` in the decode region and `prefill` in the prefill
  /// region of a new moert.if_decode.
  void ifDecode(OpBuilder &b, Location loc, function_ref<void()> decode,
                function_ref<void()> prefill) const {
    auto op = moert::IfDecodeOp::create(b, loc, options.decodeMaxTokens);
    OpBuilder::InsertionGuard guard(b);
    b.createBlock(&op.getDecode());
    decode();
    b.createBlock(&op.getPrefill());
    prefill();
  }

  /// What a moe.linear or moe.grouped_matmul multiplies.
  struct Matmul {
    SmallVector<Value> weights; // expert-major: e * parts + part
    int64_t rowsA = 0, rowsB = 0, in = 0, experts = 1, k = 1;
    bool gather = false, grouped = false, silu = false;
    /// Only the prefill variant (the caller has emitted the decode one).
    bool prefillOnly = false;
    /// Rows of the batch per token (the rows an expert-parallel rank
    /// received: k a token, with k = 1 for the kernels).
    int64_t rowsPerToken = 1;
    /// Expert parallelism: the split of the experts, recorded on the weight
    /// table (`moert.first_expert`) for the program's rank of each weight.
    ArrayRef<int64_t> firstExpert;
    Value input, perm, offsets, output, residual;
  };

  /// The gemv kernel (decode), and the tensor-core kernel (prefill) where
  /// the weights allow it and the option does.
  LogicalResult matmul(OpBuilder &b, Operation *op, const Matmul &m) const {
    MLIRContext *c = b.getContext();
    Location loc = op->getLoc();
    int64_t parts = m.rowsB > 0 ? 2 : 1;
    // The output width: the stacked parts, or one part after silu * up.
    int64_t width = m.silu ? m.rowsA : m.rowsA + m.rowsB;
    Type typeA = elementType(m.weights.front());
    Type typeB = elementType(m.weights[parts - 1]);
    int64_t numPtrs = int64_t(m.weights.size());
    auto tableOp = moert::TableOp::create(
        b, loc, moert::TableType::get(c, numPtrs, b.getNoneType(), false),
        m.weights);
    if (!m.firstExpert.empty())
      tableOp->setAttr("moert.first_expert",
                       b.getDenseI64ArrayAttr(m.firstExpert));
    Value table = tableOp;
    Value n = tokens(b, loc, b.getI32Type(), m.rowsPerToken);
    Value perm = m.perm ? m.perm : nullBuffer(b, loc, b.getI32Type());
    Value offsets = m.offsets ? m.offsets : nullBuffer(b, loc, b.getI32Type());
    Value residual =
        m.residual ? m.residual : nullBuffer(b, loc, b.getF32Type());
    SmallVector<Value> args = {m.input, perm,     offsets, table,
                               n,       m.output, residual};
    auto common = [&](TemplateArgs &t) -> TemplateArgs & {
      return t.i(m.rowsA)
          .i(m.rowsB)
          .i(m.in)
          .i(m.experts)
          .i(m.k)
          .flag(m.gather)
          .flag(m.grouped)
          .flag(m.silu)
          .i(numPtrs);
    };
    std::string kind = m.grouped ? "grouped_matmul" : "linear";
    auto gemv = [&] {
      TemplateArgs gemvArgs(b);
      gemvArgs.type(typeA).type(typeB);
      return kernel(b, kind + "_gemv", "moert::cuda::gemv", common(gemvArgs),
                    256, args);
    };
    // Grouped gemv: a block row per expert that has rows, at most n * k.
    AffineExpr nx = nExpr(c) * m.rowsPerToken;
    AffineMap groups =
        m.grouped
            ? AffineMap::get(1, 0,
                             {getAffineConstantExpr(m.experts, c), nx * m.k}, c)
            : grid(c, 1);
    AffineMap gemvX = grid(c, (width + 7) / 8);
    bool tensorCores = options.tensorCores && typeA == typeB &&
                       !typeA.isF32() && m.in % 64 == 0 && width % 4 == 0;
    if (!tensorCores) {
      launch(b, loc, gemv(), gemvX, groups, args);
      return success();
    }
    TemplateArgs mmaArgs(b);
    mmaArgs.type(typeA);
    FlatSymbolRefAttr mma = kernel(b, kind + "_mma", "moert::cuda::gemmMma",
                                   common(mmaArgs), 256, args);
    // Grouped: a partial tile per expert at most, beyond the full ones.
    AffineMap tiles = m.grouped ? grid((nx * m.k).ceilDiv(64) + m.experts)
                                : grid(nx.ceilDiv(64));
    // Tiles of 128 features, or of 64 gate and 64 up rows with silu.
    AffineMap columns =
        grid(c, (width + (m.silu ? 63 : 127)) / (m.silu ? 64 : 128));
    auto prefill = [&] { launch(b, loc, mma, tiles, columns, args); };
    if (m.prefillOnly)
      prefill();
    else
      ifDecode(
          b, loc, [&] { launch(b, loc, gemv(), gemvX, groups, args); },
          prefill);
    return success();
  }

  /// RoPE on `in` into `out`; the interleaved pairing is a third template
  /// argument (absent for rotate-half, the kernel's default).
  void rope(OpBuilder &b, Location loc, Value in, Value pos, double theta,
            int64_t headDim, bool interleaved, RopeScalingAttr scaling,
            Value out) const {
    MLIRContext *c = b.getContext();
    int64_t w = width(out);
    SmallVector<Value> args = {in, pos, constantF64(b, loc, theta),
                               tokens(b, loc, b.getI32Type()), out};
    TemplateArgs targs = TemplateArgs(b).i(w).i(headDim);
    if (interleaved || scaling)
      targs.flag(interleaved);
    appendRopeScaling(b, loc, scaling, headDim, theta, targs, args);
    launch(b, loc, kernel(b, "rope", "moert::cuda::rope", targs, 256, args),
           grid((nExpr(c) * (w / 2)).ceilDiv(256)), grid(c, 1), args);
  }

  LoweringState &state;
  const CudaOptions &options;
};

/// A CUDA pattern: the lowering's shared machinery and options at hand.
template <typename OpTy> struct CudaPattern : public TargetPattern<OpTy> {
  CudaPattern(const TypeConverter &converter, MLIRContext *context,
              LoweringState &state, const CudaLowering &lowering)
      : TargetPattern<OpTy>(converter, context, state), cuda(lowering) {}
  using OpAdaptor = typename TargetPattern<OpTy>::OpAdaptor;
  const CudaLowering &cuda;
};

#define CUDA_PATTERN(Name, OpTy)                                               \
  struct Name : public CudaPattern<OpTy> {                                     \
    using CudaPattern::CudaPattern;                                            \
    LogicalResult lower(OpTy op, OpAdaptor a, ConversionPatternRewriter &rw,   \
                        ArrayRef<Value> outs) const override;                  \
  };                                                                           \
  LogicalResult Name::lower(OpTy op, OpAdaptor a,                              \
                            ConversionPatternRewriter &rw,                     \
                            ArrayRef<Value> outs) const

CUDA_PATTERN(EmbeddingToCuda, EmbeddingOp) {
  SmallVector<Value> args = {a.getTable(), a.getIds(), outs[0]};
  cuda.launch(rw, op.getLoc(),
              cuda.kernel(rw, "embedding", "moert::cuda::embedding",
                          TemplateArgs(rw)
                              .type(elementType(op.getTable()))
                              .i(width(op.getResult())),
                          256, args),
              grid(nExpr(getContext())), grid(getContext(), 1), args);
  return success();
}

CUDA_PATTERN(RMSNormToCuda, RMSNormOp) {
  SmallVector<Value> args = {
      a.getInput(), a.getWeight(),
      constantF32(rw, op.getLoc(), op.getEpsilon().convertToDouble()), outs[0]};
  cuda.launch(rw, op.getLoc(),
              cuda.kernel(rw, "rms_norm", "moert::cuda::rmsNorm",
                          TemplateArgs(rw)
                              .type(elementType(op.getWeight()))
                              .i(width(op.getResult())),
                          256, args),
              grid(nExpr(getContext())), grid(getContext(), 1), args);
  return success();
}

CUDA_PATTERN(LinearToCuda, LinearOp) {
  ArrayRef<int64_t> w = op.getWeight().getType().getShape();
  CudaLowering::Matmul m;
  m.weights = {a.getWeight()};
  m.rowsA = w[0], m.in = w[1], m.input = a.getInput(), m.output = outs[0];
  m.residual = a.getResidual();
  return cuda.matmul(rw, op, m);
}

CUDA_PATTERN(FusedLinearToCuda, FusedLinearOp) {
  MLIRContext *c = getContext();
  Location loc = op.getLoc();
  int64_t in = width(op.getInput());
  size_t parts = a.getWeights().size();
  bool multi = parts <= 3 && cuda.options.fuseQkvDecode;
  auto part = [&](size_t i) {
    CudaLowering::Matmul m;
    m.weights = {a.getWeights()[i]};
    m.rowsA = cast<MemRefType>(a.getWeights()[i].getType()).getDimSize(0);
    m.in = in, m.input = a.getInput(), m.output = outs[i];
    m.prefillOnly = multi;
    return m;
  };
  auto separate = [&]() -> LogicalResult {
    for (size_t i = 0; i < parts; ++i) {
      if (failed(cuda.matmul(rw, op, part(i))))
        return failure();
      if (op.hasRope(int64_t(i)))
        cuda.rope(rw, loc, outs[i], a.getPositions(),
                  op.getThetaAttr().getValueAsDouble(), *op.getHeadDim(),
                  op.getRopeInterleaved(), op.getRopeScalingAttr(), outs[i]);
    }
    return success();
  };
  if (!multi)
    return separate();
  // Widths, types and RoPE of three parts (a missing third: width 0).
  TemplateArgs targs(rw);
  SmallVector<int64_t> widths;
  SmallVector<bool> ropes;
  SmallVector<Value> table, dests;
  int64_t items = 0; // warps: a feature, or a rotated pair of them
  for (size_t i = 0; i < 3; ++i) {
    Value w = a.getWeights()[std::min(i, parts - 1)];
    bool rope = i < parts && op.hasRope(int64_t(i));
    widths.push_back(i < parts ? part(i).rowsA : 0);
    ropes.push_back(rope);
    items += rope ? widths.back() / 2 : widths.back();
    targs.type(elementType(w));
    table.push_back(i < parts ? w : nullBuffer(rw, loc, rw.getF32Type()));
    dests.push_back(i < parts ? outs[i] : nullBuffer(rw, loc, rw.getF32Type()));
  }
  targs.i(in).i(widths[0]).i(widths[1]).i(widths[2]);
  for (bool r : ropes)
    targs.flag(r);
  bool anyRope = op.getRope().has_value();
  targs.i(anyRope ? int64_t(*op.getHeadDim()) : 2);
  if (op.getRopeInterleaved() || op.getRopeScalingAttr())
    targs.flag(op.getRopeInterleaved());
  Value ptrs = moert::TableOp::create(
      rw, loc, moert::TableType::get(c, 3, rw.getNoneType(), false), table);
  Value dest = moert::TableOp::create(
      rw, loc, moert::TableType::get(c, 3, rw.getF32Type(), true), dests);
  SmallVector<Value> args = {
      a.getInput(),
      ptrs,
      tokens(rw, loc, rw.getI32Type()),
      dest,
      anyRope ? a.getPositions() : nullBuffer(rw, loc, rw.getI32Type()),
      constantF64(rw, loc,
                  anyRope ? op.getThetaAttr().getValueAsDouble() : 0.0)};
  if (anyRope)
    appendRopeScaling(rw, loc, op.getRopeScalingAttr(), *op.getHeadDim(),
                      op.getThetaAttr().getValueAsDouble(), targs, args);
  FlatSymbolRefAttr gemv = cuda.kernel(
      rw, "fused_linear_gemv", "moert::cuda::gemvMulti", targs, 256, args);
  LogicalResult result = success();
  cuda.ifDecode(
      rw, loc,
      [&] {
        cuda.launch(rw, loc, gemv, grid(c, (items + 7) / 8), grid(c, 1), args);
      },
      [&] { result = separate(); });
  return result;
}

CUDA_PATTERN(RoPEToCuda, RoPEOp) {
  cuda.rope(rw, op.getLoc(), a.getInput(), a.getPositions(),
            op.getTheta().convertToDouble(), op.getHeadDim(),
            op.getInterleaved(), op.getScalingAttr(), outs[0]);
  return success();
}

CUDA_PATTERN(AttentionToCuda, AttentionOp) {
  MLIRContext *c = getContext();
  Location loc = op.getLoc();
  auto cache = cast<KVCacheType>(op.getCache().getType());
  int64_t heads = op.getNumHeads(), kvHeads = cache.getNumKvHeads(),
          headDim = cache.getHeadDim(), capacity = cache.getCapacity(),
          window = op.getSlidingWindow().value_or(0);
  // Decode splits the keys over blocks: by default one per 256 keys the
  // cache can hold for a query, at most 32.
  int64_t span = window ? std::min(window, capacity) : capacity;
  int64_t splits = cuda.options.attentionSplits
                       ? cuda.options.attentionSplits
                       : std::clamp<int64_t>((span + 255) / 256, 1, 32);
  Value ws = moert::WorkspaceOp::create(
      rw, loc, MemRefType::get({ShapedType::kDynamic}, rw.getF32Type()),
      cuda.options.decodeMaxTokens * heads * splits * (headDim + 2));
  auto plane = [&](bool values) {
    return moert::CachePlaneOp::create(
        rw, loc, MemRefType::get({ShapedType::kDynamic}, rw.getF32Type()),
        a.getCache(), values);
  };
  Value kc = plane(false), vc = plane(true);
  Value q = a.getQuery(), k = a.getKey(), v = a.getValue(),
        pos = this->state.positions;
  Value scale = constantF32(rw, loc, op.getEffectiveScale());
  auto shape = [&](TemplateArgs t, bool withWindow) {
    t.i(heads).i(kvHeads).i(headDim).i(capacity);
    if (withWindow)
      t.i(window);
    return t;
  };
  AffineExpr n = nExpr(c);
  cuda.ifDecode(
      rw, loc,
      [&] {
        SmallVector<Value> decode = {q, k, v, kc, vc, pos, scale, ws};
        cuda.launch(
            rw, loc,
            cuda.kernel(rw, "attention_decode", "moert::cuda::attentionDecode",
                        shape(TemplateArgs(rw), true).i(splits), 128, decode),
            grid(c, heads * splits), grid(n), decode);
        SmallVector<Value> finish = {
            ws, k, v, pos, tokens(rw, loc, rw.getI32Type()), outs[0], kc, vc};
        cuda.launch(rw, loc,
                    cuda.kernel(rw, "attention_decode_finish",
                                "moert::cuda::attentionDecodeFinish",
                                shape(TemplateArgs(rw), false).i(splits), 128,
                                finish),
                    grid(c, heads), grid(n), finish);
      },
      [&] {
        SmallVector<Value> prefill = {
            q,     k,      v, kc, vc, pos, tokens(rw, loc, rw.getI32Type()),
            scale, outs[0]};
        cuda.launch(rw, loc,
                    cuda.kernel(rw, "attention_prefill",
                                "moert::cuda::attentionPrefill",
                                shape(TemplateArgs(rw), true), 128, prefill),
                    grid(c, heads), grid(n.ceilDiv(16)), prefill);
        // Both variants append the chunk to the cache only after every
        // query read the old slots.
        SmallVector<Value> append = {
            k, v, pos, tokens(rw, loc, rw.getI32Type()), kc, vc};
        cuda.launch(
            rw, loc,
            cuda.kernel(rw, "kv_append", "moert::cuda::kvAppend",
                        TemplateArgs(rw).i(kvHeads).i(headDim).i(capacity), 256,
                        append),
            grid((n * (kvHeads * headDim)).ceilDiv(256)), grid(c, 1), append);
      });
  return success();
}

CUDA_PATTERN(AddToCuda, AddOp) {
  int64_t w = width(op.getResult());
  SmallVector<Value> args = {a.getLhs(), a.getRhs(),
                             tokens(rw, op.getLoc(), rw.getI32Type()), outs[0]};
  cuda.launch(rw, op.getLoc(),
              cuda.kernel(rw, "add", "moert::cuda::add", TemplateArgs(rw).i(w),
                          256, args),
              grid((nExpr(getContext()) * w).ceilDiv(256)),
              grid(getContext(), 1), args);
  return success();
}

CUDA_PATTERN(FusedRouterToCuda, FusedRouterOp) {
  int64_t h = width(op.getInput());
  SmallVector<Value> args = {a.getInput(), a.getGate(), outs[0], outs[1]};
  cuda.launch(rw, op.getLoc(),
              cuda.kernel(rw, "fused_router", "moert::cuda::fusedRouter",
                          TemplateArgs(rw)
                              .type(elementType(op.getGate()))
                              .i(h)
                              .i(op.getNumExperts())
                              .i(op.getK())
                              .flag(op.getScoring() == ScoringFunc::Softmax)
                              .flag(op.getRenormalize()),
                          256, args),
              grid(nExpr(getContext())), grid(getContext(), 1), args);
  return success();
}

CUDA_PATTERN(ExpertCapacityToCuda, ExpertCapacityOp) {
  Location loc = op.getLoc();
  SmallVector<Value> args = {
      a.getWeights(),
      a.getIndices(),
      constantF64(rw, loc, op.getFactor().convertToDouble()),
      tokens(rw, loc, rw.getI32Type()),
      moert::RouteStatsOp::create(
          rw, loc, MemRefType::get({ShapedType::kDynamic}, rw.getI64Type())),
      outs[0],
      outs[1]};
  // The priority order is sequential: one thread of one block.
  cuda.launch(
      rw, loc,
      cuda.kernel(
          rw, "expert_capacity", "moert::cuda::expertCapacity",
          TemplateArgs(rw).i(op.getNumExperts()).i(width(op.getIndices())), 32,
          args),
      grid(getContext(), 1), grid(getContext(), 1), args);
  return success();
}

CUDA_PATTERN(ExpertPermuteToCuda, ExpertPermuteOp) {
  int64_t experts = op.getNumExperts();
  SmallVector<Value> args = {a.getIndices(),
                             tokens(rw, op.getLoc(), rw.getI32Type()), outs[0],
                             outs[1]};
  // One block; the kernel loops over experts beyond its threads.
  int64_t threads = std::min<int64_t>((experts + 32) / 32 * 32, 1024);
  cuda.launch(rw, op.getLoc(),
              cuda.kernel(rw, "expert_permute", "moert::cuda::expertPermute",
                          TemplateArgs(rw).i(experts).i(width(op.getIndices())),
                          threads, args),
              grid(getContext(), 1), grid(getContext(), 1), args);
  return success();
}

CUDA_PATTERN(GroupedMatmulToCuda, GroupedMatmulOp) {
  // At most 2 parts (the lowering contract).
  int64_t parts = op.getParts();
  auto part = [&](int64_t i) {
    return cast<RankedTensorType>(op.getExpertWeights()[i].getType());
  };
  // The gather happens in the kernels' loads, and silu(gate) * up in their
  // stores: no scratch.
  CudaLowering::Matmul m;
  m.input = a.getInput(), m.perm = a.getPerm(), m.offsets = a.getOffsets();
  m.output = outs[0];
  m.weights.assign(a.getExpertWeights().begin(), a.getExpertWeights().end());
  m.rowsA = part(0).getDimSize(0);
  m.rowsB = parts == 2 ? part(1).getDimSize(0) : 0;
  m.in = width(op.getInput()), m.experts = op.getNumExperts(), m.k = op.getK();
  m.gather = op.getGather(), m.grouped = true, m.silu = op.getSiluMul();
  return cuda.matmul(rw, op, m);
}

CUDA_PATTERN(SiluMulToCuda, SiluMulOp) {
  int64_t i = width(op.getResult());
  int64_t rows = getFloatsPerToken(op.getResult()) / i;
  SmallVector<Value> args = {
      a.getInput(), tokens(rw, op.getLoc(), rw.getI32Type(), rows), outs[0]};
  cuda.launch(rw, op.getLoc(),
              cuda.kernel(rw, "silu_mul", "moert::cuda::siluMul",
                          TemplateArgs(rw).i(i), 256, args),
              grid((nExpr(getContext()) * (rows * i)).ceilDiv(256)),
              grid(getContext(), 1), args);
  return success();
}

CUDA_PATTERN(ExpertCombineToCuda, ExpertCombineOp) {
  Location loc = op.getLoc();
  SmallVector<Value> args = {
      a.getInput(),
      a.getPerm(),
      a.getWeights(),
      tokens(rw, loc, rw.getI32Type()),
      outs[0],
      a.getResidual() ? a.getResidual() : nullBuffer(rw, loc, rw.getF32Type())};
  cuda.launch(
      rw, loc,
      cuda.kernel(
          rw, "expert_combine", "moert::cuda::expertCombine",
          TemplateArgs(rw).i(width(op.getResult())).i(width(op.getWeights())),
          256, args),
      grid(nExpr(getContext())), grid(getContext(), 1), args);
  return success();
}

/// Expert parallelism (moe-shard-experts): every rank holds every token, so
/// the dispatch is a local gather of this rank's pairs and the combine an
/// all-gather of per-rank partial sums (kernels.cuh, ep_host.h). (E, R) of
/// the split of moe-shard-experts, or failure for another split.
FailureOr<std::pair<int64_t, int64_t>> cudaEpSplit(Operation *op,
                                                   ArrayRef<int64_t> first) {
  int64_t ranks = int64_t(first.size()) - 1, experts = first.back();
  if (ranks < 1 || llvm::ArrayRef(splitExperts(experts, ranks)) != first)
    return op->emitOpError("the CUDA target runs the split of "
                           "moe-shard-experts only");
  return std::make_pair(experts, ranks);
}

/// The i32 or f32 view `size` per token into `scratch` at `offset`.
Value scratchView(OpBuilder &b, Location loc, Value scratch, int64_t offset,
                  int64_t size, Type element, int64_t width = 0) {
  auto base = scratch.getDefiningOp<moert::ViewOp>();
  SmallVector<int64_t> shape = {ShapedType::kDynamic};
  if (width)
    shape.push_back(width);
  return moert::ViewOp::create(b, loc, MemRefType::get(shape, element),
                               base.getOffset() + offset, size)
      .getResult();
}

// The counts are this rank's to know (every rank has every route), and
// nothing on this target reads them: the exchange is nothing.
CUDA_PATTERN(EpExchangeCountsToCuda, EpExchangeCountsOp) {
  return LogicalResult(cudaEpSplit(op, op.getFirstExpert()));
}

CUDA_PATTERN(EpDispatchToCuda, EpDispatchOp) {
  MLIRContext *c = getContext();
  Location loc = op.getLoc();
  auto counts = op.getCounts().getDefiningOp<EpExchangeCountsOp>();
  if (!counts)
    return op.emitOpError("takes the counts of a moe.ep_exchange_counts");
  auto split = cudaEpSplit(op, counts.getFirstExpert());
  if (failed(split))
    return failure();
  SmallVector<Value> args = {a.getInput(),
                             a.getIndices(),
                             a.getWeights(),
                             tokens(rw, loc, rw.getI32Type()),
                             moert::EpRankOp::create(rw, loc, rw.getI32Type()),
                             outs[0],
                             outs[1],
                             outs[2]};
  cuda.launch(rw, loc,
              cuda.kernel(rw, "ep_gather", "moert::cuda::epGatherLocal",
                          TemplateArgs(rw)
                              .i(width(op.getInput()))
                              .i(split->first)
                              .i(width(op.getIndices()))
                              .i(split->second),
                          256, args),
              grid(nExpr(c)), grid(c, 1), args);
  return success();
}

CUDA_PATTERN(EpExpertsToCuda, EpExpertsOp) {
  MLIRContext *c = getContext();
  Location loc = op.getLoc();
  auto split = cudaEpSplit(op, op.getFirstExpert());
  if (failed(split))
    return failure();
  int64_t experts = split->first, k = getRowsPerToken(op.getRows());
  int64_t h = width(op.getResult());
  auto gate = cast<RankedTensorType>(op.getGateWeights().front().getType());
  int64_t inter = gate.getDimSize(0);
  FailureOr<Value> scratch = scratchBuffer(rw, op, cudaScratch(op));
  if (failed(scratch))
    return failure();
  Value perm = scratchView(rw, loc, *scratch, 0, k, rw.getI32Type());
  Value offsets =
      scratchView(rw, loc, *scratch, k, experts + 1, rw.getI32Type());
  Value hidden = scratchView(rw, loc, *scratch, k + experts + 1, k * inter,
                             rw.getF32Type(), inter);
  Value products = scratchView(rw, loc, *scratch, k + experts + 1 + k * inter,
                               k * h, rw.getF32Type(), h);
  // The received rows as a batch of n * k rows of one choice each: sorted
  // by expert (the empty slots, expert -1, last), through the grouped
  // GEMMs of this rank's experts (the others have no rows), then each row
  // scaled by its gate back in slot order (epScaleRows).
  Value rows = tokens(rw, loc, rw.getI32Type(), k);
  SmallVector<Value> permArgs = {a.getExperts(), rows, perm, offsets};
  int64_t threads = std::min<int64_t>((experts + 32) / 32 * 32, 1024);
  cuda.launch(rw, loc,
              cuda.kernel(rw, "expert_permute", "moert::cuda::expertPermute",
                          TemplateArgs(rw).i(experts).i(1), threads, permArgs),
              grid(c, 1), grid(c, 1), permArgs);
  CudaLowering::Matmul gateUp;
  gateUp.input = a.getRows(), gateUp.perm = perm, gateUp.offsets = offsets;
  gateUp.output = hidden;
  for (int64_t e = 0; e < experts; ++e) {
    gateUp.weights.push_back(a.getGateWeights()[e]);
    gateUp.weights.push_back(a.getUpWeights()[e]);
  }
  gateUp.rowsA = gateUp.rowsB = inter, gateUp.in = h;
  gateUp.experts = experts, gateUp.k = 1, gateUp.rowsPerToken = k;
  gateUp.gather = true, gateUp.grouped = true, gateUp.silu = true;
  gateUp.firstExpert = op.getFirstExpert();
  if (failed(cuda.matmul(rw, op, gateUp)))
    return failure();
  CudaLowering::Matmul down;
  down.input = hidden, down.perm = perm, down.offsets = offsets;
  down.output = products;
  down.weights.assign(a.getDownWeights().begin(), a.getDownWeights().end());
  down.rowsA = h, down.in = inter, down.experts = experts, down.k = 1;
  down.rowsPerToken = k, down.grouped = true;
  down.firstExpert = op.getFirstExpert();
  if (failed(cuda.matmul(rw, op, down)))
    return failure();
  SmallVector<Value> scaleArgs = {products,       perm,         offsets,
                                  a.getExperts(), a.getGates(), outs[0]};
  cuda.launch(rw, loc,
              cuda.kernel(rw, "ep_scale_rows", "moert::cuda::epScaleRows",
                          TemplateArgs(rw).i(h), 256, scaleArgs),
              grid(nExpr(c) * k), grid(c, 1), scaleArgs);
  return success();
}

CUDA_PATTERN(EpCombineToCuda, EpCombineOp) {
  MLIRContext *c = getContext();
  Location loc = op.getLoc();
  auto split = cudaEpSplit(op, op.getFirstExpert());
  if (failed(split))
    return failure();
  int64_t h = width(op.getResult()), ranks = split->second;
  FailureOr<Value> scratch = scratchBuffer(rw, op, cudaScratch(op));
  if (failed(scratch))
    return failure();
  Value partials =
      scratchView(rw, loc, *scratch, 0, ranks * h, rw.getF32Type(), h);
  Value n = tokens(rw, loc, rw.getI32Type());
  SmallVector<Value> sumArgs = {
      a.getInput(), a.getIndices(), n,
      moert::EpRankOp::create(rw, loc, rw.getI32Type()), partials};
  cuda.launch(rw, loc,
              cuda.kernel(rw, "ep_partial_sum", "moert::cuda::epPartialSum",
                          TemplateArgs(rw)
                              .i(h)
                              .i(split->first)
                              .i(width(op.getIndices()))
                              .i(ranks),
                          256, sumArgs),
              grid(nExpr(c)), grid(c, 1), sumArgs);
  moert::CallOp::create(rw, loc, rw.getStringAttr("moert::cuda::epAllgather"),
                        rw.getArrayAttr(TemplateArgs(rw).i(h).i(ranks).args),
                        UnitAttr(), rw.getUnitAttr(),
                        ValueRange{partials, tokens(rw, loc, rw.getI64Type())});
  SmallVector<Value> addArgs = {
      partials, n, outs[0],
      a.getResidual() ? a.getResidual() : nullBuffer(rw, loc, rw.getF32Type())};
  cuda.launch(rw, loc,
              cuda.kernel(rw, "ep_sum_partials", "moert::cuda::epSumPartials",
                          TemplateArgs(rw).i(h).i(ranks), 256, addArgs),
              grid((nExpr(c) * h).ceilDiv(256)), grid(c, 1), addArgs);
  return success();
}

struct LowerToCudaPass
    : public mlir::moe::impl::LowerToCudaBase<LowerToCudaPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (decodeMaxTokens < 1 || decodeMaxTokens > 4096) {
      module.emitError("moe-lower-to-cuda: decode-max-tokens must be in "
                       "[1, 4096], got ")
          << int64_t(decodeMaxTokens);
      return signalPassFailure();
    }
    if (attentionSplits < 0 || attentionSplits > 256) {
      module.emitError("moe-lower-to-cuda: attention-splits must be in "
                       "[0, 256] (0: automatic), got ")
          << int64_t(attentionSplits);
      return signalPassFailure();
    }
    // The unfused expert path has no CUDA kernels.
    WalkResult unsupported = module.walk([](Operation *op) {
      if (isa<RouterOp, ExpertsOp>(op)) {
        op->emitOpError("is not supported by the CUDA target, which runs "
                        "the fused expert path: compile with -O2");
        return WalkResult::interrupt();
      }
      return WalkResult::advance();
    });
    if (unsupported.wasInterrupted())
      return signalPassFailure();
    CudaOptions options{decodeMaxTokens, tensorCores, attentionSplits,
                        fuseQkvDecode};
    auto populate = [&](RewritePatternSet &patterns,
                        const TypeConverter &converter, LoweringState &state) {
      // Lives as long as the patterns: until lowerModule returns.
      lowering.emplace(state, options);
      patterns
          .add<EmbeddingToCuda, RMSNormToCuda, LinearToCuda, FusedLinearToCuda,
               RoPEToCuda, AttentionToCuda, AddToCuda, FusedRouterToCuda,
               ExpertCapacityToCuda, ExpertPermuteToCuda, GroupedMatmulToCuda,
               SiluMulToCuda, ExpertCombineToCuda, EpExchangeCountsToCuda,
               EpDispatchToCuda, EpExpertsToCuda, EpCombineToCuda>(
              converter, &getContext(), state, *lowering);
    };
    if (failed(lowerModule(module, moert::CudaTargetAttr::get(&getContext()),
                           populate)))
      signalPassFailure();
    lowering.reset();
  }
  std::optional<CudaLowering> lowering;
};

} // namespace

void mlir::moe::registerCudaTargetModels(DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *context, moert::MoERTDialect *) {
    moert::CudaTargetAttr::attachInterface<CudaBufferModel>(*context);
  });
}
