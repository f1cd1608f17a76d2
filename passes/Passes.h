//===- Passes.h - moe dialect passes ----------------------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_PASSES_PASSES_H
#define MOE_PASSES_PASSES_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassOptions.h"

namespace mlir {
class OpPassManager;
} // namespace mlir

namespace mlir::moe {

#define GEN_PASS_DECL
#include "passes/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "passes/Passes.h.inc"

/// Options of the default pipeline (moe-compile -O0/-O2, and
/// `moe-opt --moe-default-pipeline`).
struct PipelineOptions : public PassPipelineOptions<PipelineOptions> {
  Option<int> optLevel{*this, "opt-level",
                       llvm::cl::desc("0: no fusion or buffer reuse; "
                                      "2: everything (default)"),
                       llvm::cl::init(2)};
  Option<int64_t> maxSeq{*this, "max-seq",
                         llvm::cl::desc("Longest sequence (0: the model's "
                                        "max_position_embeddings)"),
                         llvm::cl::init(0)};
  Option<int64_t> maxBatchTokens{
      *this, "max-batch-tokens",
      llvm::cl::desc("Most tokens per forward call, for the memory plan"),
      llvm::cl::init(512)};
  Option<bool> fuseEpilogues{
      *this, "fuse-epilogues",
      llvm::cl::desc("At opt-level 2, run moe-fuse-epilogues (default "
                     "true; false measures what it gains)"),
      llvm::cl::init(true)};
};

void buildDefaultPipeline(OpPassManager &pm, const PipelineOptions &options);

/// Registers `moe-default-pipeline`.
void registerPipelines();

} // namespace mlir::moe

#endif // MOE_PASSES_PASSES_H
