//===- CommandLine.h - shared command-line helpers for the tools -*- C++
//-*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TOOLS_COMMON_COMMANDLINE_H
#define MOE_TOOLS_COMMON_COMMANDLINE_H

#include "mlir/Support/FileUtilities.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/ToolOutputFile.h"

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

/// Writes `path` ("-" for stdout) with `write`; the file is kept only when
/// the whole of it was written. On failure returns false with `error` set.
inline bool writeOutputFile(llvm::StringRef path,
                            llvm::function_ref<void(llvm::raw_ostream &)> write,
                            std::string &error) {
  std::unique_ptr<llvm::ToolOutputFile> out =
      mlir::openOutputFile(path, &error);
  if (!out)
    return false;
  write(out->os());
  out->keep();
  return true;
}

} // namespace mlir::moe

#endif // MOE_TOOLS_COMMON_COMMANDLINE_H
