//===- ONNXFuzzer.cpp - libFuzzer target for the ONNX frontend --*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Feeds arbitrary bytes to the ONNX frontend as a model file: the protobuf
// reader (ONNXProto.cpp) and the pattern raising (ONNXModel.cpp). External
// data is looked up in a directory that does not exist, so a model that
// gets as far as its weights fails there. Beyond "no crash, no sanitizer
// report", every failure must be one message naming the file.
//
//===----------------------------------------------------------------------===//

#include "frontends/onnx/ONNXModel.h"

#include <cstdlib>

using namespace mlir::moe;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::StringRef bytes(reinterpret_cast<const char *>(data), size);
  llvm::Expected<onnxfe::RaisedModel> model =
      onnxfe::raiseModel("fuzz/model.onnx", "/nonexistent-moe-fuzz", bytes);
  if (!model) {
    std::string message = llvm::toString(model.takeError());
    if (!llvm::StringRef(message).starts_with("fuzz/model.onnx: "))
      std::abort();
    return 0;
  }
  // Nothing can be raised without its weights' files.
  std::abort();
}
