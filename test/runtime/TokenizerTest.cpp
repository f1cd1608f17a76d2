//===- TokenizerTest.cpp - the runtime's tokenizer ----------------*- C++
//-*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// moert::Tokenizer on hand-written blobs: encoding with merges and byte
// fallback, decoding, the streaming decoder holding back a character split
// over byte pieces, and the exact message for each way a blob is corrupt.
// (test/tokenizer compares whole tokenizers with the reference libraries.)
//
//===----------------------------------------------------------------------===//

#include "tokenizer.h"
#include "TokenizerBlob.h"

#include <gtest/gtest.h>

#include <cstdio>

using moert::DecodeStream;
using moert::Tokenizer;

namespace {

// "é" is C3 A9: both bytes are pieces, the character is not.
const std::vector<std::string> kVocab = {
    "<s>",           "</s>",           "\xe2\x96\x81", "h",      "i",
    "\xe2\x96\x81h", "\xe2\x96\x81hi", "<0xC3>",       "<0xA9>", "<0x21>"};
const std::vector<std::vector<int>> kMerges = {{2, 3, 5}, {5, 4, 6}};

std::unique_ptr<Tokenizer> load(const std::string &blob, int64_t vocab = 16) {
  std::string error;
  auto tok = Tokenizer::load(blob.data(), blob.size(), vocab, error);
  EXPECT_TRUE(tok) << error;
  return tok;
}

std::string loadError(const std::string &blob, int64_t vocab = 16) {
  std::string error;
  EXPECT_FALSE(Tokenizer::load(blob.data(), blob.size(), vocab, error));
  return error;
}

TEST(Tokenizer, EncodesWithMergesAndByteFallback) {
  auto tok = load(moert_test::mistralBlob(kVocab, kMerges, 1));
  std::vector<int32_t> ids;
  std::string error;
  ASSERT_TRUE(tok->encode("hi h\xc3\xa9!", true, ids, error)) << error;
  EXPECT_EQ(ids, (std::vector<int32_t>{0, 6, 5, 7, 8, 9}));
  ASSERT_TRUE(tok->encode("", true, ids, error));
  EXPECT_EQ(ids, (std::vector<int32_t>{0}));
  ASSERT_TRUE(tok->encode("<s>hi", false, ids, error));
  // Prepend applies to each part between added tokens (as in tokenizers).
  EXPECT_EQ(ids, (std::vector<int32_t>{0, 6}));
  EXPECT_FALSE(tok->encode("bad \xff", true, ids, error));
  EXPECT_EQ(error, "the text is not valid UTF-8");
  EXPECT_TRUE(tok->isEos(1));
  EXPECT_FALSE(tok->isEos(0));
}

TEST(Tokenizer, DecodesAndStreamsWholeCharacters) {
  auto tok = load(moert_test::mistralBlob(kVocab, kMerges, 1));
  std::vector<int32_t> ids = {0, 6, 5, 7, 8, 9, 1, 15};
  // "</s>" is an ordinary piece here: only "<s>" is an added special token.
  EXPECT_EQ(tok->decode(ids, true), "hi h\xc3\xa9!</s>");
  EXPECT_EQ(tok->decode(ids, false), "<s> hi h\xc3\xa9!</s>");
  DecodeStream stream(*tok, true);
  std::vector<std::string> pieces;
  for (int32_t id : ids)
    pieces.push_back(stream.push(id));
  pieces.push_back(stream.finish());
  // The byte pieces are held back until a piece that is not one ends their
  // run (the reference decodes a run of byte pieces as a whole).
  EXPECT_EQ(pieces, (std::vector<std::string>{"", "hi", " h", "", "", "",
                                              "\xc3\xa9!</s>", "", ""}));
  // A lone byte piece at the end comes out as U+FFFD, as the reference's.
  DecodeStream cut(*tok, true);
  EXPECT_EQ(cut.push(6), "hi");
  EXPECT_EQ(cut.push(7), "");
  EXPECT_EQ(cut.finish(), "\xef\xbf\xbd");
  EXPECT_EQ(tok->decode({6, 7}, true), "hi\xef\xbf\xbd");
}

TEST(Tokenizer, CarriesTheChatTemplateText) {
  auto tok =
      load(moert_test::mistralBlob(kVocab, kMerges, 1, "[INST] ", " [/INST]"));
  EXPECT_EQ(tok->chatPrefix(), "[INST] ");
  EXPECT_EQ(tok->chatSuffix(), " [/INST]");
}

TEST(Tokenizer, RefusesCorruptBlobs) {
  std::string good = moert_test::mistralBlob(kVocab, kMerges, 1);
  EXPECT_EQ(loadError(""), "this model was compiled without a tokenizer");
  EXPECT_EQ(loadError("MOETOK02" + good.substr(8)),
            "the embedded tokenizer is corrupt: not a moe-compile tokenizer "
            "(bad magic) at byte 0");
  EXPECT_EQ(loadError(good.substr(0, good.size() - 1)),
            "the embedded tokenizer is corrupt: truncated at byte " +
                std::to_string(good.size() - 4));
  EXPECT_EQ(loadError(good + "x"),
            "the embedded tokenizer is corrupt: trailing bytes at byte " +
                std::to_string(good.size()));
  // Ids at or above the model's vocabulary.
  EXPECT_EQ(loadError(good, 8),
            "the embedded tokenizer is corrupt: a vocabulary id 8 is out of "
            "range at byte 143");
  EXPECT_EQ(loadError(moert_test::mistralBlob(kVocab, kMerges, 20)),
            "the embedded tokenizer is corrupt: an EOS id 20 is out of range "
            "at byte 28");
  EXPECT_EQ(loadError(moert_test::mistralBlob(kVocab, {{2, 3, 12}}, 1)),
            "the embedded tokenizer is corrupt: a merge names an id without "
            "a piece at byte 183");
  // A string whose length runs past the end.
  std::string longString = good;
  longString[31] = '\x7f'; // the chat prefix's length, high byte
  EXPECT_EQ(loadError(longString),
            "the embedded tokenizer is corrupt: a string runs past the end at "
            "byte 32");
}

/// mistralBlob with one Split pre-tokenizer (a regex; 1: Isolated).
std::string splitBlob(const std::string &pattern) {
  std::string good = moert_test::mistralBlob(kVocab, kMerges, 1);
  // The pre-tokenizers' count (0) comes before the decoders' 45 bytes.
  size_t at = good.size() - 49;
  EXPECT_EQ(good.substr(at, 8), std::string("\0\0\0\0\4\0\0\0", 8));
  moert_test::Blob split;
  split.out.clear();
  split.u32(1);
  split.u32(3);
  split.str(pattern);
  split.u32(1);
  split.u32(1);
  return good.substr(0, at) + split.out + good.substr(at + 4);
}

TEST(Tokenizer, RefusesNonUtf8NormalizerText) {
  // PCRE2 matches the normalised text without checking its UTF-8.
  std::string good = moert_test::mistralBlob(kVocab, kMerges, 1);
  const std::string prepend("\2\0\0\0\1\0\0\0\3\0\0\0\xe2\x96\x81", 15);
  size_t at = good.find(prepend);
  ASSERT_NE(at, std::string::npos);
  std::string bad = good;
  bad[at + 12] = '\xff';
  EXPECT_EQ(loadError(bad),
            "the embedded tokenizer is corrupt: a Prepend or Replace text is "
            "not UTF-8 at byte " +
                std::to_string(at + 15));
}

TEST(Tokenizer, RegexThatBacktracksTooMuchIsAnError) {
  // (a|aa)+c backtracks exponentially on a run of a's: PCRE2's match limit
  // ends it, and the encoding fails instead of leaving the rest unsplit.
  auto tok = load(splitBlob("(a|aa)+c|h"));
  ASSERT_TRUE(tok);
  std::vector<int32_t> ids;
  std::string error;
  ASSERT_TRUE(tok->encode("hi", true, ids, error)) << error;
  EXPECT_EQ(ids, (std::vector<int32_t>{0, 2, 3, 4}));
  EXPECT_FALSE(
      tok->encode("hi " + std::string(40, 'a') + " hi", true, ids, error));
  EXPECT_EQ(error, "the Split regex gives up on the text (PCRE2: match limit "
                   "exceeded; the tokenizer's pattern backtracks too much)");
  EXPECT_TRUE(ids.empty());
}

TEST(Tokenizer, RegexMatchingEmptyStringsIsLinear) {
  // \b matches only empty strings, here at the ends of a long run: each
  // search must start after the last empty match, not one character on
  // (which took minutes for 100 000 characters).
  auto tok = load(splitBlob("\\b"));
  ASSERT_TRUE(tok);
  std::vector<int32_t> ids;
  std::string error;
  ASSERT_TRUE(tok->encode(std::string(1000000, 'i') + " hi", true, ids, error))
      << error;
  // <s>, then the one unsplit piece: ▁, a million i, ▁hi.
  EXPECT_EQ(ids.size(), 1000003u);
  EXPECT_EQ(ids.back(), 6);
}

TEST(Tokenizer, StreamWindowSlidesPastRunsOfBytePieces) {
  // Nine byte pieces ('!') and a word, repeated: the window must still
  // slide (it grew with every id, a decode of all of them per word).
  auto tok = load(moert_test::mistralBlob(kVocab, kMerges, 1));
  ASSERT_TRUE(tok);
  std::vector<int32_t> ids;
  for (int k = 0; k < 60000; ++k)
    for (int32_t id : {9, 9, 9, 9, 9, 9, 9, 9, 9, 6})
      ids.push_back(id);
  DecodeStream stream(*tok, true);
  std::string streamed;
  for (int32_t id : ids)
    streamed += stream.push(id);
  streamed += stream.finish();
  EXPECT_EQ(streamed, tok->decode(ids, true));
  EXPECT_EQ(streamed.size(), 60000u * 12); // "!!!!!!!!! hi" each
}

/// mistralBlob with these added tokens (not special, not normalized) from
/// id 16 on, instead of <s>.
std::string addedBlob(const std::vector<std::string> &contents) {
  std::string good = moert_test::mistralBlob(kVocab, kMerges, 1);
  const std::string one("\1\0\0\0\0\0\0\0\1\0\0\0\3\0\0\0<s>", 19);
  size_t at = good.find(one);
  EXPECT_NE(at, std::string::npos);
  moert_test::Blob list;
  list.out.clear();
  list.u32(uint32_t(contents.size()));
  for (size_t i = 0; i < contents.size(); ++i) {
    list.u32(uint32_t(16 + i));
    list.u32(0);
    list.str(contents[i]);
  }
  return good.substr(0, at) + list.out + good.substr(at + one.size());
}

TEST(Tokenizer, AddedTokensLongestFirstInAnyNumber) {
  // The longest added token wins; 60 000 tokens sharing a prefix cost a
  // step per byte matched, not a comparison per token at each '<' (which
  // took a minute for 100 000 of them).
  std::vector<std::string> contents = {"<|a", "<|ab", "b"};
  char name[16];
  for (int k = 0; k < 60000; ++k) {
    std::snprintf(name, sizeof(name), "<|tok%05d|>", k);
    contents.push_back(name);
  }
  auto tok = load(addedBlob(contents), 70000);
  ASSERT_TRUE(tok);
  std::vector<int32_t> ids;
  std::string error;
  ASSERT_TRUE(tok->encode("<|ab<|a<|tok00042|>", false, ids, error)) << error;
  EXPECT_EQ(ids, (std::vector<int32_t>{17, 16, 16 + 3 + 42}));
  std::string many;
  for (int k = 0; k < 100000; ++k)
    many += "<|";
  ASSERT_TRUE(tok->encode(many + "<|tok59999|>", false, ids, error)) << error;
  EXPECT_EQ(ids.back(), 16 + 3 + 59999);
}

} // namespace
