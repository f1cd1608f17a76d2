//===- EmitCpp.h - CPU target: moe IR to a C++ host plan --------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Translates an imported model (a module with the weight manifest and
// func.func @forward) into one C++ file: the weight manifest and KV-cache
// plan as data, and `forward`, a straight-line sequence of calls into the
// kernel templates of runtime/include/moert/kernels.h, instantiated with the
// model's shapes and weight types. Every activation gets a buffer at a fixed
// offset of one scratch arena. The file defines `moert_compiled_program` for
// libmoert's main.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_COMPILER_CPU_EMITCPP_H
#define MOE_COMPILER_CPU_EMITCPP_H

#include "compiler/common/HostPlan.h"

namespace mlir::moe {

/// Writes the C++ translation unit for `module` to `os`. Diagnoses (on the
/// module's context) and fails on anything the CPU target cannot run.
LogicalResult emitCpuProgram(ModuleOp module, const EmitOptions &options,
                             llvm::raw_ostream &os);

} // namespace mlir::moe

#endif // MOE_COMPILER_CPU_EMITCPP_H
