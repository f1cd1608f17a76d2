//===- messages.h - the runtime's error-message helpers ---------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// What the weight-file checks (header.cpp, gguf.cpp) build their messages
// with. Header-only and std-only: each of those files also builds alone
// into a fuzzer.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_SRC_MESSAGES_H
#define MOERT_SRC_MESSAGES_H

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace moert::msg {

/// printf into a std::string.
inline std::string format(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
inline std::string format(const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  va_list again;
  va_copy(again, args);
  int n = std::vsnprintf(nullptr, 0, fmt, args);
  va_end(args);
  std::string s(n > 0 ? size_t(n) : 0, '\0');
  if (n > 0)
    std::vsnprintf(&s[0], s.size() + 1, fmt, again);
  va_end(again);
  return s;
}

/// A name as messages print it: quoted, at most 200 bytes, with control
/// characters, '\' and bytes outside ASCII's printable range escaped.
inline std::string quote(const std::string &name) {
  constexpr size_t kMax = 200;
  std::string s = "'";
  for (size_t i = 0; i < name.size() && i < kMax; ++i) {
    unsigned char c = static_cast<unsigned char>(name[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\')
      s += char(c);
    else
      s += format("\\x%02x", c);
  }
  if (name.size() > kMax)
    s += "...";
  return s + "'";
}

/// "[2, 3]".
inline std::string formatDims(const std::vector<uint64_t> &dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i)
    s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

/// The length (2 to 4) of the well-formed multi-byte UTF-8 sequence at p
/// (`avail` bytes there), or 0: no overlong forms, no surrogates, nothing
/// past U+10FFFF.
inline size_t utf8Sequence(const unsigned char *p, size_t avail) {
  unsigned char c = p[0];
  size_t more;
  unsigned char lo = 0x80, hi = 0xbf; // the second byte's range
  if (c >= 0xc2 && c <= 0xdf) {
    more = 1;
  } else if (c >= 0xe0 && c <= 0xef) {
    more = 2;
    if (c == 0xe0)
      lo = 0xa0; // no overlong forms
    else if (c == 0xed)
      hi = 0x9f; // no surrogates
  } else if (c >= 0xf0 && c <= 0xf4) {
    more = 3;
    if (c == 0xf0)
      lo = 0x90;
    else if (c == 0xf4)
      hi = 0x8f; // nothing past U+10FFFF
  } else {
    return 0;
  }
  if (avail <= more)
    return 0;
  for (size_t k = 1; k <= more; ++k)
    if (k == 1 ? (p[k] < lo || p[k] > hi) : (p[k] < 0x80 || p[k] > 0xbf))
      return 0;
  return more + 1;
}

} // namespace moert::msg

#endif // MOERT_SRC_MESSAGES_H
