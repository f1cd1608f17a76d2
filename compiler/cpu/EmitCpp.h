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

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Support/LLVM.h"
#include "llvm/Support/raw_ostream.h"

namespace mlir::moe {

struct CpuEmitOptions {
  /// Longest sequence a session may reach; 0 = the model's
  /// max_position_embeddings.
  int64_t maxPositions = 0;
  /// Name shown by the binary's --help.
  std::string modelName = "model";
};

/// Writes the C++ translation unit for `module` to `os`. Diagnoses (on the
/// module's context) and fails on anything the CPU target cannot run.
LogicalResult emitCpuProgram(ModuleOp module, const CpuEmitOptions &options,
                             llvm::raw_ostream &os);

} // namespace mlir::moe

#endif // MOE_COMPILER_CPU_EMITCPP_H
