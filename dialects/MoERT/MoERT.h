//===- MoERT.h - the moert launch-plan dialect ------------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// The `moert` dialect: what a target runs, below the moe dialect's memory
// plan (kernel calls and launches over views of one activation arena), and
// the target attributes (`#moert.cpu`, `#moert.cuda`) whose buffer
// interface moe-plan-memory asks for kernel scratch.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECTS_MOERT_MOERT_H
#define MOE_DIALECTS_MOERT_MOERT_H

#include "dialects/MoE/MoEDialect.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/Attributes.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/DialectImplementation.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "dialects/MoERT/MoERTAttrInterfaces.h.inc"
#include "dialects/MoERT/MoERTDialect.h.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/MoERT/MoERTAttrs.h.inc"

#define GET_TYPEDEF_CLASSES
#include "dialects/MoERT/MoERTTypes.h.inc"

#define GET_OP_CLASSES
#include "dialects/MoERT/MoERTOps.h.inc"

namespace mlir::moert {

/// The target attribute named `name` ("cpu" or "cuda"); null for another.
Attribute getTargetAttr(MLIRContext *context, StringRef name);

/// True for a buffer that holds a batch (an activation, scratch or the
/// workspace): a memref whose first dimension is dynamic.
inline bool isBatchBuffer(Type type) {
  auto memref = dyn_cast<MemRefType>(type);
  return memref && memref.getRank() >= 1 && memref.isDynamicDim(0);
}

/// The type of the kernel parameter that takes a value of type `t`: an
/// activation (batch buffer) is any batch of its element type, memref<?xT>;
/// everything else is itself.
Type kernelParamType(Type t);

} // namespace mlir::moert

#endif // MOE_DIALECTS_MOERT_MOERT_H
