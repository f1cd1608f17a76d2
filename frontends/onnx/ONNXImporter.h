//===- ONNXImporter.h - ONNX model -> moe IR --------------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Imports a Mixtral-class ONNX model (docs/frontends.md, "ONNX"): the
// ModelProto is parsed with bounded sizes (ONNXProto.h; no checker, no
// shape inference), the graph is raised by pattern into a ModelSpec and the
// weight of each role (ONNXModel.h), and the module is built through the
// shared ModelBuilder. Weights stay in the model's external data files:
// the manifest names their byte ranges, and the module's
// `moe.raw_weight_files` records each file's size for the runtime's
// load-time check (the files have no header of their own).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_ONNX_ONNXIMPORTER_H
#define MOE_FRONTENDS_ONNX_ONNXIMPORTER_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/Support/Error.h"

namespace mlir::moe::onnxfe {

/// Whether `path` names an ONNX model (its name ends in `.onnx`).
bool isONNXFile(llvm::StringRef path);

/// Parses and raises the ONNX model at `path`.
llvm::Expected<mlir::OwningOpRef<mlir::ModuleOp>>
importModel(mlir::MLIRContext &context, llvm::StringRef path);

} // namespace mlir::moe::onnxfe

#endif // MOE_FRONTENDS_ONNX_ONNXIMPORTER_H
