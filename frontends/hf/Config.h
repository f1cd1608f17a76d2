//===- Config.h - config.json of a Hugging Face model -----------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_HF_CONFIG_H
#define MOE_FRONTENDS_HF_CONFIG_H

#include "frontends/ModelSpec.h"

#include "llvm/Support/Error.h"

namespace mlir::moe::hf {

/// Parses config.json text (`file` names it in messages) into a validated
/// ModelSpec. Supports model_type "mixtral".
llvm::Expected<ModelSpec> parseConfig(llvm::StringRef file,
                                      llvm::StringRef json);

} // namespace mlir::moe::hf

#endif // MOE_FRONTENDS_HF_CONFIG_H
