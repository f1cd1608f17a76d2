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
#include "llvm/Support/Error.h"

namespace mlir {
class OpPassManager;
} // namespace mlir

namespace mlir::moe {

#define GEN_PASS_DECL
#include "passes/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "passes/Passes.h.inc"

/// Whether `name` is a quantisation format (q8_0, q4_0, q4_1).
bool isQuantFormatName(llvm::StringRef name);

/// moe-shard-experts's split of `experts` over `ranks`: [ranks + 1] first
/// experts, the first `experts % ranks` ranks holding one more.
inline llvm::SmallVector<int64_t> splitExperts(int64_t experts, int64_t ranks) {
  llvm::SmallVector<int64_t> first = {0};
  for (int64_t r = 0; r < ranks; ++r)
    first.push_back(first.back() + experts / ranks + (r < experts % ranks));
  return first;
}

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
  Option<std::string> target{
      *this, "target",
      llvm::cl::desc("The target whose kernels' scratch moe-plan-memory "
                     "plans: cpu (default) or cuda"),
      llvm::cl::init("cpu")};
  Option<bool> fuseEpilogues{
      *this, "fuse-epilogues",
      llvm::cl::desc("At opt-level 2, run moe-fuse-epilogues (default "
                     "true; false measures what it gains)"),
      llvm::cl::init(true)};
  Option<std::string> quantize{
      *this, "quantize",
      llvm::cl::desc("Run moe-quantize-weights first with this format "
                     "(q8_0, q4_0, q4_1); empty (default): keep the "
                     "weights' own types"),
      llvm::cl::init("")};
  Option<std::string> quantizeOnly{
      *this, "quantize-only",
      llvm::cl::desc("With quantize: all (default) or experts"),
      llvm::cl::init("all")};
  Option<int64_t> expertParallel{
      *this, "expert-parallel",
      llvm::cl::desc("Split the experts across this many ranks with "
                     "moe-shard-experts (0, default: one process)"),
      llvm::cl::init(0)};
  Option<double> capacityFactor{
      *this, "capacity-factor",
      llvm::cl::desc("Run moe-expert-capacity with this factor: each "
                     "expert takes at most ceil(C * tokens * k / experts) "
                     "routed pairs per call, the rest are dropped (0, "
                     "default: off, exact)"),
      llvm::cl::init(0.0)};
};

/// Bounds of the pipeline's sizes: positions are int32 at run time, and a
/// binary runs at most 2^20 tokens per forward call.
constexpr int64_t kMaxSeqLimit = 2147483647;
constexpr int64_t kMaxBatchTokensLimit = int64_t(1) << 20;

/// Checks the options' values (a level that exists, sizes in bounds); the
/// error says which option is wrong and what it accepts. `prefix` is how
/// the options are spelled in the message ("--" for moe-compile's flags,
/// "" for the pipeline's own option names).
llvm::Error checkPipelineOptions(const PipelineOptions &options,
                                 llvm::StringRef prefix);

void buildDefaultPipeline(OpPassManager &pm, const PipelineOptions &options);

/// Registers `moe-default-pipeline`.
void registerPipelines();

} // namespace mlir::moe

#endif // MOE_PASSES_PASSES_H
