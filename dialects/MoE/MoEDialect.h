//===- MoEDialect.h - moe dialect -------------------------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// The `moe` dialect: Mixture-of-Experts models with first-class router and
// expert ops. Include this header for the dialect, its types and enums;
// include MoEOps.h for the operations.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECTS_MOE_MOEDIALECT_H
#define MOE_DIALECTS_MOE_MOEDIALECT_H

#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/DialectImplementation.h"

#include "dialects/MoE/MoEDialect.h.inc"
#include "dialects/MoE/MoEEnums.h.inc"

#define GET_TYPEDEF_CLASSES
#include "dialects/MoE/MoETypes.h.inc"

#endif // MOE_DIALECTS_MOE_MOEDIALECT_H
