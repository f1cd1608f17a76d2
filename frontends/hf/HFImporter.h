//===- HFImporter.h - Hugging Face model directory importer -----*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Imports a Hugging Face model directory (config.json plus model.safetensors,
// or shards listed by model.safetensors.index.json) as moe IR. Only
// config.json, the index and the safetensors headers are read; tensor data
// never is. Everything is validated against the config, and every problem is
// reported with the file, tensor or key it concerns.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_HF_HFIMPORTER_H
#define MOE_FRONTENDS_HF_HFIMPORTER_H

#include "frontends/ModelSpec.h"
#include "frontends/hf/Config.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/Support/Error.h"

namespace mlir::moe::hf {

/// The Hugging Face MixtralForCausalLM name of a weight.
std::string tensorName(const ModelSpec &spec, WeightRole role, int64_t layer,
                       int64_t expert);

/// Imports the model directory `dir`. On failure the error holds one message
/// per problem found (up to a limit).
llvm::Expected<mlir::OwningOpRef<mlir::ModuleOp>>
importModel(mlir::MLIRContext &context, llvm::StringRef dir);

} // namespace mlir::moe::hf

#endif // MOE_FRONTENDS_HF_HFIMPORTER_H
