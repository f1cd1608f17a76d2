//===- TokenizerBlob.h - tokenizer blobs for the runtime tests -*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Writes the blob of runtime/src/tokenizer.h by hand: a Mistral-style BPE
// (Prepend("▁") + Replace(" ", "▁"), byte fallback, the decoder chain
// Replace, ByteFallback, Fuse, Strip) over a given vocabulary and merges.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TEST_RUNTIME_TOKENIZERBLOB_H
#define MOE_TEST_RUNTIME_TOKENIZERBLOB_H

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace moert_test {

struct Blob {
  std::string out = "MOETOK01";
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i)
      out += char(v >> (8 * i) & 0xff);
  }
  void str(const std::string &s) {
    u32(uint32_t(s.size()));
    out += s;
  }
};

/// vocab[i] is id i; merges are (left, right, result) ids; id 0 is "<s>"
/// (special, the BOS), `eos` the EOS.
inline std::string mistralBlob(const std::vector<std::string> &vocab,
                               const std::vector<std::vector<int>> &merges,
                               int eos, const std::string &chatPrefix = "",
                               const std::string &chatSuffix = "") {
  Blob b;
  b.u32(1); // BPE
  b.u32(0); // bos
  b.u32(1); // add_bos
  b.u32(1); // one eos
  b.u32(uint32_t(eos));
  b.str(chatPrefix);
  b.str(chatSuffix);
  b.u32(1 | 2);        // byte_fallback, fuse_unk
  b.u32(uint32_t(-1)); // no unk
  b.u32(uint32_t(vocab.size()));
  for (size_t i = 0; i < vocab.size(); ++i) {
    b.u32(uint32_t(i));
    b.str(vocab[i]);
  }
  b.u32(uint32_t(merges.size()));
  for (const auto &m : merges)
    for (int x : m)
      b.u32(uint32_t(x));
  b.u32(1); // added: <s>, special
  b.u32(0);
  b.u32(1);
  b.str(vocab[0]);
  b.u32(2); // normalizers
  b.u32(1);
  b.str("\xe2\x96\x81");
  b.u32(2);
  b.str(" ");
  b.str("\xe2\x96\x81");
  b.u32(0); // pre-tokenizers
  b.u32(4); // decoders
  b.u32(1);
  b.str("\xe2\x96\x81");
  b.str(" ");
  b.u32(2);
  b.u32(3);
  b.u32(4);
  b.str(" ");
  b.u32(1);
  b.u32(0);
  return b.out;
}

} // namespace moert_test

#endif // MOE_TEST_RUNTIME_TOKENIZERBLOB_H
