//===- InputFiles.cpp - reading files a user hands us, safely ---*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "frontends/InputFiles.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace llvm;

namespace mlir::moe {

namespace {
Error fileError(StringRef path, const Twine &message,
                std::error_code ec = inconvertibleErrorCode()) {
  return createStringError(ec, path + ": " + message);
}

StringRef kindOf(mode_t mode) {
  if (S_ISDIR(mode))
    return "a directory";
  if (S_ISFIFO(mode))
    return "a FIFO";
  if (S_ISCHR(mode))
    return "a character device";
  if (S_ISBLK(mode))
    return "a block device";
  if (S_ISSOCK(mode))
    return "a socket";
  return "not a regular file";
}
} // namespace

Expected<InputFile> InputFile::open(StringRef path) {
  std::string p = path.str();
  // O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
  int fd = ::open(p.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    std::error_code ec(errno, std::generic_category());
    return fileError(path, "cannot open: " + ec.message(), ec);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    std::error_code ec(errno, std::generic_category());
    ::close(fd);
    return fileError(path, "cannot read: " + ec.message(), ec);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return fileError(path, "is " + kindOf(st.st_mode) + ", not a regular file");
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return InputFile(std::move(p), fd, uint64_t(st.st_size));
}

InputFile::InputFile(InputFile &&other)
    : filePath(std::move(other.filePath)), fd(other.fd),
      fileSize(other.fileSize) {
  other.fd = -1;
}

InputFile::~InputFile() {
  if (fd >= 0)
    ::close(fd);
}

Expected<std::unique_ptr<MemoryBuffer>> InputFile::read(uint64_t offset,
                                                        uint64_t length) {
  if (offset > fileSize || length > fileSize - offset)
    return fileError(filePath,
                     formatv("bytes [{0}, {1}) lie beyond the end of the file "
                             "({2} bytes)",
                             offset, offset + length, fileSize));
  // pread(2), not mmap, so a file truncated meanwhile cannot fault; and
  // not MemoryBuffer::getOpenFileSlice, which fills what lies past a new
  // end with zeros: a file cut short since it was opened is an error.
  std::unique_ptr<WritableMemoryBuffer> buffer =
      WritableMemoryBuffer::getNewUninitMemBuffer(length, filePath);
  if (!buffer)
    return fileError(filePath, formatv("cannot allocate {0} bytes", length));
  char *data = buffer->getBufferStart();
  for (uint64_t done = 0; done < length;) {
    ssize_t got =
        ::pread(fd, data + done, size_t(length - done), off_t(offset + done));
    if (got < 0 && errno == EINTR)
      continue;
    if (got < 0) {
      std::error_code ec(errno, std::generic_category());
      return fileError(filePath, "cannot read: " + ec.message(), ec);
    }
    if (got == 0)
      return fileError(
          filePath, formatv("ends at byte {0}, before bytes [{1}, {2}) "
                            "(it was {3} bytes when opened): the file "
                            "was cut short while being read",
                            offset + done, offset, offset + length, fileSize));
    done += uint64_t(got);
  }
  return std::unique_ptr<MemoryBuffer>(std::move(buffer));
}

Expected<std::unique_ptr<MemoryBuffer>> InputFile::map() {
  auto buffer = MemoryBuffer::getOpenFileSlice(
      sys::fs::convertFDToNativeFile(fd), filePath, fileSize, 0,
      /*IsVolatile=*/false);
  if (!buffer)
    return fileError(filePath, "cannot map: " + buffer.getError().message(),
                     buffer.getError());
  return std::move(*buffer);
}

Expected<std::unique_ptr<MemoryBuffer>> readInputFile(StringRef path,
                                                      uint64_t limit) {
  Expected<InputFile> file = InputFile::open(path);
  if (!file)
    return file.takeError();
  if (file->size() > limit)
    return fileError(path, formatv("{0} bytes is larger than the {1}-byte "
                                   "limit for this file",
                                   file->size(), limit));
  return file->read(0, file->size());
}

Expected<std::string> realInputPath(StringRef path) {
  SmallString<256> real;
  if (std::error_code ec = sys::fs::real_path(path, real))
    return createStringError(ec, path + ": " +
                                     (ec == std::errc::no_such_file_or_directory
                                          ? "no such file"
                                          : "cannot access: " + ec.message()));
  return std::string(real);
}

Expected<bool> pathExists(StringRef path) {
  sys::fs::file_status status;
  std::error_code ec = sys::fs::status(path, status);
  if (!ec)
    return true;
  if (ec == std::errc::no_such_file_or_directory)
    return false;
  return fileError(path, "cannot access: " + ec.message(), ec);
}

Expected<json::Value> parseJSON(StringRef file, StringRef text) {
  // One pass before llvm::json, which parses recursively and keeps one of
  // two equal keys silently: bound the nesting, and refuse a key that
  // appears twice in one object (a header naming a tensor twice, a config
  // setting a key twice).
  struct Level {
    bool object;
    StringSet<> keys;
  };
  SmallVector<Level, 8> levels;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '"') {
      size_t start = i;
      for (++i; i < text.size() && text[i] != '"'; ++i)
        if (text[i] == '\\')
          ++i;
      if (i >= text.size())
        break; // unterminated: llvm::json reports it
      StringRef quoted = text.slice(start, i + 1);
      size_t next = text.find_first_not_of(" \t\r\n", i + 1);
      if (levels.empty() || !levels.back().object || next == StringRef::npos ||
          text[next] != ':')
        continue;
      std::string key = quoted.drop_front().drop_back().str();
      if (quoted.contains('\\')) {
        Expected<json::Value> decoded = json::parse(quoted);
        if (!decoded) {
          consumeError(decoded.takeError());
          continue; // llvm::json reports it
        }
        key = decoded->getAsString().value_or("").str();
      }
      if (!levels.back().keys.insert(key).second)
        return fileError(file, formatv("key \"{0}\" appears twice in one "
                                       "object (at byte {1})",
                                       key, start));
    } else if (c == '[' || c == '{') {
      if (levels.size() >= kMaxJSONDepth)
        return fileError(file, formatv("JSON nests deeper than {0} levels "
                                       "(at byte {1})",
                                       kMaxJSONDepth, i));
      levels.push_back({c == '{', {}});
    } else if ((c == ']' || c == '}') && !levels.empty()) {
      levels.pop_back();
    }
  }
  Expected<json::Value> parsed = json::parse(text);
  if (!parsed)
    return fileError(file, "invalid JSON: " + toString(parsed.takeError()));
  return parsed;
}

std::string printableText(StringRef s) {
  std::string out = s.str();
  for (char &c : out)
    if ((unsigned char)c < 0x20 || c == 0x7f)
      c = '?';
  return out;
}

Error checkIRNesting(StringRef file, StringRef text) {
  unsigned depth = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '"') {
      for (++i; i < text.size() && text[i] != '"' && text[i] != '\n'; ++i)
        if (text[i] == '\\')
          ++i;
    } else if (c == '/' && text.substr(i).starts_with("//")) {
      i = text.find('\n', i);
      if (i == StringRef::npos)
        break;
    } else if (c == '(' || c == '[' || c == '{' || c == '<') {
      if (++depth > kMaxIRDepth) {
        // Line and column, as the parser would say it.
        StringRef before = text.take_front(i);
        size_t line = before.count('\n') + 1;
        size_t column = i - (before.rfind('\n') + 1) + 1;
        return createStringError(
            inconvertibleErrorCode(),
            formatv("{0}:{1}:{2}: the IR nests deeper than {3} levels", file,
                    line, column, kMaxIRDepth));
      }
    } else if ((c == ')' || c == ']' || c == '}' ||
                (c == '>' && (i == 0 || text[i - 1] != '-'))) &&
               depth > 0) {
      --depth;
    }
  }
  return Error::success();
}

} // namespace mlir::moe
