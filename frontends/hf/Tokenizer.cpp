//===- Tokenizer.cpp - a model's tokenizer, converted for moert -*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "frontends/hf/Tokenizer.h"
#include "frontends/InputFiles.h"
#include "frontends/gguf/GGUFImporter.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/ConvertUTF.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include "gguf.h"      // runtime/src: the GGUF parser
#include "tokenizer.h" // runtime/src: the runtime's blob parser

#include <sentencepiece_processor.h>

#include <cmath>
#include <map>
#include <optional>
#include <set>

using namespace llvm;

namespace mlir::moe::hf {

namespace {

/// The blob, little-endian (runtime/src/tokenizer.h).
class BlobWriter {
public:
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i)
      out += char((v >> (8 * i)) & 0xff);
  }
  void i32(int32_t v) { u32(uint32_t(v)); }
  void str(StringRef s) {
    u32(uint32_t(s.size()));
    out += s.str();
  }
  std::string out;
};

/// Reads tokenizer.json, recording the first problem as "FILE: at PATH:
/// message" (PATH in the JSON, as `model.merges[3]`).
class Reader {
public:
  explicit Reader(StringRef file) : file(file.str()) {}

  bool fail(const Twine &path, const Twine &message) {
    if (!error)
      error = file + ": at " + path.str() + ": " + message.str();
    return false;
  }
  bool failed() const { return error.has_value(); }
  Error takeError() {
    return createStringError(inconvertibleErrorCode(), *error);
  }

  const json::Object *object(const json::Value *v, const Twine &path) {
    const json::Object *o = v ? v->getAsObject() : nullptr;
    if (!o)
      fail(path, "expected an object");
    return o;
  }
  std::optional<std::string> string(const json::Object &o, StringRef key,
                                    const Twine &path) {
    const json::Value *v = o.get(key);
    std::optional<StringRef> s = v ? v->getAsString() : std::nullopt;
    if (!s) {
      fail(path + "." + key, v ? "expected a string" : "missing");
      return std::nullopt;
    }
    return s->str();
  }
  /// A boolean with a default when missing or null.
  bool boolean(const json::Object &o, StringRef key, bool fallback,
               const Twine &path) {
    const json::Value *v = o.get(key);
    if (!v || v->kind() == json::Value::Null)
      return fallback;
    std::optional<bool> b = v->getAsBoolean();
    if (!b) {
      fail(path + "." + key, "expected true or false");
      return fallback;
    }
    return *b;
  }
  std::optional<int64_t> integer(const json::Object &o, StringRef key,
                                 const Twine &path, int64_t lo, int64_t hi) {
    const json::Value *v = o.get(key);
    std::optional<int64_t> i = v ? v->getAsInteger() : std::nullopt;
    if (!i || *i < lo || *i > hi) {
      fail(path + "." + key,
           v ? "expected an integer in [" + Twine(lo) + ", " + Twine(hi) + "]"
             : Twine("missing"));
      return std::nullopt;
    }
    return i;
  }
  /// Fails unless `key` is missing, null, false or (with `emptyOk`) "".
  void absent(const json::Object &o, StringRef key, const Twine &path,
              StringRef what) {
    const json::Value *v = o.get(key);
    if (!v || v->kind() == json::Value::Null ||
        v->getAsBoolean() == std::optional<bool>(false) ||
        v->getAsString() == std::optional<StringRef>(""))
      return;
    fail(path + "." + key, what + " is not supported");
  }

  std::string file;
  std::optional<std::string> error;
};

/// A `pattern` of Replace or Split: {"String": s} or {"Regex": r}.
std::optional<std::pair<std::string, bool>>
pattern(Reader &r, const json::Object &o, const Twine &path) {
  const json::Object *p = r.object(o.get("pattern"), path + ".pattern");
  if (!p)
    return std::nullopt;
  if (const json::Value *s = p->get("String"))
    if (std::optional<StringRef> text = s->getAsString())
      return std::make_pair(text->str(), false);
  if (const json::Value *s = p->get("Regex"))
    if (std::optional<StringRef> text = s->getAsString())
      return std::make_pair(text->str(), true);
  r.fail(path + ".pattern", "expected {\"String\": ...} or {\"Regex\": ...}");
  return std::nullopt;
}

/// Metaspace's prepend_scheme (or the older add_prefix_space).
std::optional<uint32_t> prependScheme(Reader &r, const json::Object &o,
                                      const Twine &path) {
  if (const json::Value *v = o.get("prepend_scheme")) {
    std::optional<StringRef> s = v->getAsString();
    if (s == std::optional<StringRef>("never"))
      return 0;
    if (s == std::optional<StringRef>("first"))
      return 1;
    if (s == std::optional<StringRef>("always"))
      return 2;
    r.fail(path + ".prepend_scheme", "expected \"first\", \"always\" or "
                                     "\"never\"");
    return std::nullopt;
  }
  return r.boolean(o, "add_prefix_space", true, path) ? 2 : 0;
}

/// Whether `s` is exactly one character (UTF-8).
bool oneChar(StringRef s) {
  if (s.empty())
    return false;
  unsigned len = getNumBytesForUTF8(s[0]);
  return len == s.size() && json::isUTF8(s);
}

struct Steps {
  uint32_t count = 0;
  BlobWriter out;
};

using StepReader = void (*)(Reader &, const json::Value *, const Twine &,
                            Steps &);

/// The object of one step of a normalizer, pre-tokenizer or decoder chain
/// at `path`, with its "type" in `type`; null when there is none (absent or
/// null), after a failure, and for a "Sequence", whose steps (the array
/// under `listKey`) are read here with `step`.
const json::Object *stepObject(Reader &r, const json::Value *v,
                               const Twine &path, StringRef listKey,
                               StepReader step, Steps &steps,
                               std::string &type) {
  if (!v || v->kind() == json::Value::Null || r.failed())
    return nullptr;
  const json::Object *o = r.object(v, path);
  if (!o)
    return nullptr;
  std::optional<std::string> t = r.string(*o, "type", path);
  if (!t)
    return nullptr;
  if (*t != "Sequence") {
    type = std::move(*t);
    return o;
  }
  const json::Value *listValue = o->get(listKey);
  const json::Array *list = listValue ? listValue->getAsArray() : nullptr;
  if (!list) {
    r.fail(path + "." + listKey, "expected an array");
    return nullptr;
  }
  for (size_t i = 0; i < list->size(); ++i)
    step(r, &(*list)[i], path + "." + listKey + "[" + Twine(i) + "]", steps);
  return nullptr;
}

void normalizer(Reader &r, const json::Value *v, const Twine &path,
                Steps &steps) {
  std::string type;
  const json::Object *o =
      stepObject(r, v, path, "normalizers", normalizer, steps, type);
  if (!o)
    return;
  if (type == "Prepend") {
    std::optional<std::string> s = r.string(*o, "prepend", path);
    if (!s)
      return;
    steps.out.u32(1);
    steps.out.str(*s);
  } else if (type == "Replace") {
    auto p = pattern(r, *o, path);
    std::optional<std::string> content = r.string(*o, "content", path);
    if (!p || !content)
      return;
    if (p->second || p->first.empty()) {
      r.fail(path + ".pattern", "only a non-empty String pattern is "
                                "supported in a Replace normalizer");
      return;
    }
    steps.out.u32(2);
    steps.out.str(p->first);
    steps.out.str(*content);
  } else {
    r.fail(path + ".type", "the normalizer '" + type +
                               "' is not supported (supported: Prepend, "
                               "Replace, Sequence of them)");
    return;
  }
  ++steps.count;
}

void preTokenizer(Reader &r, const json::Value *v, const Twine &path,
                  Steps &steps) {
  std::string type;
  const json::Object *o =
      stepObject(r, v, path, "pretokenizers", preTokenizer, steps, type);
  if (!o)
    return;
  if (type == "Metaspace") {
    std::optional<std::string> rep = r.string(*o, "replacement", path);
    std::optional<uint32_t> scheme = prependScheme(r, *o, path);
    bool split = r.boolean(*o, "split", true, path);
    if (!rep || !scheme)
      return;
    if (!oneChar(*rep)) {
      r.fail(path + ".replacement", "expected one character");
      return;
    }
    steps.out.u32(1);
    steps.out.str(*rep);
    steps.out.u32(*scheme);
    steps.out.u32(split);
  } else if (type == "ByteLevel") {
    bool prefix = r.boolean(*o, "add_prefix_space", true, path);
    bool regex = r.boolean(*o, "use_regex", true, path);
    steps.out.u32(2);
    steps.out.u32(prefix);
    steps.out.u32(regex);
  } else if (type == "Split") {
    auto p = pattern(r, *o, path);
    std::optional<std::string> behavior = r.string(*o, "behavior", path);
    if (!p || !behavior)
      return;
    if (r.boolean(*o, "invert", false, path)) {
      r.fail(path + ".invert", "an inverted Split is not supported");
      return;
    }
    uint32_t b;
    if (*behavior == "Removed")
      b = 0;
    else if (*behavior == "Isolated")
      b = 1;
    else {
      r.fail(path + ".behavior", "the Split behavior '" + *behavior +
                                     "' is not supported (supported: "
                                     "Isolated, Removed)");
      return;
    }
    steps.out.u32(3);
    steps.out.str(p->first);
    steps.out.u32(p->second);
    steps.out.u32(b);
  } else {
    r.fail(path + ".type", "the pre-tokenizer '" + type +
                               "' is not supported (supported: Metaspace, "
                               "ByteLevel, Split, Sequence of them)");
    return;
  }
  ++steps.count;
}

void decoder(Reader &r, const json::Value *v, const Twine &path, Steps &steps) {
  std::string type;
  const json::Object *o =
      stepObject(r, v, path, "decoders", decoder, steps, type);
  if (!o)
    return;
  if (type == "Replace") {
    auto p = pattern(r, *o, path);
    std::optional<std::string> content = r.string(*o, "content", path);
    if (!p || !content)
      return;
    if (p->second || p->first.empty()) {
      r.fail(path + ".pattern", "only a non-empty String pattern is "
                                "supported in a Replace decoder");
      return;
    }
    steps.out.u32(1);
    steps.out.str(p->first);
    steps.out.str(*content);
  } else if (type == "ByteFallback") {
    steps.out.u32(2);
  } else if (type == "Fuse") {
    steps.out.u32(3);
  } else if (type == "Strip") {
    std::optional<std::string> content = r.string(*o, "content", path);
    std::optional<int64_t> start = r.integer(*o, "start", path, 0, 1 << 20);
    std::optional<int64_t> stop = r.integer(*o, "stop", path, 0, 1 << 20);
    if (!content || !start || !stop)
      return;
    if (!oneChar(*content)) {
      r.fail(path + ".content", "expected one character");
      return;
    }
    if (*stop != 0) {
      // Text streamed as it is generated cannot be taken back.
      r.fail(path + ".stop", "a Strip decoder that strips the end of the "
                             "text is not supported");
      return;
    }
    steps.out.u32(4);
    steps.out.str(*content);
    steps.out.u32(uint32_t(*start));
    steps.out.u32(uint32_t(*stop));
  } else if (type == "Metaspace") {
    std::optional<std::string> rep = r.string(*o, "replacement", path);
    std::optional<uint32_t> scheme = prependScheme(r, *o, path);
    if (!rep || !scheme)
      return;
    if (!oneChar(*rep)) {
      r.fail(path + ".replacement", "expected one character");
      return;
    }
    steps.out.u32(5);
    steps.out.str(*rep);
    steps.out.u32(*scheme);
  } else if (type == "ByteLevel") {
    steps.out.u32(6);
  } else {
    r.fail(path + ".type", "the decoder '" + type +
                               "' is not supported (supported: Replace, "
                               "ByteFallback, Fuse, Strip, Metaspace, "
                               "ByteLevel, Sequence of them)");
    return;
  }
  ++steps.count;
}

/// The model's BOS/EOS settings.
struct Special {
  int32_t bos = -1;
  std::optional<bool> addBos;
  std::vector<int32_t> eos;
};

Error configError(StringRef file, const Twine &message) {
  return createStringError(inconvertibleErrorCode(),
                           file + ": " + message.str());
}

/// config.json's bos_token_id and eos_token_id (an id, a list of ids, or
/// null) and tokenizer_config.json's add_bos_token.
Expected<Special> readSpecial(StringRef dir, int64_t vocabSize) {
  Special special;
  SmallString<256> config(dir);
  sys::path::append(config, "config.json");
  Expected<bool> hasConfig = pathExists(config);
  if (!hasConfig)
    return hasConfig.takeError();
  if (*hasConfig) {
    auto text = readInputFile(config, 16 << 20);
    if (!text)
      return text.takeError();
    Expected<json::Value> value = parseJSON(config, (*text)->getBuffer());
    if (!value)
      return value.takeError();
    const json::Object *o = value->getAsObject();
    if (!o)
      return configError(config, "expected a JSON object");
    auto id = [&](const json::Value &v, StringRef key) -> Expected<int32_t> {
      std::optional<int64_t> i = v.getAsInteger();
      if (!i || *i < 0 || *i >= vocabSize)
        return configError(config, "'" + key +
                                       "' must be a token id below the "
                                       "vocabulary size " +
                                       Twine(vocabSize));
      return int32_t(*i);
    };
    if (const json::Value *v = o->get("bos_token_id");
        v && v->kind() != json::Value::Null) {
      Expected<int32_t> i = id(*v, "bos_token_id");
      if (!i)
        return i.takeError();
      special.bos = *i;
    }
    if (const json::Value *v = o->get("eos_token_id");
        v && v->kind() != json::Value::Null) {
      if (const json::Array *list = v->getAsArray()) {
        for (const json::Value &e : *list) {
          Expected<int32_t> i = id(e, "eos_token_id");
          if (!i)
            return i.takeError();
          special.eos.push_back(*i);
        }
      } else {
        Expected<int32_t> i = id(*v, "eos_token_id");
        if (!i)
          return i.takeError();
        special.eos.push_back(*i);
      }
    }
  }
  SmallString<256> tokConfig(dir);
  sys::path::append(tokConfig, "tokenizer_config.json");
  Expected<bool> hasTokConfig = pathExists(tokConfig);
  if (!hasTokConfig)
    return hasTokConfig.takeError();
  if (*hasTokConfig) {
    auto text = readInputFile(tokConfig, 64 << 20);
    if (!text)
      return text.takeError();
    Expected<json::Value> value = parseJSON(tokConfig, (*text)->getBuffer());
    if (!value)
      return value.takeError();
    const json::Object *o = value->getAsObject();
    if (!o)
      return configError(tokConfig, "expected a JSON object");
    if (const json::Value *v = o->get("add_bos_token");
        v && v->kind() != json::Value::Null) {
      std::optional<bool> b = v->getAsBoolean();
      if (!b)
        return configError(tokConfig, "'add_bos_token' must be true or false");
      special.addBos = *b;
    }
  }
  return special;
}

void writeHeader(BlobWriter &w, uint32_t kind, const Special &special,
                 bool addBos, const TokenizerExtras &extras) {
  w.out = "MOETOK01";
  w.u32(kind);
  w.i32(special.bos);
  w.u32(addBos);
  w.u32(uint32_t(special.eos.size()));
  for (int32_t e : special.eos)
    w.i32(e);
  w.str(extras.chatPrefix);
  w.str(extras.chatSuffix);
}

Error checkAddBos(StringRef file, const Special &special, bool addBos) {
  if (addBos && special.bos < 0)
    return configError(file, "the tokenizer adds a BOS token, but config.json "
                             "has no bos_token_id");
  return Error::success();
}

Expected<TokenizerBlob> convertJSON(StringRef path, StringRef text,
                                    const Special &special, int64_t vocabSize,
                                    const TokenizerExtras &extras) {
  Expected<json::Value> value = parseJSON(path, text);
  if (!value)
    return value.takeError();
  Reader r(path);
  const json::Object *root = r.object(&*value, "$");
  if (!root)
    return r.takeError();
  const json::Object *model = r.object(root->get("model"), "model");
  if (!model)
    return r.takeError();
  if (const json::Value *t = model->get("type")) {
    std::optional<StringRef> type = t->getAsString();
    if (type != std::optional<StringRef>("BPE"))
      return r.fail("model.type", "the model '" +
                                      (type ? *type : StringRef("?")) +
                                      "' is not supported (supported: BPE)"),
             r.takeError();
  }
  r.absent(*model, "dropout", "model", "BPE dropout");
  r.absent(*model, "continuing_subword_prefix", "model",
           "a continuing_subword_prefix");
  r.absent(*model, "end_of_word_suffix", "model", "an end_of_word_suffix");
  bool byteFallback = r.boolean(*model, "byte_fallback", false, "model");
  bool fuseUnk = r.boolean(*model, "fuse_unk", false, "model");
  bool ignoreMerges = r.boolean(*model, "ignore_merges", false, "model");
  if (r.failed())
    return r.takeError();

  // The vocabulary: piece -> id, every id below the model's vocabulary.
  const json::Object *vocab = r.object(model->get("vocab"), "model.vocab");
  if (!vocab)
    return r.takeError();
  StringMap<int32_t> ids;
  std::map<int32_t, std::string> byId;
  for (const auto &[key, v] : *vocab) {
    std::optional<int64_t> id = v.getAsInteger();
    std::string where = "model.vocab[" + json::fixUTF8(key.str()) + "]";
    if (!id || *id < 0 || *id >= vocabSize)
      return r.fail(where, "the id must be an integer below the model's "
                           "vocabulary size " +
                               Twine(vocabSize)),
             r.takeError();
    if (!json::isUTF8(StringRef(key)))
      return r.fail(where, "the piece is not UTF-8"), r.takeError();
    if (!byId.emplace(int32_t(*id), key.str()).second)
      return r.fail(where, "id " + Twine(*id) + " is given to two pieces"),
             r.takeError();
    ids[key] = int32_t(*id);
  }

  int32_t unk = -1;
  if (const json::Value *u = model->get("unk_token");
      u && u->kind() != json::Value::Null) {
    std::optional<StringRef> s = u->getAsString();
    if (!s)
      return r.fail("model.unk_token", "expected a string or null"),
             r.takeError();
    auto it = ids.find(*s);
    if (it == ids.end())
      return r.fail("model.unk_token", "'" + *s + "' is not in the vocabulary"),
             r.takeError();
    unk = it->second;
  }

  // Merges: "a b" strings or [a, b] pairs; a, b and a+b in the vocabulary.
  const json::Value *mergesValue = model->get("merges");
  const json::Array *merges = mergesValue ? mergesValue->getAsArray() : nullptr;
  if (!merges)
    return r.fail("model.merges", "expected an array"), r.takeError();
  BlobWriter mergeOut;
  for (size_t i = 0; i < merges->size(); ++i) {
    std::string where = "model.merges[" + std::to_string(i) + "]";
    const json::Value &m = (*merges)[i];
    std::string a, b;
    if (std::optional<StringRef> s = m.getAsString()) {
      SmallVector<StringRef, 3> parts;
      s->split(parts, ' ');
      if (parts.size() != 2)
        return r.fail(where, "expected two pieces separated by one space"),
               r.takeError();
      a = parts[0].str();
      b = parts[1].str();
    } else if (const json::Array *pair = m.getAsArray();
               pair && pair->size() == 2 && (*pair)[0].getAsString() &&
               (*pair)[1].getAsString()) {
      a = (*pair)[0].getAsString()->str();
      b = (*pair)[1].getAsString()->str();
    } else {
      return r.fail(where, "expected \"a b\" or [\"a\", \"b\"]"), r.takeError();
    }
    auto ia = ids.find(a), ib = ids.find(b), ic = ids.find(a + b);
    if (ia == ids.end() || ib == ids.end() || ic == ids.end())
      return r.fail(where, "'" +
                               Twine(ia == ids.end()   ? json::fixUTF8(a)
                                     : ib == ids.end() ? json::fixUTF8(b)
                                                       : json::fixUTF8(a + b)) +
                               "' is not in the vocabulary"),
             r.takeError();
    mergeOut.i32(ia->second);
    mergeOut.i32(ib->second);
    mergeOut.i32(ic->second);
  }

  // Added tokens.
  BlobWriter addedOut;
  uint32_t numAdded = 0;
  std::map<int32_t, std::string> addedById;
  if (const json::Value *a = root->get("added_tokens");
      a && a->kind() != json::Value::Null) {
    const json::Array *list = a->getAsArray();
    if (!list)
      return r.fail("added_tokens", "expected an array"), r.takeError();
    for (size_t i = 0; i < list->size(); ++i) {
      std::string where = "added_tokens[" + std::to_string(i) + "]";
      const json::Object *t = r.object(&(*list)[i], where);
      if (!t)
        return r.takeError();
      std::optional<int64_t> id = r.integer(*t, "id", where, 0, vocabSize - 1);
      std::optional<std::string> content = r.string(*t, "content", where);
      bool isSpecial = r.boolean(*t, "special", false, where);
      bool lstrip = r.boolean(*t, "lstrip", false, where);
      bool rstrip = r.boolean(*t, "rstrip", false, where);
      bool normalized = r.boolean(*t, "normalized", !isSpecial, where);
      if (r.boolean(*t, "single_word", false, where))
        r.fail(where + ".single_word",
               "single_word added tokens are not supported");
      if (r.failed())
        return r.takeError();
      if (content->empty())
        return r.fail(where + ".content", "an added token cannot be empty"),
               r.takeError();
      if (!addedById.emplace(int32_t(*id), *content).second)
        return r.fail(where + ".id", "id " + Twine(*id) + " is added twice"),
               r.takeError();
      auto inVocab = byId.find(int32_t(*id));
      if (inVocab != byId.end() && inVocab->second != *content)
        return r.fail(where, "id " + Twine(*id) + " is '" +
                                 json::fixUTF8(inVocab->second) +
                                 "' in model.vocab"),
               r.takeError();
      addedOut.i32(int32_t(*id));
      addedOut.u32(uint32_t(isSpecial) | uint32_t(lstrip) << 1 |
                   uint32_t(rstrip) << 2 | uint32_t(normalized) << 3);
      addedOut.str(*content);
      ++numAdded;
    }
  }

  Steps normalizers, pretokenizers, decoders;
  normalizer(r, root->get("normalizer"), "normalizer", normalizers);
  preTokenizer(r, root->get("pre_tokenizer"), "pre_tokenizer", pretokenizers);
  decoder(r, root->get("decoder"), "decoder", decoders);
  if (r.failed())
    return r.takeError();

  // add_bos: tokenizer_config.json's add_bos_token, else whether the
  // post-processor's template begins with a special token.
  bool addBos = false;
  if (special.addBos) {
    addBos = *special.addBos;
  } else if (const json::Value *post = root->get("post_processor")) {
    // A TemplateProcessing, alone or in a Sequence (Llama 3's: ByteLevel,
    // then the template).
    std::vector<const json::Object *> processors;
    if (const json::Object *o = post->getAsObject()) {
      processors.push_back(o);
      if (const json::Array *list = o->getArray("processors"))
        for (const json::Value &v : *list)
          if (const json::Object *p = v.getAsObject())
            processors.push_back(p);
    }
    for (const json::Object *p : processors)
      if (p->getString("type") ==
          std::optional<StringRef>("TemplateProcessing"))
        if (const json::Array *single = p->getArray("single"))
          if (!single->empty())
            if (const json::Object *first = (*single)[0].getAsObject())
              addBos = first->get("SpecialToken") != nullptr;
  }
  if (Error e = checkAddBos(path, special, addBos))
    return std::move(e);

  BlobWriter w;
  writeHeader(w, 1, special, addBos, extras);
  w.u32(uint32_t(byteFallback) | uint32_t(fuseUnk) << 1 |
        uint32_t(ignoreMerges) << 2);
  w.i32(unk);
  w.u32(uint32_t(byId.size()));
  for (const auto &[id, piece] : byId) {
    w.i32(id);
    w.str(piece);
  }
  w.u32(uint32_t(merges->size()));
  w.out += mergeOut.out;
  w.u32(numAdded);
  w.out += addedOut.out;
  w.u32(normalizers.count);
  w.out += normalizers.out.out;
  w.u32(pretokenizers.count);
  w.out += pretokenizers.out.out;
  w.u32(decoders.count);
  w.out += decoders.out.out;
  // What the runtime will do with it: load it now.
  std::string error;
  if (!moert::Tokenizer::load(w.out.data(), w.out.size(), vocabSize, error)) {
    StringRef why = error;
    why.consume_front("the embedded tokenizer is corrupt: ");
    return configError(path, "the runtime cannot use this tokenizer: " + why);
  }
  TokenizerBlob blob;
  blob.source = path.str();
  blob.data = std::move(w.out);
  std::set<int32_t> all;
  for (const auto &kv : byId)
    all.insert(kv.first);
  for (const auto &kv : addedById)
    all.insert(kv.first);
  blob.pieces = int64_t(all.size());
  return blob;
}

Expected<TokenizerBlob> convertSentencePiece(StringRef path, StringRef bytes,
                                             const Special &special,
                                             int64_t vocabSize,
                                             const TokenizerExtras &extras) {
  sentencepiece::SentencePieceProcessor sp;
  auto status =
      sp.LoadFromSerializedProto(absl::string_view(bytes.data(), bytes.size()));
  if (!status.ok())
    return configError(path, "not a SentencePiece model that "
                             "libsentencepiece can load (" +
                                 status.ToString() + ")");
  if (sp.GetPieceSize() > vocabSize)
    return configError(path, "the SentencePiece model has " +
                                 Twine(sp.GetPieceSize()) +
                                 " pieces, more than the model's vocabulary "
                                 "size " +
                                 Twine(vocabSize));
  // LlamaTokenizer's default: a BOS first.
  bool addBos = special.addBos.value_or(true);
  if (Error e = checkAddBos(path, special, addBos))
    return std::move(e);
  BlobWriter w;
  writeHeader(w, 2, special, addBos, extras);
  w.str(bytes);
  TokenizerBlob blob;
  blob.source = path.str();
  blob.data = std::move(w.out);
  blob.pieces = sp.GetPieceSize();
  blob.sentencePiece = true;
  return blob;
}

} // namespace

Expected<TokenizerBlob> convertTokenizer(StringRef path, StringRef configDir,
                                         int64_t vocabSize,
                                         const TokenizerExtras &extras) {
  Expected<Special> special = readSpecial(configDir, vocabSize);
  if (!special)
    return special.takeError();
  if (special->bos < 0 && extras.fallbackBos >= 0 &&
      extras.fallbackBos < vocabSize)
    special->bos = int32_t(extras.fallbackBos);
  if (special->eos.empty() && extras.fallbackEos >= 0 &&
      extras.fallbackEos < vocabSize)
    special->eos.push_back(int32_t(extras.fallbackEos));
  auto file = readInputFile(path, kMaxTokenizerBytes);
  if (!file)
    return file.takeError();
  if (sys::path::extension(path) == ".json")
    return convertJSON(path, (*file)->getBuffer(), *special, vocabSize, extras);
  return convertSentencePiece(path, (*file)->getBuffer(), *special, vocabSize,
                              extras);
}

Expected<TokenizerBlob> convertGGUFTokenizer(StringRef path, int64_t vocabSize,
                                             const TokenizerExtras &extras) {
  namespace G = moert::gguf;
  Expected<moe::gguf::MappedFile> mapped = moe::gguf::mapFile(path);
  if (!mapped)
    return mapped.takeError();
  const G::File &file = mapped->header;
  auto bad = [&](StringRef key, const Twine &message) {
    return configError(path, "tokenizer metadata '" + key + "': " + message);
  };

  const G::Value *model = file.find("tokenizer.ggml.model");
  if (!model || !model->asString())
    return bad("tokenizer.ggml.model", "missing or not a string");
  if (*model->asString() != "llama")
    return bad("tokenizer.ggml.model",
               "'" + printableText(*model->asString()) +
                   "' is not supported (supported: llama)");
  const G::Value *tokens = file.find("tokenizer.ggml.tokens");
  if (!tokens || !tokens->isArray() || tokens->elemType != G::ValueType::STRING)
    return bad("tokenizer.ggml.tokens", "missing or not an array of strings");
  const std::vector<std::string> &pieces = tokens->strings;
  int64_t n = int64_t(pieces.size());
  if (n == 0 || n > vocabSize)
    return bad("tokenizer.ggml.tokens",
               Twine(n) + " tokens for a vocabulary of " + Twine(vocabSize));
  const G::Value *scores = file.find("tokenizer.ggml.scores");
  if (!scores || !scores->isArray() || int64_t(scores->floats.size()) != n)
    return bad("tokenizer.ggml.scores", "missing or not one float per token");
  const G::Value *types = file.find("tokenizer.ggml.token_type");
  std::vector<int64_t> type(size_t(n), 1);
  if (types) {
    if (!types->isArray() || int64_t(types->ints.size()) != n)
      return bad("tokenizer.ggml.token_type", "not one integer per token");
    type = types->ints;
  }
  auto id = [&](StringRef key, int32_t &out) -> Error {
    out = -1;
    const G::Value *v = file.find(("tokenizer.ggml." + key).str());
    if (!v)
      return Error::success();
    std::optional<uint64_t> u = v->asUInt();
    if (!u || int64_t(*u) >= n)
      return bad("tokenizer.ggml." + key.str(), "not a token id");
    out = int32_t(*u);
    return Error::success();
  };
  auto flag = [&](StringRef key, bool fallback) {
    const G::Value *v = file.find(("tokenizer.ggml." + key).str());
    std::optional<bool> b = v ? v->asBool() : std::nullopt;
    return b ? *b : fallback;
  };
  Special special;
  int32_t eos = -1, unk = -1;
  if (Error e = id("bos_token_id", special.bos))
    return std::move(e);
  if (Error e = id("eos_token_id", eos))
    return std::move(e);
  if (Error e = id("unknown_token_id", unk))
    return std::move(e);
  if (eos >= 0)
    special.eos.push_back(eos);
  bool addBos = flag("add_bos_token", true);
  bool spacePrefix = flag("add_space_prefix", true);
  if (addBos && special.bos < 0)
    return bad("tokenizer.ggml.add_bos_token",
               "a BOS token is added, but there is no bos_token_id");

  // The vocabulary, added tokens (control: special; user-defined), merges.
  enum {
    kNormal = 1,
    kUnknown = 2,
    kControl = 3,
    kUser = 4,
    kUnused = 5,
    kByte = 6
  };
  StringMap<int32_t> ids;
  bool byteFallback = false;
  BlobWriter added;
  uint32_t numAdded = 0;
  for (int64_t i = 0; i < n; ++i) {
    const std::string &piece = pieces[size_t(i)];
    if (!json::isUTF8(piece))
      return bad("tokenizer.ggml.tokens",
                 "token " + Twine(i) + " is not UTF-8");
    // The scores rank the merges: a NaN would make the order arbitrary.
    if (!std::isfinite(scores->floats[size_t(i)]))
      return bad("tokenizer.ggml.scores",
                 "token " + Twine(i) + "'s score is not finite");
    if (type[size_t(i)] < kNormal || type[size_t(i)] > kByte)
      return bad("tokenizer.ggml.token_type",
                 "token " + Twine(i) + " has an unknown type");
    if (!ids.try_emplace(piece, int32_t(i)).second)
      return bad("tokenizer.ggml.tokens",
                 "token " + Twine(i) + " repeats an earlier token");
    byteFallback |= type[size_t(i)] == kByte;
    if ((type[size_t(i)] == kControl || type[size_t(i)] == kUser) &&
        !piece.empty()) {
      added.i32(int32_t(i));
      added.u32(type[size_t(i)] == kControl ? 1 : 0);
      added.str(piece);
      ++numAdded;
    }
  }
  struct Merge {
    double score;
    int32_t result, left, right;
  };
  std::vector<Merge> merges;
  for (int64_t i = 0; i < n; ++i) {
    if (type[size_t(i)] != kNormal)
      continue;
    StringRef piece = pieces[size_t(i)];
    std::vector<Merge> local;
    for (size_t k = 1; k < piece.size(); ++k) {
      if ((piece[k] & 0xc0) == 0x80)
        continue; // inside a character
      auto l = ids.find(piece.take_front(k)), r = ids.find(piece.drop_front(k));
      if (l != ids.end() && r != ids.end())
        local.push_back(
            {scores->floats[size_t(i)], int32_t(i), l->second, r->second});
    }
    std::sort(local.begin(), local.end(), [](const Merge &a, const Merge &b) {
      return std::make_pair(a.left, a.right) < std::make_pair(b.left, b.right);
    });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  std::stable_sort(
      merges.begin(), merges.end(),
      [](const Merge &a, const Merge &b) { return a.score > b.score; });

  BlobWriter w;
  writeHeader(w, 1, special, addBos, extras);
  w.u32(uint32_t(byteFallback) | 2u); // fuse_unk
  w.i32(unk);
  w.u32(uint32_t(n));
  for (int64_t i = 0; i < n; ++i) {
    w.i32(int32_t(i));
    w.str(pieces[size_t(i)]);
  }
  w.u32(uint32_t(merges.size()));
  for (const Merge &m : merges) {
    w.i32(m.left);
    w.i32(m.right);
    w.i32(m.result);
  }
  w.u32(numAdded);
  w.out += added.out;
  const char *space = "\xe2\x96\x81";
  // Normalizer: Prepend("▁") (add_space_prefix), Replace(" ", "▁").
  w.u32(spacePrefix ? 2 : 1);
  if (spacePrefix) {
    w.u32(1);
    w.str(space);
  }
  w.u32(2);
  w.str(" ");
  w.str(space);
  w.u32(0); // no pre-tokenizer
  // Decoder: Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0).
  w.u32(spacePrefix ? 4 : 3);
  w.u32(1);
  w.str(space);
  w.str(" ");
  w.u32(2);
  w.u32(3);
  if (spacePrefix) {
    w.u32(4);
    w.str(" ");
    w.u32(1);
    w.u32(0);
  }
  std::string error;
  if (!moert::Tokenizer::load(w.out.data(), w.out.size(), vocabSize, error)) {
    StringRef why = error;
    why.consume_front("the embedded tokenizer is corrupt: ");
    return configError(path, "the runtime cannot use its tokenizer: " + why);
  }
  TokenizerBlob blob;
  blob.source = path.str();
  blob.data = std::move(w.out);
  blob.pieces = n;
  return blob;
}

Expected<TokenizerBlob> findTokenizer(StringRef dir, int64_t vocabSize,
                                      const TokenizerExtras &extras) {
  for (StringRef name : {"tokenizer.json", "tokenizer.model"}) {
    SmallString<256> path(dir);
    sys::path::append(path, name);
    Expected<bool> exists = pathExists(path);
    if (!exists)
      return exists.takeError();
    if (*exists)
      return convertTokenizer(path, dir, vocabSize, extras);
  }
  return TokenizerBlob();
}

} // namespace mlir::moe::hf
