//===- tokenizer.cpp - the runtime's tokenizer ------------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// See tokenizer.h. The BPE path follows the `tokenizers` library (0.22)
// step by step, so that its ids equal the library's token for token: the
// comments name the piece of the library each function mirrors.
//
//===----------------------------------------------------------------------===//

#include "tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdio>
#include <cstring>
#include <new>
#include <queue>
#include <unordered_map>

namespace moert {

Tokenizer::~Tokenizer() = default;

bool Tokenizer::isEos(int32_t id) const {
  return std::find(eosIds.begin(), eosIds.end(), id) != eosIds.end();
}

namespace {

//===----------------------------------------------------------------------===//
// UTF-8
//===----------------------------------------------------------------------===//

/// The length of the valid UTF-8 sequence at s[i..n), or 0.
size_t utf8Length(const unsigned char *s, size_t i, size_t n) {
  unsigned char c = s[i];
  if (c < 0x80)
    return 1;
  size_t len;
  unsigned lo = 0x80, hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf)
    len = 2;
  else if (c >= 0xe0 && c <= 0xef) {
    len = 3;
    if (c == 0xe0)
      lo = 0xa0;
    if (c == 0xed)
      hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4;
    if (c == 0xf0)
      lo = 0x90;
    if (c == 0xf4)
      hi = 0x8f;
  } else
    return 0;
  if (i + len > n)
    return 0;
  if (s[i + 1] < lo || s[i + 1] > hi)
    return 0;
  for (size_t k = 2; k < len; ++k)
    if (s[i + k] < 0x80 || s[i + k] > 0xbf)
      return 0;
  return len;
}

/// Decodes the valid sequence of `len` bytes at `s`.
uint32_t codepoint(const unsigned char *s, size_t len) {
  if (len == 1)
    return s[0];
  uint32_t c = s[0] & (0x7f >> len);
  for (size_t k = 1; k < len; ++k)
    c = c << 6 | (s[k] & 0x3f);
  return c;
}

void appendUtf8(std::string &out, uint32_t c) {
  if (c < 0x80) {
    out += char(c);
  } else if (c < 0x800) {
    out += char(0xc0 | c >> 6);
    out += char(0x80 | (c & 0x3f));
  } else if (c < 0x10000) {
    out += char(0xe0 | c >> 12);
    out += char(0x80 | ((c >> 6) & 0x3f));
    out += char(0x80 | (c & 0x3f));
  } else {
    out += char(0xf0 | c >> 18);
    out += char(0x80 | ((c >> 12) & 0x3f));
    out += char(0x80 | ((c >> 6) & 0x3f));
    out += char(0x80 | (c & 0x3f));
  }
}

const char kReplacementChar[] = "\xef\xbf\xbd";

/// Rust's String::from_utf8_lossy: each maximal invalid subpart becomes one
/// U+FFFD (the Unicode "substitution of maximal subparts").
std::string lossyUtf8(const std::string &in) {
  const auto *s = reinterpret_cast<const unsigned char *>(in.data());
  size_t n = in.size(), i = 0;
  std::string out;
  out.reserve(n);
  while (i < n) {
    if (size_t len = utf8Length(s, i, n)) {
      out.append(in, i, len);
      i += len;
      continue;
    }
    // The maximal subpart: the lead byte and the continuation bytes that
    // are still possible after it.
    unsigned char c = s[i];
    size_t len = c >= 0xc2 && c <= 0xdf   ? 2
                 : c >= 0xe0 && c <= 0xef ? 3
                 : c >= 0xf0 && c <= 0xf4 ? 4
                                          : 1;
    size_t k = 1;
    for (; k < len && i + k < n; ++k) {
      unsigned lo = 0x80, hi = 0xbf;
      if (k == 1) {
        if (c == 0xe0)
          lo = 0xa0;
        else if (c == 0xed)
          hi = 0x9f;
        else if (c == 0xf0)
          lo = 0x90;
        else if (c == 0xf4)
          hi = 0x8f;
      }
      if (s[i + k] < lo || s[i + k] > hi)
        break;
    }
    out += kReplacementChar;
    i += k;
  }
  return out;
}

/// Rust's char::is_whitespace (Unicode White_Space).
bool isWhitespace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 ||
         c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

void replaceAll(std::string &s, const std::string &from,
                const std::string &to) {
  if (from.empty())
    return;
  std::string out;
  size_t i = 0;
  for (size_t at; (at = s.find(from, i)) != std::string::npos;
       i = at + from.size())
    out.append(s, i, at - i).append(to);
  out.append(s, i, std::string::npos);
  s.swap(out);
}

/// GPT-2's byte-to-unicode map (tokenizers' bytes_char): printable bytes
/// stand for themselves, the others for U+0100 upwards in order.
struct ByteMap {
  std::string charOf[256];
  std::unordered_map<uint32_t, unsigned char> byteOf;
  ByteMap() {
    uint32_t next = 256;
    for (unsigned b = 0; b < 256; ++b) {
      bool self = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
      uint32_t c = self ? b : next++;
      appendUtf8(charOf[b], c);
      byteOf[c] = (unsigned char)b;
    }
  }
};
const ByteMap &byteMap() {
  static const ByteMap map;
  return map;
}

//===----------------------------------------------------------------------===//
// The blob
//===----------------------------------------------------------------------===//

class Reader {
public:
  Reader(const void *data, size_t size)
      : p(static_cast<const unsigned char *>(data)), n(size) {}
  bool u32(uint32_t &v) {
    if (n - at < 4)
      return fail("truncated");
    v = uint32_t(p[at]) | uint32_t(p[at + 1]) << 8 | uint32_t(p[at + 2]) << 16 |
        uint32_t(p[at + 3]) << 24;
    at += 4;
    return true;
  }
  bool i32(int32_t &v) {
    uint32_t u = 0;
    if (!u32(u))
      return false;
    v = int32_t(u);
    return true;
  }
  /// An id in [lo, limit).
  bool id(int32_t &v, int32_t lo, int64_t limit, const char *what) {
    if (!i32(v))
      return false;
    if (v < lo || v >= limit)
      return fail(std::string(what) + " id " + std::to_string(v) +
                  " is out of range");
    return true;
  }
  bool flag(bool &v) {
    uint32_t u = 0;
    if (!u32(u))
      return false;
    if (u > 1)
      return fail("a flag is neither 0 nor 1");
    v = u;
    return true;
  }
  bool str(std::string &s) {
    uint32_t len = 0;
    if (!u32(len))
      return false;
    if (len > n - at)
      return fail("a string runs past the end");
    s.assign(reinterpret_cast<const char *>(p + at), len);
    at += len;
    return true;
  }
  /// A count of items of at least `itemBytes` bytes each.
  bool count(uint32_t &v, size_t itemBytes) {
    if (!u32(v))
      return false;
    if (uint64_t(v) * itemBytes > n - at)
      return fail("a count exceeds the data");
    return true;
  }
  bool magic(const char *m) {
    size_t len = std::strlen(m);
    if (n < len || std::memcmp(p, m, len) != 0)
      return fail("not a moe-compile tokenizer (bad magic)");
    at = len;
    return true;
  }
  bool atEnd() { return at == n ? true : fail("trailing bytes"); }
  bool fail(const std::string &why) {
    if (error.empty())
      error = why + " at byte " + std::to_string(at);
    return false;
  }
  std::string error;

private:
  const unsigned char *p;
  size_t n, at = 0;
};

//===----------------------------------------------------------------------===//
// tokenizer.json BPE
//===----------------------------------------------------------------------===//

/// PCRE2's limits for one match: its defaults, but for the heap (256 MiB,
/// not 20 GiB). A pattern that backtracks exponentially (`(a|aa)+c` on a run
/// of a's) fails the encoding with a message instead of silently leaving the
/// rest of the text unsplit. The limits bound each match, not the text's sum:
/// the patterns of real tokenizers take a few steps per match.
constexpr uint32_t kRegexMatchLimit = 10'000'000; // PCRE2's own default
constexpr uint32_t kRegexDepthLimit = 10'000'000; // PCRE2's own default
constexpr uint32_t kRegexHeapLimitKiB = 256 * 1024;

struct Regex {
  pcre2_code *code = nullptr;
  pcre2_match_context *context = nullptr;
  /// What the error messages call it.
  std::string name;
  ~Regex() {
    if (code)
      pcre2_code_free(code);
    if (context)
      pcre2_match_context_free(context);
  }
  /// The [start, end) of every non-empty match in `s`; false, with `error`,
  /// when PCRE2 gives up.
  bool findAll(const std::string &s,
               std::vector<std::pair<size_t, size_t>> &out,
               std::string &error) const {
    out.clear();
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(code, nullptr);
    if (!md)
      throw std::bad_alloc();
    const auto *p = reinterpret_cast<const unsigned char *>(s.data());
    size_t at = 0;
    while (at <= s.size()) {
      int rc =
          pcre2_match(code, p, s.size(), at, PCRE2_NO_UTF_CHECK, md, context);
      if (rc == PCRE2_ERROR_NOMATCH)
        break;
      if (rc < 0) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(rc, message, sizeof(message));
        error = name + " gives up on the text (PCRE2: " +
                reinterpret_cast<const char *>(message) +
                "; the tokenizer's pattern backtracks too much)";
        pcre2_match_data_free(md);
        return false;
      }
      PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
      size_t b = ov[0], e = ov[1];
      if (e > b) {
        out.push_back({b, e});
        at = e;
      } else {
        // An empty match: on from the character after it (not after `at`,
        // which would find the same match again and again, for a time
        // quadratic in the text).
        if (b >= s.size())
          break;
        size_t len = utf8Length(p, b, s.size());
        at = b + (len ? len : 1);
      }
    }
    pcre2_match_data_free(md);
    return true;
  }
};

/// tokenizers' GPT-2 pattern, which ByteLevel's use_regex splits with.
const char kGpt2Pattern[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| "
                            "?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

enum StepType : uint32_t {
  // normalizers
  kPrepend = 1,
  kReplace = 2,
  // pre-tokenizers
  kMetaspace = 1,
  kByteLevel = 2,
  kSplit = 3,
  // decoders
  kDecReplace = 1,
  kDecByteFallback = 2,
  kDecFuse = 3,
  kDecStrip = 4,
  kDecMetaspace = 5,
  kDecByteLevel = 6,
};

struct Step {
  uint32_t type = 0;
  std::string a, b;
  uint32_t x = 0, y = 0;
  bool flag1 = false, flag2 = false;
  std::shared_ptr<Regex> regex;
};

struct Added {
  int32_t id;
  bool special, lstrip, rstrip, normalized;
  std::string content;
  /// What is matched: the content, normalised when `normalized` (as the
  /// library's AddedVocabulary does).
  std::string match;
};

/// A piece of the text on its way to the model: text, or an added token.
struct Piece {
  std::string text;
  int32_t added = -1;
  bool atStart = false; // begins at offset 0 of the original text
};

std::shared_ptr<Regex> compileRegex(const std::string &pattern, bool literal,
                                    const char *name, std::string &error) {
  int code = 0;
  PCRE2_SIZE offset = 0;
  auto re = std::make_shared<Regex>();
  re->name = name;
  re->code = pcre2_compile(
      reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
      PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0), &code, &offset,
      nullptr);
  if (!re->code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(code, message, sizeof(message));
    error = name + std::string(" does not compile at offset ") +
            std::to_string(offset) + ": " +
            reinterpret_cast<const char *>(message);
    return nullptr;
  }
  re->context = pcre2_match_context_create(nullptr);
  if (!re->context)
    throw std::bad_alloc();
  pcre2_set_match_limit(re->context, kRegexMatchLimit);
  pcre2_set_depth_limit(re->context, kRegexDepthLimit);
  pcre2_set_heap_limit(re->context, kRegexHeapLimitKiB);
  return re;
}

class BpeTokenizer : public Tokenizer {
public:
  bool parse(Reader &r, int64_t vocabSize, std::string &error);
  bool encode(const std::string &text, bool addSpecial,
              std::vector<int32_t> &ids, std::string &error) const override;
  std::string decode(const std::vector<int32_t> &ids,
                     bool skipSpecial) const override;
  bool closes(int32_t id, bool skipSpecial) const override;
  int64_t size() const override { return int64_t(pieces.size()); }

private:
  bool byteFallback = false, fuseUnk = false, ignoreMerges = false;
  int32_t unk = -1;
  std::vector<std::string> pieces; // by id ("" and !known: none)
  std::vector<char> known;
  std::vector<char> special;
  std::unordered_map<std::string, int32_t> vocab;
  struct MergeInfo {
    uint32_t rank;
    int32_t result;
  };
  std::unordered_map<uint64_t, MergeInfo> merges;
  std::vector<Added> added;
  /// The added tokens' match texts as a byte trie for each `normalized`
  /// (false, true): node n's child by byte c is trieEdges[k][n << 8 | c];
  /// trieToken[k][n] is the first added token that ends at node n, or -1.
  /// Node 0 is the root (there is none without tokens).
  std::unordered_map<uint64_t, uint32_t> trieEdges[2];
  std::vector<int32_t> trieToken[2];
  std::vector<Step> normalizers, pretokenizers, decoders;
  bool decoderHasByteLevel = false, decoderHasByteFallback = false;
  std::shared_ptr<Regex> gpt2;

  void splitAdded(const std::string &text, bool normalized, bool atStart,
                  std::vector<Piece> &out) const;
  void normalize(std::string &s) const;
  bool pretokenize(std::vector<Piece> &pieces, std::string &error) const;
  void model(const std::string &word, std::vector<int32_t> &ids) const;
  static uint64_t pairKey(int32_t a, int32_t b) {
    return uint64_t(uint32_t(a)) << 32 | uint32_t(b);
  }
  bool isBytePiece(const std::string &s) const;
};

bool BpeTokenizer::parse(Reader &r, int64_t vocabSize, std::string &error) {
  uint32_t flags = 0, n = 0;
  if (!r.u32(flags))
    return false;
  if (flags > 7)
    return r.fail("unknown model flags");
  byteFallback = flags & 1;
  fuseUnk = flags & 2;
  ignoreMerges = flags & 4;
  if (!r.id(unk, -1, vocabSize, "the unk"))
    return false;
  if (!r.count(n, 8))
    return false;
  for (uint32_t i = 0; i < n; ++i) {
    int32_t id;
    std::string piece;
    if (!r.id(id, 0, vocabSize, "a vocabulary") || !r.str(piece))
      return false;
    if (!isValidUtf8(piece))
      return r.fail("a vocabulary piece is not UTF-8");
    if (size_t(id) >= pieces.size()) {
      pieces.resize(size_t(id) + 1);
      known.resize(size_t(id) + 1);
    }
    if (known[size_t(id)])
      return r.fail("id " + std::to_string(id) + " has two pieces");
    if (!vocab.emplace(piece, id).second)
      return r.fail("a vocabulary piece has two ids");
    pieces[size_t(id)] = piece;
    known[size_t(id)] = 1;
  }
  if (unk >= 0 && (size_t(unk) >= known.size() || !known[size_t(unk)]))
    return r.fail("the unk id names no piece");
  if (!r.count(n, 12))
    return false;
  merges.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    int32_t a, b, c;
    if (!r.id(a, 0, vocabSize, "a merge") ||
        !r.id(b, 0, vocabSize, "a merge") || !r.id(c, 0, vocabSize, "a merge"))
      return false;
    for (int32_t x : {a, b, c})
      if (size_t(x) >= known.size() || !known[size_t(x)])
        return r.fail("a merge names an id without a piece");
    // Later merges of the same pair win, as in the library's map.
    merges[pairKey(a, b)] = {i, c};
  }
  if (!r.count(n, 12))
    return false;
  for (uint32_t i = 0; i < n; ++i) {
    Added a;
    uint32_t f;
    if (!r.id(a.id, 0, vocabSize, "an added token") || !r.u32(f) ||
        !r.str(a.content))
      return false;
    if (f > 15)
      return r.fail("unknown added-token flags");
    if (a.content.empty() || !isValidUtf8(a.content))
      return r.fail("an added token is empty or not UTF-8");
    a.special = f & 1;
    a.lstrip = f & 2;
    a.rstrip = f & 4;
    a.normalized = f & 8;
    if (size_t(a.id) >= pieces.size()) {
      pieces.resize(size_t(a.id) + 1);
      known.resize(size_t(a.id) + 1);
    }
    // The added token's content is its piece (the library looks up added
    // tokens before the model's vocabulary).
    pieces[size_t(a.id)] = a.content;
    known[size_t(a.id)] = 1;
    if (special.size() <= size_t(a.id))
      special.resize(size_t(a.id) + 1);
    if (a.special)
      special[size_t(a.id)] = 1;
    added.push_back(std::move(a));
  }
  auto steps = [&](std::vector<Step> &out, int kind) -> bool {
    uint32_t count = 0;
    if (!r.count(count, 4))
      return false;
    for (uint32_t i = 0; i < count; ++i) {
      Step s;
      if (!r.u32(s.type))
        return false;
      bool ok = true;
      if (kind == 0) {
        if (s.type == kPrepend)
          ok = r.str(s.a);
        else if (s.type == kReplace)
          ok = r.str(s.a) && r.str(s.b);
        else
          return r.fail("unknown normalizer");
      } else if (kind == 1) {
        if (s.type == kMetaspace) {
          ok = r.str(s.a) && r.u32(s.x) && r.flag(s.flag1);
          if (ok &&
              (s.x > 2 || s.a.empty() || !isValidUtf8(s.a) ||
               utf8Length(reinterpret_cast<const unsigned char *>(s.a.data()),
                          0, s.a.size()) != s.a.size()))
            return r.fail("a bad Metaspace pre-tokenizer");
        } else if (s.type == kByteLevel) {
          ok = r.flag(s.flag1) && r.flag(s.flag2);
          if (ok && s.flag2 && !gpt2) {
            gpt2 =
                compileRegex(kGpt2Pattern, false, "the ByteLevel regex", error);
            if (!gpt2)
              return false;
          }
        } else if (s.type == kSplit) {
          ok = r.str(s.a) && r.flag(s.flag1) && r.u32(s.x);
          if (ok && s.x > 1)
            return r.fail("an unknown Split behavior");
          if (ok && !isValidUtf8(s.a))
            return r.fail("a Split pattern is not UTF-8");
          if (ok) {
            s.regex = compileRegex(s.a, !s.flag1, "the Split regex", error);
            if (!s.regex)
              return false;
          }
        } else {
          return r.fail("unknown pre-tokenizer");
        }
      } else {
        if (s.type == kDecReplace) {
          ok = r.str(s.a) && r.str(s.b);
        } else if (s.type == kDecByteFallback || s.type == kDecFuse ||
                   s.type == kDecByteLevel) {
          decoderHasByteFallback |= s.type == kDecByteFallback;
          decoderHasByteLevel |= s.type == kDecByteLevel;
        } else if (s.type == kDecStrip) {
          ok = r.str(s.a) && r.u32(s.x) && r.u32(s.y);
          if (ok && s.y != 0)
            return r.fail("a Strip decoder that strips the end");
          if (ok &&
              (s.a.empty() ||
               utf8Length(reinterpret_cast<const unsigned char *>(s.a.data()),
                          0, s.a.size()) != s.a.size()))
            return r.fail("a bad Strip decoder");
        } else if (s.type == kDecMetaspace) {
          ok = r.str(s.a) && r.u32(s.x);
          if (ok && (s.x > 2 || s.a.empty() || !isValidUtf8(s.a)))
            return r.fail("a bad Metaspace decoder");
        } else {
          return r.fail("unknown decoder");
        }
      }
      if (!ok)
        return false;
      if ((s.type == kReplace && kind == 0) ||
          (s.type == kDecReplace && kind == 2))
        if (s.a.empty())
          return r.fail("an empty Replace pattern");
      // The text stays UTF-8 through every step (PCRE2 matches it without
      // checking).
      if ((kind == 0 || (kind == 2 && s.type == kDecReplace)) &&
          (!isValidUtf8(s.a) || !isValidUtf8(s.b)))
        return r.fail("a Prepend or Replace text is not UTF-8");
      out.push_back(std::move(s));
    }
    return true;
  };
  if (!steps(normalizers, 0) || !steps(pretokenizers, 1) || !steps(decoders, 2))
    return false;
  for (size_t k = 0; k < added.size(); ++k) {
    Added &a = added[k];
    a.match = a.content;
    if (a.normalized)
      normalize(a.match);
    // An empty match would be found everywhere without consuming anything.
    if (a.match.empty())
      return r.fail("the added token " + std::to_string(a.id) +
                    " is empty once normalized");
    std::vector<int32_t> &ends = trieToken[a.normalized];
    if (ends.empty())
      ends.push_back(-1);
    uint64_t node = 0;
    for (unsigned char c : a.match) {
      auto [it, fresh] =
          trieEdges[a.normalized].emplace(node << 8 | c, uint32_t(ends.size()));
      if (fresh)
        ends.push_back(-1);
      node = it->second;
    }
    if (ends[node] < 0)
      ends[node] = int32_t(k);
  }
  return true;
}

/// tokenizers' AddedVocabulary::find_matches: leftmost-longest matches of
/// the added tokens (those with `normalized` as given), lstrip and rstrip
/// taking the whitespace beside them.
void BpeTokenizer::splitAdded(const std::string &text, bool normalized,
                              bool atStart, std::vector<Piece> &out) const {
  const auto *p = reinterpret_cast<const unsigned char *>(text.data());
  size_t start = 0, i = 0, n = text.size();
  const std::vector<int32_t> &ends = trieToken[normalized];
  const std::unordered_map<uint64_t, uint32_t> &edges = trieEdges[normalized];
  while (!ends.empty() && i < n) {
    // The longest token that matches at i (the first of equal ones), down
    // the trie: a step per byte matched, whatever the number of tokens.
    const Added *best = nullptr;
    uint64_t node = 0;
    for (size_t k = i; k < n; ++k) {
      auto it = edges.find(node << 8 | p[k]);
      if (it == edges.end())
        break;
      node = it->second;
      if (ends[node] >= 0)
        best = &added[size_t(ends[node])];
    }
    if (!best) {
      size_t len = utf8Length(p, i, n);
      i += len ? len : 1;
      continue;
    }
    size_t b = i, e = i + best->match.size();
    if (best->lstrip) {
      size_t nb = b;
      while (nb > start) {
        size_t k = nb - 1;
        while (k > start && (p[k] & 0xc0) == 0x80)
          --k;
        size_t len = utf8Length(p, k, n);
        if (!len || !isWhitespace(codepoint(p + k, len)))
          break;
        nb = k;
      }
      b = nb;
    }
    size_t next = e;
    if (best->rstrip) {
      while (e < n) {
        size_t len = utf8Length(p, e, n);
        if (!len || !isWhitespace(codepoint(p + e, len)))
          break;
        e += len;
      }
    }
    if (start < b)
      out.push_back({text.substr(start, b - start), -1, atStart && start == 0});
    out.push_back({best->content, best->id, false});
    start = e;
    i = std::max(next, e);
  }
  if (start < n)
    out.push_back({text.substr(start), -1, atStart && start == 0});
}

void BpeTokenizer::normalize(std::string &s) const {
  for (const Step &step : normalizers) {
    if (step.type == kPrepend) {
      if (!s.empty())
        s.insert(0, step.a);
    } else if (step.type == kReplace) {
      replaceAll(s, step.a, step.b);
    }
  }
}

bool BpeTokenizer::pretokenize(std::vector<Piece> &in,
                               std::string &error) const {
  std::vector<std::pair<size_t, size_t>> matches;
  for (const Step &step : pretokenizers) {
    std::vector<Piece> out;
    for (Piece &piece : in) {
      if (piece.added >= 0) {
        out.push_back(std::move(piece));
        continue;
      }
      std::string &s = piece.text;
      auto push = [&](std::string text, bool first) {
        if (!text.empty())
          out.push_back({std::move(text), -1, piece.atStart && first});
      };
      if (step.type == kMetaspace) {
        // tokenizers' Metaspace: spaces become the replacement, which is
        // prepended (scheme first: only where the text began), then split
        // before each replacement (MergedWithNext).
        replaceAll(s, " ", step.a);
        if (!s.empty() && s.compare(0, step.a.size(), step.a) != 0 &&
            (step.x == 2 || (step.x == 1 && piece.atStart)))
          s.insert(0, step.a);
        if (!step.flag1) {
          push(s, true);
          continue;
        }
        size_t begin = 0;
        for (size_t at = s.find(step.a, 1); at != std::string::npos;
             at = s.find(step.a, at + step.a.size())) {
          push(s.substr(begin, at - begin), begin == 0);
          begin = at;
        }
        push(s.substr(begin), begin == 0);
      } else if (step.type == kByteLevel) {
        if (step.flag1 && !s.empty() && s[0] != ' ')
          s.insert(0, " ");
        std::vector<std::string> parts;
        if (step.flag2) {
          if (!gpt2->findAll(s, matches, error))
            return false;
          for (auto [b, e] : matches)
            parts.push_back(s.substr(b, e - b));
        } else {
          parts.push_back(s);
        }
        const ByteMap &map = byteMap();
        for (size_t k = 0; k < parts.size(); ++k) {
          std::string mapped;
          for (unsigned char c : parts[k])
            mapped += map.charOf[c];
          push(std::move(mapped), k == 0);
        }
      } else if (step.type == kSplit) {
        size_t last = 0;
        bool first = true;
        if (!step.regex->findAll(s, matches, error))
          return false;
        for (auto [b, e] : matches) {
          push(s.substr(last, b - last), first);
          first = false;
          if (step.x == 1)
            push(s.substr(b, e - b), b == 0);
          last = e;
        }
        push(s.substr(last), last == 0);
      }
    }
    in.swap(out);
  }
  return true;
}

/// tokenizers' BPE::merge_word and Word::merge_all.
void BpeTokenizer::model(const std::string &word,
                         std::vector<int32_t> &ids) const {
  if (ignoreMerges) {
    auto it = vocab.find(word);
    if (it != vocab.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  struct Symbol {
    int32_t c;
    int64_t prev, next;
    size_t len;
  };
  std::vector<Symbol> symbols;
  auto add = [&](int32_t c, size_t len) {
    int64_t at = int64_t(symbols.size());
    symbols.push_back({c, at - 1, at + 1, len});
  };
  const auto *p = reinterpret_cast<const unsigned char *>(word.data());
  int32_t pendingUnk = -1;
  size_t pendingLen = 0;
  for (size_t i = 0; i < word.size();) {
    size_t len = utf8Length(p, i, word.size());
    if (!len)
      len = 1;
    std::string ch = word.substr(i, len);
    i += len;
    auto it = vocab.find(ch);
    if (it != vocab.end()) {
      if (pendingUnk >= 0) {
        add(pendingUnk, pendingLen);
        pendingUnk = -1;
      }
      add(it->second, len);
      continue;
    }
    if (byteFallback) {
      int32_t bytes[4];
      bool all = true;
      for (size_t k = 0; k < len && all; ++k) {
        char name[8];
        std::snprintf(name, sizeof(name), "<0x%02X>", (unsigned char)ch[k]);
        auto b = vocab.find(name);
        all = b != vocab.end();
        if (all)
          bytes[k] = b->second;
      }
      if (all) {
        for (size_t k = 0; k < len; ++k)
          add(bytes[k], 1);
        continue;
      }
    }
    if (unk >= 0) {
      if (pendingUnk >= 0 && fuseUnk) {
        pendingLen += len;
      } else {
        if (pendingUnk >= 0)
          add(pendingUnk, pendingLen);
        pendingUnk = unk;
        pendingLen = len;
      }
    }
  }
  if (pendingUnk >= 0)
    add(pendingUnk, pendingLen);
  if (!symbols.empty())
    symbols.back().next = -1;

  struct Merge {
    size_t pos;
    uint32_t rank;
    int32_t result;
    bool operator<(const Merge &o) const {
      // A max-heap: the lowest rank, then the leftmost position, on top.
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Merge> queue;
  for (size_t k = 0; k + 1 < symbols.size(); ++k) {
    auto m = merges.find(pairKey(symbols[k].c, symbols[k + 1].c));
    if (m != merges.end())
      queue.push({k, m->second.rank, m->second.result});
  }
  while (!queue.empty()) {
    Merge top = queue.top();
    queue.pop();
    Symbol &cur = symbols[top.pos];
    if (cur.len == 0 || cur.next == -1)
      continue;
    size_t nextPos = size_t(cur.next);
    Symbol right = symbols[nextPos];
    auto m = merges.find(pairKey(cur.c, right.c));
    if (m == merges.end() || m->second.result != top.result)
      continue;
    cur.c = top.result;
    cur.len += right.len;
    cur.next = right.next;
    symbols[nextPos].len = 0;
    if (right.next > -1 && size_t(right.next) < symbols.size())
      symbols[size_t(right.next)].prev = int64_t(top.pos);
    if (cur.prev >= 0) {
      auto pm = merges.find(pairKey(symbols[size_t(cur.prev)].c, cur.c));
      if (pm != merges.end())
        queue.push({size_t(cur.prev), pm->second.rank, pm->second.result});
    }
    if (cur.next >= 0 && size_t(cur.next) < symbols.size()) {
      auto nm = merges.find(pairKey(cur.c, symbols[size_t(cur.next)].c));
      if (nm != merges.end())
        queue.push({top.pos, nm->second.rank, nm->second.result});
    }
  }
  for (const Symbol &s : symbols)
    if (s.len)
      ids.push_back(s.c);
}

bool BpeTokenizer::encode(const std::string &text, bool addSpecial,
                          std::vector<int32_t> &ids, std::string &error) const {
  ids.clear();
  if (!isValidUtf8(text)) {
    error = "the text is not valid UTF-8";
    return false;
  }
  if (addSpecial && addBosFlag && bosId >= 0)
    ids.push_back(bosId);
  // tokenizers' AddedVocabulary::extract_and_normalize: the added tokens
  // that are not `normalized` split the raw text; each other part is
  // normalised, then split by the `normalized` ones.
  std::vector<Piece> raw, pieces;
  splitAdded(text, false, true, raw);
  for (Piece &part : raw) {
    if (part.added >= 0) {
      pieces.push_back(std::move(part));
      continue;
    }
    normalize(part.text);
    splitAdded(part.text, true, part.atStart, pieces);
  }
  if (!pretokenize(pieces, error)) {
    ids.clear();
    return false;
  }
  for (const Piece &piece : pieces) {
    if (piece.added >= 0)
      ids.push_back(piece.added);
    else
      model(piece.text, ids);
  }
  return true;
}

bool BpeTokenizer::isBytePiece(const std::string &s) const {
  // tokenizers' ByteFallback: "<0x" two hex digits ">".
  return s.size() == 6 && s.compare(0, 3, "<0x") == 0 && s[5] == '>' &&
         std::isxdigit((unsigned char)s[3]) &&
         std::isxdigit((unsigned char)s[4]);
}

std::string BpeTokenizer::decode(const std::vector<int32_t> &ids,
                                 bool skipSpecial) const {
  std::vector<std::string> tokens;
  for (int32_t id : ids) {
    if (id < 0 || size_t(id) >= known.size() || !known[size_t(id)])
      continue;
    if (skipSpecial && size_t(id) < special.size() && special[size_t(id)])
      continue;
    tokens.push_back(pieces[size_t(id)]);
  }
  if (decoders.empty()) {
    // No decoder: the library joins the pieces with spaces.
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i)
      out += (i ? " " : "") + tokens[i];
    return out;
  }
  for (const Step &step : decoders) {
    switch (step.type) {
    case kDecReplace:
      for (std::string &t : tokens)
        replaceAll(t, step.a, step.b);
      break;
    case kDecByteFallback: {
      std::vector<std::string> out;
      std::string bytes;
      size_t runLength = 0;
      auto flush = [&] {
        if (!runLength)
          return;
        if (isValidUtf8(bytes)) {
          out.push_back(bytes);
        } else {
          for (size_t k = 0; k < runLength; ++k)
            out.push_back(kReplacementChar);
        }
        bytes.clear();
        runLength = 0;
      };
      for (std::string &t : tokens) {
        if (isBytePiece(t)) {
          bytes += char(std::stoi(t.substr(3, 2), nullptr, 16));
          ++runLength;
        } else {
          flush();
          out.push_back(std::move(t));
        }
      }
      flush();
      tokens.swap(out);
      break;
    }
    case kDecFuse: {
      std::string all;
      for (const std::string &t : tokens)
        all += t;
      tokens.assign(1, all);
      break;
    }
    case kDecStrip:
      for (std::string &t : tokens) {
        size_t b = 0, e = t.size();
        for (uint32_t k = 0;
             k < step.x && t.compare(b, step.a.size(), step.a) == 0; ++k)
          b += step.a.size();
        for (uint32_t k = 0;
             k < step.y && e >= b + step.a.size() &&
             t.compare(e - step.a.size(), step.a.size(), step.a) == 0;
             ++k)
          e -= step.a.size();
        t = t.substr(b, e - b);
      }
      break;
    case kDecMetaspace:
      for (size_t i = 0; i < tokens.size(); ++i)
        replaceAll(tokens[i], step.a,
                   i == 0 && step.x != 0 ? std::string() : std::string(" "));
      break;
    case kDecByteLevel: {
      const ByteMap &map = byteMap();
      std::string bytes;
      for (const std::string &t : tokens) {
        std::string mine;
        bool all = true;
        const auto *p = reinterpret_cast<const unsigned char *>(t.data());
        for (size_t i = 0; i < t.size() && all;) {
          size_t len = utf8Length(p, i, t.size());
          if (!len)
            len = 1;
          auto it = map.byteOf.find(codepoint(p + i, len));
          all = it != map.byteOf.end();
          if (all)
            mine += char(it->second);
          i += len;
        }
        bytes += all ? mine : t;
      }
      tokens.assign(1, lossyUtf8(bytes));
      break;
    }
    }
  }
  std::string out;
  for (const std::string &t : tokens)
    out += t;
  return out;
}

bool BpeTokenizer::closes(int32_t id, bool skipSpecial) const {
  if (id < 0 || size_t(id) >= known.size() || !known[size_t(id)])
    return false;
  if (skipSpecial && size_t(id) < special.size() && special[size_t(id)])
    return false;
  const std::string &piece = pieces[size_t(id)];
  if (decoderHasByteFallback && isBytePiece(piece))
    return false;
  if (decoderHasByteLevel) {
    const ByteMap &map = byteMap();
    std::string bytes;
    const auto *p = reinterpret_cast<const unsigned char *>(piece.data());
    for (size_t i = 0; i < piece.size();) {
      size_t len = utf8Length(p, i, piece.size());
      if (!len)
        return true;
      auto it = map.byteOf.find(codepoint(p + i, len));
      if (it == map.byteOf.end())
        return true; // decoded as its own UTF-8
      bytes += char(it->second);
      i += len;
    }
    return isValidUtf8(bytes);
  }
  return true;
}

} // namespace

bool isValidUtf8(const std::string &s) {
  const auto *p = reinterpret_cast<const unsigned char *>(s.data());
  for (size_t i = 0; i < s.size();) {
    size_t len = utf8Length(p, i, s.size());
    if (!len)
      return false;
    i += len;
  }
  return true;
}

std::unique_ptr<Tokenizer> Tokenizer::load(const void *blob, size_t size,
                                           int64_t vocabSize,
                                           std::string &error) {
  error.clear();
  if (!blob || size == 0) {
    error = "this model was compiled without a tokenizer";
    return nullptr;
  }
  if (vocabSize <= 0 || vocabSize > INT32_MAX) {
    error = "bad vocabulary size";
    return nullptr;
  }
  Reader r(blob, size);
  uint32_t kind = 0, nEos = 0;
  int32_t bos;
  bool addBos;
  std::string prefix, suffix;
  std::unique_ptr<Tokenizer> tok;
  std::vector<int32_t> eos;
  bool ok = r.magic("MOETOK01") && r.u32(kind) &&
            r.id(bos, -1, vocabSize, "the BOS") && r.flag(addBos) &&
            r.count(nEos, 4);
  for (uint32_t i = 0; ok && i < nEos; ++i) {
    int32_t id;
    ok = r.id(id, 0, vocabSize, "an EOS");
    eos.push_back(id);
  }
  ok = ok && r.str(prefix) && r.str(suffix);
  if (ok && (!isValidUtf8(prefix) || !isValidUtf8(suffix)))
    ok = r.fail("the chat template text is not UTF-8");
  if (ok) {
    if (kind == 1) {
      auto bpe = std::make_unique<BpeTokenizer>();
      ok = bpe->parse(r, vocabSize, error);
      tok = std::move(bpe);
    } else if (kind == 2) {
      std::string proto;
      ok = r.str(proto);
      if (ok && !loadSentencePiece) {
        error = "the tokenizer is a SentencePiece model, and this program "
                "was built without libsentencepiece (link all of "
                "libmoert_spm and -lsentencepiece)";
        return nullptr;
      }
      ok = ok && loadSentencePiece(proto, vocabSize, tok, error);
    } else {
      ok = r.fail("unknown tokenizer kind " + std::to_string(kind));
    }
  }
  ok = ok && r.atEnd();
  if (!ok) {
    if (error.empty())
      error = r.error;
    error = "the embedded tokenizer is corrupt: " + error;
    return nullptr;
  }
  tok->bosId = bos;
  tok->addBosFlag = addBos;
  tok->eosIds = std::move(eos);
  tok->prefix = std::move(prefix);
  tok->suffix = std::move(suffix);
  return tok;
}

//===----------------------------------------------------------------------===//
// Streaming
//===----------------------------------------------------------------------===//

std::string DecodeStream::emitNew(const std::string &text) {
  size_t common = 0;
  while (common < emitted.size() && common < text.size() &&
         emitted[common] == text[common])
    ++common;
  // Text once emitted is final by construction (the decoders change only
  // the tail after the last closing id); `common` guards against a decoder
  // that would not keep to that.
  std::string out = text.size() > emitted.size() && common == emitted.size()
                        ? text.substr(emitted.size())
                        : std::string();
  if (!out.empty())
    emitted = text;
  return out;
}

std::string DecodeStream::push(int32_t id) {
  ids.push_back(id);
  if (!tokenizer.closes(id, skipSpecial))
    return "";
  std::string out = emitNew(tokenizer.decode(ids, skipSpecial));
  slide();
  return out;
}

void DecodeStream::slide() {
  constexpr size_t kMax = 32, kKeep = 8;
  if (ids.size() < kMax || !tokenizer.closes(ids.back(), skipSpecial))
    return;
  // Everything in the window is emitted (the last id closes). Start the
  // window after a closing id among the last kKeep.
  auto tryStart = [&](size_t start) {
    std::vector<int32_t> window(ids.begin() + std::ptrdiff_t(start), ids.end());
    std::string text = tokenizer.decode(window, skipSpecial);
    if (text.empty() || text.size() > emitted.size() ||
        emitted.compare(emitted.size() - text.size(), text.size(), text) != 0)
      return false;
    ids.swap(window);
    emitted.swap(text);
    return true;
  };
  for (size_t start = ids.size() - kKeep; start < ids.size(); ++start)
    if (tokenizer.closes(ids[start - 1], skipSpecial) && tryStart(start))
      return;
  // None there (the last kKeep ids but one do not close: byte pieces): after
  // the last closing id before them, or the window would only grow, and
  // every id that closes would decode all of it (quadratic: 13 s for --
  // detokenize of 60 000 ids, nine byte pieces and a word, repeated).
  for (size_t start = ids.size() - kKeep - 1; start > 0; --start)
    if (tokenizer.closes(ids[start - 1], skipSpecial)) {
      tryStart(start);
      return;
    }
}

std::string DecodeStream::finish() {
  return emitNew(tokenizer.decode(ids, skipSpecial));
}

} // namespace moert
