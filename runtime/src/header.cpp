//===- header.cpp - safetensors headers against the manifest ---*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "header.h"
#include "messages.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <tuple>

namespace moert {

namespace {

struct DType {
  const char *name;
  unsigned bytes;
};
/// The dtypes the safetensors format defines.
constexpr DType kDTypes[] = {
    {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
    {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
    {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8},
};

using msg::format;
using msg::formatDims;
using msg::quote;

uint64_t read64le(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = v << 8 | p[i];
  return v;
}

/// Reads the header's JSON against the safetensors schema. Every function
/// returns false after recording the first error in `error`.
class Parser {
public:
  Parser(const char *text, size_t length)
      : begin(text), cur(text), end(text + length) {}

  std::string error;

  bool fail(std::string message) {
    if (error.empty())
      error = std::move(message);
    return false;
  }
  bool syntax(const char *what) {
    if (cur >= end)
      return fail(format("header is not valid JSON: %s at its end", what));
    return fail(format("header is not valid JSON: %s at byte %zu", what,
                       size_t(cur - begin)));
  }

  void skipSpace() {
    while (cur < end &&
           (*cur == ' ' || *cur == '\t' || *cur == '\n' || *cur == '\r'))
      ++cur;
  }
  bool atEnd() const { return cur >= end; }
  bool next(char c) const { return cur < end && *cur == c; }
  bool consume(char c) {
    if (!next(c))
      return false;
    ++cur;
    return true;
  }
  bool startsNumber() const {
    return cur < end && (*cur == '-' || (*cur >= '0' && *cur <= '9'));
  }

  /// A string, at its opening quote.
  bool string(std::string &out) {
    if (!consume('"'))
      return syntax("expected a string");
    for (;;) {
      if (cur >= end)
        return syntax("unterminated string");
      unsigned char c = static_cast<unsigned char>(*cur);
      if (c == '"') {
        ++cur;
        return true;
      }
      if (c < 0x20)
        return syntax("control character in a string");
      if (c == '\\') {
        if (!escape(out))
          return false;
        continue;
      }
      if (c < 0x80) {
        out += char(c);
        ++cur;
        continue;
      }
      if (!utf8(out))
        return false;
    }
  }

  enum class Number { Ok, Negative, NotInteger, TooLarge };

  /// A JSON number, at its first character; `kind` says whether it is a
  /// non-negative integer that fits in 64 bits (numbers written with a
  /// fraction or an exponent count when they are exact integers below 2^53,
  /// as the compiler's reader takes them).
  bool number(uint64_t &value, Number &kind) {
    const char *start = cur;
    bool negative = consume('-');
    if (cur >= end || *cur < '0' || *cur > '9')
      return syntax("invalid number");
    if (*cur == '0') {
      ++cur;
      if (cur < end && *cur >= '0' && *cur <= '9')
        return syntax("number with a leading zero");
    } else {
      while (cur < end && *cur >= '0' && *cur <= '9')
        ++cur;
    }
    bool integral = true;
    if (consume('.')) {
      integral = false;
      if (cur >= end || *cur < '0' || *cur > '9')
        return syntax("invalid number");
      while (cur < end && *cur >= '0' && *cur <= '9')
        ++cur;
    }
    if (next('e') || next('E')) {
      integral = false;
      ++cur;
      if (!consume('+'))
        consume('-');
      if (cur >= end || *cur < '0' || *cur > '9')
        return syntax("invalid number");
      while (cur < end && *cur >= '0' && *cur <= '9')
        ++cur;
    }
    value = 0;
    kind = Number::Ok;
    if (integral) {
      for (const char *p = start + (negative ? 1 : 0); p < cur; ++p) {
        uint64_t digit = uint64_t(*p - '0');
        if (value > (UINT64_MAX - digit) / 10) {
          kind = negative ? Number::Negative : Number::TooLarge;
          return true;
        }
        value = value * 10 + digit;
      }
      if (negative && value != 0)
        kind = Number::Negative;
      return true;
    }
    std::string token(start, cur);
    double d = std::strtod(token.c_str(), nullptr);
    if (d < 0)
      kind = Number::Negative;
    else if (!(d <= 9007199254740992.0)) // 2^53; also NaN
      kind = Number::TooLarge;
    else if (std::floor(d) != d)
      kind = Number::NotInteger;
    else
      value = uint64_t(d);
    return true;
  }

private:
  const char *begin, *cur, *end;

  static int hexDigit(char c) {
    if (c >= '0' && c <= '9')
      return c - '0';
    if (c >= 'a' && c <= 'f')
      return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
      return c - 'A' + 10;
    return -1;
  }

  /// Four hex digits after "\u".
  bool hex4(unsigned &unit) {
    if (end - cur < 4)
      return syntax("truncated \\u escape");
    unit = 0;
    for (int i = 0; i < 4; ++i) {
      int d = hexDigit(cur[i]);
      if (d < 0)
        return syntax("invalid \\u escape");
      unit = unit << 4 | unsigned(d);
    }
    cur += 4;
    return true;
  }

  static void append(std::string &out, unsigned cp) {
    if (cp < 0x80) {
      out += char(cp);
    } else if (cp < 0x800) {
      out += char(0xc0 | cp >> 6);
      out += char(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out += char(0xe0 | cp >> 12);
      out += char(0x80 | (cp >> 6 & 0x3f));
      out += char(0x80 | (cp & 0x3f));
    } else {
      out += char(0xf0 | cp >> 18);
      out += char(0x80 | (cp >> 12 & 0x3f));
      out += char(0x80 | (cp >> 6 & 0x3f));
      out += char(0x80 | (cp & 0x3f));
    }
  }

  /// An escape sequence, at its backslash.
  bool escape(std::string &out) {
    ++cur;
    if (cur >= end)
      return syntax("unterminated string");
    char c = *cur++;
    switch (c) {
    case '"':
    case '\\':
    case '/':
      out += c;
      return true;
    case 'b':
      out += '\b';
      return true;
    case 'f':
      out += '\f';
      return true;
    case 'n':
      out += '\n';
      return true;
    case 'r':
      out += '\r';
      return true;
    case 't':
      out += '\t';
      return true;
    case 'u':
      break;
    default:
      --cur;
      return syntax("invalid escape in a string");
    }
    unsigned unit;
    if (!hex4(unit))
      return false;
    if (unit >= 0xdc00 && unit <= 0xdfff)
      return syntax("unpaired UTF-16 surrogate in a \\u escape");
    if (unit >= 0xd800 && unit <= 0xdbff) {
      unsigned low;
      if (end - cur < 2 || cur[0] != '\\' || cur[1] != 'u')
        return syntax("unpaired UTF-16 surrogate in a \\u escape");
      cur += 2;
      if (!hex4(low))
        return false;
      if (low < 0xdc00 || low > 0xdfff)
        return syntax("unpaired UTF-16 surrogate in a \\u escape");
      unit = 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
    }
    append(out, unit);
    return true;
  }

  /// One UTF-8 sequence of two to four bytes, at its lead byte.
  bool utf8(std::string &out) {
    size_t len = msg::utf8Sequence(reinterpret_cast<const unsigned char *>(cur),
                                   size_t(end - cur));
    if (len == 0)
      return syntax("invalid UTF-8 in a string");
    out.append(cur, len);
    cur += len;
    return true;
  }
};

/// Steps past the ',' between members or elements, or the closing bracket
/// `close`; `done` says which it was.
bool separator(Parser &p, char close, bool &done) {
  p.skipSpace();
  if (p.consume(',')) {
    p.skipSpace();
    done = false;
    return true;
  }
  if (p.consume(close)) {
    done = true;
    return true;
  }
  return p.syntax(close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
}

/// A member's key and its colon.
bool key(Parser &p, std::string &out) {
  if (!p.next('"'))
    return p.syntax("expected a string key");
  if (!p.string(out))
    return false;
  p.skipSpace();
  if (!p.consume(':'))
    return p.syntax("expected ':' after a key");
  p.skipSpace();
  return true;
}

/// "__metadata__": an object of strings, kept in `out`.
bool metadata(Parser &p,
              std::vector<std::pair<std::string, std::string>> &out) {
  if (!p.consume('{'))
    return p.fail("'__metadata__' must be an object of strings");
  std::vector<std::string> keys;
  p.skipSpace();
  bool done = p.consume('}');
  while (!done) {
    std::string k, value;
    if (!key(p, k))
      return false;
    if (!p.next('"'))
      return p.fail("'__metadata__' value for " + quote(k) +
                    " must be a string");
    if (!p.string(value))
      return false;
    keys.push_back(k);
    out.emplace_back(std::move(k), std::move(value));
    if (!separator(p, '}', done))
      return false;
  }
  std::sort(keys.begin(), keys.end());
  auto twice = std::adjacent_find(keys.begin(), keys.end());
  if (twice != keys.end())
    return p.fail("'__metadata__' has the key " + quote(*twice) + " twice");
  return true;
}

/// An array of non-negative integers: a shape (at most kMaxRank entries) or,
/// with `offsets`, data offsets (exactly two).
bool integers(Parser &p, const std::string &tensor, bool offsets,
              std::vector<uint64_t> &out) {
  const char *notArray = offsets
                             ? "'data_offsets' must be an array [begin, end]"
                             : "'shape' must be an array";
  const char *notInteger = offsets
                               ? "data offsets must be non-negative integers"
                               : "shape entries must be non-negative integers";
  if (!p.consume('['))
    return p.fail("tensor " + quote(tensor) + ": " + notArray);
  p.skipSpace();
  bool done = p.consume(']');
  while (!done) {
    if (!p.startsNumber())
      return p.fail("tensor " + quote(tensor) + ": " + notInteger);
    uint64_t v = 0;
    Parser::Number kind = Parser::Number::Ok;
    if (!p.number(v, kind))
      return false;
    if (kind != Parser::Number::Ok)
      return p.fail("tensor " + quote(tensor) + ": " + notInteger);
    if (offsets && out.size() == 2)
      return p.fail("tensor " + quote(tensor) + ": " + notArray);
    if (!offsets && out.size() == kMaxRank)
      return p.fail(format("tensor %s: shape has more than %zu dimensions",
                           quote(tensor).c_str(), kMaxRank));
    out.push_back(v);
    if (!separator(p, ']', done))
      return false;
  }
  if (offsets && out.size() != 2)
    return p.fail("tensor " + quote(tensor) + ": " + notArray);
  return true;
}

/// One tensor's entry; checks it against the data section's size.
bool entry(Parser &p, HeaderTensor &t, uint64_t dataOffset, uint64_t dataSize) {
  const std::string q = quote(t.name);
  if (!p.consume('{'))
    return p.fail("tensor " + q + ": entry is not a JSON object");
  bool haveDType = false, haveShape = false, haveOffsets = false;
  unsigned bytes = 0;
  std::vector<uint64_t> offsets;
  p.skipSpace();
  bool done = p.consume('}');
  while (!done) {
    std::string k;
    if (!key(p, k))
      return false;
    bool *seen = k == "dtype"          ? &haveDType
                 : k == "shape"        ? &haveShape
                 : k == "data_offsets" ? &haveOffsets
                                       : nullptr;
    if (!seen)
      return p.fail("tensor " + q + ": unexpected key " + quote(k));
    if (*seen)
      return p.fail("tensor " + q + ": key " + quote(k) + " appears twice");
    *seen = true;
    if (k == "dtype") {
      std::string name;
      if (!p.next('"'))
        return p.fail("tensor " + q + ": 'dtype' must be a string");
      if (!p.string(name))
        return false;
      for (const DType &d : kDTypes)
        if (name == d.name) {
          t.dtype = d.name;
          bytes = d.bytes;
        }
      if (!t.dtype)
        return p.fail("tensor " + q + ": unknown dtype " + quote(name));
    } else if (!integers(p, t.name, k == "data_offsets",
                         k == "shape" ? t.shape : offsets)) {
      return false;
    }
    if (!separator(p, '}', done))
      return false;
  }
  if (!haveDType)
    return p.fail("tensor " + q + ": 'dtype' must be a string");
  if (!haveShape)
    return p.fail("tensor " + q + ": 'shape' must be an array");
  if (!haveOffsets)
    return p.fail("tensor " + q +
                  ": 'data_offsets' must be an array [begin, end]");

  uint64_t elements = 1;
  for (uint64_t d : t.shape)
    if (__builtin_mul_overflow(elements, d, &elements))
      return p.fail("tensor " + q + ": shape " + formatDims(t.shape) +
                    " overflows");
  t.begin = offsets[0];
  t.end = offsets[1];
  if (t.begin > t.end)
    return p.fail(format("tensor %s: data offsets [%llu, %llu) are reversed",
                         q.c_str(), (unsigned long long)t.begin,
                         (unsigned long long)t.end));
  if (t.end > dataSize) {
    uint64_t fileSize = dataOffset + dataSize, at;
    if (__builtin_add_overflow(dataOffset, t.end, &at))
      return p.fail(format("tensor %s: data offsets [%llu, %llu) run past "
                           "the end of the file (%llu bytes)",
                           q.c_str(), (unsigned long long)t.begin,
                           (unsigned long long)t.end,
                           (unsigned long long)fileSize));
    return p.fail(format("tensor %s ends at byte %llu, past the end of the "
                         "file (%llu bytes)",
                         q.c_str(), (unsigned long long)at,
                         (unsigned long long)fileSize));
  }
  uint64_t held = t.end - t.begin, needed;
  bool overflows = __builtin_mul_overflow(elements, uint64_t(bytes), &needed);
  if (overflows || needed != held) {
    std::string need = overflows ? "more than " + std::to_string(held)
                                 : std::to_string(needed);
    return p.fail(format("tensor %s: %s %s needs %s bytes but its data "
                         "offsets [%llu, %llu) hold %llu",
                         q.c_str(), t.dtype, formatDims(t.shape).c_str(),
                         need.c_str(), (unsigned long long)t.begin,
                         (unsigned long long)t.end, (unsigned long long)held));
  }
  return true;
}

const char *dtypeName(moert_dtype d) {
  switch (d) {
  case MOERT_F32:
    return "F32";
  case MOERT_F16:
    return "F16";
  case MOERT_BF16:
    return "BF16";
  case MOERT_Q8_0:
  case MOERT_Q4_0:
  case MOERT_Q4_1:
    return "U8"; // the raw blocks
  case MOERT_Q4_K:
  case MOERT_Q5_K:
  case MOERT_Q6_K:
    return nullptr; // only in GGUF files (gguf::checkWeight)
  }
  return nullptr;
}

/// Bytes of one 32-element block of a quantised dtype (moert/quant.h), or 0
/// for the others.
uint64_t blockBytes(moert_dtype d) {
  switch (d) {
  case MOERT_Q8_0:
    return 34;
  case MOERT_Q4_0:
    return 18;
  case MOERT_Q4_1:
    return 20;
  default:
    return 0;
  }
}

} // namespace

const HeaderTensor *Header::find(const char *name) const {
  auto it = std::lower_bound(tensors.begin(), tensors.end(), name,
                             [](const HeaderTensor &t, const char *n) {
                               return t.name.compare(n) < 0;
                             });
  return it != tensors.end() && it->name.compare(name) == 0 ? &*it : nullptr;
}

std::string parseHeader(const char *json, size_t length, uint64_t fileSize,
                        Header &out) {
  if (fileSize < 8 || length > fileSize - 8)
    return "header does not fit in the file";
  out = Header();
  out.dataOffset = 8 + length;
  uint64_t dataSize = fileSize - out.dataOffset;

  Parser p(json, length);
  p.skipSpace();
  if (!p.consume('{'))
    return "header is not a JSON object";
  bool sawMetadata = false;
  p.skipSpace();
  bool done = p.consume('}');
  while (!done) {
    std::string name;
    if (!key(p, name))
      return p.error;
    if (name == "__metadata__") {
      if (sawMetadata)
        return "header has the key '__metadata__' twice";
      sawMetadata = true;
      if (!metadata(p, out.metadata))
        return p.error;
    } else {
      if (name.empty())
        return "a tensor has an empty name";
      out.tensors.emplace_back();
      out.tensors.back().name = std::move(name);
      if (!entry(p, out.tensors.back(), out.dataOffset, dataSize))
        return p.error;
    }
    if (!separator(p, '}', done))
      return p.error;
  }
  p.skipSpace();
  if (!p.atEnd()) {
    p.syntax("unexpected text after the object");
    return p.error;
  }

  std::sort(out.tensors.begin(), out.tensors.end(),
            [](const HeaderTensor &a, const HeaderTensor &b) {
              return a.name < b.name;
            });
  for (size_t i = 1; i < out.tensors.size(); ++i)
    if (out.tensors[i].name == out.tensors[i - 1].name)
      return "header has the tensor " + quote(out.tensors[i].name) + " twice";

  // No two tensors may share bytes (empty ones hold none).
  std::vector<const HeaderTensor *> byOffset;
  for (const HeaderTensor &t : out.tensors)
    if (t.begin != t.end)
      byOffset.push_back(&t);
  std::sort(byOffset.begin(), byOffset.end(),
            [](const HeaderTensor *a, const HeaderTensor *b) {
              return std::tie(a->begin, a->end, a->name) <
                     std::tie(b->begin, b->end, b->name);
            });
  for (size_t i = 1; i < byOffset.size(); ++i) {
    const HeaderTensor &a = *byOffset[i - 1], &b = *byOffset[i];
    if (b.begin < a.end)
      return format("tensors %s [%llu, %llu) and %s [%llu, %llu) overlap",
                    quote(a.name).c_str(), (unsigned long long)a.begin,
                    (unsigned long long)a.end, quote(b.name).c_str(),
                    (unsigned long long)b.begin, (unsigned long long)b.end);
  }
  return "";
}

std::string checkManifest(const Header &header,
                          const moert_weight_desc *const *weights,
                          size_t count) {
  for (size_t i = 0; i < count; ++i) {
    const moert_weight_desc &w = *weights[i];
    std::string q = quote(w.name ? w.name : "");
    const HeaderTensor *t = w.name ? header.find(w.name) : nullptr;
    if (!t)
      return "tensor " + q + " is not in the file";
    const char *dtype = dtypeName(w.dtype);
    if (!dtype)
      return format("the manifest gives tensor %s an unknown dtype (%d)",
                    q.c_str(), int(w.dtype));
    if (std::strcmp(t->dtype, dtype) != 0)
      return format("tensor %s is %s in the file, but the model was compiled "
                    "for %s",
                    q.c_str(), t->dtype, dtype);
    std::vector<uint64_t> shape = {uint64_t(w.rows)};
    if (uint64_t block = blockBytes(w.dtype))
      shape.push_back(uint64_t(w.cols) / 32 * block); // [rows, row bytes]
    else if (w.rank != 1)
      shape.push_back(uint64_t(w.cols));
    if (t->shape != shape)
      return format("tensor %s has shape %s in the file, but the model was "
                    "compiled for %s",
                    q.c_str(), formatDims(t->shape).c_str(),
                    formatDims(shape).c_str());
    // dataOffset + end <= the file's size: parseHeader checked it.
    uint64_t begin = header.dataOffset + t->begin;
    uint64_t end = header.dataOffset + t->end;
    if (begin != w.offset || end - begin != w.size) {
      uint64_t wantEnd;
      if (__builtin_add_overflow(w.offset, w.size, &wantEnd))
        wantEnd = UINT64_MAX;
      return format("tensor %s is at bytes [%llu, %llu) in the file, but the "
                    "model was compiled for [%llu, %llu)",
                    q.c_str(), (unsigned long long)begin,
                    (unsigned long long)end, (unsigned long long)w.offset,
                    (unsigned long long)wantEnd);
    }
  }
  return "";
}

uint64_t headerImageBytes(const unsigned char *prefix, size_t prefixSize,
                          uint64_t fileSize) {
  if (fileSize < 8 || prefixSize < 8)
    return std::min<uint64_t>(fileSize, 8);
  uint64_t length = read64le(prefix);
  if (length > fileSize - 8 || length > kMaxHeaderBytes)
    return 8;
  return 8 + length;
}

std::string checkWeightFile(const unsigned char *image, size_t imageSize,
                            uint64_t fileSize,
                            const moert_weight_desc *const *weights,
                            size_t count, const char *build) {
  if (fileSize < 8)
    return format("file is %llu bytes, too short for the 8-byte header "
                  "length",
                  (unsigned long long)fileSize);
  if (imageSize < 8)
    return format("only %zu bytes of the file could be read", imageSize);
  uint64_t length = read64le(image);
  if (length > fileSize - 8)
    return format("header length %llu runs past the end of the file (%llu "
                  "bytes)",
                  (unsigned long long)length, (unsigned long long)fileSize);
  if (length > kMaxHeaderBytes)
    return format("header length %llu exceeds the %llu-byte limit",
                  (unsigned long long)length,
                  (unsigned long long)kMaxHeaderBytes);
  if (imageSize - 8 < length)
    return format("only %zu bytes of the file could be read", imageSize);
  Header header;
  std::string error = parseHeader(reinterpret_cast<const char *>(image) + 8,
                                  size_t(length), fileSize, header);
  if (!error.empty())
    return error;
  if (build) {
    const std::string *found = nullptr;
    for (const auto &[k, v] : header.metadata)
      if (k == "moe.build")
        found = &v;
    if (!found || *found != build)
      return format("it was written by another moe-compile run (build %s, "
                    "not %s); the executable and its weights file are written "
                    "together",
                    found ? quote(*found).c_str() : "unknown",
                    quote(build).c_str());
  }
  return checkManifest(header, weights, count);
}

} // namespace moert
