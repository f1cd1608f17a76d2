//===- EstimateCostTest.cpp - moe-estimate-cost arithmetic ------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Runs moe-estimate-cost on one MoE block with awkward sizes and checks its
// figures against the formulas written out independently here, before and
// after the fusions (which turn the expert bank into grouped GEMMs).
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/MoEOps.h"
#include "passes/Passes.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace mlir;

namespace {

// H = 24, I = 40, E = 6, k = 2, vocab 100; bf16 experts, f16 table, f32 rest.
const char *kBlock = R"mlir(
  func.func @block(%ids: tensor<?xi32>) -> tensor<?x100xf32> {
    %table = moe.weight "embed" : tensor<100x24xf16>
    %h = moe.embedding %table[%ids] : tensor<100x24xf16>, tensor<?xi32>
    %gate = moe.weight "gate" : tensor<6x24xf32>
    %logits = moe.linear %h, %gate : tensor<?x24xf32>, tensor<6x24xf32>
    %w, %i = moe.router %logits top 2 softmax renormalize : tensor<?x6xf32>
    %g0 = moe.weight "g0" : tensor<40x24xbf16>
    %g1 = moe.weight "g1" : tensor<40x24xbf16>
    %g2 = moe.weight "g2" : tensor<40x24xbf16>
    %g3 = moe.weight "g3" : tensor<40x24xbf16>
    %g4 = moe.weight "g4" : tensor<40x24xbf16>
    %g5 = moe.weight "g5" : tensor<40x24xbf16>
    %u0 = moe.weight "u0" : tensor<40x24xbf16>
    %u1 = moe.weight "u1" : tensor<40x24xbf16>
    %u2 = moe.weight "u2" : tensor<40x24xbf16>
    %u3 = moe.weight "u3" : tensor<40x24xbf16>
    %u4 = moe.weight "u4" : tensor<40x24xbf16>
    %u5 = moe.weight "u5" : tensor<40x24xbf16>
    %d0 = moe.weight "d0" : tensor<24x40xbf16>
    %d1 = moe.weight "d1" : tensor<24x40xbf16>
    %d2 = moe.weight "d2" : tensor<24x40xbf16>
    %d3 = moe.weight "d3" : tensor<24x40xbf16>
    %d4 = moe.weight "d4" : tensor<24x40xbf16>
    %d5 = moe.weight "d5" : tensor<24x40xbf16>
    %y = moe.experts %h, %w, %i
        gate [%g0, %g1, %g2, %g3, %g4, %g5] : tensor<40x24xbf16>
        up [%u0, %u1, %u2, %u3, %u4, %u5] : tensor<40x24xbf16>
        down [%d0, %d1, %d2, %d3, %d4, %d5] : tensor<24x40xbf16>
        : tensor<?x24xf32>, tensor<?x2xf32>, tensor<?x2xi32>
    %unused = moe.weight "unused" : tensor<1000xf32>
    %head = moe.weight "head" : tensor<100x24xf32>
    %out = moe.linear %y, %head : tensor<?x24xf32>, tensor<100x24xf32>
    return %out : tensor<?x100xf32>
  })mlir";

int64_t costField(ModuleOp module, StringRef field) {
  auto func = *module.getOps<func::FuncOp>().begin();
  auto cost = func->getAttrOfType<DictionaryAttr>("moe.cost");
  if (!cost)
    return -1;
  return cast<IntegerAttr>(cost.get(field)).getInt();
}

OwningOpRef<ModuleOp> runPass(MLIRContext &context, int64_t stepTokens,
                              bool fuse = false) {
  OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(kBlock, &context);
  if (!module)
    return nullptr;
  PassManager pm(&context);
  if (fuse) {
    OpPassManager &func = pm.nest<func::FuncOp>();
    func.addPass(moe::createFuseRouter());
    func.addPass(moe::createFuseExpertGemms());
    func.addPass(moe::createFuseProjections());
    func.addPass(moe::createFuseEpilogues());
  }
  moe::EstimateCostOptions options;
  options.stepTokens = stepTokens;
  pm.addNestedPass<func::FuncOp>(moe::createEstimateCost(options));
  if (failed(pm.run(*module)))
    return nullptr;
  return module;
}

constexpr double H = 24, I = 40, E = 6, K = 2, V = 100;
constexpr double kExpertBytes = 3 * I * H * 2; // gate + up + down, bf16
constexpr double kWeightBytes =
    V * H * 2 + E * H * 4 + E * kExpertBytes + 1000 * 4 + V * H * 4;

TEST(EstimateCost, DecodeStepOfOneToken) {
  MLIRContext context;
  context.loadDialect<moe::MoEDialect, func::FuncDialect>();
  OwningOpRef<ModuleOp> module = runPass(context, 1);
  ASSERT_TRUE(module);
  EXPECT_EQ(costField(*module, "weight_bytes"), kWeightBytes);
  // One embedding row, the gate, k experts, the head; the unused weight is
  // never read.
  double bytes = H * 2 + E * H * 4 + K * kExpertBytes + V * H * 4;
  EXPECT_EQ(costField(*module, "bytes_per_step"), std::llround(bytes));
  double flops = 2 * E * H + 6 * K * I * H + 2 * V * H;
  EXPECT_EQ(costField(*module, "flops_per_step"), std::llround(flops));
  EXPECT_EQ(costField(*module, "step_tokens"), 1);
}

TEST(EstimateCost, StepOfSeveralTokensTouchesMoreExperts) {
  MLIRContext context;
  context.loadDialect<moe::MoEDialect, func::FuncDialect>();
  OwningOpRef<ModuleOp> module = runPass(context, 3);
  ASSERT_TRUE(module);
  // Expected share of experts touched by 3 tokens routed uniformly to 2 of 6.
  double touched = 1 - std::pow(1 - K / E, 3);
  double bytes = 3 * H * 2 + E * H * 4 + touched * E * kExpertBytes + V * H * 4;
  EXPECT_EQ(costField(*module, "bytes_per_step"), std::llround(bytes));
  double flops = 3 * (2 * E * H + 6 * K * I * H + 2 * V * H);
  EXPECT_EQ(costField(*module, "flops_per_step"), std::llround(flops));
}

TEST(EstimateCost, FusedExpertPathCostsTheSame) {
  MLIRContext context;
  context.loadDialect<moe::MoEDialect, func::FuncDialect>();
  // Shares like 1 - (2/3)^7 are not exact in binary: the totals must still
  // agree to the byte.
  for (int64_t tokens : {1, 3, 7, 512}) {
    OwningOpRef<ModuleOp> unfused = runPass(context, tokens);
    OwningOpRef<ModuleOp> fused = runPass(context, tokens, /*fuse=*/true);
    ASSERT_TRUE(unfused && fused);
    // The fusions did run: grouped GEMMs, no moe.experts.
    EXPECT_FALSE(
        fused->walk([](moe::ExpertsOp) { return WalkResult::interrupt(); })
            .wasInterrupted());
    EXPECT_TRUE(
        fused
            ->walk([](moe::GroupedMatmulOp) { return WalkResult::interrupt(); })
            .wasInterrupted());
    // (weight_bytes differs: the fusions' rewriters drop the unused weight.)
    for (const char *field : {"bytes_per_step", "flops_per_step"})
      EXPECT_EQ(costField(*unfused, field), costField(*fused, field))
          << field << " at " << tokens << " tokens";
  }
}

TEST(EstimateCost, ExpectedExpertShare) {
  EXPECT_EQ(moe::getExpectedExpertShare(2, 8, 1), 0.25);
  EXPECT_EQ(moe::getExpectedExpertShare(2, 8, 2), 1 - 0.75 * 0.75);
  EXPECT_DOUBLE_EQ(moe::getExpectedExpertShare(2, 6, 3),
                   1 - std::pow(2.0 / 3.0, 3));
  // Every expert chosen, or more than there are: the whole bank.
  EXPECT_EQ(moe::getExpectedExpertShare(4, 4, 1), 1.0);
  EXPECT_EQ(moe::getExpectedExpertShare(5, 4, 3), 1.0);
}

} // namespace
