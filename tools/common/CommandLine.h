//===- CommandLine.h - shared command-line helpers ------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TOOLS_COMMON_COMMANDLINE_H
#define MOE_TOOLS_COMMON_COMMANDLINE_H

#include "tools/common/OutputFile.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
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

/// Prints the context's diagnostics as MLIR's default handler does
/// (`loc: error: message`, then the notes), through printableErrs(): the
/// messages quote names from the user's files.
class PrintableDiagnostics : public ScopedDiagnosticHandler {
public:
  explicit PrintableDiagnostics(MLIRContext *context)
      : ScopedDiagnosticHandler(context, [](Diagnostic &diag) {
          print(diag);
          for (Diagnostic &note : diag.getNotes())
            print(note);
          return success();
        }) {}

private:
  static void print(Diagnostic &diag) {
    llvm::raw_ostream &os = printableErrs();
    if (!isa<UnknownLoc>(diag.getLocation()))
      os << diag.getLocation() << ": ";
    switch (diag.getSeverity()) {
    case DiagnosticSeverity::Error:
      os << "error: ";
      break;
    case DiagnosticSeverity::Warning:
      os << "warning: ";
      break;
    case DiagnosticSeverity::Note:
      os << "note: ";
      break;
    case DiagnosticSeverity::Remark:
      os << "remark: ";
      break;
    }
    os << diag << "\n";
  }
};

} // namespace mlir::moe

#endif // MOE_TOOLS_COMMON_COMMANDLINE_H
