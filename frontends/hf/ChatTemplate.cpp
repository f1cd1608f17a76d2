//===- ChatTemplate.cpp - Hugging Face chat templates -----------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// A lexer, parser and tree-walking evaluator for the Jinja subset of
// docs/chat-templates.md, following jinja2 3.1's lexer (trim_blocks,
// lstrip_blocks, `-`/`+` whitespace control, newline normalisation, the
// dropped trailing newline) and its Python semantics (truthiness, str() and
// repr(), undefined values, sandboxed attribute lookup). Depends on LLVM
// Support only (no MLIR), so a fuzzer builds it alone.
//
// Failures inside are thrown as Failure (byte offset + text) and become one
// llvm::Error at the API boundary. Every loop, string, list and nesting depth
// is bounded, so hostile templates end in an error, never a crash or a hang.
//
//===----------------------------------------------------------------------===//

#include "frontends/hf/ChatTemplate.h"

#include "frontends/InputFiles.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

using namespace llvm;

namespace mlir::moe::hf {

namespace {

//===----------------------------------------------------------------------===//
// Limits
//===----------------------------------------------------------------------===//

constexpr size_t kMaxOutput = 1u << 20;    // bytes of output, and of a string
constexpr size_t kMaxListSize = 1u << 20;  // elements of a list
constexpr uint64_t kMaxSteps = 10'000'000; // work units (tick()) per rendering
constexpr unsigned kMaxParseDepth = 100;   // nesting of expressions, blocks
constexpr unsigned kMaxValueDepth = 64;    // nesting of list/dict values
constexpr unsigned kMaxNamespaces = 64;    // namespace() calls per rendering
constexpr int64_t kMaxRange = 100000;      // jinja2's sandbox MAX_RANGE

struct Failure {
  size_t pos;
  std::string message;
};

[[noreturn]] void fail(size_t pos, const Twine &message) {
  throw Failure{pos, message.str()};
}

/// The work budget of the rendering in progress on this thread (none while
/// parsing): one unit per evaluation step, value copied, or 16 bytes of
/// string copied or scanned (so at most 160 MB are copied in all). `gPos` is
/// where the evaluation is.
thread_local uint64_t *gSteps = nullptr;
thread_local size_t gPos = 0;

void tick(uint64_t units) {
  if (gSteps && (*gSteps += units) > kMaxSteps)
    fail(gPos, "the template runs too long (more than " + Twine(kMaxSteps) +
                   " steps)");
}

void tickBytes(size_t bytes) { tick(1 + bytes / 16); }

//===----------------------------------------------------------------------===//
// UTF-8 and Python's notion of whitespace
//===----------------------------------------------------------------------===//

/// Decodes the code point at s[i] and advances i; an invalid byte is one
/// "code point" of its own (value 0xFFFFFFFF), never whitespace.
uint32_t decode(StringRef s, size_t &i) {
  unsigned char c = s[i];
  unsigned len = c < 0x80         ? 1
                 : (c >> 5) == 6  ? 2
                 : (c >> 4) == 14 ? 3
                 : (c >> 3) == 30 ? 4
                                  : 0;
  if (len == 0 || i + len > s.size()) {
    ++i;
    return c < 0x80 ? c : 0xFFFFFFFF;
  }
  uint32_t cp = len == 1 ? c : c & (0x7F >> len);
  for (unsigned k = 1; k < len; ++k) {
    unsigned char d = s[i + k];
    if ((d & 0xC0) != 0x80) {
      ++i;
      return 0xFFFFFFFF;
    }
    cp = (cp << 6) | (d & 0x3F);
  }
  i += len;
  return cp;
}

void encode(uint32_t cp, std::string &out) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

/// str.isspace() (and re's \s) for one code point.
bool isPySpace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) ||
         cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/// The byte offsets where each code point of `s` starts, plus s.size().
std::vector<size_t> codePointStarts(StringRef s) {
  tickBytes(s.size());
  std::vector<size_t> starts;
  for (size_t i = 0; i < s.size();) {
    starts.push_back(i);
    decode(s, i);
  }
  starts.push_back(s.size());
  return starts;
}

size_t codePointCount(StringRef s) {
  tickBytes(s.size());
  size_t n = 0;
  for (size_t i = 0; i < s.size(); ++n)
    decode(s, i);
  return n;
}

/// Python's str.strip/lstrip/rstrip: whitespace, or the code points of
/// `chars` when given.
std::string pyStrip(StringRef s, bool left, bool right,
                    const std::string *chars = nullptr) {
  std::vector<uint32_t> set;
  if (chars)
    for (size_t i = 0; i < chars->size();)
      set.push_back(decode(*chars, i));
  auto strip = [&](uint32_t cp) {
    return chars ? llvm::is_contained(set, cp) : isPySpace(cp);
  };
  std::vector<size_t> starts = codePointStarts(s);
  size_t b = 0, e = starts.size() - 1;
  auto cpAt = [&](size_t k) {
    size_t i = starts[k];
    return decode(s, i);
  };
  if (left)
    while (b < e && strip(cpAt(b)))
      ++b;
  if (right)
    while (e > b && strip(cpAt(e - 1)))
      --e;
  return s.slice(starts[b], starts[e]).str();
}

//===----------------------------------------------------------------------===//
// Values
//===----------------------------------------------------------------------===//

enum class Kind : uint8_t {
  Undefined,
  None,
  Bool,
  Int,
  Float,
  Str,
  List,
  Tuple,
  Dict,
  Namespace,
  Loop,
  Callable,
  Generator,
};

struct Value;
using List = std::vector<Value>;
struct Dict;
struct GenState;
struct LoopState;

struct Value {
  Value() = default;
  Value(const Value &o)
      : kind(o.kind), b(o.b), depth(o.depth), i(o.i), f(o.f), s(o.s),
        list(o.list), dict(o.dict), gen(o.gen), loop(o.loop) {
    tickBytes(s.size());
  }
  Value(Value &&) noexcept = default;
  Value &operator=(const Value &o) {
    if (this != &o)
      *this = Value(o);
    return *this;
  }
  Value &operator=(Value &&) noexcept = default;

  Kind kind = Kind::Undefined;
  bool b = false;
  unsigned depth = 0; // nesting of containers, for the limits
  int64_t i = 0;
  double f = 0;
  /// Str: the text; Undefined: the name (for messages); Callable: the name.
  std::string s;
  std::shared_ptr<List> list;      // List, Tuple; Callable: the bound object
  std::shared_ptr<Dict> dict;      // Dict, Namespace, Loop
  std::shared_ptr<GenState> gen;   // Generator
  std::shared_ptr<LoopState> loop; // Loop

  static Value undefined(std::string name) {
    Value v;
    v.s = std::move(name);
    return v;
  }
  static Value none() {
    Value v;
    v.kind = Kind::None;
    return v;
  }
  static Value boolean(bool b) {
    Value v;
    v.kind = Kind::Bool;
    v.b = b;
    return v;
  }
  static Value integer(int64_t i) {
    Value v;
    v.kind = Kind::Int;
    v.i = i;
    return v;
  }
  static Value real(double f) {
    Value v;
    v.kind = Kind::Float;
    v.f = f;
    return v;
  }
  static Value str(std::string s) {
    Value v;
    v.kind = Kind::Str;
    v.s = std::move(s);
    return v;
  }
  static Value callable(std::string name, const Value *self = nullptr) {
    Value v;
    v.kind = Kind::Callable;
    v.s = std::move(name);
    if (self)
      v.list = std::make_shared<List>(1, *self);
    return v;
  }
  bool isUndefined() const { return kind == Kind::Undefined; }
  bool isNumber() const {
    return kind == Kind::Bool || kind == Kind::Int || kind == Kind::Float;
  }
  bool isIntLike() const { return kind == Kind::Bool || kind == Kind::Int; }
  int64_t asInt() const { return kind == Kind::Bool ? int64_t(b) : i; }
  double asFloat() const { return kind == Kind::Float ? f : double(asInt()); }
  bool isSequence() const { return kind == Kind::List || kind == Kind::Tuple; }
};

struct Dict {
  std::vector<std::pair<Value, Value>> entries;
  const Value *find(const Value &key) const;
  void set(const Value &key, Value value);
};

/// A Python generator (selectattr, items): iterating consumes it.
struct GenState {
  List items;
  size_t cursor = 0;
};

/// A for loop's `loop`: its attributes are computed when read.
struct LoopState {
  std::shared_ptr<const List> items;
  int64_t index0;
  int64_t length() const { return items->size(); }
  /// loop.NAME, or nullptr when there is no such attribute.
  std::optional<Value> get(StringRef name) const;
};

unsigned childDepth(const Value &v) {
  return v.kind == Kind::Namespace ? 1 : v.depth;
}

Value makeList(List items, size_t pos, Kind kind = Kind::List) {
  if (items.size() > kMaxListSize)
    fail(pos, "a list of more than " + Twine(kMaxListSize) + " elements");
  Value v;
  v.kind = kind;
  unsigned depth = 0;
  for (const Value &item : items)
    depth = std::max(depth, childDepth(item));
  v.depth = depth + 1;
  if (v.depth > kMaxValueDepth)
    fail(pos, "values nested more than " + Twine(kMaxValueDepth) + " deep");
  v.list = std::make_shared<List>(std::move(items));
  return v;
}

Value makeDict(Dict dict, size_t pos, Kind kind = Kind::Dict) {
  Value v;
  v.kind = kind;
  unsigned depth = 0;
  for (const auto &[k, item] : dict.entries)
    depth = std::max({depth, childDepth(k), childDepth(item)});
  v.depth = depth + 1;
  if (v.depth > kMaxValueDepth)
    fail(pos, "values nested more than " + Twine(kMaxValueDepth) + " deep");
  v.dict = std::make_shared<Dict>(std::move(dict));
  return v;
}

Value makeGenerator(List items) {
  Value v;
  v.kind = Kind::Generator;
  v.gen = std::make_shared<GenState>();
  v.gen->items = std::move(items);
  return v;
}

void checkDepth(unsigned depth, size_t pos) {
  if (depth > 2 * kMaxValueDepth)
    fail(pos, "values nested too deep");
}

bool equals(const Value &a, const Value &b, size_t pos, unsigned depth = 0) {
  checkDepth(depth, pos);
  if (a.isNumber() && b.isNumber()) {
    if (a.kind == Kind::Float || b.kind == Kind::Float)
      return a.asFloat() == b.asFloat();
    return a.asInt() == b.asInt();
  }
  if (a.kind != b.kind)
    return false;
  switch (a.kind) {
  case Kind::Undefined:
  case Kind::None:
    return true;
  case Kind::Str:
    return a.s == b.s;
  case Kind::List:
  case Kind::Tuple:
    if (a.list->size() != b.list->size())
      return false;
    for (size_t k = 0; k < a.list->size(); ++k)
      if (!equals((*a.list)[k], (*b.list)[k], pos, depth + 1))
        return false;
    return true;
  case Kind::Dict: {
    if (a.dict->entries.size() != b.dict->entries.size())
      return false;
    for (const auto &[k, v] : a.dict->entries) {
      const Value *other = b.dict->find(k);
      if (!other || !equals(v, *other, pos, depth + 1))
        return false;
    }
    return true;
  }
  case Kind::Callable:
    return a.s == b.s && a.list == b.list;
  default:
    return a.dict == b.dict && a.gen == b.gen && a.loop == b.loop;
  }
}

const Value *Dict::find(const Value &key) const {
  for (const auto &[k, v] : entries)
    if (equals(k, key, 0))
      return &v;
  return nullptr;
}

void Dict::set(const Value &key, Value value) {
  for (auto &[k, v] : entries)
    if (equals(k, key, 0)) {
      v = std::move(value);
      return;
    }
  entries.emplace_back(key, std::move(value));
}

/// Python's hashability: lists and dicts are not, nor tuples holding them.
bool isHashable(const Value &v, unsigned depth = 0) {
  if (v.kind == Kind::List || v.kind == Kind::Dict)
    return false;
  if (v.kind == Kind::Tuple && depth < 2 * kMaxValueDepth)
    for (const Value &item : *v.list)
      if (!isHashable(item, depth + 1))
        return false;
  return true;
}

std::optional<Value> LoopState::get(StringRef name) const {
  int64_t n = length(), k = index0;
  if (name == "index0")
    return Value::integer(k);
  if (name == "index")
    return Value::integer(k + 1);
  if (name == "revindex0")
    return Value::integer(n - k - 1);
  if (name == "revindex")
    return Value::integer(n - k);
  if (name == "first")
    return Value::boolean(k == 0);
  if (name == "last")
    return Value::boolean(k == n - 1);
  if (name == "length")
    return Value::integer(n);
  if (name == "depth0")
    return Value::integer(0);
  if (name == "depth")
    return Value::integer(1);
  if (name == "previtem" && k > 0)
    return (*items)[k - 1];
  if (name == "nextitem" && k + 1 < n)
    return (*items)[k + 1];
  return std::nullopt;
}

bool truthy(const Value &v) {
  switch (v.kind) {
  case Kind::Undefined:
  case Kind::None:
    return false;
  case Kind::Bool:
    return v.b;
  case Kind::Int:
    return v.i != 0;
  case Kind::Float:
    return v.f != 0;
  case Kind::Str:
    return !v.s.empty();
  case Kind::List:
  case Kind::Tuple:
    return !v.list->empty();
  case Kind::Dict:
    return !v.dict->entries.empty();
  default:
    return true;
  }
}

/// Python's repr(float).
std::string floatRepr(double d) {
  if (std::isnan(d))
    return "nan";
  if (std::isinf(d))
    return d < 0 ? "-inf" : "inf";
  char buf[64];
  auto res =
      std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  bool negative = sci[0] == '-';
  if (negative)
    sci.erase(0, 1);
  size_t e = sci.find('e');
  std::string digits = sci.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  int exp = std::stoi(sci.substr(e + 1));
  std::string out = negative ? "-" : "";
  if (exp >= -4 && exp < 16) {
    if (exp >= 0) {
      if (digits.size() < size_t(exp) + 1)
        digits.append(exp + 1 - digits.size(), '0');
      out += digits.substr(0, exp + 1) + ".";
      std::string frac = digits.substr(exp + 1);
      out += frac.empty() ? "0" : frac;
    } else {
      out += "0." + std::string(-exp - 1, '0') + digits;
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1)
    out += "." + digits.substr(1);
  out += exp < 0 ? "e-" : "e+";
  std::string e2 = std::to_string(std::abs(exp));
  if (e2.size() < 2)
    e2 = "0" + e2;
  return out + e2;
}

/// Whether Python's str.isprintable() holds for a non-ASCII code point
/// (approximated: C1 controls, the format characters and separators listed
/// here, surrogates, private use and noncharacters are not printable).
bool isPrintableNonAscii(uint32_t cp) {
  if (cp <= 0xA0 || cp == 0xAD || cp == 0x61C || cp == 0x1680 || cp == 0x180E ||
      (cp >= 0x2000 && cp <= 0x200F) || (cp >= 0x2028 && cp <= 0x202F) ||
      (cp >= 0x205F && cp <= 0x206F) || cp == 0x3000 ||
      (cp >= 0xD800 && cp <= 0xF8FF) || cp == 0xFEFF ||
      (cp >= 0xFFF9 && cp <= 0xFFFB) || cp >= 0xE0000 || cp == 0xFFFFFFFF)
    return false;
  return true;
}

/// Python's repr(str).
std::string strRepr(StringRef s) {
  tickBytes(s.size());
  char quote = '\'';
  if (s.contains('\'') && !s.contains('"'))
    quote = '"';
  std::string out(1, quote);
  for (size_t i = 0; i < s.size();) {
    size_t start = i;
    uint32_t cp = decode(s, i);
    if (cp == uint32_t(quote) || cp == '\\') {
      out += '\\';
      out += char(cp);
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp < 0x20 || cp == 0x7F) {
      out += formatv("\\x{0:x-2}", cp).str();
    } else if (cp < 0x7F) {
      out += char(cp);
    } else if (cp == 0xFFFFFFFF) {
      out += formatv("\\x{0:x-2}", unsigned((unsigned char)s[start])).str();
    } else if (isPrintableNonAscii(cp)) {
      out += s.slice(start, i).str();
    } else if (cp <= 0xFF) {
      out += formatv("\\x{0:x-2}", cp).str();
    } else if (cp <= 0xFFFF) {
      out += formatv("\\u{0:x-4}", cp).str();
    } else {
      out += formatv("\\U{0:x-8}", cp).str();
    }
  }
  out += quote;
  return out;
}

std::string repr(const Value &v, size_t pos, unsigned depth = 0);

/// Python's str(), as jinja2 renders `{{ v }}`.
std::string toStr(const Value &v, size_t pos) {
  switch (v.kind) {
  case Kind::Undefined:
    return "";
  case Kind::Str:
    return v.s;
  default:
    return repr(v, pos);
  }
}

std::string repr(const Value &v, size_t pos, unsigned depth) {
  checkDepth(depth, pos);
  switch (v.kind) {
  case Kind::Undefined:
    return "Undefined";
  case Kind::None:
    return "None";
  case Kind::Bool:
    return v.b ? "True" : "False";
  case Kind::Int:
    return std::to_string(v.i);
  case Kind::Float:
    return floatRepr(v.f);
  case Kind::Str:
    return strRepr(v.s);
  case Kind::List:
  case Kind::Tuple: {
    bool tuple = v.kind == Kind::Tuple;
    std::string out = tuple ? "(" : "[";
    for (size_t k = 0; k < v.list->size(); ++k) {
      if (k)
        out += ", ";
      out += repr((*v.list)[k], pos, depth + 1);
      if (out.size() > kMaxOutput)
        fail(pos, "the output exceeds " + Twine(kMaxOutput) + " bytes");
    }
    if (tuple && v.list->size() == 1)
      out += ",";
    return out + (tuple ? ")" : "]");
  }
  case Kind::Dict:
  case Kind::Namespace: {
    std::string out = "{";
    bool first = true;
    for (const auto &[k, item] : v.dict->entries) {
      if (!first)
        out += ", ";
      first = false;
      out += repr(k, pos, depth + 1) + ": " + repr(item, pos, depth + 1);
      if (out.size() > kMaxOutput)
        fail(pos, "the output exceeds " + Twine(kMaxOutput) + " bytes");
    }
    out += "}";
    return v.kind == Kind::Namespace ? "<Namespace " + out + ">" : out;
  }
  case Kind::Loop:
    return "<LoopContext " + std::to_string(v.loop->index0 + 1) + "/" +
           std::to_string(v.loop->length()) + ">";
  case Kind::Callable:
    fail(pos, "cannot render the function '" + v.s + "'");
  case Kind::Generator:
    fail(pos, "cannot render a generator (apply '|list' first)");
  }
  return "";
}

/// transformers' tojson: json.dumps(value, ensure_ascii=False).
std::string toJson(const Value &v, size_t pos, unsigned depth = 0) {
  checkDepth(depth, pos);
  switch (v.kind) {
  case Kind::None:
    return "null";
  case Kind::Bool:
    return v.b ? "true" : "false";
  case Kind::Int:
    return std::to_string(v.i);
  case Kind::Float:
    if (std::isnan(v.f))
      return "NaN";
    if (std::isinf(v.f))
      return v.f < 0 ? "-Infinity" : "Infinity";
    return floatRepr(v.f);
  case Kind::Str: {
    tickBytes(v.s.size());
    std::string out = "\"";
    for (char c : v.s) {
      switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if ((unsigned char)c < 0x20)
          out += formatv("\\u{0:x-4}", unsigned(c)).str();
        else
          out += c;
      }
    }
    return out + "\"";
  }
  case Kind::List:
  case Kind::Tuple: {
    std::string out = "[";
    for (size_t k = 0; k < v.list->size(); ++k) {
      if (k)
        out += ", ";
      out += toJson((*v.list)[k], pos, depth + 1);
      if (out.size() > kMaxOutput)
        fail(pos, "the output exceeds " + Twine(kMaxOutput) + " bytes");
    }
    return out + "]";
  }
  case Kind::Dict: {
    std::string out = "{";
    bool first = true;
    for (const auto &[k, item] : v.dict->entries) {
      if (k.kind != Kind::Str)
        fail(pos, "tojson: only string keys are supported");
      if (!first)
        out += ", ";
      first = false;
      out += toJson(k, pos, depth + 1) + ": " + toJson(item, pos, depth + 1);
      if (out.size() > kMaxOutput)
        fail(pos, "the output exceeds " + Twine(kMaxOutput) + " bytes");
    }
    return out + "}";
  }
  case Kind::Undefined:
    fail(pos, "tojson: " + v.s + " is undefined");
  default:
    fail(pos, "tojson: the value is not JSON serializable");
  }
}

//===----------------------------------------------------------------------===//
// Lexer
//===----------------------------------------------------------------------===//

enum class Tok : uint8_t { Name, Str, Int, Float, Op, End };

struct Token {
  Tok kind;
  std::string text; // name, operator, or the decoded string
  int64_t i = 0;
  double f = 0;
  size_t pos;
  bool is(Tok k, StringRef t) const { return kind == k && text == t; }
  bool isOp(StringRef t) const { return is(Tok::Op, t); }
  bool isName(StringRef t) const { return is(Tok::Name, t); }
};

struct Item {
  enum Kind { Data, Var, Block } kind;
  std::string data;
  std::vector<Token> tokens; // ends with Tok::End
  size_t pos;
};

bool startsWith(const std::string &s, size_t pos, StringRef what) {
  return StringRef(s).substr(pos).starts_with(what);
}

/// Skips Python whitespace from pos.
size_t skipSpace(const std::string &s, size_t pos) {
  while (pos < s.size()) {
    size_t next = pos;
    if (!isPySpace(decode(s, next)))
      break;
    pos = next;
  }
  return pos;
}

/// Python's str.rstrip().
std::string rstripSpace(StringRef s) { return pyStrip(s, false, true); }

/// Decodes a string literal's body as jinja2 does (Python's unicode-escape).
std::string unescape(StringRef body, size_t pos) {
  std::string out;
  for (size_t i = 0; i < body.size();) {
    char c = body[i];
    if (c != '\\') {
      out += c;
      ++i;
      continue;
    }
    if (i + 1 >= body.size())
      fail(pos, "a string literal ends in a backslash");
    char e = body[i + 1];
    i += 2;
    auto hex = [&](unsigned n) -> uint32_t {
      if (i + n > body.size())
        fail(pos, "a truncated \\x, \\u or \\U escape in a string literal");
      uint32_t cp = 0;
      for (unsigned k = 0; k < n; ++k) {
        char h = body[i + k];
        if (!isHexDigit(h))
          fail(pos, "a truncated \\x, \\u or \\U escape in a string literal");
        cp = cp * 16 + hexDigitValue(h);
      }
      i += n;
      return cp;
    };
    uint32_t cp;
    switch (e) {
    case '\n':
      continue;
    case '\\':
    case '\'':
    case '"':
      out += e;
      continue;
    case 'a':
      out += '\a';
      continue;
    case 'b':
      out += '\b';
      continue;
    case 'f':
      out += '\f';
      continue;
    case 'n':
      out += '\n';
      continue;
    case 'r':
      out += '\r';
      continue;
    case 't':
      out += '\t';
      continue;
    case 'v':
      out += '\v';
      continue;
    case 'x':
      cp = hex(2);
      break;
    case 'u':
      cp = hex(4);
      break;
    case 'U':
      cp = hex(8);
      break;
    case 'N':
      fail(pos, "the \\N{...} escape is not supported");
    default:
      if (e >= '0' && e <= '7') {
        cp = e - '0';
        for (int k = 0;
             k < 2 && i < body.size() && body[i] >= '0' && body[i] <= '7'; ++k)
          cp = cp * 8 + (body[i++] - '0');
        break;
      }
      if ((unsigned char)e >= 0x80)
        fail(pos, "a backslash before a non-ASCII character in a string "
                  "literal is not supported");
      out += '\\';
      out += e;
      continue;
    }
    if (cp > 0x10FFFF)
      fail(pos, "an escape for an invalid code point in a string literal");
    if (cp >= 0xD800 && cp <= 0xDFFF)
      fail(pos, "escapes for surrogate code points are not supported");
    encode(cp, out);
  }
  return out;
}

class Lexer {
public:
  explicit Lexer(const std::string &src) : src(src) {}

  std::vector<Item> run() {
    size_t pos = 0;
    bool lineStarting = true;
    while (pos < src.size()) {
      size_t t = src.find('{', pos);
      while (t != std::string::npos && t + 1 < src.size() &&
             src[t + 1] != '{' && src[t + 1] != '%' && src[t + 1] != '#')
        t = src.find('{', t + 1);
      if (t == std::string::npos || t + 1 >= src.size()) {
        addData(src.substr(pos), pos);
        break;
      }
      char kind = src[t + 1];
      size_t p = t + 2;
      char sign = 0;
      if (p < src.size() && (src[p] == '-' || src[p] == '+'))
        sign = src[p++];
      std::string text = src.substr(pos, t - pos);
      if (sign == '-') {
        text = rstripSpace(text);
      } else if (sign != '+' && kind != '{') {
        // lstrip_blocks: a block or comment tag alone on its line so far.
        size_t lpos = text.rfind('\n');
        lpos = lpos == std::string::npos ? 0 : lpos + 1;
        if (lpos > 0 || lineStarting) {
          if (skipSpace(text, lpos) == text.size())
            text.resize(lpos);
        }
      }
      addData(std::move(text), pos);
      if (kind == '#')
        pos = comment(t, p);
      else
        pos = tag(t, p, kind);
      lineStarting = pos > 0 && src[pos - 1] == '\n';
    }
    return std::move(items);
  }

private:
  void addData(std::string text, size_t pos) {
    if (!text.empty())
      items.push_back(Item{Item::Data, std::move(text), {}, pos});
  }

  size_t comment(size_t start, size_t p) {
    for (size_t q = src.find("#}", p); q != std::string::npos;
         q = src.find("#}", q + 1)) {
      if (q > p && src[q - 1] == '+')
        return q + 2;
      if (q > p && src[q - 1] == '-')
        return skipSpace(src, q + 2);
      size_t end = q + 2;
      if (end < src.size() && src[end] == '\n')
        ++end; // trim_blocks
      return end;
    }
    fail(start, "missing end of comment tag '#}'");
  }

  size_t tag(size_t start, size_t p, char kind) {
    Item item{kind == '%' ? Item::Block : Item::Var, "", {}, start};
    std::vector<char> stack;
    while (true) {
      if (p >= src.size())
        fail(start, kind == '%' ? "missing end of block tag '%}'"
                                : "missing end of variable tag '}}'");
      if (stack.empty()) {
        size_t end = std::string::npos;
        if (kind == '%') {
          if (startsWith(src, p, "+%}"))
            end = p + 3;
          else if (startsWith(src, p, "-%}"))
            end = skipSpace(src, p + 3);
          else if (startsWith(src, p, "%}")) {
            end = p + 2;
            if (end < src.size() && src[end] == '\n')
              ++end; // trim_blocks
          }
        } else {
          if (startsWith(src, p, "-}}"))
            end = skipSpace(src, p + 3);
          else if (startsWith(src, p, "}}"))
            end = p + 2;
        }
        if (end != std::string::npos) {
          item.tokens.push_back(Token{Tok::End, "", 0, 0, p});
          items.push_back(std::move(item));
          return end;
        }
      }
      size_t next = p;
      if (isPySpace(decode(src, next))) {
        p = next;
        continue;
      }
      char c = src[p];
      if (isDigit(c)) {
        size_t q = p;
        while (q < src.size() && isDigit(src[q]))
          ++q;
        bool isFloat = false;
        if (q + 1 < src.size() && src[q] == '.' && isDigit(src[q + 1])) {
          isFloat = true;
          ++q;
          while (q < src.size() && isDigit(src[q]))
            ++q;
        }
        if (q < src.size() && (src[q] == 'e' || src[q] == 'E')) {
          size_t r = q + 1;
          if (r < src.size() && (src[r] == '+' || src[r] == '-'))
            ++r;
          if (r < src.size() && isDigit(src[r])) {
            isFloat = true;
            q = r;
            while (q < src.size() && isDigit(src[q]))
              ++q;
          }
        }
        if (q < src.size() &&
            (src[q] == '_' || (q == p + 1 && src[p] == '0' &&
                               StringRef("xXoObB").contains(src[q]))))
          fail(p, "number literals with '_' or a base prefix (0x, 0o, 0b) "
                  "are not supported");
        std::string text = src.substr(p, q - p);
        if (!isFloat && text.size() > 1 && text[0] == '0' &&
            text.find_first_not_of('0') != std::string::npos)
          fail(p, "integer literals with leading zeros are not allowed");
        Token tok{isFloat ? Tok::Float : Tok::Int, text, 0, 0, p};
        if (isFloat) {
          tok.f = std::strtod(text.c_str(), nullptr);
        } else if (StringRef(text).getAsInteger(10, tok.i)) {
          fail(p, "integers beyond 64 bits are not supported");
        }
        item.tokens.push_back(std::move(tok));
        p = q;
        continue;
      }
      if (isAlpha(c) || c == '_') {
        size_t q = p;
        while (q < src.size() && (isAlnum(src[q]) || src[q] == '_'))
          ++q;
        item.tokens.push_back(Token{Tok::Name, src.substr(p, q - p), 0, 0, p});
        p = q;
        continue;
      }
      if (c == '\'' || c == '"') {
        size_t q = p + 1;
        while (q < src.size() && src[q] != c)
          q += src[q] == '\\' ? 2 : 1;
        if (q >= src.size())
          fail(p, "unterminated string literal");
        item.tokens.push_back(Token{
            Tok::Str, unescape(StringRef(src).slice(p + 1, q), p), 0, 0, p});
        p = q + 1;
        continue;
      }
      static const char *const ops[] = {"//", "**", "==", "!=", ">=", "<=", "+",
                                        "-",  "/",  "*",  "%",  "~",  "[",  "]",
                                        "(",  ")",  "{",  "}",  ">",  "<",  "=",
                                        ".",  ":",  "|",  ",",  ";"};
      StringRef op;
      for (const char *o : ops)
        if (startsWith(src, p, o)) {
          op = o;
          break;
        }
      if (op.empty()) {
        size_t q = p;
        decode(src, q);
        fail(p, "unexpected character '" + src.substr(p, q - p) + "'");
      }
      if (op == "(" || op == "[" || op == "{") {
        stack.push_back(op[0]);
      } else if (op == ")" || op == "]" || op == "}") {
        char open = op == ")" ? '(' : op == "]" ? '[' : '{';
        if (stack.empty() || stack.back() != open)
          fail(p, "unexpected '" + op + "'");
        stack.pop_back();
      }
      item.tokens.push_back(Token{Tok::Op, op.str(), 0, 0, p});
      p += op.size();
    }
  }

  const std::string &src;
  std::vector<Item> items;
};

//===----------------------------------------------------------------------===//
// AST
//===----------------------------------------------------------------------===//

struct Expr;
using ExprP = std::unique_ptr<Expr>;

struct Expr {
  enum Kind {
    Const,
    Name,
    ListLit,
    TupleLit,
    DictLit, // args: key, value, key, value, ...
    Getattr, // args[0].name
    Getitem, // args[0][args[1]]
    Slice,   // args[0][args[1]:args[2]:args[3]], null for absent
    Call,    // args[0](args[1..], kwargs)
    Filter,  // args[0]|name(args[1..], kwargs)
    Test,    // args[0] is name(args[1..]); negated
    Not,
    Neg,
    Pos,
    Binary, // name is the operator
    Concat,
    And,
    Or,
    Compare, // args[0] ops[k] args[k+1]
    Cond,    // args[1] if args[0] else args[2] (null: undefined)
  } kind;
  size_t pos;
  std::string name;
  Value constant;
  bool negated = false;
  std::vector<ExprP> args;
  std::vector<std::pair<std::string, ExprP>> kwargs;
  std::vector<std::string> ops;
};

struct Node;
using NodeP = std::unique_ptr<Node>;
using Body = std::vector<NodeP>;

struct Node {
  enum Kind {
    Text,
    Output,
    If,
    For,
    Set,
    SetAttr,
    Break,
    Continue,
    Block
  } kind;
  size_t pos;
  std::string text;                 // Text; Set/SetAttr: the name
  std::string attr;                 // SetAttr
  std::vector<std::string> targets; // For
  ExprP expr;                       // Output, Set value, For iterable
  ExprP filter;                     // For ... if filter
  std::vector<ExprP> conditions;    // If
  std::vector<Body> bodies;         // If: one per condition; For, Block: [0]
  Body elseBody;                    // If, For
};

//===----------------------------------------------------------------------===//
// Parser
//===----------------------------------------------------------------------===//

struct FilterSpec {
  const char *name;
  unsigned minArgs, maxArgs;
};
// Arity after the filtered value.
const FilterSpec kFilters[] = {
    {"trim", 0, 1},   {"length", 0, 0},     {"count", 0, 0},
    {"upper", 0, 0},  {"lower", 0, 0},      {"string", 0, 0},
    {"list", 0, 0},   {"first", 0, 0},      {"last", 0, 0},
    {"join", 0, 1},   {"default", 0, 2},    {"d", 0, 2},
    {"tojson", 0, 0}, {"selectattr", 1, 3}, {"rejectattr", 1, 3},
    {"items", 0, 0},  {"replace", 2, 3},
};
const FilterSpec kTests[] = {
    {"defined", 0, 0},     {"undefined", 0, 0}, {"none", 0, 0},
    {"string", 0, 0},      {"number", 0, 0},    {"integer", 0, 0},
    {"float", 0, 0},       {"boolean", 0, 0},   {"true", 0, 0},
    {"false", 0, 0},       {"mapping", 0, 0},   {"sequence", 0, 0},
    {"iterable", 0, 0},    {"even", 0, 0},      {"odd", 0, 0},
    {"divisibleby", 1, 1}, {"equalto", 1, 1},   {"eq", 1, 1},
    {"==", 1, 1},          {"ne", 1, 1},        {"!=", 1, 1},
    {"lt", 1, 1},          {"<", 1, 1},         {"le", 1, 1},
    {"<=", 1, 1},          {"gt", 1, 1},        {">", 1, 1},
    {"ge", 1, 1},          {">=", 1, 1},        {"in", 1, 1},
};
const FilterSpec kGlobals[] = {
    {"raise_exception", 1, 1}, {"namespace", 0, 0}, {"range", 1, 3}};
const FilterSpec kMethods[] = {
    {"strip", 0, 1},    {"lstrip", 0, 1},  {"rstrip", 0, 1},
    {"upper", 0, 0},    {"lower", 0, 0},   {"startswith", 1, 1},
    {"endswith", 1, 1}, {"replace", 2, 3}, {"items", 0, 0},
    {"keys", 0, 0},     {"values", 0, 0},  {"get", 1, 2},
};

const FilterSpec *lookup(ArrayRef<FilterSpec> specs, StringRef name) {
  for (const FilterSpec &s : specs)
    if (name == s.name)
      return &s;
  return nullptr;
}

const char *const kKnownUnsupportedTags[] = {
    "macro",  "call",       "filter",  "with",  "include",
    "import", "from",       "extends", "block", "raw",
    "do",     "autoescape", "trans",   "print", "pluralize"};

class Parser {
public:
  explicit Parser(std::vector<Item> items) : items(std::move(items)) {}

  Body parseTemplate() {
    std::string end;
    Body body = parseBody({}, end, 0, "");
    return body;
  }

private:
  struct DepthGuard {
    Parser &p;
    DepthGuard(Parser &p, size_t pos) : p(p) {
      if (++p.depth > kMaxParseDepth)
        fail(pos,
             "the template nests more than " + Twine(kMaxParseDepth) + " deep");
    }
    ~DepthGuard() { --p.depth; }
  };

  /// Each node a loop wraps around the expression so far (a + b + c, x.a.b,
  /// x|f|g) deepens the tree as nesting does, so it counts the same.
  struct ChainGuard {
    Parser &p;
    unsigned n = 0;
    explicit ChainGuard(Parser &p) : p(p) {}
    void add(size_t pos) {
      ++n;
      if (++p.depth > kMaxParseDepth)
        fail(pos,
             "the template nests more than " + Twine(kMaxParseDepth) + " deep");
    }
    ~ChainGuard() { p.depth -= n; }
  };

  // Token access within the current tag.
  const Token &cur() const { return items[itemIndex].tokens[tokIndex]; }
  const Token &peek(size_t k = 1) const {
    const auto &toks = items[itemIndex].tokens;
    return toks[std::min(tokIndex + k, toks.size() - 1)];
  }
  Token next() {
    Token t = cur();
    if (t.kind != Tok::End)
      ++tokIndex;
    return t;
  }
  static std::string describe(const Token &t) {
    switch (t.kind) {
    case Tok::End:
      return "the end of the tag";
    case Tok::Str:
      return "a string literal";
    case Tok::Int:
    case Tok::Float:
      return "'" + t.text + "'";
    default:
      return "'" + t.text + "'";
    }
  }
  [[noreturn]] void unexpected(StringRef expected) {
    fail(cur().pos, "expected " + expected + ", found " + describe(cur()));
  }
  void expectOp(StringRef op) {
    if (!cur().isOp(op))
      unexpected("'" + op.str() + "'");
    next();
  }
  std::string expectName() {
    if (cur().kind != Tok::Name)
      unexpected("a name");
    return next().text;
  }
  /// A name a for or set may bind.
  std::string expectTarget() {
    size_t pos = cur().pos;
    std::string name = expectName();
    if (name == "true" || name == "false" || name == "none" || name == "True" ||
        name == "False" || name == "None")
      fail(pos, "cannot assign to '" + name + "'");
    return name;
  }
  void expectEnd() {
    if (cur().kind != Tok::End)
      unexpected("the end of the tag");
  }

  Body parseBody(std::initializer_list<StringRef> ends, std::string &endFound,
                 size_t openPos, StringRef openName) {
    DepthGuard guard(*this, openPos);
    Body body;
    while (itemIndex < items.size()) {
      Item &item = items[itemIndex];
      tokIndex = 0;
      if (item.kind == Item::Data) {
        auto n = std::make_unique<Node>();
        n->kind = Node::Text;
        n->pos = item.pos;
        n->text = item.data;
        body.push_back(std::move(n));
        ++itemIndex;
        continue;
      }
      if (item.kind == Item::Var) {
        auto n = std::make_unique<Node>();
        n->kind = Node::Output;
        n->pos = item.pos;
        n->expr = parseExpression();
        expectEnd();
        body.push_back(std::move(n));
        ++itemIndex;
        continue;
      }
      if (cur().kind != Tok::Name)
        unexpected("a tag name");
      std::string name = cur().text;
      for (StringRef e : ends)
        if (name == e) {
          endFound = name;
          return body;
        }
      body.push_back(parseStatement());
    }
    if (ends.size())
      fail(openPos, "missing '{% " + *std::prev(ends.end()) + " %}' for '{% " +
                        openName + " %}'");
    return body;
  }

  /// Consumes the current block item's end and moves to the next item.
  void finishTag() {
    expectEnd();
    ++itemIndex;
    tokIndex = 0;
  }

  NodeP parseStatement() {
    size_t pos = items[itemIndex].pos;
    std::string name = next().text;
    auto n = std::make_unique<Node>();
    n->pos = pos;
    if (name == "if") {
      n->kind = Node::If;
      n->conditions.push_back(parseExpression());
      finishTag();
      while (true) {
        std::string end;
        n->bodies.push_back(
            parseBody({"elif", "else", "endif"}, end, pos, "if"));
        next();
        if (end == "elif") {
          n->conditions.push_back(parseExpression());
          finishTag();
          continue;
        }
        if (end == "else") {
          finishTag();
          n->elseBody = parseBody({"endif"}, end, pos, "if");
          next();
        }
        finishTag();
        return n;
      }
    }
    if (name == "for") {
      n->kind = Node::For;
      n->targets.push_back(expectTarget());
      while (cur().isOp(",")) {
        next();
        n->targets.push_back(expectTarget());
      }
      if (!cur().isName("in"))
        unexpected("'in'");
      next();
      n->expr = parseOr();
      if (cur().isName("if")) {
        next();
        n->filter = parseOr();
      }
      if (cur().isName("recursive"))
        fail(cur().pos, "recursive for loops are not supported");
      finishTag();
      ++loopDepth;
      std::string end;
      n->bodies.push_back(parseBody({"else", "endfor"}, end, pos, "for"));
      --loopDepth;
      next();
      if (end == "else") {
        finishTag();
        n->elseBody = parseBody({"endfor"}, end, pos, "for");
        next();
      }
      finishTag();
      return n;
    }
    if (name == "set") {
      n->text = expectTarget();
      if (cur().isOp(".")) {
        next();
        n->kind = Node::SetAttr;
        n->attr = expectName();
      } else {
        n->kind = Node::Set;
      }
      if (cur().isOp(","))
        fail(cur().pos, "'{% set %}' with several targets is not supported");
      if (cur().kind == Tok::End)
        fail(pos, "block assignments ('{% set x %}...{% endset %}') are not "
                  "supported");
      expectOp("=");
      n->expr = parseExpression();
      finishTag();
      return n;
    }
    if (name == "break" || name == "continue") {
      if (loopDepth == 0)
        fail(pos, "'{% " + name + " %}' outside a for loop");
      n->kind = name == "break" ? Node::Break : Node::Continue;
      finishTag();
      return n;
    }
    if (name == "generation") {
      // transformers' AssistantTracker: a call block, so its body is a
      // scope of its own and no loop control reaches out of it.
      n->kind = Node::Block;
      finishTag();
      std::string end;
      unsigned outerLoops = loopDepth;
      loopDepth = 0;
      n->bodies.push_back(parseBody({"endgeneration"}, end, pos, "generation"));
      loopDepth = outerLoops;
      next();
      finishTag();
      return n;
    }
    for (const char *t : kKnownUnsupportedTags)
      if (name == t)
        fail(pos, "'{% " + name +
                      " %}' is not supported in chat templates "
                      "(supported tags: if, for, set, break, continue, "
                      "generation)");
    if (StringRef(name).starts_with("end") || name == "elif" || name == "else")
      fail(pos, "unexpected '{% " + name + " %}'");
    fail(pos, "unknown tag '" + name + "'");
  }

  ExprP make(Expr::Kind kind, size_t pos) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->pos = pos;
    return e;
  }

  ExprP parseExpression() {
    ExprP e = parseCondexpr();
    if (cur().isOp(","))
      fail(cur().pos, "tuples without parentheses are not supported");
    return e;
  }

  ExprP parseCondexpr() {
    DepthGuard guard(*this, cur().pos);
    ExprP e = parseOr();
    ChainGuard chain(*this);
    while (cur().isName("if")) {
      chain.add(cur().pos);
      size_t pos = next().pos;
      auto c = make(Expr::Cond, pos);
      c->args.push_back(parseOr());
      c->args.push_back(std::move(e));
      if (cur().isName("else")) {
        next();
        c->args.push_back(parseCondexpr());
      } else {
        c->args.push_back(nullptr);
      }
      e = std::move(c);
    }
    return e;
  }

  ExprP parseOr() {
    ExprP e = parseAnd();
    ChainGuard chain(*this);
    while (cur().isName("or")) {
      chain.add(cur().pos);
      auto o = make(Expr::Or, next().pos);
      o->args.push_back(std::move(e));
      o->args.push_back(parseAnd());
      e = std::move(o);
    }
    return e;
  }

  ExprP parseAnd() {
    ExprP e = parseNot();
    ChainGuard chain(*this);
    while (cur().isName("and")) {
      chain.add(cur().pos);
      auto o = make(Expr::And, next().pos);
      o->args.push_back(std::move(e));
      o->args.push_back(parseNot());
      e = std::move(o);
    }
    return e;
  }

  ExprP parseNot() {
    if (cur().isName("not")) {
      DepthGuard guard(*this, cur().pos);
      auto n = make(Expr::Not, next().pos);
      n->args.push_back(parseNot());
      return n;
    }
    return parseCompare();
  }

  ExprP parseCompare() {
    size_t pos = cur().pos;
    ExprP e = parseMath1();
    ExprP cmp;
    while (true) {
      std::string op;
      const Token &t = cur();
      if (t.kind == Tok::Op &&
          (t.text == "==" || t.text == "!=" || t.text == "<" ||
           t.text == "<=" || t.text == ">" || t.text == ">=")) {
        op = next().text;
      } else if (t.isName("in")) {
        next();
        op = "in";
      } else if (t.isName("not") && peek().isName("in")) {
        next();
        next();
        op = "notin";
      } else {
        break;
      }
      if (!cmp) {
        cmp = make(Expr::Compare, pos);
        cmp->args.push_back(std::move(e));
      }
      cmp->ops.push_back(op);
      cmp->args.push_back(parseMath1());
    }
    return cmp ? std::move(cmp) : std::move(e);
  }

  ExprP binary(StringRef op, size_t pos, ExprP l, ExprP r) {
    auto b = make(Expr::Binary, pos);
    b->name = op.str();
    b->args.push_back(std::move(l));
    b->args.push_back(std::move(r));
    return b;
  }

  ExprP parseMath1() {
    ExprP e = parseConcat();
    ChainGuard chain(*this);
    while (cur().isOp("+") || cur().isOp("-")) {
      chain.add(cur().pos);
      Token op = next();
      e = binary(op.text, op.pos, std::move(e), parseConcat());
    }
    return e;
  }

  ExprP parseConcat() {
    ExprP e = parseMath2();
    if (!cur().isOp("~"))
      return e;
    auto c = make(Expr::Concat, cur().pos);
    c->args.push_back(std::move(e));
    while (cur().isOp("~")) {
      next();
      c->args.push_back(parseMath2());
    }
    return c;
  }

  ExprP parseMath2() {
    ExprP e = parsePow();
    ChainGuard chain(*this);
    while (cur().isOp("*") || cur().isOp("/") || cur().isOp("//") ||
           cur().isOp("%")) {
      chain.add(cur().pos);
      Token op = next();
      e = binary(op.text, op.pos, std::move(e), parsePow());
    }
    return e;
  }

  ExprP parsePow() {
    ExprP e = parseUnary(true);
    ChainGuard chain(*this);
    while (cur().isOp("**")) {
      chain.add(cur().pos);
      Token op = next();
      e = binary(op.text, op.pos, std::move(e), parseUnary(true));
    }
    return e;
  }

  ExprP parseUnary(bool withFilter) {
    DepthGuard guard(*this, cur().pos);
    ExprP e;
    if (cur().isOp("-") || cur().isOp("+")) {
      Token op = next();
      e = make(op.text == "-" ? Expr::Neg : Expr::Pos, op.pos);
      e->args.push_back(parseUnary(false));
    } else {
      e = parsePrimary();
    }
    e = parsePostfix(std::move(e));
    if (withFilter)
      e = parseFilterExpr(std::move(e));
    return e;
  }

  ExprP parsePrimary() {
    const Token &t = cur();
    size_t pos = t.pos;
    switch (t.kind) {
    case Tok::Name: {
      std::string name = next().text;
      auto c = make(Expr::Const, pos);
      if (name == "true" || name == "True")
        c->constant = Value::boolean(true);
      else if (name == "false" || name == "False")
        c->constant = Value::boolean(false);
      else if (name == "none" || name == "None")
        c->constant = Value::none();
      else {
        c->kind = Expr::Name;
        c->name = name;
      }
      return c;
    }
    case Tok::Str: {
      std::string s;
      while (cur().kind == Tok::Str)
        s += next().text;
      auto c = make(Expr::Const, pos);
      c->constant = Value::str(std::move(s));
      return c;
    }
    case Tok::Int: {
      auto c = make(Expr::Const, pos);
      c->constant = Value::integer(next().i);
      return c;
    }
    case Tok::Float: {
      auto c = make(Expr::Const, pos);
      c->constant = Value::real(next().f);
      return c;
    }
    case Tok::Op:
      if (t.text == "(") {
        next();
        if (cur().isOp(")")) {
          next();
          return make(Expr::TupleLit, pos);
        }
        ExprP e = parseCondexpr();
        if (!cur().isOp(",")) {
          expectOp(")");
          return e;
        }
        auto tuple = make(Expr::TupleLit, pos);
        tuple->args.push_back(std::move(e));
        while (cur().isOp(",")) {
          next();
          if (cur().isOp(")"))
            break;
          tuple->args.push_back(parseCondexpr());
        }
        expectOp(")");
        return tuple;
      }
      if (t.text == "[") {
        next();
        auto list = make(Expr::ListLit, pos);
        while (!cur().isOp("]")) {
          if (!list->args.empty())
            expectOp(",");
          if (cur().isOp("]"))
            break;
          list->args.push_back(parseCondexpr());
        }
        next();
        return list;
      }
      if (t.text == "{") {
        next();
        auto dict = make(Expr::DictLit, pos);
        while (!cur().isOp("}")) {
          if (!dict->args.empty())
            expectOp(",");
          if (cur().isOp("}"))
            break;
          dict->args.push_back(parseCondexpr());
          expectOp(":");
          dict->args.push_back(parseCondexpr());
        }
        next();
        return dict;
      }
      break;
    default:
      break;
    }
    unexpected("an expression");
  }

  ExprP parsePostfix(ExprP e) {
    ChainGuard chain(*this);
    while (true) {
      const Token &t = cur();
      if (!t.isOp(".") && !t.isOp("[") && !t.isOp("("))
        return e;
      chain.add(t.pos);
      if (t.isOp(".")) {
        size_t pos = next().pos;
        if (cur().kind == Tok::Int) {
          auto g = make(Expr::Getitem, pos);
          g->args.push_back(std::move(e));
          auto c = make(Expr::Const, cur().pos);
          c->constant = Value::integer(next().i);
          g->args.push_back(std::move(c));
          e = std::move(g);
          continue;
        }
        auto g = make(Expr::Getattr, pos);
        g->name = expectName();
        g->args.push_back(std::move(e));
        e = std::move(g);
      } else if (t.isOp("[")) {
        e = parseSubscript(std::move(e));
      } else if (t.isOp("(")) {
        e = parseCall(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprP parseSubscript(ExprP obj) {
    size_t pos = next().pos; // '['
    ExprP start, stop, step;
    bool slice = false;
    if (cur().isOp(":")) {
      slice = true;
    } else {
      start = parseCondexpr();
      slice = cur().isOp(":");
    }
    if (slice) {
      next();
      if (!cur().isOp(":") && !cur().isOp("]"))
        stop = parseCondexpr();
      if (cur().isOp(":")) {
        next();
        if (!cur().isOp("]"))
          step = parseCondexpr();
      }
    }
    if (cur().isOp(","))
      fail(cur().pos, "subscripts with several indices are not supported");
    expectOp("]");
    auto e = make(slice ? Expr::Slice : Expr::Getitem, pos);
    e->args.push_back(std::move(obj));
    e->args.push_back(std::move(start));
    if (slice) {
      e->args.push_back(std::move(stop));
      e->args.push_back(std::move(step));
    }
    return e;
  }

  /// Parses `(args, name=value)` into e's args (after those already there)
  /// and kwargs.
  void parseCallArgs(Expr &e) {
    expectOp("(");
    bool first = true;
    while (!cur().isOp(")")) {
      if (!first)
        expectOp(",");
      first = false;
      if (cur().isOp(")"))
        break;
      if (cur().isOp("*") || cur().isOp("**"))
        fail(cur().pos, "'*args' and '**kwargs' are not supported");
      if (cur().kind == Tok::Name && peek().isOp("=")) {
        std::string key = next().text;
        next();
        e.kwargs.emplace_back(key, parseCondexpr());
        continue;
      }
      if (!e.kwargs.empty())
        fail(cur().pos, "a positional argument after a keyword argument");
      e.args.push_back(parseCondexpr());
    }
    next();
  }

  void checkArity(const FilterSpec &spec, const Expr &e, size_t given,
                  StringRef what, bool kwargsOk = false) {
    if (!kwargsOk && !e.kwargs.empty())
      fail(e.pos,
           what + " '" + spec.name + "' does not take keyword arguments here");
    if (given < spec.minArgs || given > spec.maxArgs)
      fail(e.pos,
           what + " '" + spec.name + "' takes " +
               (spec.minArgs == spec.maxArgs
                    ? Twine(spec.minArgs)
                    : Twine(spec.minArgs) + " to " + Twine(spec.maxArgs)) +
               " arguments, not " + Twine(given));
  }

  ExprP parseCall(ExprP callee) {
    auto call = make(Expr::Call, callee->pos);
    call->args.push_back(std::move(callee));
    parseCallArgs(*call);
    const Expr &target = *call->args[0];
    size_t given = call->args.size() - 1;
    if (target.kind == Expr::Name) {
      const FilterSpec *spec = lookup(kGlobals, target.name);
      if (!spec)
        fail(target.pos, "unsupported function '" + target.name +
                             "' (supported: raise_exception, namespace, "
                             "range)");
      checkArity(*spec, *call, given, "function", target.name == "namespace");
    } else if (target.kind == Expr::Getattr) {
      const FilterSpec *spec = lookup(kMethods, target.name);
      if (!spec)
        fail(target.pos, "unsupported method '" + target.name + "'");
      checkArity(*spec, *call, given, "method");
    } else {
      fail(call->pos, "only functions and methods can be called");
    }
    return call;
  }

  std::string dottedName() {
    std::string name = expectName();
    while (cur().isOp(".")) {
      next();
      name += "." + expectName();
    }
    return name;
  }

  ExprP parseFilterExpr(ExprP e) {
    ChainGuard chain(*this);
    while (true) {
      if (!cur().isOp("|") && !cur().isName("is") && !cur().isOp("("))
        return e;
      chain.add(cur().pos);
      if (cur().isOp("|")) {
        next();
        auto f = make(Expr::Filter, cur().pos);
        f->name = dottedName();
        f->args.push_back(std::move(e));
        if (cur().isOp("("))
          parseCallArgs(*f);
        const FilterSpec *spec = lookup(kFilters, f->name);
        if (!spec)
          fail(f->pos, "unsupported filter '" + f->name + "'");
        bool kwargsOk = f->name == "default" || f->name == "d" ||
                        f->name == "join" || f->name == "trim";
        checkArity(*spec, *f, f->args.size() - 1, "filter", kwargsOk);
        for (auto &[key, value] : f->kwargs) {
          bool ok = ((f->name == "default" || f->name == "d") &&
                     (key == "default_value" || key == "boolean")) ||
                    (f->name == "join" && key == "d") ||
                    (f->name == "trim" && key == "chars");
          if (!ok)
            fail(value->pos, "filter '" + f->name +
                                 "' has no supported keyword '" + key + "'");
        }
        e = std::move(f);
      } else if (cur().isName("is")) {
        size_t pos = next().pos;
        auto t = make(Expr::Test, pos);
        if (cur().isName("not")) {
          next();
          t->negated = true;
        }
        size_t namePos = cur().pos;
        if (cur().kind == Tok::Op &&
            (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
             cur().text == "<=" || cur().text == ">" || cur().text == ">="))
          t->name = next().text;
        else
          t->name = dottedName();
        t->args.push_back(std::move(e));
        const Token &a = cur();
        if (a.isOp("(")) {
          parseCallArgs(*t);
        } else if ((a.kind == Tok::Name || a.kind == Tok::Str ||
                    a.kind == Tok::Int || a.kind == Tok::Float || a.isOp("(") ||
                    a.isOp("[") || a.isOp("{")) &&
                   !a.isName("else") && !a.isName("or") && !a.isName("and")) {
          if (a.isName("is"))
            fail(a.pos, "tests cannot be chained with 'is'");
          t->args.push_back(parsePostfix(parsePrimary()));
        }
        const FilterSpec *spec = lookup(kTests, t->name);
        if (!spec)
          fail(namePos, "unsupported test '" + t->name + "'");
        checkArity(*spec, *t, t->args.size() - 1, "test");
        e = std::move(t);
      } else if (cur().isOp("(")) {
        e = parseCall(std::move(e));
      } else {
        return e;
      }
    }
  }

  std::vector<Item> items;
  size_t itemIndex = 0, tokIndex = 0;
  unsigned depth = 0, loopDepth = 0;
};

//===----------------------------------------------------------------------===//
// Evaluator
//===----------------------------------------------------------------------===//

struct Scope {
  Scope *parent;
  std::vector<std::pair<std::string, Value>> vars;
  Value *find(StringRef name) {
    for (Scope *s = this; s; s = s->parent)
      for (auto &[k, v] : s->vars)
        if (k == name)
          return &v;
    return nullptr;
  }
  void set(StringRef name, Value value) {
    for (auto &[k, v] : vars)
      if (k == name) {
        v = std::move(value);
        return;
      }
    vars.emplace_back(name.str(), std::move(value));
  }
};

enum class Flow { Normal, Break, Continue };

const char *const kStrAttributes[] = {
    "capitalize",   "casefold",     "center",    "count",     "encode",
    "endswith",     "expandtabs",   "find",      "format",    "format_map",
    "index",        "isalnum",      "isalpha",   "isascii",   "isdecimal",
    "isdigit",      "isidentifier", "islower",   "isnumeric", "isprintable",
    "isspace",      "istitle",      "isupper",   "join",      "ljust",
    "lower",        "lstrip",       "maketrans", "partition", "removeprefix",
    "removesuffix", "replace",      "rfind",     "rindex",    "rjust",
    "rpartition",   "rsplit",       "rstrip",    "split",     "splitlines",
    "startswith",   "strip",        "swapcase",  "title",     "translate",
    "upper",        "zfill"};
const char *const kDictAttributes[] = {"copy",  "fromkeys", "get",
                                       "items", "keys",     "values"};
const char *const kListAttributes[] = {"copy", "count", "index"};

bool contains(ArrayRef<const char *> names, StringRef name) {
  for (const char *n : names)
    if (name == n)
      return true;
  return false;
}

class Renderer {
public:
  std::string output;

  void run(const Body &body, Scope &scope) { exec(body, scope); }

private:
  void step(size_t pos) {
    gPos = pos;
    tick(1);
  }

  void emit(StringRef text, size_t pos) {
    if (output.size() + text.size() > kMaxOutput)
      fail(pos, "the output exceeds " + Twine(kMaxOutput) + " bytes");
    output += text;
  }

  Flow exec(const Body &body, Scope &scope) {
    for (const NodeP &n : body) {
      Flow flow = exec(*n, scope);
      if (flow != Flow::Normal)
        return flow;
    }
    return Flow::Normal;
  }

  Flow exec(const Node &n, Scope &scope) {
    step(n.pos);
    switch (n.kind) {
    case Node::Text:
      emit(n.text, n.pos);
      return Flow::Normal;
    case Node::Output: {
      Value v = eval(*n.expr, scope);
      emit(toStr(v, n.expr->pos), n.pos);
      return Flow::Normal;
    }
    case Node::If:
      for (size_t k = 0; k < n.conditions.size(); ++k)
        if (truthy(eval(*n.conditions[k], scope)))
          return exec(n.bodies[k], scope);
      return exec(n.elseBody, scope);
    case Node::Set:
      scope.set(n.text, eval(*n.expr, scope));
      return Flow::Normal;
    case Node::SetAttr: {
      Value *ns = scope.find(n.text);
      if (!ns || ns->kind != Kind::Namespace)
        fail(n.pos, "cannot assign attribute on non-namespace object '" +
                        n.text + "'");
      Value v = eval(*n.expr, scope);
      ns->dict->set(Value::str(n.attr), std::move(v));
      return Flow::Normal;
    }
    case Node::Break:
      return Flow::Break;
    case Node::Continue:
      return Flow::Continue;
    case Node::Block: {
      Scope inner{&scope, {}};
      return exec(n.bodies[0], inner);
    }
    case Node::For:
      return execFor(n, scope);
    }
    return Flow::Normal;
  }

  void bindTargets(const Node &n, const Value &item, Scope &scope) {
    if (n.targets.size() == 1) {
      scope.set(n.targets[0], item);
      return;
    }
    List parts;
    if (item.isSequence())
      parts = *item.list;
    else if (item.kind == Kind::Str || item.kind == Kind::Dict)
      parts = iterate(item, n.pos);
    else
      fail(n.pos, "cannot unpack a non-sequence into " +
                      Twine(n.targets.size()) + " loop variables");
    if (parts.size() != n.targets.size())
      fail(n.pos, "cannot unpack " + Twine(parts.size()) + " values into " +
                      Twine(n.targets.size()) + " loop variables");
    for (size_t k = 0; k < parts.size(); ++k)
      scope.set(n.targets[k], parts[k]);
  }

  Flow execFor(const Node &n, Scope &scope) {
    List items = iterate(eval(*n.expr, scope), n.expr->pos);
    if (n.filter) {
      List kept;
      for (const Value &item : items) {
        step(n.pos);
        Scope s{&scope, {}};
        bindTargets(n, item, s);
        if (truthy(eval(*n.filter, s)))
          kept.push_back(item);
      }
      items = std::move(kept);
    }
    // jinja2 runs the else block unless some iteration reached the end of
    // the body: a loop that only breaks or continues runs it too.
    bool completed = false;
    auto shared = std::make_shared<const List>(std::move(items));
    int64_t length = shared->size();
    for (int64_t k = 0; k < length; ++k) {
      step(n.pos);
      Scope s{&scope, {}};
      Value loopValue;
      loopValue.kind = Kind::Loop;
      loopValue.depth = 1;
      loopValue.loop = std::make_shared<LoopState>(LoopState{shared, k});
      s.set("loop", std::move(loopValue));
      bindTargets(n, (*shared)[k], s);
      Flow flow = exec(n.bodies[0], s);
      if (flow == Flow::Break)
        break;
      if (flow == Flow::Normal)
        completed = true;
    }
    if (!completed)
      return exec(n.elseBody, scope);
    return Flow::Normal;
  }

  /// The elements a for loop, `in` or a filter sees.
  List iterate(const Value &v, size_t pos) {
    switch (v.kind) {
    case Kind::Undefined:
      return {};
    case Kind::List:
    case Kind::Tuple:
      return *v.list;
    case Kind::Dict: {
      List keys;
      for (const auto &[k, item] : v.dict->entries)
        keys.push_back(k);
      return keys;
    }
    case Kind::Str: {
      List chars;
      std::vector<size_t> starts = codePointStarts(v.s);
      for (size_t k = 0; k + 1 < starts.size(); ++k)
        chars.push_back(
            Value::str(v.s.substr(starts[k], starts[k + 1] - starts[k])));
      return chars;
    }
    case Kind::Generator: {
      List rest(v.gen->items.begin() + v.gen->cursor, v.gen->items.end());
      v.gen->cursor = v.gen->items.size();
      return rest;
    }
    default:
      fail(pos, "the value is not iterable");
    }
  }

  [[noreturn]] void undefinedError(const Value &v, size_t pos) {
    fail(pos, v.s + " is undefined");
  }

  Value getAttr(const Value &obj, StringRef name, size_t pos) {
    if (obj.isUndefined())
      undefinedError(obj, pos);
    std::string what = "'" + name.str() + "'";
    if (name.starts_with("_"))
      return Value::undefined(what);
    switch (obj.kind) {
    case Kind::Dict:
      if (contains(kDictAttributes, name))
        return Value::callable(name.str(), &obj);
      if (const Value *v = obj.dict->find(Value::str(name.str())))
        return *v;
      return Value::undefined(what);
    case Kind::Namespace:
      if (const Value *v = obj.dict->find(Value::str(name.str())))
        return *v;
      return Value::undefined(what);
    case Kind::Loop:
      if (std::optional<Value> v = obj.loop->get(name))
        return *v;
      return Value::undefined(what);
    case Kind::Str:
      if (contains(kStrAttributes, name))
        return Value::callable(name.str(), &obj);
      return Value::undefined(what);
    case Kind::List:
    case Kind::Tuple:
      if (contains(kListAttributes, name))
        return Value::callable(name.str(), &obj);
      return Value::undefined(what);
    default:
      return Value::undefined(what);
    }
  }

  Value getItem(const Value &obj, const Value &key, size_t pos) {
    if (obj.isUndefined())
      undefinedError(obj, pos);
    switch (obj.kind) {
    case Kind::Dict:
      if (const Value *v = obj.dict->find(key))
        return *v;
      break;
    case Kind::List:
    case Kind::Tuple:
      if (key.isIntLike()) {
        int64_t n = obj.list->size(), k = key.asInt();
        if (k < 0)
          k += n;
        if (k >= 0 && k < n)
          return (*obj.list)[k];
        return Value::undefined("the item at an out-of-range index");
      }
      break;
    case Kind::Str:
      if (key.isIntLike()) {
        std::vector<size_t> starts = codePointStarts(obj.s);
        int64_t n = starts.size() - 1, k = key.asInt();
        if (k < 0)
          k += n;
        if (k >= 0 && k < n)
          return Value::str(obj.s.substr(starts[k], starts[k + 1] - starts[k]));
        return Value::undefined("the item at an out-of-range index");
      }
      break;
    default:
      break;
    }
    if (key.kind == Kind::Str)
      return getAttr(obj, key.s, pos);
    return Value::undefined("the item");
  }

  /// obj[start:stop:step]: jinja2 compiles slices to Python subscripts, so
  /// anything but a string or a sequence with integer bounds is an error.
  Value slice(const Value &obj, const Value *bounds[3], size_t pos) {
    if (obj.isUndefined())
      undefinedError(obj, pos);
    if (obj.kind != Kind::Str && !obj.isSequence())
      fail(pos, "slicing a " + typeName(obj) + " is not supported");
    for (int k = 0; k < 3; ++k)
      if (bounds[k] && !bounds[k]->isIntLike() && bounds[k]->kind != Kind::None)
        fail(pos, "slice indices must be integers or none");
    auto get = [&](int k, bool &present) -> int64_t {
      present = bounds[k] && bounds[k]->kind != Kind::None;
      return present ? bounds[k]->asInt() : 0;
    };
    bool hasStep, hasStart, hasStop;
    int64_t stepv = get(2, hasStep);
    if (!hasStep)
      stepv = 1;
    if (stepv == 0)
      fail(pos, "slice step cannot be zero");
    std::vector<size_t> starts;
    int64_t n;
    if (obj.kind == Kind::Str) {
      starts = codePointStarts(obj.s);
      n = starts.size() - 1;
    } else if (obj.isSequence()) {
      n = obj.list->size();
    } else {
      fail(pos, "slicing a " + typeName(obj) + " is not supported");
    }
    // CPython's PySlice_AdjustIndices.
    int64_t start = get(0, hasStart), stop = get(1, hasStop);
    auto adjust = [&](int64_t &i, bool present, int64_t dflt) {
      if (!present) {
        i = dflt;
        return;
      }
      if (i < 0) {
        i += n;
        if (i < 0)
          i = stepv < 0 ? -1 : 0;
      } else if (i >= n) {
        i = stepv < 0 ? n - 1 : n;
      }
    };
    adjust(start, hasStart, stepv < 0 ? n - 1 : 0);
    adjust(stop, hasStop, stepv < 0 ? -1 : n);
    List picked;
    std::string text;
    for (int64_t i = start; stepv > 0 ? i < stop : i > stop; i += stepv) {
      if (obj.kind == Kind::Str)
        text += obj.s.substr(starts[i], starts[i + 1] - starts[i]);
      else
        picked.push_back((*obj.list)[i]);
    }
    if (obj.kind == Kind::Str)
      return Value::str(std::move(text));
    return makeList(std::move(picked), pos, obj.kind);
  }

  Value checkedStr(std::string s, size_t pos) {
    if (s.size() > kMaxOutput)
      fail(pos, "a string longer than " + Twine(kMaxOutput) + " bytes");
    return Value::str(std::move(s));
  }

  [[noreturn]] void badOperands(StringRef op, const Value &a, const Value &b,
                                size_t pos) {
    if (a.isUndefined())
      undefinedError(a, pos);
    if (b.isUndefined())
      undefinedError(b, pos);
    fail(pos, "unsupported operand types for " + op + ": " + typeName(a) +
                  " and " + typeName(b));
  }

  static std::string typeName(const Value &v) {
    switch (v.kind) {
    case Kind::Undefined:
      return "undefined";
    case Kind::None:
      return "none";
    case Kind::Bool:
      return "bool";
    case Kind::Int:
      return "int";
    case Kind::Float:
      return "float";
    case Kind::Str:
      return "string";
    case Kind::List:
      return "list";
    case Kind::Tuple:
      return "tuple";
    case Kind::Dict:
      return "dict";
    case Kind::Namespace:
      return "namespace";
    case Kind::Loop:
      return "loop";
    case Kind::Callable:
      return "function";
    case Kind::Generator:
      return "generator";
    }
    return "value";
  }

  Value intResult(bool overflow, int64_t r, size_t pos) {
    if (overflow)
      fail(pos, "integers beyond 64 bits are not supported");
    return Value::integer(r);
  }

  Value repeat(const Value &seq, int64_t times, size_t pos) {
    if (times < 0)
      times = 0;
    if (seq.kind == Kind::Str) {
      if (!seq.s.empty() && uint64_t(times) > kMaxOutput / seq.s.size())
        fail(pos, "a string longer than " + Twine(kMaxOutput) + " bytes");
      std::string out;
      for (int64_t k = 0; k < times; ++k)
        out += seq.s;
      return Value::str(std::move(out));
    }
    if (!seq.list->empty() && uint64_t(times) > kMaxListSize / seq.list->size())
      fail(pos, "a list of more than " + Twine(kMaxListSize) + " elements");
    List out;
    for (int64_t k = 0; k < times; ++k)
      out.insert(out.end(), seq.list->begin(), seq.list->end());
    return makeList(std::move(out), pos, seq.kind);
  }

  Value binary(StringRef op, const Value &a, const Value &b, size_t pos) {
    bool nums = a.isNumber() && b.isNumber();
    bool ints = a.isIntLike() && b.isIntLike();
    int64_t r = 0;
    if (op == "+") {
      if (ints) {
        bool overflow = __builtin_add_overflow(a.asInt(), b.asInt(), &r);
        return intResult(overflow, r, pos);
      }
      if (nums)
        return Value::real(a.asFloat() + b.asFloat());
      if (a.kind == Kind::Str && b.kind == Kind::Str)
        return checkedStr(a.s + b.s, pos);
      if (a.isSequence() && a.kind == b.kind) {
        List out = *a.list;
        out.insert(out.end(), b.list->begin(), b.list->end());
        return makeList(std::move(out), pos, a.kind);
      }
    } else if (op == "-") {
      if (ints) {
        bool overflow = __builtin_sub_overflow(a.asInt(), b.asInt(), &r);
        return intResult(overflow, r, pos);
      }
      if (nums)
        return Value::real(a.asFloat() - b.asFloat());
    } else if (op == "*") {
      if (ints) {
        bool overflow = __builtin_mul_overflow(a.asInt(), b.asInt(), &r);
        return intResult(overflow, r, pos);
      }
      if (nums)
        return Value::real(a.asFloat() * b.asFloat());
      if ((a.kind == Kind::Str || a.isSequence()) && b.isIntLike())
        return repeat(a, b.asInt(), pos);
      if ((b.kind == Kind::Str || b.isSequence()) && a.isIntLike())
        return repeat(b, a.asInt(), pos);
    } else if (op == "/") {
      if (nums) {
        if (b.asFloat() == 0)
          fail(pos, "division by zero");
        return Value::real(a.asFloat() / b.asFloat());
      }
    } else if (op == "//" || op == "%") {
      if (ints) {
        int64_t x = a.asInt(), y = b.asInt();
        if (y == 0)
          fail(pos, "integer division or modulo by zero");
        if (x == INT64_MIN && y == -1)
          fail(pos, "integers beyond 64 bits are not supported");
        int64_t q = x / y, m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) {
          --q;
          m += y;
        }
        return Value::integer(op == "//" ? q : m);
      }
      if (nums) {
        double x = a.asFloat(), y = b.asFloat();
        if (y == 0)
          fail(pos, "float division or modulo by zero");
        // CPython's float_divmod.
        double m = std::fmod(x, y);
        double div = (x - m) / y;
        if (m != 0) {
          if ((y < 0) != (m < 0)) {
            m += y;
            div -= 1.0;
          }
        } else {
          m = std::copysign(0.0, y);
        }
        if (op == "%")
          return Value::real(m);
        double floordiv;
        if (div != 0) {
          floordiv = std::floor(div);
          if (div - floordiv > 0.5)
            floordiv += 1.0;
        } else {
          floordiv = std::copysign(0.0, x / y);
        }
        return Value::real(floordiv);
      }
      if (op == "%" && a.kind == Kind::Str)
        fail(pos, "string formatting with '%' is not supported");
    } else if (op == "**") {
      if (ints && b.asInt() >= 0) {
        int64_t base = a.asInt(), e = b.asInt(), result = 1;
        bool overflow = false;
        while (e > 0 && !overflow) {
          if (e & 1)
            overflow |= __builtin_mul_overflow(result, base, &result);
          e >>= 1;
          if (e > 0)
            overflow |= __builtin_mul_overflow(base, base, &base);
        }
        return intResult(overflow, result, pos);
      }
      if (nums) {
        if (a.asFloat() == 0 && b.asFloat() < 0)
          fail(pos, "zero cannot be raised to a negative power");
        if (a.asFloat() < 0 && b.asFloat() != std::floor(b.asFloat()))
          fail(pos, "complex numbers are not supported");
        double r = std::pow(a.asFloat(), b.asFloat());
        if (std::isinf(r) && std::isfinite(a.asFloat()) &&
            std::isfinite(b.asFloat()))
          fail(pos, "numerical result out of range");
        return Value::real(r);
      }
    }
    badOperands(op, a, b, pos);
  }

  /// <, <=, >, >=: -1, 0 or 1.
  int order(const Value &a, const Value &b, StringRef op, size_t pos,
            unsigned depth = 0) {
    checkDepth(depth, pos);
    if (a.isNumber() && b.isNumber()) {
      if (a.kind == Kind::Float || b.kind == Kind::Float) {
        double x = a.asFloat(), y = b.asFloat();
        if (std::isnan(x) || std::isnan(y))
          return 2; // unordered: every comparison is false
        return x < y ? -1 : x > y ? 1 : 0;
      }
      return a.asInt() < b.asInt() ? -1 : a.asInt() > b.asInt() ? 1 : 0;
    }
    if (a.kind == Kind::Str && b.kind == Kind::Str) {
      int c = a.s.compare(b.s);
      return c < 0 ? -1 : c > 0 ? 1 : 0;
    }
    if (a.isSequence() && a.kind == b.kind) {
      size_t n = std::min(a.list->size(), b.list->size());
      for (size_t k = 0; k < n; ++k)
        if (!equals((*a.list)[k], (*b.list)[k], pos))
          return order((*a.list)[k], (*b.list)[k], op, pos, depth + 1);
      return a.list->size() < b.list->size()   ? -1
             : a.list->size() > b.list->size() ? 1
                                               : 0;
    }
    badOperands(op, a, b, pos);
  }

  bool compare(StringRef op, const Value &a, const Value &b, size_t pos) {
    if (op == "==")
      return equals(a, b, pos);
    if (op == "!=")
      return !equals(a, b, pos);
    if (op == "in")
      return in(a, b, pos);
    if (op == "notin")
      return !in(a, b, pos);
    int c = order(a, b, op, pos);
    if (c == 2)
      return false;
    if (op == "<")
      return c < 0;
    if (op == "<=")
      return c <= 0;
    if (op == ">")
      return c > 0;
    return c >= 0;
  }

  bool in(const Value &needle, const Value &hay, size_t pos) {
    switch (hay.kind) {
    case Kind::Str:
      if (needle.kind != Kind::Str) {
        if (needle.isUndefined())
          undefinedError(needle, pos);
        fail(pos, "'in <string>' requires a string as left operand, not " +
                      typeName(needle));
      }
      // std::string::find may take |hay| * |needle| steps.
      tick(1 + hay.s.size() / 64 * (1 + needle.s.size() / 64));
      return StringRef(hay.s).contains(needle.s);
    case Kind::Dict:
      if (!isHashable(needle))
        fail(pos, "unhashable type: '" + typeName(needle) + "'");
      return hay.dict->find(needle) != nullptr;
    case Kind::List:
    case Kind::Tuple:
    case Kind::Undefined:
    case Kind::Generator:
      for (const Value &item : iterate(hay, pos))
        if (equals(needle, item, pos))
          return true;
      return false;
    default:
      fail(pos, "argument of type '" + typeName(hay) + "' is not iterable");
    }
  }

  Value eval(const Expr &e, Scope &scope) {
    step(e.pos);
    switch (e.kind) {
    case Expr::Const:
      return e.constant;
    case Expr::Name: {
      if (Value *v = scope.find(e.name))
        return *v;
      if (lookup(kGlobals, e.name))
        return Value::callable(e.name);
      return Value::undefined("'" + e.name + "'");
    }
    case Expr::ListLit:
    case Expr::TupleLit: {
      List items;
      for (const ExprP &a : e.args)
        items.push_back(eval(*a, scope));
      return makeList(std::move(items), e.pos,
                      e.kind == Expr::ListLit ? Kind::List : Kind::Tuple);
    }
    case Expr::DictLit: {
      Dict d;
      for (size_t k = 0; k < e.args.size(); k += 2) {
        Value key = eval(*e.args[k], scope);
        if (!isHashable(key))
          fail(e.args[k]->pos, "unhashable type: '" + typeName(key) + "'");
        d.set(key, eval(*e.args[k + 1], scope));
      }
      return makeDict(std::move(d), e.pos);
    }
    case Expr::Getattr:
      return getAttr(eval(*e.args[0], scope), e.name, e.pos);
    case Expr::Getitem: {
      Value obj = eval(*e.args[0], scope);
      return getItem(obj, eval(*e.args[1], scope), e.pos);
    }
    case Expr::Slice: {
      Value obj = eval(*e.args[0], scope);
      Value b[3];
      const Value *bounds[3] = {nullptr, nullptr, nullptr};
      for (int k = 0; k < 3; ++k)
        if (e.args[k + 1]) {
          b[k] = eval(*e.args[k + 1], scope);
          bounds[k] = &b[k];
        }
      return slice(obj, bounds, e.pos);
    }
    case Expr::Call:
      return call(e, scope);
    case Expr::Filter:
      return filter(e, scope);
    case Expr::Test: {
      bool r = test(e, scope);
      return Value::boolean(e.negated ? !r : r);
    }
    case Expr::Not:
      return Value::boolean(!truthy(eval(*e.args[0], scope)));
    case Expr::Neg:
    case Expr::Pos: {
      Value v = eval(*e.args[0], scope);
      if (v.isUndefined())
        undefinedError(v, e.pos);
      if (!v.isNumber())
        fail(e.pos, "bad operand type for unary " +
                        Twine(e.kind == Expr::Neg ? "-" : "+") + ": " +
                        typeName(v));
      if (e.kind == Expr::Pos)
        return v.kind == Kind::Bool ? Value::integer(v.asInt()) : v;
      if (v.kind == Kind::Float)
        return Value::real(-v.f);
      return intResult(v.asInt() == INT64_MIN, -v.asInt(), e.pos);
    }
    case Expr::Binary: {
      Value a = eval(*e.args[0], scope);
      Value b = eval(*e.args[1], scope);
      return binary(e.name, a, b, e.pos);
    }
    case Expr::Concat: {
      std::string out;
      for (const ExprP &a : e.args) {
        out += toStr(eval(*a, scope), a->pos);
        if (out.size() > kMaxOutput)
          fail(e.pos, "a string longer than " + Twine(kMaxOutput) + " bytes");
      }
      return Value::str(std::move(out));
    }
    case Expr::And: {
      Value a = eval(*e.args[0], scope);
      return truthy(a) ? eval(*e.args[1], scope) : a;
    }
    case Expr::Or: {
      Value a = eval(*e.args[0], scope);
      return truthy(a) ? a : eval(*e.args[1], scope);
    }
    case Expr::Compare: {
      Value left = eval(*e.args[0], scope);
      for (size_t k = 0; k < e.ops.size(); ++k) {
        Value right = eval(*e.args[k + 1], scope);
        if (!compare(e.ops[k], left, right, e.args[k + 1]->pos))
          return Value::boolean(false);
        left = std::move(right);
      }
      return Value::boolean(true);
    }
    case Expr::Cond:
      if (truthy(eval(*e.args[0], scope)))
        return eval(*e.args[1], scope);
      if (e.args[2])
        return eval(*e.args[2], scope);
      return Value::undefined("the missing else of an inline if");
    }
    return Value();
  }

  std::vector<Value> evalArgs(const Expr &e, Scope &scope) {
    std::vector<Value> args;
    for (size_t k = 1; k < e.args.size(); ++k)
      args.push_back(eval(*e.args[k], scope));
    return args;
  }

  const std::string &needStr(const Value &v, StringRef what, size_t pos) {
    if (v.kind != Kind::Str) {
      if (v.isUndefined())
        undefinedError(v, pos);
      fail(pos, what + " expects a string, not " + typeName(v));
    }
    return v.s;
  }

  static bool isAscii(StringRef s) {
    for (char c : s)
      if ((unsigned char)c >= 0x80)
        return false;
    return true;
  }

  Value caseMap(StringRef s, bool upper, size_t pos) {
    if (!isAscii(s))
      fail(pos, Twine(upper ? "upper" : "lower") +
                    " of non-ASCII text is not supported");
    return Value::str(upper ? s.upper() : s.lower());
  }

  Value replace(const std::string &s, const std::string &old,
                const std::string &with, int64_t count, size_t pos) {
    std::string out;
    tick(1 + s.size() / 64 * (1 + old.size() / 64));
    if (old.empty()) {
      // Python inserts `with` around every code point.
      std::vector<size_t> starts = codePointStarts(s);
      int64_t done = 0;
      for (size_t k = 0; k + 1 < starts.size(); ++k) {
        if (count < 0 || done < count) {
          out += with;
          ++done;
        }
        out += s.substr(starts[k], starts[k + 1] - starts[k]);
        if (out.size() > kMaxOutput)
          break;
      }
      if (count < 0 || done < count)
        out += with;
      return checkedStr(std::move(out), pos);
    }
    size_t at = 0;
    int64_t done = 0;
    while (count < 0 || done < count) {
      size_t hit = s.find(old, at);
      if (hit == std::string::npos)
        break;
      out += s.substr(at, hit - at) + with;
      at = hit + old.size();
      ++done;
      if (out.size() > kMaxOutput)
        break;
    }
    out += s.substr(at);
    return checkedStr(std::move(out), pos);
  }

  Value call(const Expr &e, Scope &scope) {
    Value callee = eval(*e.args[0], scope);
    std::vector<Value> args = evalArgs(e, scope);
    if (callee.isUndefined())
      undefinedError(callee, e.pos);
    if (callee.kind != Kind::Callable)
      fail(e.pos, "a " + typeName(callee) + " is not callable");
    const std::string &name = callee.s;
    if (!callee.list) {
      if (name == "raise_exception")
        fail(e.pos,
             "the template raised an exception: " + toStr(args[0], e.pos));
      if (name == "namespace") {
        if (++namespaces > kMaxNamespaces)
          fail(e.pos,
               "more than " + Twine(kMaxNamespaces) + " namespace() calls");
        Dict d;
        for (const auto &[key, value] : e.kwargs)
          d.set(Value::str(key), eval(*value, scope));
        Value ns = makeDict(std::move(d), e.pos, Kind::Namespace);
        namespaceDicts.push_back(ns.dict);
        return ns;
      }
      if (name == "range") {
        int64_t v[3] = {0, 0, 1};
        for (size_t k = 0; k < args.size(); ++k) {
          if (!args[k].isIntLike())
            fail(e.pos, "range() expects integers, not " + typeName(args[k]));
          v[args.size() == 1 ? 1 : k] = args[k].asInt();
        }
        if (v[2] == 0)
          fail(e.pos, "range() arg 3 must not be zero");
        long double count =
            v[2] > 0
                ? std::ceil((long double)(v[1] - (long double)v[0]) / v[2])
                : std::ceil(((long double)v[0] - v[1]) / -(long double)v[2]);
        if (count > kMaxRange)
          fail(e.pos,
               "range too big, maximum size for range is " + Twine(kMaxRange));
        List items;
        for (int64_t i = v[0]; v[2] > 0 ? i < v[1] : i > v[1]; i += v[2]) {
          step(e.pos);
          items.push_back(Value::integer(i));
        }
        return makeList(std::move(items), e.pos);
      }
      fail(e.pos, "unsupported function '" + name + "'");
    }
    // Methods of the bound object.
    const Value &self = (*callee.list)[0];
    if (self.kind == Kind::Str) {
      const std::string &s = self.s;
      if (name == "strip" || name == "lstrip" || name == "rstrip") {
        const std::string *chars = nullptr;
        if (!args.empty() && args[0].kind != Kind::None)
          chars = &needStr(args[0], name + "()", e.pos);
        return Value::str(
            pyStrip(s, name != "rstrip", name != "lstrip", chars));
      }
      if (name == "upper" || name == "lower")
        return caseMap(s, name == "upper", e.pos);
      if (name == "startswith")
        return Value::boolean(
            StringRef(s).starts_with(needStr(args[0], name + "()", e.pos)));
      if (name == "endswith")
        return Value::boolean(
            StringRef(s).ends_with(needStr(args[0], name + "()", e.pos)));
      if (name == "replace") {
        int64_t count = -1;
        if (args.size() == 3) {
          if (!args[2].isIntLike())
            fail(e.pos, "replace() count must be an integer");
          count = args[2].asInt();
        }
        return replace(s, needStr(args[0], "replace()", e.pos),
                       needStr(args[1], "replace()", e.pos), count, e.pos);
      }
    } else if (self.kind == Kind::Dict) {
      if (name == "items") {
        List pairs;
        for (const auto &[k, v] : self.dict->entries)
          pairs.push_back(makeList({k, v}, e.pos, Kind::Tuple));
        return makeList(std::move(pairs), e.pos);
      }
      if (name == "keys" || name == "values") {
        List out;
        for (const auto &[k, v] : self.dict->entries)
          out.push_back(name == "keys" ? k : v);
        return makeList(std::move(out), e.pos);
      }
      if (name == "get") {
        if (const Value *v = self.dict->find(args[0]))
          return *v;
        return args.size() > 1 ? args[1] : Value::none();
      }
    }
    fail(e.pos, "unsupported method '" + name + "' of a " + typeName(self));
  }

  bool runTest(StringRef name, const Value &v, ArrayRef<Value> args,
               size_t pos) {
    if (name == "defined")
      return !v.isUndefined();
    if (name == "undefined")
      return v.isUndefined();
    if (name == "none")
      return v.kind == Kind::None;
    if (name == "string")
      return v.kind == Kind::Str;
    if (name == "number")
      return v.isNumber();
    if (name == "integer")
      return v.kind == Kind::Int;
    if (name == "float")
      return v.kind == Kind::Float;
    if (name == "boolean")
      return v.kind == Kind::Bool;
    if (name == "true")
      return v.kind == Kind::Bool && v.b;
    if (name == "false")
      return v.kind == Kind::Bool && !v.b;
    if (name == "mapping")
      return v.kind == Kind::Dict;
    if (name == "sequence")
      return v.kind == Kind::Str || v.isSequence() || v.kind == Kind::Dict ||
             v.isUndefined();
    if (name == "iterable")
      return v.kind == Kind::Str || v.isSequence() || v.kind == Kind::Dict ||
             v.isUndefined() || v.kind == Kind::Generator;
    if (name == "even" || name == "odd" || name == "divisibleby") {
      // jinja2: value % 2 == 0, value % 2 == 1, value % num == 0.
      Value m = binary(
          "%", v, name == "divisibleby" ? args[0] : Value::integer(2), pos);
      return equals(m, Value::integer(name == "odd" ? 1 : 0), pos);
    }
    if (name == "equalto" || name == "eq" || name == "==")
      return compare("==", v, args[0], pos);
    if (name == "ne" || name == "!=")
      return compare("!=", v, args[0], pos);
    if (name == "lt" || name == "<")
      return compare("<", v, args[0], pos);
    if (name == "le" || name == "<=")
      return compare("<=", v, args[0], pos);
    if (name == "gt" || name == ">")
      return compare(">", v, args[0], pos);
    if (name == "ge" || name == ">=")
      return compare(">=", v, args[0], pos);
    if (name == "in")
      return in(v, args[0], pos);
    fail(pos, "unsupported test '" + name + "'");
  }

  bool test(const Expr &e, Scope &scope) {
    Value v = eval(*e.args[0], scope);
    std::vector<Value> args = evalArgs(e, scope);
    return runTest(e.name, v, args, e.pos);
  }

  Value filter(const Expr &e, Scope &scope) {
    Value v = eval(*e.args[0], scope);
    std::vector<Value> args = evalArgs(e, scope);
    std::vector<std::pair<std::string, Value>> kwargs;
    for (const auto &[key, value] : e.kwargs)
      kwargs.emplace_back(key, eval(*value, scope));
    auto kwarg = [&](StringRef key, size_t index) -> const Value * {
      for (const auto &[k, value] : kwargs)
        if (k == key) {
          if (index < args.size())
            fail(e.pos, "filter '" + e.name + "' got '" + key + "' twice");
          return &value;
        }
      return index < args.size() ? &args[index] : nullptr;
    };
    const std::string &name = e.name;
    size_t pos = e.pos;
    if (name == "trim") {
      const Value *chars = kwarg("chars", 0);
      const std::string *set = nullptr;
      if (chars && chars->kind != Kind::None)
        set = &needStr(*chars, "trim", pos);
      return Value::str(pyStrip(toStr(v, pos), true, true, set));
    }
    if (name == "length" || name == "count") {
      switch (v.kind) {
      case Kind::Undefined:
        return Value::integer(0);
      case Kind::Str:
        return Value::integer(codePointCount(v.s));
      case Kind::List:
      case Kind::Tuple:
        return Value::integer(v.list->size());
      case Kind::Dict:
        return Value::integer(v.dict->entries.size());
      default:
        fail(pos, "object of type '" + typeName(v) + "' has no len()");
      }
    }
    if (name == "upper" || name == "lower")
      return caseMap(toStr(v, pos), name == "upper", pos);
    if (name == "string")
      return Value::str(toStr(v, pos));
    if (name == "list")
      return makeList(iterate(v, pos), pos);
    if (name == "first") {
      if (v.kind == Kind::Generator) {
        if (v.gen->cursor < v.gen->items.size())
          return v.gen->items[v.gen->cursor++];
        return Value::undefined("'first' of an empty sequence");
      }
      List items = iterate(v, pos);
      return items.empty() ? Value::undefined("'first' of an empty sequence")
                           : items.front();
    }
    if (name == "last") {
      if (v.kind == Kind::Generator)
        fail(pos, "filter 'last' of a generator is not supported");
      List items = iterate(v, pos);
      return items.empty() ? Value::undefined("'last' of an empty sequence")
                           : items.back();
    }
    if (name == "join") {
      const Value *sep = kwarg("d", 0);
      std::string d = sep ? toStr(*sep, pos) : "";
      std::string out;
      bool first = true;
      for (const Value &item : iterate(v, pos)) {
        if (!first)
          out += d;
        first = false;
        out += toStr(item, pos);
        if (out.size() > kMaxOutput)
          fail(pos, "a string longer than " + Twine(kMaxOutput) + " bytes");
      }
      return Value::str(std::move(out));
    }
    if (name == "default" || name == "d") {
      const Value *dflt = kwarg("default_value", 0);
      const Value *boolean = kwarg("boolean", 1);
      bool useDefault =
          v.isUndefined() || (boolean && truthy(*boolean) && !truthy(v));
      if (!useDefault)
        return v;
      return dflt ? *dflt : Value::str("");
    }
    if (name == "tojson")
      return checkedStr(toJson(v, pos), pos);
    if (name == "selectattr" || name == "rejectattr") {
      const std::string &attr = needStr(args[0], name, pos);
      List kept;
      // jinja2's select_or_reject skips a false sequence without iterating.
      for (const Value &item : truthy(v) ? iterate(v, pos) : List()) {
        step(pos);
        Value a = item;
        for (StringRef part : split(attr, '.'))
          a = getItem(a, Value::str(part.str()), pos);
        bool r;
        if (args.size() == 1) {
          r = truthy(a);
        } else {
          const std::string &testName = needStr(args[1], name, pos);
          const FilterSpec *spec = lookup(kTests, testName);
          if (!spec)
            fail(pos, "unsupported test '" + testName + "'");
          size_t given = args.size() - 2;
          if (given < spec->minArgs || given > spec->maxArgs)
            fail(pos, "test '" + testName + "' takes " + Twine(spec->minArgs) +
                          " arguments, not " + Twine(given));
          r = runTest(testName, a, ArrayRef<Value>(args).drop_front(2), pos);
        }
        if (r == (name == "selectattr"))
          kept.push_back(item);
      }
      return makeGenerator(std::move(kept));
    }
    if (name == "items") {
      if (v.isUndefined())
        return makeGenerator({});
      if (v.kind != Kind::Dict)
        fail(pos, "filter 'items' expects a mapping, not " + typeName(v));
      List pairs;
      for (const auto &[k, item] : v.dict->entries)
        pairs.push_back(makeList({k, item}, pos, Kind::Tuple));
      return makeGenerator(std::move(pairs));
    }
    if (name == "replace") {
      int64_t count = -1;
      if (args.size() == 3) {
        if (!args[2].isIntLike())
          fail(pos, "replace count must be an integer");
        count = args[2].asInt();
      }
      return replace(toStr(v, pos), toStr(args[0], pos), toStr(args[1], pos),
                     count, pos);
    }
    fail(pos, "unsupported filter '" + name + "'");
  }

  unsigned namespaces = 0;
  /// Every namespace made, emptied at the end: `ns.x = ns` makes a cycle.
  std::vector<std::shared_ptr<Dict>> namespaceDicts;

public:
  ~Renderer() {
    for (const std::shared_ptr<Dict> &d : namespaceDicts)
      d->entries.clear();
  }
};

//===----------------------------------------------------------------------===//
// Driver
//===----------------------------------------------------------------------===//

/// jinja2's source preparation: \r\n and \r become \n, and one trailing
/// newline is dropped (keep_trailing_newline is false).
std::string normalise(StringRef text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\r') {
      out += '\n';
      if (i + 1 < text.size() && text[i + 1] == '\n')
        ++i;
    } else {
      out += text[i];
    }
  }
  if (!out.empty() && out.back() == '\n')
    out.pop_back();
  return out;
}

Error failureError(StringRef file, const std::string &src, const Failure &f) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < f.pos && i < src.size(); ++i) {
    if (src[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return createStringError(
      inconvertibleErrorCode(),
      formatv("{0}: chat_template:{1}:{2}: {3}", file, line, col, f.message));
}

} // namespace

Expected<std::string> renderChatTemplate(StringRef file, StringRef templateText,
                                         ArrayRef<ChatMessage> messages,
                                         StringRef bosToken, StringRef eosToken,
                                         bool addGenerationPrompt) {
  std::string src = normalise(templateText);
  try {
    Body body = Parser(Lexer(src).run()).parseTemplate();
    Scope root{nullptr, {}};
    List list;
    for (const ChatMessage &m : messages) {
      Dict d;
      d.entries.emplace_back(Value::str("role"), Value::str(m.role));
      d.entries.emplace_back(Value::str("content"), Value::str(m.content));
      list.push_back(makeDict(std::move(d), 0));
    }
    root.set("messages", makeList(std::move(list), 0));
    root.set("tools", Value::none());
    root.set("documents", Value::none());
    root.set("add_generation_prompt", Value::boolean(addGenerationPrompt));
    root.set("bos_token", Value::str(bosToken.str()));
    root.set("eos_token", Value::str(eosToken.str()));
    struct Budget {
      uint64_t steps = 0;
      Budget() { gSteps = &steps; }
      ~Budget() { gSteps = nullptr; }
    } budget;
    Renderer renderer;
    renderer.run(body, root);
    return std::move(renderer.output);
  } catch (const Failure &f) {
    return failureError(file, src, f);
  }
}

Expected<ChatFormat> chatFormat(StringRef file, StringRef templateText,
                                StringRef bosToken, StringRef eosToken) {
  // The binary puts the user's text between a fixed prefix and suffix, so
  // the template must not look at the text: rendered with texts that differ
  // in length, case and surrounding whitespace (a `| trim`, a `| length`
  // test, an `.upper()`), and with none, it must put each in the same place.
  static constexpr const char *kProbes[] = {
      "\x01moe-chat-user-text\x02",
      " \n\x01MOE-CHAT-USER-TEXT, A LONGER SECOND PROBE\x02\n "};
  std::optional<ChatFormat> format;
  bool same = true;
  for (const char *probe : kProbes) {
    ChatMessage message{"user", probe};
    Expected<std::string> text = renderChatTemplate(file, templateText, message,
                                                    bosToken, eosToken, true);
    if (!text)
      return text.takeError();
    StringRef s = *text;
    size_t at = s.find(probe);
    bool once =
        at != StringRef::npos && s.find(probe, at + 1) == StringRef::npos;
    if (!once && !format)
      return createStringError(
          inconvertibleErrorCode(),
          formatv("{0}: chat_template: the template must show a single user "
                  "message's content exactly once, but shows it {1}",
                  file, at == StringRef::npos ? "nowhere" : "more than once"));
    if (!once) {
      same = false;
      break;
    }
    ChatFormat f{s.take_front(at).str(),
                 s.drop_front(at + strlen(probe)).str()};
    if (!format)
      format = std::move(f);
    else
      same &= f.prefix == format->prefix && f.suffix == format->suffix;
  }
  if (same) {
    // An empty text (`--chat ""`) too: what a failure here says is no more
    // than that the template looks at the text.
    ChatMessage empty{"user", ""};
    Expected<std::string> text =
        renderChatTemplate(file, templateText, empty, bosToken, eosToken, true);
    if (!text)
      consumeError(text.takeError());
    same = text && *text == format->prefix + format->suffix;
  }
  if (!same)
    return createStringError(
        inconvertibleErrorCode(),
        formatv("{0}: chat_template: the text around a user message depends "
                "on the message (the template tests or transforms it, e.g. "
                "with trim or length), which --chat's fixed prefix and suffix "
                "cannot reproduce",
                file));
  return std::move(*format);
}

/// tokenizer_config.json's bos_token and eos_token: strings, or objects with
/// a string "content" (AddedToken); "" when absent or null.
static Expected<TokenizerChatConfig>
readSpecialTokens(StringRef file, const json::Object &object) {
  TokenizerChatConfig config;
  for (auto [key, out] :
       {std::pair<const char *, std::string *>{"bos_token", &config.bosToken},
        {"eos_token", &config.eosToken}}) {
    const json::Value *v = object.get(key);
    if (!v || v->kind() == json::Value::Null)
      continue;
    if (std::optional<StringRef> s = v->getAsString()) {
      *out = s->str();
      continue;
    }
    const json::Object *o = v->getAsObject();
    std::optional<StringRef> content =
        o ? o->getString("content") : std::nullopt;
    if (!content)
      return createStringError(inconvertibleErrorCode(),
                               file + ": " + key +
                                   ": expected a string or an object with a "
                                   "string \"content\"");
    *out = content->str();
  }
  return config;
}

Expected<std::optional<TokenizerChatConfig>>
readTokenizerChatConfig(StringRef file, StringRef text) {
  auto error = [&](const Twine &message) {
    return createStringError(inconvertibleErrorCode(),
                             (file + ": " + message).str());
  };
  // Nesting bounded and duplicate keys refused before llvm::json parses.
  Expected<json::Value> parsed = parseJSON(file, text);
  if (!parsed)
    return parsed.takeError();
  const json::Object *object = parsed->getAsObject();
  if (!object)
    return error("expected a JSON object");
  const json::Value *chat = object->get("chat_template");
  if (!chat || chat->kind() == json::Value::Null)
    return std::nullopt;
  Expected<TokenizerChatConfig> config = readSpecialTokens(file, *object);
  if (!config)
    return config.takeError();
  if (std::optional<StringRef> s = chat->getAsString()) {
    config->chatTemplate = s->str();
  } else if (const json::Array *list = chat->getAsArray()) {
    bool found = false;
    for (const json::Value &entry : *list) {
      const json::Object *o = entry.getAsObject();
      std::optional<StringRef> name = o ? o->getString("name") : std::nullopt;
      std::optional<StringRef> tmpl =
          o ? o->getString("template") : std::nullopt;
      if (!name || !tmpl)
        return error("chat_template: expected a list of {\"name\": string, "
                     "\"template\": string} objects");
      if (*name == "default") {
        config->chatTemplate = tmpl->str();
        found = true;
      }
    }
    if (!found)
      return error("chat_template: none of the named templates is "
                   "\"default\"");
  } else {
    return error("chat_template: expected a string or a list of named "
                 "templates");
  }
  return std::move(*config);
}

Expected<std::optional<ModelChatTemplate>> findChatTemplate(StringRef dir,
                                                            StringRef path) {
  constexpr uint64_t kMaxConfigBytes = 64 << 20;
  auto read = [&](StringRef file) -> Expected<std::string> {
    auto buffer = readInputFile(file, kMaxConfigBytes);
    if (!buffer)
      return buffer.takeError();
    return (*buffer)->getBuffer().str();
  };
  auto exists = [](StringRef file) { return pathExists(file); };

  // tokenizer_config.json's BOS and EOS, whichever file holds the template.
  SmallString<256> configPath(dir);
  sys::path::append(configPath, "tokenizer_config.json");
  TokenizerChatConfig special;
  std::optional<TokenizerChatConfig> fromConfig;
  Expected<bool> hasConfig = exists(configPath);
  if (!hasConfig)
    return hasConfig.takeError();
  if (*hasConfig) {
    Expected<std::string> text = read(configPath);
    if (!text)
      return text.takeError();
    Expected<json::Value> parsed = parseJSON(configPath, *text);
    if (!parsed)
      return parsed.takeError();
    const json::Object *object = parsed->getAsObject();
    if (!object)
      return createStringError(inconvertibleErrorCode(),
                               configPath + ": expected a JSON object");
    Expected<TokenizerChatConfig> tokens =
        readSpecialTokens(configPath, *object);
    if (!tokens)
      return tokens.takeError();
    special = std::move(*tokens);
    Expected<std::optional<TokenizerChatConfig>> config =
        readTokenizerChatConfig(configPath, *text);
    if (!config)
      return config.takeError();
    fromConfig = std::move(*config);
  }

  // A template file: a .jinja template, or a tokenizer_config.json.
  auto fromJinja = [&](StringRef file) -> Expected<ModelChatTemplate> {
    Expected<std::string> text = read(file);
    if (!text)
      return text.takeError();
    ModelChatTemplate result{file.str(), special};
    result.config.chatTemplate = std::move(*text);
    return result;
  };
  if (!path.empty()) {
    if (!sys::path::extension(path).equals_insensitive(".json"))
      return fromJinja(path);
    Expected<std::string> text = read(path);
    if (!text)
      return text.takeError();
    Expected<std::optional<TokenizerChatConfig>> config =
        readTokenizerChatConfig(path, *text);
    if (!config)
      return config.takeError();
    if (!*config)
      return createStringError(inconvertibleErrorCode(),
                               path + ": no chat_template");
    return ModelChatTemplate{path.str(), std::move(**config)};
  }
  // transformers 5 writes the template to chat_template.jinja, and loads it
  // from there before tokenizer_config.json.
  SmallString<256> jinjaPath(dir);
  sys::path::append(jinjaPath, "chat_template.jinja");
  Expected<bool> hasJinja = exists(jinjaPath);
  if (!hasJinja)
    return hasJinja.takeError();
  if (*hasJinja)
    return fromJinja(jinjaPath);
  if (fromConfig)
    return ModelChatTemplate{configPath.str().str(), std::move(*fromConfig)};
  return std::nullopt;
}

} // namespace mlir::moe::hf
