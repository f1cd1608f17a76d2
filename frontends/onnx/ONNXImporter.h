//===- ONNXImporter.h - ONNX model -> moe IR --------------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Imports a Mixtral-class ONNX model (docs/frontends.md, "ONNX"): the
// ModelProto is parsed with bounded sizes from the protobuf messages only
// (no checker, no shape inference), the graph is raised by pattern into a
// ModelSpec and the weight of each role, and the module is built through
// the shared ModelBuilder. Weights stay in the model's external data files:
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

/// Largest .onnx file read: protobuf's own limit for one message. Larger
/// models keep their weights in external data files.
constexpr uint64_t kMaxModelBytes = (uint64_t(1) << 31) - 1;

/// Parses and raises the ONNX model at `path`.
llvm::Expected<mlir::OwningOpRef<mlir::ModuleOp>>
importModel(mlir::MLIRContext &context, llvm::StringRef path);

/// Parses `bytes` as a ModelProto with the importer's limits and checks its
/// IR version and opsets (the fuzzer's entry point); `file` names it in the
/// message.
llvm::Error parseModelBytes(llvm::StringRef file, llvm::StringRef bytes);

} // namespace mlir::moe::onnxfe

#endif // MOE_FRONTENDS_ONNX_ONNXIMPORTER_H
