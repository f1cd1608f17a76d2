//===- InputFiles.h - reading files a user hands us, safely -----*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Every file a frontend or tool reads (config.json, the index, safetensors
// headers, .mlir input) is untrusted: it may be a FIFO that never delivers a
// byte, a device such as /dev/zero that never ends, a symlink loop, or JSON
// nested deeply enough to overflow the stack. These helpers open only
// regular files (without blocking on the open), bound what they read, bound
// JSON nesting before parsing, and keep the real error (ELOOP, EACCES) in
// their messages. Depends on LLVM Support only, so the fuzzers build it.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_INPUTFILES_H
#define MOE_FRONTENDS_INPUTFILES_H

#include "llvm/Support/Error.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cstdint>
#include <memory>

namespace mlir::moe {

/// Deepest JSON nesting accepted (configs and headers nest a few levels).
constexpr unsigned kMaxJSONDepth = 64;

/// A regular file opened for reading; closed when destroyed.
class InputFile {
public:
  /// Opens `path` (following symlinks) and checks that it is a regular file.
  /// A FIFO, device or directory is an error, never a hang.
  static llvm::Expected<InputFile> open(llvm::StringRef path);

  InputFile(InputFile &&other);
  InputFile &operator=(InputFile &&) = delete;
  ~InputFile();

  uint64_t size() const { return fileSize; }
  llvm::StringRef path() const { return filePath; }
  /// Reads `length` bytes at `offset`, which must lie within the file.
  llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>> read(uint64_t offset,
                                                           uint64_t length);
  /// The whole file, memory-mapped (not read): for formats whose header
  /// has no length prefix (GGUF), parsed in place. Only the pages touched
  /// are read; a file truncated while mapped faults on the lost pages.
  llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>> map();

private:
  InputFile(std::string path, int fd, uint64_t size)
      : filePath(std::move(path)), fd(fd), fileSize(size) {}
  std::string filePath;
  int fd = -1;
  uint64_t fileSize = 0;
};

/// Reads the whole regular file `path`, which must be at most `limit` bytes.
llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>>
readInputFile(llvm::StringRef path, uint64_t limit);

/// `path` made absolute with every symbolic link resolved (realpath), or an
/// error "PATH: no such file" / "PATH: cannot access: REASON".
llvm::Expected<std::string> realInputPath(llvm::StringRef path);

/// Whether `path` exists; an error other than "no such file" (a symlink
/// loop, a permission problem) is returned as an error naming `path`.
llvm::Expected<bool> pathExists(llvm::StringRef path);

/// Parses JSON `text` after checking that it nests at most kMaxJSONDepth
/// deep and that no object has a key twice; `file` names it in messages.
llvm::Expected<llvm::json::Value> parseJSON(llvm::StringRef file,
                                            llvm::StringRef text);

/// `s` for a terminal or a log line: control characters (a newline, an
/// escape sequence) shown as '?'. For names in messages and in what the
/// binaries print, never for code (see cppQuoted).
std::string printableText(llvm::StringRef s);

/// Deepest nesting of brackets accepted in MLIR text before it is parsed.
constexpr unsigned kMaxIRDepth = 256;

/// Checks that MLIR text nests (`(`, `[`, `{`, `<` outside strings and
/// comments) at most kMaxIRDepth deep: the MLIR parser recurses, and a few
/// kilobytes of `[[[[...` would overflow its stack. `file` names it in the
/// message.
llvm::Error checkIRNesting(llvm::StringRef file, llvm::StringRef text);

} // namespace mlir::moe

#endif // MOE_FRONTENDS_INPUTFILES_H
