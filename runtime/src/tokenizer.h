//===- tokenizer.h - the runtime's tokenizer --------------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Text to token ids and back, from the tokenizer blob moe-compile embeds in
// each program (moert_program::tokenizer; the compiler side is
// frontends/hf/Tokenizer.cpp, the format is below and in docs/tokenizers.md).
// Two kinds:
//
//  - a Hugging Face tokenizer.json BPE, converted: added tokens matched in
//    the raw text first (leftmost-longest), the normaliser (Prepend,
//    Replace), the pre-tokenisers (Metaspace, ByteLevel, Split with a PCRE2
//    regex), BPE by merge rank with byte fallback, and the decoder chain
//    (Replace, ByteFallback, Fuse, Strip, Metaspace, ByteLevel), each step
//    as the `tokenizers` library does it;
//  - a SentencePiece model, its serialized proto run by libsentencepiece.
//
// The blob is untrusted input: every length, offset and id is checked
// before use, and a bad blob is an error, never a crash
// (runtime/fuzz/TokenizerFuzzer.cpp).
//
// Blob format (little-endian; str = u32 length + bytes):
//   "MOETOK01"  u32 kind (1: BPE, 2: SentencePiece)
//   i32 bos (-1: none)  u32 add_bos  u32 n_eos  i32 eos[n_eos]
//   str chat_prefix  str chat_suffix
//   kind 2: str model_proto
//   kind 1: u32 model_flags (1 byte_fallback, 2 fuse_unk, 4 ignore_merges)
//           i32 unk (-1: none)
//           u32 n_vocab, {i32 id, str piece}*
//           u32 n_merges, {i32 left, i32 right, i32 result}* (rank = index)
//           u32 n_added, {i32 id, u32 flags (1 special, 2 lstrip, 4 rstrip,
//                         8 normalized), str content}*
//           u32 n_normalizers, {u32 type, ...}*  (1 Prepend str; 2 Replace
//                                                 str pattern, str content)
//           u32 n_pretokenizers, {u32 type, ...}* (1 Metaspace str
//               replacement, u32 prepend_scheme (0 never, 1 first,
//               2 always), u32 split; 2 ByteLevel u32 add_prefix_space,
//               u32 use_regex; 3 Split str pattern, u32 is_regex,
//               u32 behavior (0 removed, 1 isolated))
//           u32 n_decoders, {u32 type, ...}* (1 Replace str pattern,
//               str content; 2 ByteFallback; 3 Fuse; 4 Strip str content,
//               u32 start, u32 stop; 5 Metaspace str replacement, u32
//               prepend_scheme; 6 ByteLevel)
//   and nothing after.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_SRC_TOKENIZER_H
#define MOERT_SRC_TOKENIZER_H

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace moert {

class Tokenizer {
public:
  virtual ~Tokenizer();

  /// Parses `blob` (`size` bytes); ids must be below `vocabSize`. On failure
  /// returns null and sets `error`.
  static std::unique_ptr<Tokenizer> load(const void *blob, size_t size,
                                         int64_t vocabSize, std::string &error);

  /// The ids of `text` (valid UTF-8, else false and `error`), with the BOS
  /// id first when `addSpecial` and the model's config asks for it.
  virtual bool encode(const std::string &text, bool addSpecial,
                      std::vector<int32_t> &ids, std::string &error) const = 0;
  /// The text of `ids`; special tokens are left out when `skipSpecial`.
  /// Ids that name no piece give no text.
  virtual std::string decode(const std::vector<int32_t> &ids,
                             bool skipSpecial) const = 0;
  /// Whether the text decoded up to and including `id` is final: false for
  /// a fragment of a character (a byte-fallback or byte-level piece, which
  /// later ids may complete) and for ids that decode to nothing (special
  /// tokens when skipped, ids that name no piece).
  virtual bool closes(int32_t id, bool skipSpecial) const = 0;
  /// The number of pieces (ids below it may name a piece).
  virtual int64_t size() const = 0;

  int32_t bos() const { return bosId; }
  bool addBos() const { return addBosFlag; }
  bool isEos(int32_t id) const;
  const std::string &chatPrefix() const { return prefix; }
  const std::string &chatSuffix() const { return suffix; }

protected:
  int32_t bosId = -1;
  bool addBosFlag = false;
  std::vector<int32_t> eosIds;
  std::string prefix, suffix;
};

/// Text as it completes: push ids one at a time; each push returns the text
/// that is now final. The concatenation of every push and finish() equals
/// tokenizer.decode(all ids, skipSpecial).
///
/// It decodes a window of the latest ids, not all of them, and emits what
/// decoding the window gains from the new ids. The window moves on to start
/// after an id that closes (tokenizer.closes) once the decode of the shorter
/// window is a non-empty suffix of the longer one's: the decoders' rules for
/// the start of the text (Strip, Metaspace's first piece, SentencePiece's
/// leading space) then touch only text already emitted. Each push costs
/// O(window), not O(ids so far).
class DecodeStream {
public:
  DecodeStream(const Tokenizer &tokenizer, bool skipSpecial)
      : tokenizer(tokenizer), skipSpecial(skipSpecial) {}
  std::string push(int32_t id);
  std::string finish();

private:
  const Tokenizer &tokenizer;
  bool skipSpecial;
  std::vector<int32_t> ids; // the window
  std::string emitted;      // what decoding the window has given so far
  std::string emitNew(const std::string &text);
  void slide();
};

/// A SentencePiece tokenizer from its serialized model proto
/// (tokenizer_spm.cpp, libmoert_spm). Weak: programs whose tokenizer is not
/// SentencePiece are built without it and libsentencepiece.
bool loadSentencePiece(const std::string &proto, int64_t vocabSize,
                       std::unique_ptr<Tokenizer> &out, std::string &error)
    __attribute__((weak));

/// Whether `s` is valid UTF-8 (no surrogates, no overlong forms).
bool isValidUtf8(const std::string &s);

} // namespace moert

#endif // MOERT_SRC_TOKENIZER_H
