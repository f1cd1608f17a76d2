//===- TokenizerFuzzer.cpp - libFuzzer target for the tokenizer -*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Feeds arbitrary bytes, as the tokenizer blob a program embeds, to
// moert::Tokenizer::load. A blob it accepts must then encode a few texts
// (ids below the vocabulary size), decode any ids, and stream them. (That
// the stream equals the decode is checked on the blobs moe-compile writes,
// by test/tokenizer: a hostile decoder chain may hold text back.)
//
//===----------------------------------------------------------------------===//

#include "tokenizer.h"

#include <cstdlib>
#include <string>
#include <vector>

static void check(bool condition) {
  if (!condition)
    std::abort();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  constexpr int64_t kVocab = 4096;
  std::string error;
  auto tok = moert::Tokenizer::load(data, size, kVocab, error);
  if (!tok) {
    check(!error.empty());
    return 0;
  }
  for (const char *text : {"", "hello world", " a\tb\n\nc ",
                           "caf\xc3\xa9 \xf0\x9f\x99\x82", "<s>x</s>"}) {
    std::vector<int32_t> ids;
    if (tok->encode(text, true, ids, error))
      for (int32_t id : ids)
        check(id >= 0 && id < kVocab);
  }
  // Ids from the blob's own bytes.
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 1 < size && ids.size() < 64; i += 2)
    ids.push_back(int32_t((data[i] | data[i + 1] << 8) % kVocab));
  for (bool skip : {false, true}) {
    std::string whole = tok->decode(ids, skip);
    moert::DecodeStream stream(*tok, skip);
    std::string streamed;
    for (int32_t id : ids)
      streamed += stream.push(id);
    streamed += stream.finish();
    check(streamed == whole);
  }
  return 0;
}
