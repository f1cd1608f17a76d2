//===- OutputFile.h - writing the tools' outputs safely ---------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// What the tools promise about their outputs (docs/hardening.md): an output
// is checked before any work is done, it never replaces one of the inputs,
// it is written to a unique temporary file in its own directory and renamed
// into place only when the whole of it was written, and a write error (a
// full disk) is one clear message that leaves nothing behind.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TOOLS_COMMON_OUTPUTFILE_H
#define MOE_TOOLS_COMMON_OUTPUTFILE_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/raw_ostream.h"

#include <string>

namespace mlir::moe {

enum class OutputKind {
  /// Text (IR, C++): "-" is stdout; an existing FIFO or device (a pipe,
  /// /dev/null) is written in place; a regular file is replaced atomically.
  Text,
  /// An executable: replaces only a regular file or nothing.
  Executable,
  /// A data file beside the executable (its quantised weights): as an
  /// executable, but not executable.
  Data,
};

/// Checks, before any work, that `path` can be written as `kind`: not a
/// directory, its directory exists and is writable, and for an executable
/// not "-" and not an existing FIFO, device or other non-regular file.
llvm::Error checkOutputPath(llvm::StringRef path, OutputKind kind);

/// Refuses `path` when it is the same file as one of `inputs` (through a
/// symlink or hard link too); inputs that do not exist are skipped.
llvm::Error checkNotAnInput(llvm::StringRef path,
                            llvm::ArrayRef<std::string> inputs);

/// Writes `path` with `write`: to a unique temporary file beside it, renamed
/// over `path` only when every byte was written and the file closed cleanly.
/// Write errors come back as an Error naming `path`; nothing is left behind.
llvm::Error writeOutputFile(llvm::StringRef path,
                            llvm::function_ref<void(llvm::raw_ostream &)> write,
                            OutputKind kind = OutputKind::Text);

/// As writeOutputFile, for a writer that can fail: its Error is returned and
/// nothing is left behind.
llvm::Error writeOutputFileOrFail(
    llvm::StringRef path,
    llvm::function_ref<llvm::Error(llvm::raw_ostream &)> write,
    OutputKind kind);

/// stderr for messages that quote names from the user's files: control
/// characters other than newline and tab (an escape sequence in a tensor
/// name) are shown as '?' instead of reaching the terminal.
llvm::raw_ostream &printableErrs();

/// Makes an error writing stdout (a full disk, a closed pipe) end the tool
/// with one message naming `tool` and exit status 1, whenever it happens,
/// `--help` included, instead of LLVM's "IO failure on output stream"
/// abort when the stream is destroyed at exit.
void exitCleanlyOnStdoutErrors(const char *tool);

} // namespace mlir::moe

#endif // MOE_TOOLS_COMMON_OUTPUTFILE_H
