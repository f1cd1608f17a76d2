//===- MoEDialect.cpp - moe dialect and types -------------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/MoEDialect.h"
#include "dialects/MoE/MoEOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace mlir::moe;

#include "dialects/MoE/MoEDialect.cpp.inc"
#include "dialects/MoE/MoEEnums.cpp.inc"

#define GET_TYPEDEF_CLASSES
#include "dialects/MoE/MoETypes.cpp.inc"

void MoEDialect::initialize() {
  registerTypes();
  addOperations<
#define GET_OP_LIST
#include "dialects/MoE/MoEOps.cpp.inc"
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
