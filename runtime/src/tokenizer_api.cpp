//===- tokenizer_api.cpp - moert_tokenize and friends ------------*- C++
//-*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// The C API of the tokenizer (moert.h) over tokenizer.h, which stays free
// of the rest of libmoert for its fuzzer.
//
//===----------------------------------------------------------------------===//

#include "internal.h"
#include "tokenizer.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <string>
#include <vector>

//===----------------------------------------------------------------------===//
// The C API
//===----------------------------------------------------------------------===//

struct moert_detokenizer {
  moert_model *model;
  moert::DecodeStream stream;
  std::string text;
};

namespace {

/// The model's tokenizer, or null after recording why there is none.
const moert::Tokenizer *tokenizerOf(moert_model *model, const char *what) {
  if (!model) {
    moert_fail(MOERT_ERROR_INVALID, "%s: no model", what);
    return nullptr;
  }
  std::string error;
  const moert::Tokenizer *tok = moert_model_tokenizer(model, error);
  if (!tok)
    moert_fail(MOERT_ERROR_INVALID, "%s: %s", what, error.c_str());
  return tok;
}

} // namespace

extern "C" moert_status moert_tokenize(moert_model *model, const char *text,
                                       size_t len, int add_special,
                                       int32_t *out, int64_t capacity,
                                       int64_t *n) {
  return moert_guarded("moert_tokenize", [&]() -> moert_status {
    if (n)
      *n = 0;
    const moert::Tokenizer *tok = tokenizerOf(model, "moert_tokenize");
    if (!tok)
      return MOERT_ERROR_INVALID;
    if (!n || (!text && len) || capacity < 0 || (!out && capacity))
      return moert_fail(MOERT_ERROR_INVALID,
                        "moert_tokenize: a null pointer or a negative "
                        "capacity");
    std::vector<int32_t> ids;
    std::string error;
    if (!tok->encode(std::string(text ? text : "", len), add_special != 0, ids,
                     error))
      return moert_fail(MOERT_ERROR_INVALID, "moert_tokenize: %s",
                        error.c_str());
    *n = int64_t(ids.size());
    if (int64_t(ids.size()) > capacity)
      return moert_fail(MOERT_ERROR_INVALID,
                        "moert_tokenize: %zu ids do not fit in %lld",
                        ids.size(), (long long)capacity);
    std::copy(ids.begin(), ids.end(), out);
    return MOERT_OK;
  });
}

extern "C" moert_status moert_detokenize(moert_model *model, const int32_t *ids,
                                         int64_t n, int skip_special, char *out,
                                         size_t capacity, size_t *len) {
  return moert_guarded("moert_detokenize", [&]() -> moert_status {
    if (len)
      *len = 0;
    const moert::Tokenizer *tok = tokenizerOf(model, "moert_detokenize");
    if (!tok)
      return MOERT_ERROR_INVALID;
    if (!len || n < 0 || (!ids && n) || (!out && capacity))
      return moert_fail(MOERT_ERROR_INVALID,
                        "moert_detokenize: a null pointer or a negative "
                        "count");
    std::string text =
        tok->decode(std::vector<int32_t>(ids, ids + n), skip_special != 0);
    *len = text.size();
    if (text.size() >= capacity)
      return moert_fail(MOERT_ERROR_INVALID,
                        "moert_detokenize: %zu bytes and a NUL do not fit in "
                        "%zu",
                        text.size(), capacity);
    std::memcpy(out, text.data(), text.size());
    out[text.size()] = '\0';
    return MOERT_OK;
  });
}

extern "C" int moert_token_is_eos(moert_model *model, int32_t id) {
  try {
    std::string error;
    const moert::Tokenizer *tok =
        model ? moert_model_tokenizer(model, error) : nullptr;
    return tok && tok->isEos(id);
  } catch (...) {
    return 0;
  }
}

extern "C" moert_status moert_detokenizer_create(moert_model *model,
                                                 int skip_special,
                                                 moert_detokenizer **out) {
  return moert_guarded("moert_detokenizer_create", [&]() -> moert_status {
    if (!out)
      return moert_fail(MOERT_ERROR_INVALID,
                        "moert_detokenizer_create: a null pointer");
    *out = nullptr;
    const moert::Tokenizer *tok =
        tokenizerOf(model, "moert_detokenizer_create");
    if (!tok)
      return MOERT_ERROR_INVALID;
    *out = new moert_detokenizer{
        model, moert::DecodeStream(*tok, skip_special != 0), std::string()};
    return MOERT_OK;
  });
}

extern "C" moert_status moert_detokenizer_push(moert_detokenizer *stream,
                                               int32_t id, const char **text,
                                               size_t *len) {
  return moert_guarded("moert_detokenizer_push", [&]() -> moert_status {
    if (!stream || !text || !len)
      return moert_fail(MOERT_ERROR_INVALID,
                        "moert_detokenizer_push: a null pointer");
    stream->text = stream->stream.push(id);
    *text = stream->text.c_str();
    *len = stream->text.size();
    return MOERT_OK;
  });
}

extern "C" moert_status moert_detokenizer_finish(moert_detokenizer *stream,
                                                 const char **text,
                                                 size_t *len) {
  return moert_guarded("moert_detokenizer_finish", [&]() -> moert_status {
    if (!stream || !text || !len)
      return moert_fail(MOERT_ERROR_INVALID,
                        "moert_detokenizer_finish: a null pointer");
    stream->text = stream->stream.finish();
    *text = stream->text.c_str();
    *len = stream->text.size();
    return MOERT_OK;
  });
}

extern "C" void moert_detokenizer_free(moert_detokenizer *stream) {
  delete stream;
}
