//===- ONNXRaise.h - the ONNX graph raiser, shared by its files -*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// The Importer that raises an ONNX graph into a ModelSpec (ONNXModel.cpp:
// the fused graph of ONNX Runtime GenAI; ONNXDecomposed.cpp: the decomposed
// graph of torch.onnx.export). Internal to the ONNX frontend.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_ONNX_ONNXRAISE_H
#define MOE_FRONTENDS_ONNX_ONNXRAISE_H

#include "frontends/ModelSpec.h"
#include "frontends/onnx/ONNXModel.h"
#include "frontends/onnx/ONNXProto.h"

#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/FormatVariadic.h"

#include <optional>
#include <string>
#include <vector>

namespace mlir::moe::onnxfe::raising {

using llvm::ArrayRef;
using llvm::DenseSet;
using llvm::Error;
using llvm::Expected;
using llvm::StringMap;
using llvm::StringRef;
using llvm::Twine;

Error error(const Twine &message);
Error error(const llvm::formatv_object_base &message);

/// The errors of the Expected values `xs`, joined (success when none).
template <typename... Ts> Error firstErrors(Ts &...xs) {
  Error out = Error::success();
  ((out = llvm::joinErrors(std::move(out), xs.takeError())), ...);
  return out;
}

std::string shapeText(ArrayRef<int64_t> shape);
const char *dataTypeName(int32_t t);
/// The float32 `f` as the shortest decimal that reads back as `f`.
double shortestDecimal(float f);

class DecomposedRaiser;

class Importer {
  friend class DecomposedRaiser;

public:
  Importer(StringRef path, StringRef dir, const wire::ModelProto &model)
      : path(path), dir(dir), model(model), graph(model.graph()) {}

  Error run(RaisedModel &out);

private:
  // --- Tensors --------------------------------------------------------------
  /// Where initializer `name`'s bytes are, checked (external data only).
  /// With `uint8`, a UINT8 tensor (QMoE's values) is taken too.
  Expected<WeightSource> weightSource(const wire::TensorProto &t,
                                      bool uint8 = false);
  /// The FLOAT tensor's values (inline or external), for the RoPE caches.
  Expected<std::vector<float>> floatValues(const wire::TensorProto &t);
  /// Checks that node `n`'s input `in`, the `role` expert bias, is an
  /// initializer of `shape` holding zeros alone (what ONNX Runtime GenAI's
  /// builder writes); an error naming the node and the bias otherwise.
  Error checkZeroBias(const wire::NodeProto &n, int in, StringRef role,
                      ArrayRef<int64_t> shape);
  /// An INT64 tensor's values (inline only), for shapes.
  Expected<std::vector<int64_t>> intValues(const wire::TensorProto &t);
  Expected<uint64_t> dataFileSize(StringRef location, StringRef tensor);
  /// The initializer (or Constant node's value) named `value`, or null.
  const wire::TensorProto *constant(StringRef value) const;
  const wire::TensorProto *initializer(StringRef value) const {
    auto it = initializers.find(value);
    return it == initializers.end() ? nullptr : it->second;
  }

  // --- Nodes ----------------------------------------------------------------
  Error nodeError(const wire::NodeProto &n, const Twine &message) const;
  std::string nodeName(const wire::NodeProto &n) const;
  bool is(const wire::NodeProto &n, StringRef op, StringRef domain = "") const {
    StringRef d = n.domain();
    if (d == "ai.onnx")
      d = "";
    return n.op_type() == op && d == domain;
  }
  const wire::NodeProto *producer(StringRef value) const {
    auto it = producers.find(value);
    return it == producers.end() ? nullptr : &graph.node(it->second);
  }
  std::vector<const wire::NodeProto *> consumers(StringRef value) const {
    std::vector<const wire::NodeProto *> out;
    auto it = consumerMap.find(value);
    if (it != consumerMap.end())
      for (int i : it->second)
        out.push_back(&graph.node(i));
    return out;
  }
  void raise(const wire::NodeProto &n) { raised.insert(&n); }
  const wire::AttributeProto *attr(const wire::NodeProto &n,
                                   StringRef name) const {
    for (const wire::AttributeProto &a : n.attribute())
      if (a.name() == name)
        return &a;
    return nullptr;
  }
  Expected<int64_t> intAttr(const wire::NodeProto &n, StringRef name,
                            std::optional<int64_t> dflt) const;
  Expected<float> floatAttr(const wire::NodeProto &n, StringRef name,
                            std::optional<float> dflt) const;
  Expected<std::string> stringAttr(const wire::NodeProto &n, StringRef name,
                                   std::optional<StringRef> dflt) const;
  /// Input `i` of `n`, or "" when absent.
  static StringRef input(const wire::NodeProto &n, int i) {
    return i < n.input_size() ? StringRef(n.input(i)) : StringRef();
  }

  // --- Patterns -------------------------------------------------------------
  struct Linear {
    std::string x, weight;
    /// The weight initializer is stored [in, out] (MatMul's B, Gemm with
    /// transB = 0), not [out, in].
    bool transposed = false;
  };
  /// `value` as the output of a linear layer.
  Expected<Linear> matchLinear(StringRef value, StringRef what);
  struct Norm {
    std::string x, out, weight;
    const wire::NodeProto *node;
  };
  /// The RMS norm among `value`'s consumers.
  Expected<Norm> matchNorm(StringRef value, StringRef what);
  /// The one Add of `a` and `b` (either order).
  Expected<std::string> matchAdd(StringRef a, StringRef b, StringRef what);
  Error matchLayer(StringRef h, std::string &next);
  Error matchAttention(const Norm &norm, std::string &out);
  Error matchMoE(const Norm &norm, std::string &out);
  /// Checks the RoPE tables `cosName`, `sinName` of `by`.
  Error checkRope(const wire::NodeProto &by, StringRef cosName,
                  StringRef sinName);
  /// ONNX Runtime GenAI's fused graph from the embedding's output `h`: the
  /// layers, the final norm and lm_head.
  Error raiseFused(std::string h);
  /// torch.onnx.export's decomposed graph from the embedding's output `h`:
  /// the layers, the final norm and lm_head (ONNXDecomposed.cpp).
  Error raiseDecomposed(StringRef h);

  /// Records initializer `name` as the weight `key` (for the manifest),
  /// checking its shape: `shape` itself, or with `transposed` its
  /// transpose (the weight is then re-laid out at compile time).
  Error addWeight(const std::string &key, StringRef initializerName,
                  ArrayRef<int64_t> shape, const wire::NodeProto &by,
                  StringRef role, bool transposed = false);
  /// The linear layer `lin`'s weight as `key`, [out, in] = `shape`.
  Error addLinear(const std::string &key, const Linear &lin,
                  ArrayRef<int64_t> shape, const wire::NodeProto &by,
                  StringRef role) {
    return addWeight(key, lin.weight, shape, by, role, lin.transposed);
  }
  /// Records QMoE's stacked expert weight `name` (UINT8 [E, N, K * bits /
  /// 8], offset-binary) and its `scalesName` ([E, N], or [E, N, K /
  /// blockSize]) as the weight `name` of `shape` [E, N, K] in `bits`-bit
  /// blocks, checking both.
  Error addQMoEWeight(StringRef name, StringRef scalesName,
                      ArrayRef<int64_t> shape, int64_t bits, int64_t blockSize,
                      const wire::NodeProto &by, StringRef role);
  /// The rows of the stacked weight `initializerName` (checked by addWeight
  /// or addQMoEWeight), seen as [rows, cols], from row `firstRow` on, as
  /// the weight `key` of `shape`: contiguous (rowStep 0) or rows rowStart,
  /// rowStart + rowStep, ... of `rowsOf` rows there.
  Error addSlice(const std::string &key, StringRef initializerName,
                 int64_t firstRow, ArrayRef<int64_t> shape,
                 int64_t rowStart = 0, int64_t rowStep = 0, int64_t rowsOf = 0);

  StringRef path, dir;
  const wire::ModelProto &model;
  const wire::GraphProto &graph;
  StringMap<const wire::TensorProto *> initializers;
  StringMap<const wire::TensorProto *> constants;
  StringMap<int> producers;
  StringMap<std::vector<int>> consumerMap;
  DenseSet<const wire::NodeProto *> raised;
  StringMap<uint64_t> dataFiles;
  StringMap<WeightSource> weights;
  /// Per weight key, the initializer's own WeightSource (cached).
  StringMap<WeightSource> sources;

  ModelSpec spec;
  std::optional<double> eps;
  std::string embedding, finalNorm, lmHead;
  using Layer = RaisedModel::Layer;
  std::vector<Layer> layers;
  std::string ropeCos, ropeSin;
  llvm::SmallVector<std::optional<int64_t>> windows;
};

} // namespace mlir::moe::onnxfe::raising

#endif // MOE_FRONTENDS_ONNX_ONNXRAISE_H
