//===- Pipelines.cpp - the pipelines of moe-compile ------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;

void mlir::moe::buildDefaultPipeline(OpPassManager &pm,
                                     const PipelineOptions &options) {
  OpPassManager &func = pm.nest<func::FuncOp>();
  PlanKVCacheOptions kv;
  kv.maxSeq = options.maxSeq;
  PlanMemoryOptions memory;
  memory.maxBatchTokens = options.maxBatchTokens;
  if (options.optLevel == 0) {
    // -O0: no fusion, and every buffer stands alone in the arena.
    memory.reuse = false;
  } else {
    func.addPass(createCanonicalizerPass());
    func.addPass(createFuseRouter());
    func.addPass(createFuseExpertGemms());
    func.addPass(createFuseProjections());
    if (options.fuseEpilogues)
      func.addPass(createFuseEpilogues());
  }
  func.addPass(createPlanKVCache(kv));
  func.addPass(createPlanMemory(memory));
}

void mlir::moe::registerPipelines() {
  PassPipelineRegistration<PipelineOptions>(
      "moe-default-pipeline",
      "The moe-compile pipeline: at opt-level=2 canonicalize, "
      "moe-fuse-router, moe-fuse-expert-gemms, moe-fuse-projections, "
      "moe-fuse-epilogues (unless fuse-epilogues=false), moe-plan-kv-cache, "
      "moe-plan-memory; at opt-level=0 "
      "moe-plan-kv-cache and moe-plan-memory{reuse=false}",
      buildDefaultPipeline);
}
