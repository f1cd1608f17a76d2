//===- OutputFile.cpp - writing the tools' outputs safely -------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "tools/common/OutputFile.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Signals.h"

#include <cstdlib>

using namespace llvm;

namespace mlir::moe {

namespace {
Error outputError(StringRef path, const Twine &message) {
  return createStringError(inconvertibleErrorCode(), path + ": " + message);
}

/// The directory `path` is written in.
std::string directoryOf(StringRef path) {
  StringRef parent = sys::path::parent_path(path);
  return parent.empty() ? "." : parent.str();
}

/// Closes `os`, turning a write or close error into an Error. The stream's
/// error is cleared either way: raw_fd_ostream aborts in its destructor on
/// an error nobody looked at.
Error finish(raw_fd_ostream &os, StringRef path) {
  os.close();
  if (!os.has_error())
    return Error::success();
  std::error_code ec = os.error();
  os.clear_error();
  return outputError(path, "cannot write: " + ec.message());
}
} // namespace

Error checkOutputPath(StringRef path, OutputKind kind) {
  if (path == "-") {
    if (kind != OutputKind::Text)
      return outputError(path, "an executable cannot be written to stdout; "
                               "give -o a file path");
    return Error::success();
  }
  if (path.empty())
    return outputError("-o", "the output path is empty");
  sys::fs::file_status status;
  std::error_code ec = sys::fs::status(path, status);
  if (!ec) {
    if (status.type() == sys::fs::file_type::directory_file)
      return outputError(path, "is a directory");
    if (status.type() != sys::fs::file_type::regular_file) {
      if (kind != OutputKind::Text)
        return outputError(path, "is not a regular file; moe-compile "
                                 "replaces only regular files");
      return Error::success(); // written in place, like a shell redirect
    }
  } else if (ec != std::errc::no_such_file_or_directory) {
    return outputError(path, "cannot access: " + ec.message());
  }
  std::string dir = directoryOf(path);
  if (!sys::fs::is_directory(dir))
    return outputError(path, "its directory " + dir + " does not exist");
  if (sys::fs::access(dir, sys::fs::AccessMode::Write))
    return outputError(path, "its directory " + dir + " is not writable");
  return Error::success();
}

Error checkNotAnInput(StringRef path, ArrayRef<std::string> inputs) {
  if (path == "-")
    return Error::success();
  for (const std::string &input : inputs) {
    bool same = false;
    if (!sys::fs::equivalent(path, input, same) && same)
      return outputError(path, "is an input of this compilation (" + input +
                                   "); choose another output path");
  }
  return Error::success();
}

Error writeOutputFile(StringRef path, function_ref<void(raw_ostream &)> write,
                      OutputKind kind) {
  return writeOutputFileOrFail(
      path,
      [&](raw_ostream &os) {
        write(os);
        return Error::success();
      },
      kind);
}

Error writeOutputFileOrFail(StringRef path,
                            function_ref<Error(raw_ostream &)> write,
                            OutputKind kind) {
  if (Error e = checkOutputPath(path, kind))
    return e;
  if (path == "-") {
    raw_fd_ostream &out = outs();
    if (Error e = write(out))
      return e;
    out.flush();
    if (out.has_error()) {
      std::error_code ec = out.error();
      out.clear_error();
      return outputError("stdout", "cannot write: " + ec.message());
    }
    return Error::success();
  }
  sys::fs::file_status status;
  if (!sys::fs::status(path, status) &&
      status.type() != sys::fs::file_type::regular_file) {
    // A pipe or device (checkOutputPath allowed it): write in place.
    std::error_code ec;
    raw_fd_ostream os(path, ec);
    if (ec)
      return outputError(path, "cannot open: " + ec.message());
    Error e = write(os);
    Error closed = finish(os, path);
    if (e)
      return joinErrors(std::move(e), std::move(closed));
    return closed;
  }

  // A temporary no other process can share or have planted: O_EXCL, a
  // random name, in the output's directory so that the rename is atomic.
  SmallString<256> tmp;
  int fd = -1;
  unsigned mode = kind == OutputKind::Executable ? 0777 : 0666;
  // A hidden name with a short form of PATH's, so that it fits in 255 bytes.
  SmallString<256> model(directoryOf(path));
  sys::path::append(model, "." + sys::path::filename(path).take_front(200) +
                               ".tmp-%%%%%%%%");
  if (std::error_code ec =
          sys::fs::createUniqueFile(model, fd, tmp, sys::fs::OF_None, mode))
    return outputError(path, "cannot create a temporary file: " + ec.message());
  sys::RemoveFileOnSignal(tmp);
  auto discard = [&](Error e) {
    sys::fs::remove(tmp);
    sys::DontRemoveFileOnSignal(tmp);
    return e;
  };
  {
    raw_fd_ostream os(fd, /*shouldClose=*/true);
    Error e = write(os);
    Error closed = finish(os, path);
    if (e) {
      consumeError(std::move(closed));
      return discard(std::move(e));
    }
    if (closed)
      return discard(std::move(closed));
  }
  if (std::error_code ec = sys::fs::rename(tmp, path))
    return discard(outputError(path, "cannot replace: " + ec.message()));
  sys::DontRemoveFileOnSignal(tmp);
  return Error::success();
}

namespace {
/// errs(), with control characters but newline and tab shown as '?'.
class PrintableStream : public raw_ostream {
public:
  PrintableStream() { SetUnbuffered(); }

private:
  void write_impl(const char *data, size_t size) override {
    std::string text(data, size);
    for (char &c : text)
      if (((unsigned char)c < 0x20 && c != '\n' && c != '\t') || c == 0x7f)
        c = '?';
    errs() << text;
    written += size;
  }
  uint64_t current_pos() const override { return written; }
  uint64_t written = 0;
};
} // namespace

raw_ostream &printableErrs() {
  static PrintableStream stream;
  return stream;
}

namespace {
const char *stdoutTool = "";
void checkStdoutAtExit() {
  raw_fd_ostream &out = outs();
  out.flush();
  if (!out.has_error())
    return;
  std::error_code ec = out.error();
  out.clear_error();
  errs() << stdoutTool << ": error: cannot write to stdout: " << ec.message()
         << "\n";
  errs().flush();
  std::_Exit(1);
}
} // namespace

void exitCleanlyOnStdoutErrors(const char *tool) {
  stdoutTool = tool;
  // outs() first: handlers run in reverse order of registration, so this
  // one runs before the stream's destructor.
  (void)outs();
  std::atexit(checkStdoutAtExit);
}

} // namespace mlir::moe
