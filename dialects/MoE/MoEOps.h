//===- MoEOps.h - moe dialect operations ------------------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECTS_MOE_MOEOPS_H
#define MOE_DIALECTS_MOE_MOEOPS_H

#include "dialects/MoE/MoEDialect.h"
#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#define GET_OP_CLASSES
#include "dialects/MoE/MoEOps.h.inc"

#endif // MOE_DIALECTS_MOE_MOEOPS_H
