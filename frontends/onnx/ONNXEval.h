//===- ONNXEval.h - a bounded evaluator of small ONNX subgraphs -*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// torch.onnx.export writes the causal mask and the RoPE cos/sin tables as
// subgraphs that depend only on the sequence length (Range, CumSum,
// GatherND, LessOrEqual, Where, Cos, ...). The decomposed importer
// (ONNXDecomposed.cpp) does not match those by shape: it evaluates them for a
// few sample lengths and checks the numbers against the causal (or
// sliding-window) mask and the default RoPE tables.
//
// The evaluator runs the integer, boolean and float ops that appear there,
// on host vectors (floats in double). Its work is bounded: at most
// kMaxTensorElements per tensor, kMaxTotalElements over one evaluation,
// kMaxNodes nodes and kMaxDepth nested producers; a cycle, an op it does not
// know, or a value that depends on an activation (other than through Shape
// of a value whose shape the caller knows) is an error naming the node.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_ONNX_ONNXEVAL_H
#define MOE_FRONTENDS_ONNX_ONNXEVAL_H

#include "frontends/onnx/ONNXProto.h"

#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/Error.h"

#include <functional>
#include <memory>
#include <optional>
#include <vector>

namespace mlir::moe::onnxfe {

struct EvalTensor {
  enum Kind { Int, Float, Bool } kind = Int;
  llvm::SmallVector<int64_t, 4> shape;
  /// Int and Bool values.
  std::vector<int64_t> ints;
  /// Float values (any float type, held in double).
  std::vector<double> floats;

  /// The number of elements (INT64_MAX when that overflows).
  int64_t numel() const {
    int64_t n = 1;
    bool overflow = false;
    for (int64_t d : shape) {
      if (d == 0)
        return 0;
      overflow |= __builtin_mul_overflow(n, d, &n);
    }
    return overflow ? INT64_MAX : n;
  }
  double number(int64_t i) const {
    return kind == Float ? floats[i] : double(ints[i]);
  }
};

/// The values of an inline initializer or Constant (INT64, INT32, BOOL,
/// FLOAT, FLOAT16, DOUBLE; at most `maxElements`), or an error naming it.
llvm::Expected<EvalTensor> tensorValue(const wire::TensorProto &t,
                                       int64_t maxElements);

class Evaluator {
public:
  static constexpr int64_t kMaxTensorElements = int64_t(1) << 20;
  static constexpr int64_t kMaxTotalElements = int64_t(1) << 22;
  static constexpr int kMaxNodes = 4096;
  static constexpr int kMaxDepth = 256;

  struct Hooks {
    /// The node computing `value`, or null.
    std::function<const wire::NodeProto *(llvm::StringRef)> producer;
    /// A graph input, initializer or Constant's value; std::nullopt when
    /// `value` is none of them. An error for a weight or an unreadable one.
    std::function<llvm::Expected<std::optional<EvalTensor>>(llvm::StringRef)>
        leaf;
    /// The shape of an activation (for Shape), when the caller knows it.
    std::function<std::optional<llvm::SmallVector<int64_t, 4>>(llvm::StringRef)>
        shapeOf;
    /// An error about the file (prefixed with its path).
    std::function<llvm::Error(const llvm::Twine &)> fileError;
    /// An error naming node `n`.
    std::function<llvm::Error(const wire::NodeProto &, const llvm::Twine &)>
        nodeError;
  };

  explicit Evaluator(Hooks hooks) : hooks(std::move(hooks)) {}

  /// The value of `value`, evaluated (and cached).
  llvm::Expected<const EvalTensor *> eval(llvm::StringRef value);
  /// Replaces `value` by `t` (before any evaluation).
  void override(llvm::StringRef value, EvalTensor t) {
    cache[value] = std::make_unique<EvalTensor>(std::move(t));
  }
  /// The nodes evaluated so far.
  const llvm::DenseSet<const wire::NodeProto *> &visited() const {
    return visitedNodes;
  }
  /// The leaf values (initializers, Constants) read, by name.
  const llvm::StringMap<bool> &leaves() const { return leafNames; }

private:
  llvm::Expected<const EvalTensor *> evalAt(llvm::StringRef value, int depth);
  llvm::Expected<std::vector<EvalTensor>>
  run(const wire::NodeProto &n, std::vector<const EvalTensor *> &inputs);

  Hooks hooks;
  llvm::StringMap<std::unique_ptr<EvalTensor>> cache;
  /// Activations whose shape alone is known (hooks.shapeOf), for Shape.
  llvm::StringMap<std::unique_ptr<EvalTensor>> shapesOnly;
  llvm::StringMap<bool> inProgress, leafNames;
  llvm::DenseSet<const wire::NodeProto *> visitedNodes;
  int64_t totalElements = 0;
  int nodes = 0;
};

} // namespace mlir::moe::onnxfe

#endif // MOE_FRONTENDS_ONNX_ONNXEVAL_H
