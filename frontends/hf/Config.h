//===- Config.h - config.json of a Hugging Face model -----------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_HF_CONFIG_H
#define MOE_FRONTENDS_HF_CONFIG_H

#include "frontends/ModelSpec.h"

#include "llvm/Support/Error.h"

#include <string>
#include <vector>

namespace mlir::moe::hf {

/// Parses config.json text (`file` names it in messages) into a validated
/// ModelSpec. Supports model_type "mixtral".
/// The model `json` (the text of config.json at `file`) describes; what
/// the frontend accepts but changes (keys transformers ignores, values it
/// overrides) is appended to `warnings`, one message each.
llvm::Expected<ModelSpec>
parseConfig(llvm::StringRef file, llvm::StringRef json,
            std::vector<std::string> *warnings = nullptr);

} // namespace mlir::moe::hf

#endif // MOE_FRONTENDS_HF_CONFIG_H
