//===- CommandLine.h - shared command-line helpers ------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TOOLS_COMMON_COMMANDLINE_H
#define MOE_TOOLS_COMMON_COMMANDLINE_H

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/CommandLine.h"

namespace mlir::moe {

/// The shared libLLVM registers hundreds of backend options; keep --help to
/// the tool's own category and the MLIR options (`--mlir-*`). Everything
/// still works, and `--help-hidden` lists it all.
inline void hideForeignOptions(llvm::cl::OptionCategory &ours) {
  for (auto &entry : llvm::cl::getRegisteredOptions()) {
    llvm::StringRef name = entry.first;
    llvm::cl::Option *option = entry.second;
    bool keep = llvm::is_contained(option->Categories, &ours) ||
                name.starts_with("mlir-") || name == "help" ||
                name == "version";
    if (!keep)
      option->setHiddenFlag(llvm::cl::Hidden);
  }
}

} // namespace mlir::moe

#endif // MOE_TOOLS_COMMON_COMMANDLINE_H
