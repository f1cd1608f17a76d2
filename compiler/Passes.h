//===- Passes.h - lowerings to the targets' launch plans --------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_COMPILER_PASSES_H
#define MOE_COMPILER_PASSES_H

#include "dialects/MoERT/MoERT.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Pass/Pass.h"

namespace mlir::moe {

#define GEN_PASS_DECL
#include "compiler/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "compiler/Passes.h.inc"

/// The targets' models of moert::TargetBufferAttrInterface (what each
/// target's kernels need as scratch), for moe-plan-memory{target=...}.
void registerCpuTargetModels(DialectRegistry &registry);
void registerCudaTargetModels(DialectRegistry &registry);
inline void registerTargetModels(DialectRegistry &registry) {
  registerCpuTargetModels(registry);
  registerCudaTargetModels(registry);
}

/// moe-translate's translations: --moe-to-cpp, --moe-to-cuda and
/// --moe-to-cuda-host.
void registerTargetTranslations();

} // namespace mlir::moe

#endif // MOE_COMPILER_PASSES_H
