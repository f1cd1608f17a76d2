//===- DialectTest.cpp - C++ API of the moe dialect -------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// What the lit suite cannot see: the C++ builders, type inference through the
// builder API, and the helpers that later passes rely on.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/MoEOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"

#include <gtest/gtest.h>

using namespace mlir;
using namespace mlir::moe;

namespace {

class MoEDialectTest : public ::testing::Test {
protected:
  MoEDialectTest() { context.loadDialect<MoEDialect, func::FuncDialect>(); }

  /// A function with one dynamic-token activation argument of `width`
  /// features; the builder is positioned in its body.
  Value makeArgument(OpBuilder &builder, int64_t width) {
    auto type = RankedTensorType::get({ShapedType::kDynamic, width},
                                      builder.getF32Type());
    module = ModuleOp::create(builder.getUnknownLoc());
    builder.setInsertionPointToEnd(module->getBody());
    auto func = func::FuncOp::create(builder, builder.getUnknownLoc(), "f",
                                     builder.getFunctionType({type}, {}));
    Block *entry = func.addEntryBlock();
    builder.setInsertionPointToEnd(entry);
    return entry->getArgument(0);
  }

  MLIRContext context;
  OwningOpRef<ModuleOp> module;
};

TEST_F(MoEDialectTest, KVCacheSizeInBytes) {
  Type f16 = Float16Type::get(&context);
  auto planned =
      KVCacheType::get(&context, int64_t{2}, int64_t{4096}, int64_t{16}, f16);
  ASSERT_TRUE(planned.hasStaticCapacity());
  // keys + values, 2 kv heads, 4096 slots, head_dim 16, 2 bytes each.
  EXPECT_EQ(planned.getSizeInBytes(),
            std::optional<int64_t>(2 * 2 * 4096 * 16 * 2));

  auto unplanned = KVCacheType::get(&context, int64_t{2}, ShapedType::kDynamic,
                                    int64_t{16}, f16);
  EXPECT_FALSE(unplanned.hasStaticCapacity());
  EXPECT_EQ(unplanned.getSizeInBytes(), std::nullopt);
}

TEST_F(MoEDialectTest, KVCacheGetCheckedRejectsBadParameters) {
  std::string message;
  ScopedDiagnosticHandler handler(&context, [&](Diagnostic &diag) {
    message = diag.str();
    return success();
  });
  auto emit = [&] { return emitError(UnknownLoc::get(&context)); };
  EXPECT_FALSE(KVCacheType::getChecked(emit, &context, int64_t{0}, int64_t{8},
                                       int64_t{16},
                                       Type(Float32Type::get(&context))));
  EXPECT_EQ(message, "kv_cache kv_heads must be positive, got 0");
  EXPECT_FALSE(KVCacheType::getChecked(emit, &context, int64_t{2}, int64_t{8},
                                       int64_t{16},
                                       Type(IntegerType::get(&context, 8))));
  EXPECT_EQ(message,
            "kv_cache element type must be f32, f16 or bf16, got 'i8'");
}

TEST_F(MoEDialectTest, RouterBuilderInfersResultTypes) {
  OpBuilder builder(&context);
  Value logits = makeArgument(builder, /*width=*/8);
  auto router = RouterOp::create(builder, builder.getUnknownLoc(), logits,
                                 /*k=*/2, ScoringFunc::Softmax,
                                 /*renormalize=*/true);
  auto weights = router.getWeights().getType();
  auto indices = router.getIndices().getType();
  EXPECT_TRUE(weights.isDynamicDim(0));
  EXPECT_EQ(weights.getDimSize(1), 2);
  EXPECT_TRUE(weights.getElementType().isF32());
  EXPECT_EQ(indices.getDimSize(1), 2);
  EXPECT_TRUE(indices.getElementType().isInteger(32));
  EXPECT_EQ(router.getNumExperts(), 8);
  EXPECT_TRUE(succeeded(verify(router)));
}

TEST_F(MoEDialectTest, RouterVerifierRejectsKAboveExperts) {
  OpBuilder builder(&context);
  Value logits = makeArgument(builder, /*width=*/4);
  auto router = RouterOp::create(builder, builder.getUnknownLoc(), logits,
                                 /*k=*/5, ScoringFunc::Softmax,
                                 /*renormalize=*/true);
  std::string message;
  ScopedDiagnosticHandler handler(&context, [&](Diagnostic &diag) {
    message = diag.str();
    return success();
  });
  EXPECT_TRUE(failed(verify(router)));
  EXPECT_EQ(message, "'moe.router' op k = 5 exceeds the number of experts 4");
}

TEST_F(MoEDialectTest, AttentionDefaultScale) {
  const char *source = R"mlir(
    func.func @f(%q: tensor<?x64xf32>, %kv: tensor<?x32xf32>,
                 %c: !moe.kv_cache<2x?x16xf32>) {
      %o, %c1 = moe.attention %q, %kv, %kv, %c heads 4
          : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>, !moe.kv_cache<2x?x16xf32>
      %o2, %c2 = moe.attention %q, %kv, %kv, %c heads 4 {scale = 5.000000e-01 : f64}
          : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>, !moe.kv_cache<2x?x16xf32>
      return
    })mlir";
  OwningOpRef<ModuleOp> parsed = parseSourceString<ModuleOp>(source, &context);
  ASSERT_TRUE(parsed);
  SmallVector<AttentionOp> ops;
  parsed->walk([&](AttentionOp op) { ops.push_back(op); });
  ASSERT_EQ(ops.size(), 2u);
  EXPECT_DOUBLE_EQ(ops[0].getEffectiveScale(), 0.25); // 1/sqrt(16)
  EXPECT_DOUBLE_EQ(ops[1].getEffectiveScale(), 0.5);
}

} // namespace
