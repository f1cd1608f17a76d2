//===- ONNXImporter.cpp - ONNX model -> moe IR ------------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "frontends/onnx/ONNXImporter.h"

#include "frontends/InputFiles.h"
#include "frontends/ModelBuilder.h"
#include "frontends/onnx/ONNXModel.h"

#include "mlir/IR/Builders.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

using namespace llvm;

namespace mlir::moe::onnxfe {

bool isONNXFile(StringRef path) {
  return path.size() >= 5 &&
         path.substr(path.size() - 5).equals_insensitive(".onnx");
}

Expected<OwningOpRef<ModuleOp>> importModel(MLIRContext &context,
                                            StringRef pathArg) {
  Expected<std::string> realPath = realInputPath(pathArg);
  if (!realPath)
    return realPath.takeError();
  StringRef path = *realPath;
  Expected<std::unique_ptr<MemoryBuffer>> bytes =
      readInputFile(path, kMaxModelBytes);
  if (!bytes)
    return bytes.takeError();
  SmallString<256> dir(sys::path::parent_path(path));
  Expected<RaisedModel> model = raiseModel(path, dir, (*bytes)->getBuffer());
  if (!model)
    return model.takeError();
  auto module = buildModel(
      context, model->spec,
      [&](WeightRole role, int64_t l, int64_t e) {
        return model->weightName(role, l, e);
      },
      model->weights, dir);
  if (!module)
    return module.takeError();
  // The data files have no header: the runtime checks each one's size as
  // it was here (runtime.cpp, mapWeightFile; docs/cpu-target.md).
  Builder b(&context);
  SmallVector<NamedAttribute> files;
  for (auto &[file, size] : model->dataFiles)
    files.push_back(b.getNamedAttr(file, b.getI64IntegerAttr(int64_t(size))));
  (**module)->setAttr("moe.raw_weight_files", b.getDictionaryAttr(files));
  return module;
}

} // namespace mlir::moe::onnxfe
