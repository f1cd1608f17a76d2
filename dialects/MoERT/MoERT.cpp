//===- MoERT.cpp - the moert launch-plan dialect ----------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoERT/MoERT.h"

#include "mlir/IR/AffineExpr.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace mlir::moert;

#include "dialects/MoERT/MoERTAttrInterfaces.cpp.inc"
#include "dialects/MoERT/MoERTDialect.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/MoERT/MoERTAttrs.cpp.inc"

#define GET_TYPEDEF_CLASSES
#include "dialects/MoERT/MoERTTypes.cpp.inc"

void MoERTDialect::initialize() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "dialects/MoERT/MoERTAttrs.cpp.inc"
      >();
  addTypes<
#define GET_TYPEDEF_LIST
#include "dialects/MoERT/MoERTTypes.cpp.inc"
      >();
  addOperations<
#define GET_OP_LIST
#include "dialects/MoERT/MoERTOps.cpp.inc"
      >();
}

Attribute mlir::moert::getTargetAttr(MLIRContext *context, StringRef name) {
  context->getOrLoadDialect<MoERTDialect>();
  if (name == "cpu")
    return CpuTargetAttr::get(context);
  if (name == "cuda")
    return CudaTargetAttr::get(context);
  return {};
}

Type mlir::moert::kernelParamType(Type t) {
  if (isBatchBuffer(t))
    return MemRefType::get({ShapedType::kDynamic},
                           cast<MemRefType>(t).getElementType());
  return t;
}

LogicalResult MoERTDialect::verifyRegionArgAttribute(Operation *op,
                                                     unsigned region,
                                                     unsigned index,
                                                     NamedAttribute attr) {
  if (attr.getName() == kArgAttrName) {
    auto role = dyn_cast<StringAttr>(attr.getValue());
    if (!role ||
        !llvm::is_contained({"tokens", "positions", "logits"}, role.getValue()))
      return op->emitError() << "argument " << index << ": " << kArgAttrName
                             << " must be \"tokens\", \"positions\" or "
                                "\"logits\"";
    return success();
  }
  if (attr.getName() == kKvLayerAttrName ||
      attr.getName() == kKvWindowAttrName) {
    auto layer = dyn_cast<IntegerAttr>(attr.getValue());
    if (!layer || !layer.getType().isSignlessInteger(64) || layer.getInt() < 0)
      return op->emitError()
             << "argument " << index << ": " << attr.getName().getValue()
             << " must be a non-negative i64";
    return success();
  }
  return op->emitError() << "unknown argument attribute " << attr.getName();
}

//===----------------------------------------------------------------------===//
// Types
//===----------------------------------------------------------------------===//

LogicalResult TableType::verify(function_ref<InFlightDiagnostic()> emitError,
                                int64_t size, Type elementType, bool output) {
  if (size < 1 || size > 4096)
    return emitError() << "a table holds 1 to 4096 pointers, not " << size;
  if (!isa<NoneType, FloatType, moe::QuantType>(elementType))
    return emitError() << "a table's element type is a float type, a "
                          "quantised weight element or none";
  if (output && !elementType.isF32())
    return emitError() << "an output table holds f32 buffers";
  return success();
}

//===----------------------------------------------------------------------===//
// Ops
//===----------------------------------------------------------------------===//

LogicalResult ViewOp::verify() {
  auto type = cast<MemRefType>(getType());
  Type element = type.getElementType();
  if (!isBatchBuffer(type) || type.getRank() > 2 ||
      !type.getLayout().isIdentity())
    return emitOpError("views a batch: a memref of rank 1 or 2 with a "
                       "dynamic first dimension");
  if (!element.isF32() && !element.isSignlessInteger(32))
    return emitOpError("views f32 or i32 elements, not ") << element;
  int64_t width = type.getRank() == 2 ? type.getDimSize(1) : 1;
  if (ShapedType::isDynamic(width) || width < 1)
    return emitOpError("rows of a static, positive width");
  if (int64_t(getSize()) < width || int64_t(getSize()) % width)
    return emitOpError("size ")
           << getSize() << " is not whole rows of " << width << " elements";
  return success();
}

LogicalResult WeightOp::verify() {
  auto type = cast<MemRefType>(getType());
  if (!type.hasStaticShape() || type.getRank() < 1 || type.getRank() > 2)
    return emitOpError("a weight has a static shape of rank 1 or 2");
  return success();
}

LogicalResult TableOp::verify() {
  TableType type = getType();
  if (int64_t(getEntries().size()) != type.getSize())
    return emitOpError("has ") << getEntries().size()
                               << " entries for a table of " << type.getSize();
  for (Value entry : getEntries()) {
    auto memref = cast<MemRefType>(entry.getType());
    bool isNull = entry.getDefiningOp<NullOp>() != nullptr;
    if (!isNull &&
        (type.getOutput() ? !isBatchBuffer(memref) : isBatchBuffer(memref)))
      return emitOpError("entries of ")
             << (type.getOutput() ? "an output table are activations"
                                  : "a weight table are weights");
    if (!isNull && !isa<NoneType>(type.getElementType()) &&
        memref.getElementType() != type.getElementType())
      return emitOpError("entry of ")
             << memref.getElementType() << " in a table of "
             << type.getElementType();
  }
  return success();
}

static LogicalResult verifyTemplateArgs(Operation *op, ArrayAttr args) {
  for (Attribute a : args) {
    if (isa<TypeAttr, BoolAttr>(a))
      continue;
    auto i = dyn_cast<IntegerAttr>(a);
    if (!i)
      return op->emitOpError("template arguments are types, integers or "
                             "booleans, not ")
             << a;
    // Sizes and counts: non-negative, and what an int64 holds.
    if (!i.getType().isSignlessInteger(64) || i.getInt() < 0)
      return op->emitOpError("integer template arguments are non-negative "
                             "i64, not ")
             << a;
  }
  return success();
}

LogicalResult CallOp::verify() {
  return verifyTemplateArgs(*this, getTemplateArgs());
}

LogicalResult KernelOp::verify() {
  if (getFunctionType().getNumResults())
    return emitOpError("a kernel returns nothing");
  return verifyTemplateArgs(*this, getTemplateArgs());
}

LogicalResult LaunchOp::verify() {
  if (getGrid().size() != 2)
    return emitOpError("has a grid of two dimensions (x, y)");
  for (Attribute a : getGrid()) {
    AffineMap map = cast<AffineMapAttr>(a).getValue();
    if (map.getNumDims() != 1 || map.getNumSymbols() || !map.getNumResults())
      return emitOpError("grid dimensions are maps of the token count: (n) "
                         "-> (...), not ")
             << a;
    // Small expressions of the token count whose divisors are positive and
    // constants in [0, 2^31): every grid the printer prints evaluates
    // without dividing by zero, and the printer's recursion is bounded.
    int64_t nodes = 0;
    bool bad = false;
    for (AffineExpr r : map.getResults())
      r.walk([&](AffineExpr e) {
        ++nodes;
        if (auto c = dyn_cast<AffineConstantExpr>(e))
          bad |= c.getValue() < 0 || c.getValue() >= (int64_t(1) << 31);
        if (e.getKind() == AffineExprKind::FloorDiv ||
            e.getKind() == AffineExprKind::CeilDiv ||
            e.getKind() == AffineExprKind::Mod) {
          auto rhs = dyn_cast<AffineConstantExpr>(
              cast<AffineBinaryOpExpr>(e).getRHS());
          bad |= !rhs || rhs.getValue() < 1;
        }
      });
    if (nodes > 64 || map.getNumResults() > 4 || bad)
      return emitOpError("grid dimensions are at most 4 expressions of at "
                         "most 64 terms, constants in [0, 2^31) and positive "
                         "divisors, not ")
             << a;
  }
  return success();
}

LogicalResult LaunchOp::verifySymbolUses(SymbolTableCollection &symbolTable) {
  auto kernel =
      symbolTable.lookupNearestSymbolFrom<KernelOp>(*this, getKernelAttr());
  if (!kernel)
    return emitOpError("launches '")
           << getKernel() << "', which is not a moert.kernel";
  if (!llvm::equal(kernel.getFunctionType().getInputs(),
                   llvm::map_range(getArgs().getTypes(), kernelParamType)))
    return emitOpError("passes (")
           << getArgs().getTypes() << ") to a kernel of "
           << kernel.getFunctionType();
  return success();
}

#define GET_OP_CLASSES
#include "dialects/MoERT/MoERTOps.cpp.inc"
