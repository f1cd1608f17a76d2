//===- Pipelines.cpp - the pipelines of moe-compile ------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>

using namespace mlir;

void mlir::moe::buildDefaultPipeline(OpPassManager &pm,
                                     const PipelineOptions &options) {
  if (!options.quantize.empty()) {
    QuantizeWeightsOptions quant;
    quant.format = options.quantize;
    quant.only = options.quantizeOnly;
    pm.addPass(createQuantizeWeights(quant));
  }
  OpPassManager &func = pm.nest<func::FuncOp>();
  PlanKVCacheOptions kv;
  kv.maxSeq = options.maxSeq;
  PlanMemoryOptions memory;
  memory.maxBatchTokens = options.maxBatchTokens;
  memory.target = options.target;
  ShardExpertsOptions shard;
  shard.ranks = options.expertParallel;
  ExpertCapacityOptions capacity;
  capacity.factor = options.capacityFactor;
  if (options.optLevel == 0) {
    // -O0: no fusion, and every buffer stands alone in the arena.
    memory.reuse = false;
    if (options.capacityFactor > 0)
      func.addPass(createExpertCapacity(capacity));
    if (options.expertParallel > 0)
      func.addPass(createShardExperts(shard));
  } else {
    func.addPass(createCanonicalizerPass());
    func.addPass(createFuseRouter());
    // Before the expert GEMMs fuse: they rewrite moe.experts.
    if (options.capacityFactor > 0)
      func.addPass(createExpertCapacity(capacity));
    if (options.expertParallel > 0)
      func.addPass(createShardExperts(shard));
    func.addPass(createFuseExpertGemms());
    func.addPass(createFuseProjections());
    if (options.fuseEpilogues)
      func.addPass(createFuseEpilogues());
  }
  func.addPass(createPlanKVCache(kv));
  func.addPass(createPlanMemory(memory));
}

llvm::Error mlir::moe::checkPipelineOptions(const PipelineOptions &options,
                                            llvm::StringRef prefix) {
  auto fail = [](const llvm::Twine &message) {
    return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
  };
  if (options.optLevel != 0 && options.optLevel != 2)
    return fail((prefix == "--" ? "-O" : prefix + "opt-level=") +
                llvm::Twine(options.optLevel.getValue()) +
                " is not a level: use " +
                (prefix == "--" ? "-O0 or -O2" : "opt-level=0 or 2"));
  if (options.target != "cpu" && options.target != "cuda")
    return fail(prefix + "target must be cpu or cuda, got '" +
                options.target.getValue() + "'");
  if (options.maxSeq < 0 || options.maxSeq > kMaxSeqLimit)
    return fail(prefix + "max-seq must be in [0, " + llvm::Twine(kMaxSeqLimit) +
                "] (0: the model's max_position_embeddings), got " +
                llvm::Twine(options.maxSeq.getValue()));
  if (options.maxBatchTokens < 1 ||
      options.maxBatchTokens > kMaxBatchTokensLimit)
    return fail(prefix + "max-batch-tokens must be in [1, " +
                llvm::Twine(kMaxBatchTokensLimit) + "], got " +
                llvm::Twine(options.maxBatchTokens.getValue()));
  if (!options.quantize.empty() && !isQuantFormatName(options.quantize))
    return fail(prefix + "quantize must be q8_0, q4_0 or q4_1, got '" +
                options.quantize.getValue() + "'");
  if (options.expertParallel < 0)
    return fail(prefix + "expert-parallel must be at least 1 (0: off), got " +
                llvm::Twine(options.expertParallel.getValue()));
  if (!std::isfinite(double(options.capacityFactor)) ||
      options.capacityFactor < 0)
    return fail(prefix +
                "capacity-factor must be a finite number above 0 "
                "(0: off), got " +
                llvm::formatv("{0}", double(options.capacityFactor)).str());
  if (options.quantizeOnly != "all" && options.quantizeOnly != "experts")
    return fail(prefix + "quantize-only must be all or experts, got '" +
                options.quantizeOnly.getValue() + "'");
  return llvm::Error::success();
}

void mlir::moe::registerPipelines() {
  // As PassPipelineRegistration does, but values out of range are errors
  // (opt-level=1 silently ran -O2).
  registerPassPipeline(
      "moe-default-pipeline",
      "The moe-compile pipeline: moe-quantize-weights when quantize is "
      "given; then at opt-level=2 canonicalize, "
      "moe-fuse-router, moe-expert-capacity (with capacity-factor), "
      "moe-shard-experts (with expert-parallel), "
      "moe-fuse-expert-gemms, moe-fuse-projections, "
      "moe-fuse-epilogues (unless fuse-epilogues=false), moe-plan-kv-cache, "
      "moe-plan-memory; at opt-level=0 "
      "moe-expert-capacity and moe-shard-experts as at 2, "
      "moe-plan-kv-cache and moe-plan-memory{reuse=false}",
      [](OpPassManager &pm, StringRef text,
         function_ref<LogicalResult(const Twine &)> errorHandler) {
        PipelineOptions options;
        if (failed(options.parseFromString(text)))
          return failure();
        if (llvm::Error e = checkPipelineOptions(options, ""))
          return errorHandler("moe-default-pipeline: " +
                              llvm::toString(std::move(e)));
        buildDefaultPipeline(pm, options);
        return success();
      },
      [](function_ref<void(const detail::PassOptions &)> optHandler) {
        optHandler(PipelineOptions());
      });
}
