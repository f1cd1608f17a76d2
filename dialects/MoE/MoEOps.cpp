//===- MoEOps.cpp - moe dialect operations ----------------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Verifiers, result-type inference, folders and canonicalizations of the moe
// dialect. Every shape and attribute rule stated in MoEOps.td is checked here
// (or by the ODS constraints) and has an expected-error case in
// test/Dialect/MoE/invalid.mlir.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/MoEOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/PatternMatch.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CheckedArithmetic.h"

#include <algorithm>
#include <cmath>
#include <limits>

using namespace mlir;
using namespace mlir::moe;

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

/// Two dimension sizes agree unless both are static and differ.
static bool dimsAgree(int64_t a, int64_t b) {
  return ShapedType::isDynamic(a) || ShapedType::isDynamic(b) || a == b;
}

static std::string dimToString(int64_t d) {
  return ShapedType::isDynamic(d) ? "?" : std::to_string(d);
}

static RankedTensorType tensorType(Value v) {
  return cast<RankedTensorType>(v.getType());
}

/// Fetches the ranked tensor type of an operand during result-type inference,
/// where the ODS constraints have not run yet.
static FailureOr<RankedTensorType> rankedOperand(std::optional<Location> loc,
                                                 Value v, int64_t rank,
                                                 StringRef what) {
  auto type = dyn_cast<RankedTensorType>(v.getType());
  if (!type || type.getRank() != rank)
    return emitOptionalError(loc, what, " must be a rank-", rank,
                             " tensor, got ", v.getType());
  return type;
}

static RankedTensorType activationType(int64_t tokens, int64_t features,
                                       MLIRContext *ctx) {
  return RankedTensorType::get({tokens, features}, Float32Type::get(ctx));
}

/// The results of a router: weights [T, k] f32 and expert indices [T, k] i32.
static void appendRoutingTypes(int64_t tokens, int64_t k, MLIRContext *ctx,
                               SmallVectorImpl<Type> &inferred) {
  inferred.push_back(activationType(tokens, k, ctx));
  inferred.push_back(
      RankedTensorType::get({tokens, k}, IntegerType::get(ctx, 32)));
}

//===----------------------------------------------------------------------===//
// WeightOp
//===----------------------------------------------------------------------===//

/// The rules every weight type follows, for moe.weight and
/// moe.weight_source: rank 1 or 2 (what the manifest records), each
/// dimension in [1, kMaxWeightDim] (so that element and byte counts cannot
/// overflow), a name that is a C string (no NUL byte), and for a quantised
/// type rank 2 with rows of whole blocks.
static LogicalResult verifyWeight(Operation *op, StringRef name,
                                  RankedTensorType type) {
  if (name.empty())
    return op->emitOpError("weight name must not be empty");
  if (name.contains('\0'))
    return op->emitOpError("weight name must not contain a NUL byte");
  if (type.getRank() < 1 || type.getRank() > 2)
    return op->emitOpError("weight '")
           << name << "' must have rank 1 or 2, got " << type;
  for (int64_t d : type.getShape()) {
    if (d <= 0)
      return op->emitOpError("weight '")
             << name << "' has an empty dimension in " << type;
    if (d > kMaxWeightDim)
      return op->emitOpError("weight '") << name << "' has a dimension above "
                                         << kMaxWeightDim << " in " << type;
  }
  if (auto quant = dyn_cast<QuantType>(type.getElementType());
      quant &&
      (type.getRank() != 2 || type.getDimSize(1) % quant.getBlockSize()))
    return op->emitOpError("quantised weight '")
           << name << "' must be rank 2 with rows of whole "
           << quant.getBlockSize() << "-element blocks, got " << type;
  return success();
}

LogicalResult WeightOp::verify() {
  return verifyWeight(*this, getName(), getResult().getType());
}

//===----------------------------------------------------------------------===//
// WeightSourceOp
//===----------------------------------------------------------------------===//

LogicalResult WeightSourceOp::verify() {
  auto type = cast<RankedTensorType>(getType());
  if (failed(verifyWeight(*this, getName(), type)))
    return failure();
  bool quantizedType = isa<QuantType>(type.getElementType());
  // The artifact's weights file holds quantised blocks and re-laid-out
  // floats, in the layout of `type`.
  if (getArtifact() && (hasLayout() || getQuantized()))
    return emitOpError("weight '")
           << getName() << "' in the artifact's weights file is stored as "
           << "its type: it takes no layout and no pending quantisation";
  if (getRowStart().has_value() != getRowsOf().has_value() ||
      getRowStep().has_value() != getRowsOf().has_value())
    return emitOpError("weight '")
           << getName() << "': a row selection needs row_start, row_step "
           << "and rows_of together";
  if (getScalesOffset().has_value() != getScales().has_value())
    return emitOpError("weight '")
           << getName() << "': separate scales need scales_offset and scales "
           << "together";
  // Values and scales apart (ONNX Runtime's QMoE): q8_0 or q4_0 blocks.
  bool split = getScales().has_value();
  // q8_0 or q4_0 blocks (a plain bool: GCC 12 takes a std::optional
  // compared here for maybe-uninitialized).
  bool q8OrQ4 = false;
  if (quantizedType) {
    QuantFormat format = cast<QuantType>(type.getElementType()).getFormat();
    q8OrQ4 = format == QuantFormat::Q8_0 || format == QuantFormat::Q4_0;
  }
  if (hasLayout()) {
    if (getTransposed() && getRowsOf())
      return emitOpError("weight '")
             << getName() << "' is either transposed or a row selection, "
             << "not both";
    if (split && (type.getRank() != 2 || getTransposed() || !q8OrQ4))
      return emitOpError("weight '")
             << getName() << "' with separate scales must be a rank-2 q8_0 "
             << "or q4_0 tensor, not transposed, got " << type;
    if (!split && (type.getRank() != 2 || quantizedType))
      return emitOpError("weight '")
             << getName() << "' with a layout must be a rank-2 float tensor, "
             << "got " << type;
  }
  if (std::optional<Type> of = getRowsOf()) {
    auto whole = cast<RankedTensorType>(*of);
    if (failed(verifyWeight(*this, getName(), whole)))
      return failure();
    if (whole.getRank() != 2 ||
        whole.getElementType() != type.getElementType() ||
        whole.getDimSize(1) != type.getDimSize(1))
      return emitOpError("weight '")
             << getName() << "' selects rows of " << whole
             << ", which must be rank 2 with the element type and columns "
             << "of " << type;
    int64_t start = int64_t(*getRowStart()), step = int64_t(*getRowStep());
    std::optional<int64_t> span =
        llvm::checkedMul(type.getDimSize(0) - 1, step);
    std::optional<int64_t> last =
        span ? llvm::checkedAdd(start, *span) : std::nullopt;
    if (!last || *last >= whole.getDimSize(0))
      return emitOpError("weight '")
             << getName() << "': rows " << start << " step " << step
             << " of its " << type.getDimSize(0) << " rows reach row "
             << (last ? std::to_string(*last) : std::string("2^63 or more"))
             << ", beyond the " << whole.getDimSize(0) << " rows of " << whole;
  }
  if (split) {
    auto scales = cast<RankedTensorType>(*getScales());
    int64_t rows = getRowsOf()
                       ? cast<RankedTensorType>(*getRowsOf()).getDimSize(0)
                       : type.getDimSize(0);
    int64_t cols = type.getDimSize(1);
    if (scales.getRank() != 2 || isa<QuantType>(scales.getElementType()) ||
        scales.getDimSize(0) != rows || scales.getDimSize(1) < 1 ||
        cols % scales.getDimSize(1) || (cols / scales.getDimSize(1)) % 32)
      return emitOpError("weight '")
             << getName() << "': its scales " << scales << " must be [" << rows
             << ", B] floats, B dividing its " << cols
             << " columns into groups of a multiple of 32";
    int64_t bytes = int64_t(scales.getElementTypeBitWidth() / 8);
    int64_t at = int64_t(*getScalesOffset());
    if (at % bytes)
      return emitOpError("scales offset ")
             << at << " of weight '" << getName()
             << "' is not a multiple of their element size (" << bytes
             << " bytes)";
    if (at > std::numeric_limits<int64_t>::max() - getScalesSizeInBytes())
      return emitOpError("scales of weight '")
             << getName() << "' end beyond 2^63 bytes";
  }
  // A quantised type in moe.weight_dir: the blocks as a GGUF file stores
  // them.
  if (std::optional<Type> to = getQuantized()) {
    auto target = cast<RankedTensorType>(*to);
    if (getArtifact() || quantizedType ||
        !isa<QuantType>(target.getElementType()) ||
        target.getShape() != type.getShape())
      return emitOpError("weight '")
             << getName() << "' must be quantized to a !moe.quant tensor of "
             << "its own shape, from floats in a model file, got " << type
             << " quantized to " << target;
    if (failed(verifyWeight(*this, getName(), target)))
      return failure();
  }
  StringRef file = getFile();
  if (file.empty())
    return emitOpError("file of weight '") << getName() << "' is empty";
  // A plain file name inside moe.weight_dir (or beside the executable): no
  // directories, no way out of it, and a C string (no NUL byte, which would
  // name another file). Other bytes are the file system's business; emitted
  // code escapes them.
  if (file == "." || file == ".." || file.contains('/') ||
      file.contains('\0')) {
    std::string escaped;
    llvm::raw_string_ostream os(escaped);
    llvm::printEscapedString(file, os);
    return emitOpError("file of weight '")
           << getName() << "' must be a plain file name in "
           << (getArtifact() ? "the artifact's directory" : "moe.weight_dir")
           << ", got '" << escaped << "'";
  }
  // Quantised blocks start with an f16 scale; values apart from their
  // scales are bytes.
  int64_t alignment = split ? 1
                      : quantizedType
                          ? 2
                          : int64_t(type.getElementTypeBitWidth() / 8);
  int64_t offset = int64_t(getOffset());
  if (offset % alignment != 0)
    return emitOpError("offset ") << offset << " of weight '" << getName()
                                  << "' is not a multiple of its element size ("
                                  << alignment << " bytes)";
  if (offset > std::numeric_limits<int64_t>::max() - getSizeInBytes())
    return emitOpError("weight '") << getName() << "' ends beyond 2^63 bytes";
  return success();
}

int64_t WeightSourceOp::getSizeInBytes() {
  auto stored = cast<RankedTensorType>(getRowsOf() ? *getRowsOf() : getType());
  if (getScales()) {
    // Offset-binary values alone: 8 bits (q8_0) or 4 (q4_0) each.
    auto quant = cast<QuantType>(stored.getElementType());
    int64_t bits = quant.getFormat() == QuantFormat::Q8_0 ? 8 : 4;
    return stored.getNumElements() * bits / 8;
  }
  return getStorageBytes(stored);
}

int64_t WeightSourceOp::getScalesSizeInBytes() {
  if (std::optional<Type> scales = getScales())
    return getStorageBytes(cast<RankedTensorType>(*scales));
  return 0;
}

//===----------------------------------------------------------------------===//
// EmbeddingOp
//===----------------------------------------------------------------------===//

LogicalResult EmbeddingOp::inferReturnTypes(MLIRContext *ctx,
                                            std::optional<Location> loc,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &inferred) {
  auto table = rankedOperand(loc, adaptor.getTable(), 2, "embedding table");
  auto ids = rankedOperand(loc, adaptor.getIds(), 1, "token ids");
  if (failed(table) || failed(ids))
    return failure();
  inferred.push_back(
      activationType(ids->getDimSize(0), table->getDimSize(1), ctx));
  return success();
}

//===----------------------------------------------------------------------===//
// RMSNormOp
//===----------------------------------------------------------------------===//

LogicalResult RMSNormOp::inferReturnTypes(MLIRContext *ctx,
                                          std::optional<Location> loc,
                                          Adaptor adaptor,
                                          SmallVectorImpl<Type> &inferred) {
  inferred.push_back(adaptor.getInput().getType());
  return success();
}

LogicalResult RMSNormOp::verify() {
  RankedTensorType weight = getWeight().getType();
  int64_t hidden = getInput().getType().getDimSize(1);
  if (weight.getRank() != 1)
    return emitOpError("weight must be rank 1 [hidden], got ") << weight;
  if (weight.getDimSize(0) != hidden)
    return emitOpError("weight has ")
           << weight.getDimSize(0) << " elements but the input has hidden size "
           << hidden;
  // The kernels add it in f32: it must stay positive and finite there.
  double eps = getEpsilon().convertToDouble();
  if (!(eps > 0.0) || !std::isfinite(eps))
    return emitOpError("epsilon must be a positive finite number, got ") << eps;
  float f32 = float(eps);
  if (!(f32 > 0.0f) || !std::isfinite(f32))
    return emitOpError("epsilon ")
           << eps << " is not a positive finite f32 number";
  return success();
}

//===----------------------------------------------------------------------===//
// LinearOp
//===----------------------------------------------------------------------===//

LogicalResult LinearOp::inferReturnTypes(MLIRContext *ctx,
                                         std::optional<Location> loc,
                                         Adaptor adaptor,
                                         SmallVectorImpl<Type> &inferred) {
  auto input = rankedOperand(loc, adaptor.getInput(), 2, "linear input");
  auto weight = rankedOperand(loc, adaptor.getWeight(), 2, "linear weight");
  if (failed(input) || failed(weight))
    return failure();
  inferred.push_back(
      activationType(input->getDimSize(0), weight->getDimSize(0), ctx));
  return success();
}

/// Rotate-half RoPE on a tensor whose `what` (e.g. "input width") is
/// `width`, heads of `headDim`, for `tokens` tokens at `positions`
/// positions: the checks moe.rope and a moe.fused_linear with rope share.
static LogicalResult verifyRoPE(Operation *op, const Twine &what, int64_t width,
                                int64_t headDim, int64_t tokens,
                                int64_t positions, double theta,
                                RopeScalingAttr scaling) {
  if (headDim % 2 != 0)
    return op->emitOpError("head_dim must be even for rotate-half RoPE, got ")
           << headDim;
  if (width % headDim != 0)
    return op->emitOpError() << what << " " << width
                             << " is not a multiple of head_dim " << headDim;
  if (!dimsAgree(tokens, positions))
    return op->emitOpError("has ")
           << dimToString(positions) << " positions for " << dimToString(tokens)
           << " tokens";
  if (!(theta > 0.0) || !std::isfinite(theta))
    return op->emitOpError("theta must be a positive finite number, got ")
           << theta;
  if (scaling && scaling.getType() == RopeType::Dynamic && headDim <= 2)
    return op->emitOpError("dynamic RoPE scaling needs head_dim > 2, got ")
           << headDim;
  if (scaling && scaling.getType() == RopeType::Yarn && theta == 1.0)
    return op->emitOpError("yarn RoPE scaling needs theta != 1");
  return success();
}

/// A fused residual is added elementwise to the result: it has its type.
static LogicalResult verifyResidual(Operation *op, Value residual,
                                    Value result) {
  if (residual && residual.getType() != result.getType())
    return op->emitOpError("residual ")
           << residual.getType() << " must have the result's type "
           << result.getType();
  return success();
}

LogicalResult LinearOp::verify() {
  int64_t in = getInput().getType().getDimSize(1);
  int64_t weightIn = getWeight().getType().getDimSize(1);
  if (in != weightIn)
    return emitOpError("weight ")
           << getWeight().getType() << " is [out, in] with in = " << weightIn
           << ", but the input has " << in << " features";
  return verifyResidual(*this, getResidual(), getResult());
}

//===----------------------------------------------------------------------===//
// FusedLinearOp
//===----------------------------------------------------------------------===//

LogicalResult FusedLinearOp::inferReturnTypes(MLIRContext *ctx,
                                              std::optional<Location> loc,
                                              Adaptor adaptor,
                                              SmallVectorImpl<Type> &inferred) {
  auto input = rankedOperand(loc, adaptor.getInput(), 2, "linear input");
  if (failed(input))
    return failure();
  for (Value w : adaptor.getWeights()) {
    auto weight = rankedOperand(loc, w, 2, "linear weight");
    if (failed(weight))
      return failure();
    inferred.push_back(
        activationType(input->getDimSize(0), weight->getDimSize(0), ctx));
  }
  return success();
}

LogicalResult FusedLinearOp::verify() {
  if (getWeights().size() < 2)
    return emitOpError("needs at least two weights, got ")
           << getWeights().size();
  int64_t in = getInput().getType().getDimSize(1);
  for (auto [i, w] : llvm::enumerate(getWeights())) {
    int64_t weightIn = tensorType(w).getDimSize(1);
    if (weightIn != in)
      return emitOpError("weight ")
             << i << " " << w.getType()
             << " is [out, in] with in = " << weightIn << ", but the input has "
             << in << " features";
  }
  bool rope = getRope().has_value();
  if (rope != bool(getPositions()) || rope != getHeadDim().has_value() ||
      rope != bool(getThetaAttr()))
    return emitOpError("rope needs positions, head_dim and theta together");
  if (getRopeInterleaved() && !rope)
    return emitOpError("interleaved needs rope");
  if (getRopeScalingAttr() && !rope)
    return emitOpError("scaling needs rope");
  if (!rope)
    return success();
  int64_t previous = -1;
  ArrayRef<int64_t> roped = *getRope();
  for (int64_t r : roped) {
    if (r <= previous || r >= int64_t(getResults().size()))
      return emitOpError("rope lists result ")
             << r << "; it needs increasing indices of the "
             << getResults().size() << " results";
    previous = r;
    if (failed(verifyRoPE(
            *this, "result " + Twine(r) + " width",
            tensorType(getResult(r)).getDimSize(1), int64_t(*getHeadDim()),
            getInput().getType().getDimSize(0),
            getPositions().getType().getDimSize(0),
            getThetaAttr().getValueAsDouble(), getRopeScalingAttr())))
      return failure();
  }
  return success();
}

//===----------------------------------------------------------------------===//
// RoPEOp
//===----------------------------------------------------------------------===//

LogicalResult RoPEOp::verify() {
  return verifyRoPE(*this, "input width", getInput().getType().getDimSize(1),
                    getHeadDim(), getInput().getType().getDimSize(0),
                    getPositions().getType().getDimSize(0),
                    getTheta().convertToDouble(), getScalingAttr());
}

//===----------------------------------------------------------------------===//
// AttentionOp
//===----------------------------------------------------------------------===//

LogicalResult AttentionOp::inferReturnTypes(MLIRContext *ctx,
                                            std::optional<Location> loc,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &inferred) {
  inferred.push_back(adaptor.getQuery().getType());
  inferred.push_back(adaptor.getCache().getType());
  return success();
}

LogicalResult AttentionOp::verify() {
  auto cache = cast<KVCacheType>(getCache().getType());
  int64_t heads = getNumHeads();
  int64_t kvHeads = cache.getNumKvHeads();
  int64_t headDim = cache.getHeadDim();
  if (heads % kvHeads != 0)
    return emitOpError("num_heads ")
           << heads << " is not a multiple of the cache's kv_heads " << kvHeads;
  RankedTensorType q = getQuery().getType();
  if (q.getDimSize(1) != heads * headDim)
    return emitOpError("query width ")
           << q.getDimSize(1) << " != num_heads * head_dim = " << heads << " * "
           << headDim;
  for (auto [name, value] :
       {std::pair<StringRef, Value>{"key", getKey()}, {"value", getValue()}}) {
    RankedTensorType t = tensorType(value);
    if (t.getDimSize(1) != kvHeads * headDim)
      return emitOpError() << name << " width " << t.getDimSize(1)
                           << " != kv_heads * head_dim = " << kvHeads << " * "
                           << headDim;
    if (!dimsAgree(t.getDimSize(0), q.getDimSize(0)))
      return emitOpError() << name << " has " << dimToString(t.getDimSize(0))
                           << " tokens but the query has "
                           << dimToString(q.getDimSize(0));
  }
  if (std::optional<APFloat> scaleAttr = getScale()) {
    double scale = scaleAttr->convertToDouble();
    if (!(scale > 0.0) || !std::isfinite(scale))
      return emitOpError("scale must be a positive finite number, got ")
             << scale;
  }
  return success();
}

double AttentionOp::getEffectiveScale() {
  if (std::optional<APFloat> scale = getScale())
    return scale->convertToDouble();
  auto cache = cast<KVCacheType>(getCache().getType());
  return 1.0 / std::sqrt(static_cast<double>(cache.getHeadDim()));
}

//===----------------------------------------------------------------------===//
// AddOp
//===----------------------------------------------------------------------===//

static bool isSplatZero(Attribute attr) {
  auto splat = dyn_cast_if_present<SplatElementsAttr>(attr);
  return splat && isa<FloatType>(splat.getElementType()) &&
         splat.getSplatValue<APFloat>().isZero();
}

OpFoldResult AddOp::fold(FoldAdaptor adaptor) {
  // moe.add is Commutative: the folder sees constants on the right.
  if (isSplatZero(adaptor.getRhs()))
    return getLhs();
  return {};
}

//===----------------------------------------------------------------------===//
// RouterOp
//===----------------------------------------------------------------------===//

LogicalResult RouterOp::inferReturnTypes(MLIRContext *ctx,
                                         std::optional<Location> loc,
                                         Adaptor adaptor,
                                         SmallVectorImpl<Type> &inferred) {
  auto logits = rankedOperand(loc, adaptor.getLogits(), 2, "router logits");
  if (failed(logits))
    return failure();
  appendRoutingTypes(logits->getDimSize(0), adaptor.getK(), ctx, inferred);
  return success();
}

LogicalResult RouterOp::verify() {
  int64_t experts = getNumExperts();
  if (ShapedType::isDynamic(experts))
    return emitOpError("the number of experts (logits dim 1) must be static");
  if (static_cast<int64_t>(getK()) > experts)
    return emitOpError("k = ")
           << getK() << " exceeds the number of experts " << experts;
  return success();
}

namespace {
/// With softmax scoring and k = E the k weights already sum to one, so
/// renormalising them is a no-op: drop the flag.
struct DropRedundantRenormalize : OpRewritePattern<RouterOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(RouterOp op,
                                PatternRewriter &rewriter) const override {
    if (!op.getRenormalize() || op.getScoring() != ScoringFunc::Softmax ||
        static_cast<int64_t>(op.getK()) != op.getNumExperts())
      return failure();
    rewriter.modifyOpInPlace(op, [&] { op.setRenormalize(false); });
    return success();
  }
};
} // namespace

void RouterOp::getCanonicalizationPatterns(RewritePatternSet &results,
                                           MLIRContext *context) {
  results.add<DropRedundantRenormalize>(context);
}

//===----------------------------------------------------------------------===//
// FusedRouterOp
//===----------------------------------------------------------------------===//

LogicalResult FusedRouterOp::inferReturnTypes(MLIRContext *ctx,
                                              std::optional<Location> loc,
                                              Adaptor adaptor,
                                              SmallVectorImpl<Type> &inferred) {
  auto input = rankedOperand(loc, adaptor.getInput(), 2, "router input");
  if (failed(input))
    return failure();
  appendRoutingTypes(input->getDimSize(0), adaptor.getK(), ctx, inferred);
  return success();
}

LogicalResult FusedRouterOp::verify() {
  RankedTensorType gate = getGate().getType();
  if (gate.getRank() != 2)
    return emitOpError("gate weight must be rank 2 [experts, hidden], got ")
           << gate;
  int64_t hidden = getInput().getType().getDimSize(1);
  if (gate.getDimSize(1) != hidden)
    return emitOpError("gate weight ")
           << gate << " does not match the input's hidden size " << hidden;
  if (static_cast<int64_t>(getK()) > getNumExperts())
    return emitOpError("k = ")
           << getK() << " exceeds the number of experts " << getNumExperts();
  return success();
}

//===----------------------------------------------------------------------===//
// ExpertsOp
//===----------------------------------------------------------------------===//

/// `[%a, %b, ...] : type` for a list of operands that share one type, else
/// `[%a, %b, ...] : (type, type, ...)`.
static ParseResult
parseExpertList(OpAsmParser &parser,
                SmallVectorImpl<OpAsmParser::UnresolvedOperand> &operands,
                SmallVectorImpl<Type> &types) {
  if (parser.parseOperandList(operands, OpAsmParser::Delimiter::Square) ||
      parser.parseColon())
    return failure();
  if (succeeded(parser.parseOptionalLParen())) {
    if (parser.parseTypeList(types) || parser.parseRParen())
      return failure();
    if (types.size() != operands.size())
      return parser.emitError(parser.getCurrentLocation(), "expected ")
             << operands.size() << " types, got " << types.size();
    return success();
  }
  Type type;
  if (parser.parseType(type))
    return failure();
  types.assign(operands.size(), type);
  return success();
}

static void printExpertList(OpAsmPrinter &printer, Operation *op,
                            OperandRange operands, TypeRange types) {
  printer << '[' << operands << "] : ";
  if (types.empty()) {
    printer << "none";
  } else if (llvm::all_equal(types)) {
    printer << types.front();
  } else {
    printer << '(' << types << ')';
  }
}

LogicalResult ExpertsOp::inferReturnTypes(MLIRContext *ctx,
                                          std::optional<Location> loc,
                                          Adaptor adaptor,
                                          SmallVectorImpl<Type> &inferred) {
  inferred.push_back(adaptor.getInput().getType());
  return success();
}

/// Routes (weights, indices) that come straight from a router must come
/// from one router that chooses among the `experts` of the consumer `op`
/// (`what` says whose they are in the diagnostic: "the bank has").
static LogicalResult verifyRoutes(Operation *op, Value weights, Value indices,
                                  int64_t experts, StringRef what) {
  Operation *router = indices.getDefiningOp();
  if (!isa_and_present<RouterOp, FusedRouterOp>(router))
    return success();
  int64_t choices = isa<RouterOp>(router)
                        ? cast<RouterOp>(router).getNumExperts()
                        : cast<FusedRouterOp>(router).getNumExperts();
  if (choices != experts)
    return op->emitOpError("router chooses among ")
           << choices << " experts but " << what << " " << experts;
  if (weights != router->getResult(0))
    return op->emitOpError("weights and indices must come from the same "
                           "router");
  return success();
}

LogicalResult ExpertsOp::verify() {
  int64_t experts = getNumExperts();
  if (experts == 0)
    return emitOpError("needs at least one expert");
  if (static_cast<int64_t>(getUpWeights().size()) != experts ||
      static_cast<int64_t>(getDownWeights().size()) != experts)
    return emitOpError("has ")
           << experts << " gate, " << getUpWeights().size() << " up and "
           << getDownWeights().size()
           << " down weights; every expert needs one of each";

  // All experts share one shape per projection.
  for (auto [name, list] :
       {std::pair<StringRef, ValueRange>{"gate", getGateWeights()},
        {"up", getUpWeights()},
        {"down", getDownWeights()}}) {
    for (Value w : list)
      if (w.getType() != list.front().getType())
        return emitOpError("all ")
               << name << " weights must have one type, got "
               << list.front().getType() << " and " << w.getType();
    if (tensorType(list.front()).getRank() != 2)
      return emitOpError() << name << " weights must be rank 2, got "
                           << list.front().getType();
  }

  int64_t hidden = getInput().getType().getDimSize(1);
  ArrayRef<int64_t> gate = tensorType(getGateWeights().front()).getShape();
  ArrayRef<int64_t> up = tensorType(getUpWeights().front()).getShape();
  ArrayRef<int64_t> down = tensorType(getDownWeights().front()).getShape();
  int64_t inter = gate[0];
  if (gate[1] != hidden)
    return emitOpError("gate weights are [")
           << gate[0] << ", " << gate[1]
           << "] but [intermediate, hidden] needs hidden = " << hidden;
  if (up[0] != inter || up[1] != hidden)
    return emitOpError("up weights are [")
           << up[0] << ", " << up[1] << "], expected [" << inter << ", "
           << hidden << "] like the gate weights";
  if (down[0] != hidden || down[1] != inter)
    return emitOpError("down weights are [")
           << down[0] << ", " << down[1] << "], expected [hidden, "
           << "intermediate] = [" << hidden << ", " << inter << "]";

  RankedTensorType weights = getWeights().getType();
  RankedTensorType indices = getIndices().getType();
  int64_t tokens = getInput().getType().getDimSize(0);
  if (!dimsAgree(weights.getDimSize(0), tokens) ||
      !dimsAgree(indices.getDimSize(0), tokens))
    return emitOpError("routing weights ")
           << weights << " and indices " << indices
           << " must have one row per token of the input "
           << getInput().getType();
  int64_t k = weights.getDimSize(1);
  if (indices.getDimSize(1) != k)
    return emitOpError("routing weights choose ")
           << k << " experts per token but the indices choose "
           << indices.getDimSize(1);
  if (k > experts)
    return emitOpError("routes each token to ")
           << k << " experts but the bank has only " << experts;
  Operation *router = getIndices().getDefiningOp();
  if (auto capacity = dyn_cast_if_present<ExpertCapacityOp>(router)) {
    if (int64_t(capacity.getNumExperts()) != experts)
      return emitOpError("capacity is for ")
             << capacity.getNumExperts() << " experts but the bank has "
             << experts;
    if (getWeights() != capacity.getKeptWeights())
      return emitOpError("weights and indices must come from the same "
                         "moe.expert_capacity");
  }
  return verifyRoutes(*this, getWeights(), getIndices(), experts,
                      "the bank has");
}

//===----------------------------------------------------------------------===//
// ExpertCapacityOp
//===----------------------------------------------------------------------===//

LogicalResult
ExpertCapacityOp::inferReturnTypes(MLIRContext *ctx,
                                   std::optional<Location> loc, Adaptor adaptor,
                                   SmallVectorImpl<Type> &inferred) {
  inferred.push_back(adaptor.getWeights().getType());
  inferred.push_back(adaptor.getIndices().getType());
  return success();
}

LogicalResult ExpertCapacityOp::verify() {
  double factor = getFactor().convertToDouble();
  if (!std::isfinite(factor) || factor <= 0)
    return emitOpError("factor must be a finite number above 0, got ")
           << factor;
  RankedTensorType weights = getWeights().getType();
  RankedTensorType indices = getIndices().getType();
  if (weights.getShape() != indices.getShape())
    return emitOpError("weights ") << weights << " and indices " << indices
                                   << " must have one shape, [tokens, k]";
  int64_t k = indices.getDimSize(1);
  if (ShapedType::isDynamic(k))
    return emitOpError("k (dim 1 of the indices) must be static");
  if (k > int64_t(getNumExperts()))
    return emitOpError("each token chooses ")
           << k << " experts but there are only " << getNumExperts();
  return verifyRoutes(*this, getWeights(), getIndices(), getNumExperts(),
                      "the capacity is for");
}

//===----------------------------------------------------------------------===//
// Fused expert path
//===----------------------------------------------------------------------===//

LogicalResult
ExpertPermuteOp::inferReturnTypes(MLIRContext *ctx, std::optional<Location> loc,
                                  Adaptor adaptor,
                                  SmallVectorImpl<Type> &inferred) {
  auto indices = rankedOperand(loc, adaptor.getIndices(), 2, "expert indices");
  if (failed(indices))
    return failure();
  int64_t t = indices->getDimSize(0), k = indices->getDimSize(1);
  Type i32 = IntegerType::get(ctx, 32);
  inferred.push_back(RankedTensorType::get(
      {ShapedType::isDynamic(t) || ShapedType::isDynamic(k)
           ? ShapedType::kDynamic
           : t * k},
      i32));
  inferred.push_back(
      RankedTensorType::get({int64_t(adaptor.getNumExperts()) + 1}, i32));
  return success();
}

LogicalResult ExpertPermuteOp::verify() {
  int64_t k = getIndices().getType().getDimSize(1);
  if (!ShapedType::isDynamic(k) && k > static_cast<int64_t>(getNumExperts()))
    return emitOpError("each token chooses ")
           << k << " experts but there are only " << getNumExperts();
  return success();
}

LogicalResult
GroupedMatmulOp::inferReturnTypes(MLIRContext *ctx, std::optional<Location> loc,
                                  Adaptor adaptor,
                                  SmallVectorImpl<Type> &inferred) {
  int64_t parts = adaptor.getParts();
  int64_t width = 0;
  for (int64_t p = 0;
       p < parts && p < int64_t(adaptor.getExpertWeights().size()); ++p) {
    auto w =
        dyn_cast<RankedTensorType>(adaptor.getExpertWeights()[p].getType());
    if (!w || w.getRank() != 2)
      return emitOptionalError(loc, "expert weights must be rank 2");
    width += w.getDimSize(0);
  }
  if (adaptor.getSiluMul())
    width /= 2;
  inferred.push_back(activationType(ShapedType::kDynamic, width, ctx));
  return success();
}

LogicalResult GroupedMatmulOp::verify() {
  int64_t experts = getNumExperts(), parts = getParts();
  if (experts < 1)
    return emitOpError("offsets must have num_experts + 1 >= 2 entries");
  if (static_cast<int64_t>(getExpertWeights().size()) != experts * parts)
    return emitOpError("has ")
           << getExpertWeights().size() << " weights for " << experts
           << " experts of " << parts << " parts";
  int64_t in = getInput().getType().getDimSize(1);
  for (auto [i, w] : llvm::enumerate(getExpertWeights())) {
    RankedTensorType type = tensorType(w);
    if (type != tensorType(getExpertWeights()[i % parts]))
      return emitOpError("part ") << (i % parts) << " of expert " << (i / parts)
                                  << " differs in type from expert 0's";
    if (type.getDimSize(1) != in)
      return emitOpError("expert weight ")
             << type << " does not take the input's " << in << " features";
  }
  if (getSiluMul() &&
      (parts != 2 || tensorType(getExpertWeights()[0]).getDimSize(0) !=
                         tensorType(getExpertWeights()[1]).getDimSize(0)))
    return emitOpError("silu_mul needs two parts of equal width (gate, up)");
  return success();
}

LogicalResult SiluMulOp::inferReturnTypes(MLIRContext *ctx,
                                          std::optional<Location> loc,
                                          Adaptor adaptor,
                                          SmallVectorImpl<Type> &inferred) {
  auto input = rankedOperand(loc, adaptor.getInput(), 2, "silu_mul input");
  if (failed(input))
    return failure();
  inferred.push_back(
      activationType(input->getDimSize(0), input->getDimSize(1) / 2, ctx));
  return success();
}

LogicalResult SiluMulOp::verify() {
  if (getInput().getType().getDimSize(1) % 2 != 0)
    return emitOpError("input width ")
           << getInput().getType().getDimSize(1)
           << " is odd; it must be gate and up side by side";
  return success();
}

LogicalResult
ExpertCombineOp::inferReturnTypes(MLIRContext *ctx, std::optional<Location> loc,
                                  Adaptor adaptor,
                                  SmallVectorImpl<Type> &inferred) {
  auto input = rankedOperand(loc, adaptor.getInput(), 2, "combine input");
  auto weights = rankedOperand(loc, adaptor.getWeights(), 2, "routing weights");
  if (failed(input) || failed(weights))
    return failure();
  inferred.push_back(
      activationType(weights->getDimSize(0), input->getDimSize(1), ctx));
  return success();
}

LogicalResult ExpertCombineOp::verify() {
  return verifyResidual(*this, getResidual(), getResult());
}

//===----------------------------------------------------------------------===//
// Expert parallelism
//===----------------------------------------------------------------------===//

/// `first_expert` [R + 1]: rank r holds experts [first[r], first[r + 1]);
/// every rank holds at least one, and together they hold all `experts`
/// (-1: the op does not know the number of experts; the last entry is it).
static LogicalResult verifyFirstExpert(Operation *op, ArrayRef<int64_t> first,
                                       int64_t experts = -1) {
  auto list = [&] {
    std::string s;
    llvm::raw_string_ostream os(s);
    os << "[";
    llvm::interleaveComma(first, os);
    os << "]";
    return s;
  };
  if (first.size() < 2)
    return op->emitOpError("needs at least 1 rank: first_expert must have "
                           "ranks + 1 entries, got ")
           << list();
  if (first.front() != 0)
    return op->emitOpError("first_expert must start at 0, got ") << list();
  for (size_t r = 0; r + 1 < first.size(); ++r)
    if (first[r + 1] <= first[r])
      return op->emitOpError("rank ")
             << r << " holds no expert (first_expert " << list()
             << "): every rank must hold at least one expert";
  if (experts >= 0 && first.back() != experts)
    return op->emitOpError("first_expert ")
           << list() << " must end at the number of experts, " << experts;
  return success();
}

LogicalResult EpExchangeCountsOp::verify() {
  int64_t ranks = getRanks();
  if (ranks < 1)
    return emitOpError("ranks must be at least 1, got ") << ranks;
  if (int64_t(getFirstExpert().size()) != ranks + 1)
    return emitOpError("first_expert must have ranks + 1 = ")
           << ranks + 1 << " entries, got " << getFirstExpert().size();
  if (failed(verifyFirstExpert(*this, getFirstExpert())))
    return failure();
  auto counts = getCounts().getType();
  if (counts.getDimSize(0) != 2 || counts.getDimSize(1) != ranks)
    return emitOpError("counts must be tensor<2x")
           << ranks << "xi32> (sent and received per rank), got " << counts;
  return success();
}

/// The counts of an EP op: made by moe.ep_exchange_counts.
static LogicalResult verifyCounts(Operation *op, Value counts) {
  if (!counts.getDefiningOp<EpExchangeCountsOp>())
    return op->emitOpError("counts must come from moe.ep_exchange_counts");
  return success();
}

LogicalResult EpDispatchOp::verify() {
  if (getRows().getType().getDimSize(1) != getInput().getType().getDimSize(1))
    return emitOpError("rows ")
           << getRows().getType() << " must have the input's width "
           << getInput().getType().getDimSize(1);
  if (getWeights().getType().getDimSize(1) !=
      getIndices().getType().getDimSize(1))
    return emitOpError("weights and indices must have the same k");
  return verifyCounts(*this, getCounts());
}

LogicalResult EpExpertsOp::verify() {
  size_t e = getGateWeights().size();
  if (e == 0 || getUpWeights().size() != e || getDownWeights().size() != e)
    return emitOpError("needs one gate, up and down weight per expert, got ")
           << e << ", " << getUpWeights().size() << " and "
           << getDownWeights().size();
  if (failed(verifyFirstExpert(*this, getFirstExpert(), int64_t(e))))
    return failure();
  int64_t h = getRows().getType().getDimSize(1);
  auto gate = cast<RankedTensorType>(getGateWeights().front().getType());
  auto down = cast<RankedTensorType>(getDownWeights().front().getType());
  if (gate.getDimSize(1) != h || down.getDimSize(0) != h ||
      getResult().getType().getDimSize(1) != h)
    return emitOpError("gate weights must be [I, ")
           << h << "] and down weights [" << h << ", I] for rows of width "
           << h;
  for (ValueRange list :
       {ValueRange(getGateWeights()), ValueRange(getUpWeights()),
        ValueRange(getDownWeights())})
    for (Value w : list)
      if (w.getType() != list.front().getType())
        return emitOpError("every expert's weights must have the same type");
  return verifyCounts(*this, getCounts());
}

LogicalResult EpCombineOp::verify() {
  if (failed(verifyFirstExpert(*this, getFirstExpert())))
    return failure();
  if (failed(verifyResidual(*this, getResidual(), getResult())))
    return failure();
  return verifyCounts(*this, getCounts());
}

//===----------------------------------------------------------------------===//
// WeightCostOpInterface
//===----------------------------------------------------------------------===//
//
// Only products with weights count as FLOPs, and expert weights are read
// with the expected share of getExpectedExpertShare, so that moe.experts and
// the grouped GEMMs moe-fuse-expert-gemms makes of it cost the same.
//

/// FLOPs of one row multiplied by the weight `w`: 2·N·K for [N, K].
static double flopsPerRow(Value w) {
  return 2.0 * static_cast<double>(tensorType(w).getNumElements());
}

double EmbeddingOp::getWeightBytesRead(OpOperand &weight, double stepTokens) {
  double bytes = getWeightStorageBytes(weight.get());
  if (&weight != &getTableMutable())
    return bytes;
  // One row a token, and no row twice.
  double rows = static_cast<double>(tensorType(getTable()).getDimSize(0));
  return bytes / rows * std::min(stepTokens, rows);
}

double EmbeddingOp::getFlops(double) { return 0; }

/// Whether `operand` is one of the operands of `range`.
static bool isIn(OpOperand &operand, OperandRange range) {
  unsigned i = operand.getOperandNumber();
  return !range.empty() && i >= range.getBeginOperandIndex() &&
         i < range.getBeginOperandIndex() + range.size();
}

bool EmbeddingOp::isWeightOperand(OpOperand &operand) {
  return &operand == &getTableMutable();
}

QuantizableWeight EmbeddingOp::getQuantizable(OpOperand &operand) {
  return isWeightOperand(operand) ? QuantizableWeight::Dense
                                  : QuantizableWeight::No;
}

QuantizableWeight LinearOp::getQuantizable(OpOperand &operand) {
  // A router's gate stays as it is (moe-fuse-router folds it into
  // moe.fused_router, which takes it unquantised).
  bool routerGate = llvm::any_of(getResult().getUsers(),
                                 [](Operation *u) { return isa<RouterOp>(u); });
  return isWeightOperand(operand) && !routerGate ? QuantizableWeight::Dense
                                                 : QuantizableWeight::No;
}

QuantizableWeight FusedLinearOp::getQuantizable(OpOperand &operand) {
  return isWeightOperand(operand) ? QuantizableWeight::Dense
                                  : QuantizableWeight::No;
}

QuantizableWeight ExpertsOp::getQuantizable(OpOperand &operand) {
  return isWeightOperand(operand) ? QuantizableWeight::Expert
                                  : QuantizableWeight::No;
}

QuantizableWeight GroupedMatmulOp::getQuantizable(OpOperand &operand) {
  return isWeightOperand(operand) ? QuantizableWeight::Expert
                                  : QuantizableWeight::No;
}

bool RMSNormOp::isWeightOperand(OpOperand &operand) {
  return &operand == &getWeightMutable();
}

bool LinearOp::isWeightOperand(OpOperand &operand) {
  return &operand == &getWeightMutable();
}

bool FusedLinearOp::isWeightOperand(OpOperand &operand) {
  return isIn(operand, getWeights());
}

bool FusedRouterOp::isWeightOperand(OpOperand &operand) {
  return &operand == &getGateMutable();
}

bool ExpertsOp::isWeightOperand(OpOperand &operand) {
  return isIn(operand, getGateWeights()) || isIn(operand, getUpWeights()) ||
         isIn(operand, getDownWeights());
}

bool GroupedMatmulOp::isWeightOperand(OpOperand &operand) {
  return isIn(operand, getExpertWeights());
}

double RMSNormOp::getWeightBytesRead(OpOperand &weight, double) {
  return getWeightStorageBytes(weight.get());
}

double RMSNormOp::getFlops(double) { return 0; }

double LinearOp::getWeightBytesRead(OpOperand &weight, double) {
  return getWeightStorageBytes(weight.get());
}

double LinearOp::getFlops(double stepTokens) {
  return flopsPerRow(getWeight()) * stepTokens;
}

double FusedLinearOp::getWeightBytesRead(OpOperand &weight, double) {
  return getWeightStorageBytes(weight.get());
}

double FusedLinearOp::getFlops(double stepTokens) {
  double flops = 0;
  for (Value w : getWeights())
    flops += flopsPerRow(w);
  return flops * stepTokens;
}

double FusedRouterOp::getWeightBytesRead(OpOperand &weight, double) {
  return getWeightStorageBytes(weight.get());
}

double FusedRouterOp::getFlops(double stepTokens) {
  return flopsPerRow(getGate()) * stepTokens;
}

/// Experts chosen per token by an expert bank; the whole bank when the
/// routing width is not static.
static int64_t expertsPerToken(ExpertsOp op) {
  int64_t k = op.getWeights().getType().getDimSize(1);
  return ShapedType::isDynamic(k) ? op.getNumExperts() : k;
}

double ExpertsOp::getWeightBytesRead(OpOperand &weight, double stepTokens) {
  double bytes = getWeightStorageBytes(weight.get());
  // The expert weights are the operands from the first gate weight on.
  if (weight.getOperandNumber() < getGateWeights().getBeginOperandIndex())
    return bytes;
  return bytes * getExpectedExpertShare(expertsPerToken(*this), getNumExperts(),
                                        stepTokens);
}

double ExpertsOp::getFlops(double stepTokens) {
  // gate, up and down of one expert (6·I·H), for k experts a token.
  double perExpert = flopsPerRow(getGateWeights().front()) +
                     flopsPerRow(getUpWeights().front()) +
                     flopsPerRow(getDownWeights().front());
  return perExpert * static_cast<double>(expertsPerToken(*this)) * stepTokens;
}

double GroupedMatmulOp::getWeightBytesRead(OpOperand &weight,
                                           double stepTokens) {
  double bytes = getWeightStorageBytes(weight.get());
  if (weight.getOperandNumber() < getExpertWeights().getBeginOperandIndex())
    return bytes;
  return bytes * getExpectedExpertShare(getK(), getNumExperts(), stepTokens);
}

double GroupedMatmulOp::getFlops(double stepTokens) {
  // Each of the k rows a token is multiplied by its expert's parts, which
  // all experts have in the same shapes.
  double perRow = 0;
  for (Value w : getExpertWeights().take_front(getParts()))
    perRow += flopsPerRow(w);
  return perRow * static_cast<double>(getK()) * stepTokens;
}

QuantizableWeight EpExpertsOp::getQuantizable(OpOperand &operand) {
  return isWeightOperand(operand) ? QuantizableWeight::Expert
                                  : QuantizableWeight::No;
}

bool EpExpertsOp::isWeightOperand(OpOperand &operand) {
  return isIn(operand, getGateWeights()) || isIn(operand, getUpWeights()) ||
         isIn(operand, getDownWeights());
}

/// k of the rows an ep_experts op receives: its counts' indices.
static int64_t epTopK(EpExpertsOp op) {
  return op.getCounts()
      .getDefiningOp<EpExchangeCountsOp>()
      .getIndices()
      .getType()
      .getDimSize(1);
}

// Summed over the ranks, as the computation the ranks share: the same
// figures as the single-process expert bank.
double EpExpertsOp::getWeightBytesRead(OpOperand &weight, double stepTokens) {
  double bytes = getWeightStorageBytes(weight.get());
  if (!isWeightOperand(weight))
    return bytes;
  return bytes * getExpectedExpertShare(epTopK(*this),
                                        int64_t(getGateWeights().size()),
                                        stepTokens);
}

double EpExpertsOp::getFlops(double stepTokens) {
  double perExpert = flopsPerRow(getGateWeights().front()) +
                     flopsPerRow(getUpWeights().front()) +
                     flopsPerRow(getDownWeights().front());
  return perExpert * static_cast<double>(epTopK(*this)) * stepTokens;
}

//===----------------------------------------------------------------------===//
// Buffer sizes for lowering
//===----------------------------------------------------------------------===//

int64_t mlir::moe::getRowsPerToken(Value value) {
  Operation *def = value.getDefiningOp();
  if (auto permute = dyn_cast_or_null<ExpertPermuteOp>(def))
    return value == permute.getPerm()
               ? permute.getIndices().getType().getDimSize(1)
               : 1;
  if (auto gemm = dyn_cast_or_null<GroupedMatmulOp>(def))
    return gemm.getK();
  if (auto silu = dyn_cast_or_null<SiluMulOp>(def))
    return getRowsPerToken(silu.getInput());
  // The rows a rank receives: at most k per batch token.
  if (auto dispatch = dyn_cast_or_null<EpDispatchOp>(def))
    return dispatch.getIndices().getType().getDimSize(1);
  if (auto experts = dyn_cast_or_null<EpExpertsOp>(def))
    return getRowsPerToken(experts.getRows());
  return 1;
}

int64_t mlir::moe::getFloatsPerToken(Value value) {
  auto type = cast<RankedTensorType>(value.getType());
  int64_t width = type.getRank() == 1 ? 1 : type.getDimSize(1);
  if (auto permute = value.getDefiningOp<ExpertPermuteOp>())
    if (value == permute.getOffsets())
      return type.getDimSize(0);
  // The [2, R] counts: a fixed size, planned per token as the offsets are.
  if (value.getDefiningOp<EpExchangeCountsOp>())
    return type.getNumElements();
  // Saturates: a width no buffer can have stays out of every arena.
  return llvm::checkedMul(width, getRowsPerToken(value))
      .value_or(std::numeric_limits<int64_t>::max());
}

int64_t mlir::moe::getNumTensorResults(Operation *op) {
  return llvm::count_if(op->getResultTypes(),
                        [](Type t) { return isa<RankedTensorType>(t); });
}

std::optional<int64_t> mlir::moe::getPlannedOffset(OpResult result) {
  Operation *op = result.getOwner();
  auto placement = op->getAttrOfType<PlacementAttr>(kPlacementAttrName);
  if (!placement || !isa<RankedTensorType>(result.getType()))
    return std::nullopt;
  int64_t i = getNumTensorResults(op) -
              llvm::count_if(
                  op->getResults().drop_front(result.getResultNumber()),
                  [](Value v) { return isa<RankedTensorType>(v.getType()); });
  if (i >= int64_t(placement.getResults().size()))
    return std::nullopt;
  return placement.getResults()[i];
}

#define GET_OP_CLASSES
#include "dialects/MoE/MoEOps.cpp.inc"
