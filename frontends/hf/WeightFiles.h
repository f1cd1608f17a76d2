//===- WeightFiles.h - a module's manifest against its files ----*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// moe IR names its weights' bytes (moe.weight_dir + each moe.weight_source's
// file, offset and type). IR handed to moe-compile as .mlir is untrusted:
// these checks hold it against the safetensors files it names before
// anything is built from it, and optionally scan the values themselves.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_HF_WEIGHTFILES_H
#define MOE_FRONTENDS_HF_WEIGHTFILES_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Support/LLVM.h"

#include <string>
#include <vector>

namespace mlir::moe::hf {

/// The files a module's model is read from, as paths in moe.weight_dir:
/// each distinct file its moe.weight_source ops name (in first-use order),
/// then config.json and model.safetensors.index.json. An output must never
/// replace one of them.
std::vector<std::string> modelFilePaths(ModuleOp module);

/// Checks every moe.weight_source against the safetensors file it names: a
/// regular file whose header holds the tensor with the same dtype, shape
/// and absolute byte range. Errors are reported on the ops.
LogicalResult verifyWeightFiles(ModuleOp module);

/// Scans every weight's values for NaN and infinity, calling `progress`
/// with the bytes scanned so far and the total. Errors name the tensor, the
/// count and the first bad element.
LogicalResult
checkWeightValues(ModuleOp module,
                  function_ref<void(uint64_t done, uint64_t total)> progress);

} // namespace mlir::moe::hf

#endif // MOE_FRONTENDS_HF_WEIGHTFILES_H
