//===- MoEDialect.cpp - moe dialect, attributes and types -------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/MoEDialect.h"
#include "dialects/MoE/MoEOps.h"
#include "llvm/Support/CheckedArithmetic.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cmath>

using namespace mlir;
using namespace mlir::moe;

#include "dialects/MoE/MoEDialect.cpp.inc"
#include "dialects/MoE/MoEEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/MoE/MoEAttrs.cpp.inc"

#define GET_TYPEDEF_CLASSES
#include "dialects/MoE/MoETypes.cpp.inc"

void MoEDialect::initialize() {
  registerAttributes();
  registerTypes();
  addOperations<
#define GET_OP_LIST
#include "dialects/MoE/MoEOps.cpp.inc"
      >();
}

void MoEDialect::registerAttributes() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "dialects/MoE/MoEAttrs.cpp.inc"
      >();
}

void MoEDialect::registerTypes() {
  addTypes<
#define GET_TYPEDEF_LIST
#include "dialects/MoE/MoETypes.cpp.inc"
      >();
}

//===----------------------------------------------------------------------===//
// KVCacheType
//===----------------------------------------------------------------------===//

// Syntax: `<` kv_heads `x` (capacity | `?`) `x` head_dim `x` element-type `>`.
Type KVCacheType::parse(AsmParser &parser) {
  SmallVector<int64_t, 3> dims;
  Type elementType;
  SMLoc loc = parser.getCurrentLocation();
  if (parser.parseLess() ||
      parser.parseDimensionList(dims, /*allowDynamic=*/true,
                                /*withTrailingX=*/true) ||
      parser.parseType(elementType) || parser.parseGreater())
    return {};
  if (dims.size() != 3) {
    parser.emitError(loc, "expected kv_heads x capacity x head_dim x "
                          "element-type, got ")
        << dims.size() << " dimension(s)";
    return {};
  }
  return getChecked([&] { return parser.emitError(loc); }, parser.getContext(),
                    dims[0], dims[1], dims[2], elementType);
}

void KVCacheType::print(AsmPrinter &printer) const {
  printer << '<' << getNumKvHeads() << 'x';
  if (hasStaticCapacity())
    printer << getCapacity();
  else
    printer << '?';
  printer << 'x' << getHeadDim() << 'x' << getElementType() << '>';
}

LogicalResult KVCacheType::verify(function_ref<InFlightDiagnostic()> emitError,
                                  int64_t numKvHeads, int64_t capacity,
                                  int64_t headDim, Type elementType) {
  if (numKvHeads <= 0)
    return emitError() << "kv_cache kv_heads must be positive, got "
                       << numKvHeads;
  if (headDim <= 0)
    return emitError() << "kv_cache head_dim must be positive, got " << headDim;
  if (!ShapedType::isDynamic(capacity) && capacity <= 0)
    return emitError() << "kv_cache capacity must be positive or '?', got "
                       << capacity;
  if (numKvHeads > kMaxCacheWidth || headDim > kMaxCacheWidth ||
      numKvHeads * headDim > kMaxCacheWidth)
    return emitError() << "kv_cache kv_heads * head_dim must be at most "
                       << kMaxCacheWidth << ", got " << numKvHeads << " x "
                       << headDim;
  if (!ShapedType::isDynamic(capacity) && capacity > kMaxCacheCapacity)
    return emitError() << "kv_cache capacity must be at most "
                       << kMaxCacheCapacity << ", got " << capacity;
  if (!elementType.isF32() && !elementType.isF16() && !elementType.isBF16())
    return emitError() << "kv_cache element type must be f32, f16 or bf16, "
                          "got "
                       << elementType;
  return success();
}

std::optional<int64_t> KVCacheType::getSizeInBytes() const {
  if (!hasStaticCapacity())
    return std::nullopt;
  int64_t elementBytes = getElementType().getIntOrFloatBitWidth() / 8;
  return 2 * getNumKvHeads() * getCapacity() * getHeadDim() * elementBytes;
}

//===----------------------------------------------------------------------===//
// QuantType
//===----------------------------------------------------------------------===//

int64_t QuantType::getBlockBytes() const {
  // As runtime/include/moert/quant.h lays the blocks out.
  switch (getFormat()) {
  case QuantFormat::Q8_0:
    return 34;
  case QuantFormat::Q4_0:
    return 18;
  case QuantFormat::Q4_1:
    return 20;
  case QuantFormat::Q4_K:
    return 144;
  case QuantFormat::Q5_K:
    return 176;
  case QuantFormat::Q6_K:
    return 210;
  }
  llvm_unreachable("unknown quantisation format");
}

int64_t QuantType::getBlockSize() const {
  switch (getFormat()) {
  case QuantFormat::Q8_0:
  case QuantFormat::Q4_0:
  case QuantFormat::Q4_1:
    return 32;
  case QuantFormat::Q4_K:
  case QuantFormat::Q5_K:
  case QuantFormat::Q6_K:
    return 256;
  }
  llvm_unreachable("unknown quantisation format");
}

int64_t mlir::moe::getStorageBytes(ShapedType type) {
  if (auto quant = dyn_cast<QuantType>(type.getElementType()))
    return quant.getStorageBytes(type.getNumElements());
  return type.getNumElements() * type.getElementTypeBitWidth() / 8;
}

//===----------------------------------------------------------------------===//
// ModelAttr
//===----------------------------------------------------------------------===//

LogicalResult RopeScalingAttr::verify(
    function_ref<InFlightDiagnostic()> emitError, RopeType type,
    APFloat factorValue, int64_t maxPositions, int64_t originalMaxPositions,
    APFloat betaFastValue, APFloat betaSlowValue, APFloat attentionValue,
    bool truncate, APFloat lowFreqFactorValue, APFloat highFreqFactorValue) {
  double factor = factorValue.convertToDouble(),
         betaFast = betaFastValue.convertToDouble(),
         betaSlow = betaSlowValue.convertToDouble(),
         attention = attentionValue.convertToDouble(),
         lowFreqFactor = lowFreqFactorValue.convertToDouble(),
         highFreqFactor = highFreqFactorValue.convertToDouble();
  StringRef name = stringifyRopeType(type);
  auto fail = [&]() -> InFlightDiagnostic {
    return emitError() << "#moe.rope_scaling<" << name << "> ";
  };
  if (!(factor > 0) || !std::isfinite(factor))
    return fail() << "factor must be positive and finite, got " << factor;
  bool dynamic = type == RopeType::Dynamic, yarn = type == RopeType::Yarn,
       llama3 = type == RopeType::Llama3;
  // All but dynamic divide frequencies by the factor: the angles at every
  // position an int32 can name must stay finite (the cosine of an infinite
  // angle is NaN).
  if (!dynamic && !std::isfinite(double(kMaxCacheCapacity) / factor))
    return fail() << "factor is so small that the angles overflow, got "
                  << factor;
  // Every parameter belongs to some types: none of another type's.
  struct Field {
    const char *name;
    bool given, used;
  };
  for (Field f :
       {Field{"max_positions", maxPositions != 0, dynamic},
        {"original_max_positions", originalMaxPositions != 0, yarn || llama3},
        {"beta_fast", betaFast != 0, yarn},
        {"beta_slow", betaSlow != 0, yarn},
        {"attention", attention != 0, yarn},
        {"truncate", truncate, yarn},
        {"low_freq_factor", lowFreqFactor != 0, llama3},
        {"high_freq_factor", highFreqFactor != 0, llama3}})
    if (f.given && !f.used)
      return fail() << "takes no " << f.name;
  auto positions = [&](StringRef what, int64_t v) -> LogicalResult {
    if (v < 1 || v > kMaxCacheCapacity)
      return fail() << what << " must be an integer in [1, "
                    << kMaxCacheCapacity << "], got " << v;
    return success();
  };
  if (dynamic && failed(positions("max_positions", maxPositions)))
    return failure();
  if ((yarn || llama3) &&
      failed(positions("original_max_positions", originalMaxPositions)))
    return failure();
  if (yarn) {
    if (!(betaSlow > 0) || !(betaFast >= betaSlow) || !std::isfinite(betaFast))
      return fail() << "needs beta_fast >= beta_slow > 0 (finite), got "
                    << betaFast << " and " << betaSlow;
    if (!(attention > 0) || !std::isfinite(attention))
      return fail() << "attention must be positive and finite, got "
                    << attention;
  }
  if (llama3 && (!(lowFreqFactor > 0) || !(highFreqFactor > lowFreqFactor) ||
                 !std::isfinite(highFreqFactor)))
    return fail() << "needs 0 < low_freq_factor < high_freq_factor (finite), "
                     "got "
                  << lowFreqFactor << " and " << highFreqFactor;
  return success();
}

LogicalResult ModelAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                StringRef architecture, int64_t vocabSize,
                                int64_t hiddenSize, int64_t intermediateSize,
                                int64_t numLayers, int64_t numHeads,
                                int64_t numKvHeads, int64_t headDim,
                                int64_t numExperts, int64_t topK,
                                int64_t maxPositions) {
  if (architecture.empty())
    return emitError() << "#moe.model architecture must not be empty";
  // The targets size buffers from these: bound them as the op verifiers
  // bound shapes (positions are int32 at run time).
  struct Field {
    const char *name;
    int64_t value, bound;
  };
  for (Field f : {Field{"vocab_size", vocabSize, kMaxWeightDim},
                  {"hidden_size", hiddenSize, kMaxWeightDim},
                  {"intermediate_size", intermediateSize, kMaxWeightDim},
                  {"num_layers", numLayers, kMaxWeightDim},
                  {"num_heads", numHeads, kMaxWeightDim},
                  {"num_kv_heads", numKvHeads, kMaxWeightDim},
                  {"head_dim", headDim, kMaxWeightDim},
                  {"num_experts", numExperts, kMaxWeightDim},
                  {"top_k", topK, kMaxWeightDim},
                  {"max_positions", maxPositions, kMaxCacheCapacity}})
    if (f.value < 1 || f.value > f.bound)
      return emitError() << "#moe.model " << f.name
                         << " must be an integer in [1, " << f.bound
                         << "], got " << f.value;
  if (numHeads % numKvHeads != 0)
    return emitError() << "#moe.model num_heads (" << numHeads
                       << ") must be a multiple of num_kv_heads (" << numKvHeads
                       << ")";
  if (topK > numExperts)
    return emitError() << "#moe.model top_k (" << topK
                       << ") exceeds num_experts (" << numExperts << ")";
  return success();
}

LogicalResult
PlacementAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                      DenseI64ArrayAttr results,
                      std::optional<int64_t> scratch) {
  auto inArena = [](int64_t offset) {
    return offset >= 0 && offset <= kMaxArenaFloatsPerToken;
  };
  if (!results || !llvm::all_of(results.asArrayRef(), inArena) ||
      (scratch && !inArena(*scratch)))
    return emitError() << "#moe.placement offsets are in [0, "
                       << kMaxArenaFloatsPerToken << "]";
  return success();
}

LogicalResult
MemoryPlanAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                       Attribute target, int64_t maxBatchTokens,
                       int64_t floatsPerToken, int64_t arenaBytes,
                       int64_t lowerBoundBytes, int64_t naiveBytes) {
  if (!target)
    return emitError() << "#moe.memory_plan needs a target";
  if (maxBatchTokens < 1 || maxBatchTokens > (int64_t(1) << 20))
    return emitError() << "#moe.memory_plan max_batch_tokens is in [1, 2^20]";
  if (floatsPerToken < 0 || floatsPerToken > kMaxArenaFloatsPerToken ||
      arenaBytes < 0 || lowerBoundBytes < 0 || naiveBytes < 0)
    return emitError() << "#moe.memory_plan sizes are non-negative, and the "
                          "arena at most 2^36 floats per token";
  return success();
}

LogicalResult
KVCachePlanAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                        int64_t maxSeq, int64_t totalBytes,
                        DenseI64ArrayAttr capacities, DenseI64ArrayAttr windows,
                        DenseI64ArrayAttr bytes) {
  if (maxSeq < 1 || maxSeq > kMaxCacheCapacity)
    return emitError() << "#moe.kv_cache_plan max_seq is in [1, "
                       << kMaxCacheCapacity << "]";
  if (!capacities || !windows || !bytes ||
      capacities.size() != windows.size() || bytes.size() != windows.size())
    return emitError() << "#moe.kv_cache_plan has one capacity, window and "
                          "byte count per layer";
  int64_t sum = 0;
  for (size_t l = 0; l < bytes.size(); ++l) {
    if (capacities[l] < 1 || capacities[l] > kMaxCacheCapacity ||
        windows[l] < 0 || bytes[l] < 0)
      return emitError() << "#moe.kv_cache_plan layer " << l
                         << ": capacity in [1, " << kMaxCacheCapacity
                         << "], window and bytes non-negative";
    std::optional<int64_t> next = llvm::checkedAdd(sum, bytes[l]);
    if (!next)
      return emitError() << "#moe.kv_cache_plan bytes overflow";
    sum = *next;
  }
  if (sum != totalBytes)
    return emitError() << "#moe.kv_cache_plan total_bytes " << totalBytes
                       << " is not the layers' sum " << sum;
  return success();
}

ModelAttr mlir::moe::getModel(ModuleOp module) {
  return module->getAttrOfType<ModelAttr>(kModelAttrName);
}

//===----------------------------------------------------------------------===//
// Module attributes: the model and the weight manifest
//===----------------------------------------------------------------------===//

/// `moe.model` describes the model on a module; its fields are checked by
/// ModelAttr::verify when it is built or parsed.
/// `moe.placement` on an op: a #moe.placement with one offset per tensor
/// result (or none, for an op whose only tensor result is the logits).
static LogicalResult verifyPlacementAttr(Operation *op, Attribute attr) {
  auto placement = dyn_cast<PlacementAttr>(attr);
  if (!placement)
    return op->emitError("'moe.placement' must be a #moe.placement, got ")
           << attr;
  int64_t tensors = getNumTensorResults(op);
  int64_t offsets = placement.getResults().size();
  if (offsets != tensors && !(offsets == 0 && tensors == 1))
    return op->emitError("'moe.placement' has ")
           << offsets << " offsets for " << tensors << " tensor results";
  return success();
}

static LogicalResult verifyModelAttr(Operation *op, Attribute attr) {
  if (!isa<ModuleOp>(op))
    return op->emitError("'moe.model' belongs on a builtin.module");
  if (!isa<ModelAttr>(attr))
    return op->emitError("'moe.model' must be a #moe.model attribute, got ")
           << attr;
  return success();
}

/// `moe.weight_dir` marks a module whose weights come from files: it must be
/// an absolute directory on a module, every weight may have only one
/// source, no two sources may share bytes of a file, and every `moe.weight`
/// must have a source of its type.
LogicalResult MoEDialect::verifyOperationAttribute(Operation *op,
                                                   NamedAttribute attr) {
  if (attr.getName() == kModelAttrName)
    return verifyModelAttr(op, attr.getValue());
  if (attr.getName() == kPlacementAttrName)
    return verifyPlacementAttr(op, attr.getValue());
  if (attr.getName() == kKVCachePlanAttrName &&
      !isa<KVCachePlanAttr>(attr.getValue()))
    return op->emitError("'moe.kv_cache_plan' must be a #moe.kv_cache_plan, "
                         "got ")
           << attr.getValue();
  if (attr.getName() == kMemoryPlanAttrName &&
      !isa<MemoryPlanAttr>(attr.getValue()))
    return op->emitError("'moe.memory_plan' must be a #moe.memory_plan, got ")
           << attr.getValue();
  if (attr.getName() != "moe.weight_dir")
    return success();
  if (!isa<ModuleOp>(op))
    return op->emitError("'moe.weight_dir' belongs on a builtin.module");
  auto dir = dyn_cast<StringAttr>(attr.getValue());
  if (!dir)
    return op->emitError("'moe.weight_dir' must be a string, got ")
           << attr.getValue();
  if (!dir.getValue().starts_with("/") || dir.getValue().contains('\0'))
    return op->emitError("'moe.weight_dir' must be an absolute path, got ")
           << dir;

  llvm::StringMap<WeightSourceOp> sources;
  llvm::StringMap<SmallVector<WeightSourceOp>> byFile;
  for (auto source : cast<ModuleOp>(op).getOps<WeightSourceOp>()) {
    auto [it, inserted] = sources.try_emplace(source.getName(), source);
    if (!inserted)
      return source.emitOpError("duplicate source for weight '")
                 .append(source.getName(), "'")
                 .attachNote(it->second.getLoc())
             << "first source here";
    // Sizes are computed only for types the op verifier (which runs after
    // this) will accept: others could overflow.
    auto type = cast<RankedTensorType>(source.getType());
    // A source with a layout may share its bytes with another (an expert's
    // gate and up rows interleaved, a table used as it is and transposed):
    // it is read once at compile time, never mapped, and left out of the
    // overlap check.
    if (!source.hasLayout() && type.getRank() <= 2 &&
        llvm::all_of(type.getShape(),
                     [](int64_t d) { return d > 0 && d <= kMaxWeightDim; }))
      // Keyed by (artifact, file): the weights file beside the executable
      // and a model file of the same name are different files.
      byFile[(source.getArtifact() ? "1" : "0") + source.getFile().str()]
          .push_back(source);
  }
  for (auto &entry : byFile) {
    SmallVector<WeightSourceOp> &list = entry.second;
    llvm::sort(list, [](WeightSourceOp a, WeightSourceOp b) {
      return std::make_pair(a.getOffset(), a.getName()) <
             std::make_pair(b.getOffset(), b.getName());
    });
    for (size_t i = 1; i < list.size(); ++i) {
      WeightSourceOp prev = list[i - 1], next = list[i];
      // Offsets are at most 2^63 - 1 and sizes at most 2^50: no wrap in
      // unsigned arithmetic.
      if (uint64_t(next.getOffset()) <
          prev.getOffset() + uint64_t(prev.getSizeInBytes()))
        return next.emitOpError("weight '")
               << next.getName() << "' at bytes [" << next.getOffset() << ", "
               << next.getOffset() + next.getSizeInBytes()
               << ") overlaps weight '" << prev.getName() << "' at ["
               << prev.getOffset() << ", "
               << prev.getOffset() + prev.getSizeInBytes() << ") of "
               << next.getFile();
    }
  }
  WalkResult result = op->walk([&](WeightOp weight) {
    auto it = sources.find(weight.getName());
    if (it == sources.end()) {
      weight.emitOpError("weight '")
          << weight.getName() << "' has no moe.weight_source in the module";
      return WalkResult::interrupt();
    }
    if (it->second.getWeightType() != weight.getResult().getType()) {
      weight.emitOpError("type ") << weight.getResult().getType()
                                  << " differs from its moe.weight_source type "
                                  << it->second.getWeightType();
      return WalkResult::interrupt();
    }
    return WalkResult::advance();
  });
  return failure(result.wasInterrupted());
}
