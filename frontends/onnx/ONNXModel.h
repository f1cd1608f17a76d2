//===- ONNXModel.h - raise an ONNX graph into a ModelSpec -------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// The ONNX frontend without MLIR (so that the fuzzer builds it): parses the
// ModelProto (ONNXProto.h), checks the external data of every weight, and
// raises the graph by pattern (ONNXModel.cpp's header comment) into the
// hyper-parameters, the weight of each role and where its bytes are.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_ONNX_ONNXMODEL_H
#define MOE_FRONTENDS_ONNX_ONNXMODEL_H

#include "frontends/ModelSpec.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/Error.h"

#include <string>
#include <utility>
#include <vector>

namespace mlir::moe::onnxfe {

/// Largest .onnx file read: protobuf's own limit for one message. Larger
/// models keep their weights in external data files.
constexpr uint64_t kMaxModelBytes = (uint64_t(1) << 31) - 1;

struct RaisedModel {
  ModelSpec spec;
  /// Every weight of the model by its manifest name.
  llvm::StringMap<WeightSource> weights;
  std::string embedding, finalNorm, lmHead;
  struct Layer {
    std::string attnNorm, q, k, v, o, ffnNorm, router;
    std::vector<std::string> gate, up, down;
  };
  std::vector<Layer> layers;
  /// The external data files (relative to the model's directory) and their
  /// sizes.
  std::vector<std::pair<std::string, uint64_t>> dataFiles;

  /// The manifest name of the weight playing `role` (ModelBuilder's namer).
  std::string weightName(WeightRole role, int64_t layer, int64_t expert) const;
};

/// Parses and raises the model `bytes` read from `path`, whose external
/// data files are in `dir` (an absolute, real path).
llvm::Expected<RaisedModel>
raiseModel(llvm::StringRef path, llvm::StringRef dir, llvm::StringRef bytes);

} // namespace mlir::moe::onnxfe

#endif // MOE_FRONTENDS_ONNX_ONNXMODEL_H
