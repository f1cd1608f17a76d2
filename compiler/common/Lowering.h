//===- Lowering.h - what the targets' lowerings share -----------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// `--moe-lower-to-cpu` and `--moe-lower-to-cuda` turn a planned @forward of
// the moe dialect into the moert launch plan, one conversion pattern per moe
// op. This header holds what both share: the checks of the stage contract
// (the plan exists, for this target, and the IR is one the kernels run
// safely), the destination-passing signature, and the builders of buffers,
// constants and token counts the patterns use.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_COMPILER_COMMON_LOWERING_H
#define MOE_COMPILER_COMMON_LOWERING_H

#include "dialects/MoE/MoEOps.h"
#include "dialects/MoERT/MoERT.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Transforms/DialectConversion.h"

#include <map>
#include <string>

namespace mlir::moe {

/// What the patterns of one lowering share.
struct LoweringState {
  ModuleOp module;
  /// The logits @forward returned, and the argument they now go to.
  Value logitsTensor, logitsBuffer;
  /// @forward's positions argument.
  Value positions;
  /// moert.kernel symbols by specialisation (CUDA), in creation order.
  std::map<std::string, std::string> kernels;
  int64_t numKernels = 0;
};

/// The buffer of an activation of type `t`: a memref of its shape whose
/// first dimension (the batch's rows) is dynamic.
MemRefType bufferType(RankedTensorType t);

/// Weights (static float tensors) to memrefs of their shape, activations
/// to bufferType; everything else unchanged.
class LoweringTypeConverter : public TypeConverter {
public:
  LoweringTypeConverter();
};

/// The buffer of `result`: a moert.view at moe-plan-memory's offset, or the
/// logits argument. Fails (with the diagnostic) on unplanned IR.
FailureOr<Value> resultBuffer(ConversionPatternRewriter &rewriter,
                              LoweringState &state, OpResult result);
/// The buffers of all of `op`'s results.
FailureOr<SmallVector<Value>> resultBuffers(ConversionPatternRewriter &rewriter,
                                            LoweringState &state,
                                            Operation *op);
/// The `floats` per batch token of scratch moe-plan-memory placed for `op`.
FailureOr<Value> scratchBuffer(ConversionPatternRewriter &rewriter,
                               Operation *op, int64_t floats);
/// Base of a target's conversion patterns for `OpTy`: gives the op's results
/// their buffers, lets the target emit its ops (`lower`), and replaces the
/// op's results with the buffers (and moe.attention's cache with the cache
/// argument, updated in place).
template <typename OpTy>
class TargetPattern : public OpConversionPattern<OpTy> {
public:
  using OpAdaptor = typename OpConversionPattern<OpTy>::OpAdaptor;
  TargetPattern(const TypeConverter &converter, MLIRContext *context,
                LoweringState &state)
      : OpConversionPattern<OpTy>(converter, context), state(state) {}

  LogicalResult matchAndRewrite(OpTy op, OpAdaptor adaptor,
                                ConversionPatternRewriter &rw) const final {
    FailureOr<SmallVector<Value>> outs =
        resultBuffers(rw, state, op.getOperation());
    if (failed(outs) || failed(lower(op, adaptor, rw, *outs)))
      return failure();
    SmallVector<Value> replacements(*outs);
    if constexpr (std::is_same_v<OpTy, AttentionOp>)
      replacements.push_back(adaptor.getCache());
    rw.replaceOp(op, replacements);
    return success();
  }

protected:
  /// Emits the target's ops for `op`, whose results have the buffers
  /// `outs`.
  virtual LogicalResult lower(OpTy op, OpAdaptor a,
                              ConversionPatternRewriter &rw,
                              ArrayRef<Value> outs) const = 0;
  LoweringState &state;
};

/// `n * times` (the forward call's token count) of type `type`.
Value tokens(OpBuilder &b, Location loc, Type type, int64_t times = 1);
Value constantF32(OpBuilder &b, Location loc, double v);
Value constantF64(OpBuilder &b, Location loc, double v);
Value constantI64(OpBuilder &b, Location loc, int64_t v);
/// An absent buffer of element type `element`.
Value nullBuffer(OpBuilder &b, Location loc, Type element);
/// The feature width of a [tokens, features] value.
int64_t width(Value v);
/// The element type of a tensor or memref.
Type elementType(Value v);

/// The template arguments of a kernel call, built in order.
struct TemplateArgs {
  explicit TemplateArgs(Builder &b) : b(b) {}
  TemplateArgs &type(Type t) {
    args.push_back(TypeAttr::get(t));
    return *this;
  }
  TemplateArgs &type(Value v) { return type(elementType(v)); }
  TemplateArgs &i(int64_t v) {
    args.push_back(b.getI64IntegerAttr(v));
    return *this;
  }
  TemplateArgs &flag(bool v) {
    args.push_back(b.getBoolAttr(v));
    return *this;
  }
  Builder &b;
  SmallVector<Attribute> args;
};

/// Appends what the RoPE kernels take for `scaling` (absent: the default
/// RoPE, nothing appended) with heads of `headDim` and base `theta`: the
/// RoPE type (kernel_math.h's RopeKind) as the template argument after the
/// interleaved flag, which `targs` must already hold, and RopeScaling's
/// fields, resolved here (yarn's correction range and attention factor), as
/// f64 arguments after the kernel's others.
void appendRopeScaling(OpBuilder &b, Location loc, RopeScalingAttr scaling,
                       int64_t headDim, double theta, TemplateArgs &targs,
                       SmallVectorImpl<Value> &args);

/// Lowers every @forward in `module` for `target` with the patterns
/// `populate` adds: checks the contract, rewrites the signature to
/// destination-passing style with argument attributes, converts, and marks
/// the module with `moert.target`.
LogicalResult
lowerModule(ModuleOp module, Attribute target,
            function_ref<void(RewritePatternSet &, const TypeConverter &,
                              LoweringState &)>
                populate);

} // namespace mlir::moe

#endif // MOE_COMPILER_COMMON_LOWERING_H
