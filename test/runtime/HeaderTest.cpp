//===- HeaderTest.cpp - libmoert's safetensors header check ----*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// The parser of safetensors headers and the comparison with the manifest
// that moert_model_load runs on every weight file: what is accepted, and the
// exact message for each way a header can be wrong or differ.
//
//===----------------------------------------------------------------------===//

#include "header.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

using namespace moert;

namespace {

/// A file image: the 8-byte length, the JSON, then `data` zero bytes.
std::string image(const std::string &json, size_t data) {
  std::string s(8, '\0');
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i)
    s[size_t(i)] = char(n >> (8 * i) & 0xff);
  return s + json + std::string(data, '\0');
}

/// parseHeader's message for `json` in a file with `data` bytes of data.
std::string parseError(const std::string &json, uint64_t data = 64) {
  Header h;
  return parseHeader(json.data(), json.size(), 8 + json.size() + data, h);
}

const char *kTwo =
    R"({"__metadata__": {"format": "pt"},
        "b": {"dtype": "F32", "shape": [2, 3], "data_offsets": [8, 32]},
        "a": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}})";

TEST(Header, ParsesTensorsSortedByName) {
  Header h;
  std::string json = kTwo;
  ASSERT_EQ(parseHeader(json.data(), json.size(), 8 + json.size() + 32, h), "");
  EXPECT_EQ(h.dataOffset, 8 + json.size());
  ASSERT_EQ(h.tensors.size(), 2u);
  EXPECT_EQ(h.tensors[0].name, "a");
  EXPECT_STREQ(h.tensors[0].dtype, "BF16");
  EXPECT_EQ(h.tensors[0].shape, std::vector<uint64_t>({4}));
  EXPECT_EQ(h.tensors[1].name, "b");
  EXPECT_EQ(h.tensors[1].shape, std::vector<uint64_t>({2, 3}));
  EXPECT_EQ(h.tensors[1].begin, 8u);
  EXPECT_EQ(h.tensors[1].end, 32u);
  EXPECT_EQ(h.find("b"), &h.tensors[1]);
  EXPECT_EQ(h.find("c"), nullptr);
}

TEST(Header, AcceptsWhatJsonAllows) {
  // Escapes (a surrogate pair among them), UTF-8, whitespace, integers
  // written as exact decimals, empty tensors and shapes, no metadata.
  Header h;
  std::string json = " {\"w\\u00e9\\ud83d\\ude00\\n\\/\" :\t{\"shape\":[ 2.0 "
                     ", 1e0],\"data_offsets\":[0,4],\"dtype\":\"F16\"},"
                     "\"\xc3\xa9\":{\"dtype\":\"U8\",\"shape\":[0],"
                     "\"data_offsets\":[4,4]}, \"s\": {\"dtype\": \"F64\", "
                     "\"shape\": [], \"data_offsets\": [8, 16]}}\r\n";
  ASSERT_EQ(parseHeader(json.data(), json.size(), 8 + json.size() + 16, h), "");
  ASSERT_EQ(h.tensors.size(), 3u);
  const HeaderTensor *t = h.find("w\xc3\xa9\xf0\x9f\x98\x80\n/");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->shape, std::vector<uint64_t>({2, 1}));
  EXPECT_NE(h.find("\xc3\xa9"), nullptr);
}

TEST(Header, RejectsBadJson) {
  EXPECT_EQ(parseError(""), "header is not a JSON object");
  EXPECT_EQ(parseError("[]"), "header is not a JSON object");
  EXPECT_EQ(parseError("{"), "header is not valid JSON: expected a string "
                             "key at its end");
  EXPECT_EQ(parseError("{} x"),
            "header is not valid JSON: unexpected text after the object at "
            "byte 3");
  EXPECT_EQ(parseError(R"({"a" 1})"),
            "header is not valid JSON: expected ':' after a key at byte 5");
  EXPECT_EQ(parseError(R"({"__metadata__": {"k": "v",}})"),
            "header is not valid JSON: expected a string key at byte 27");
  EXPECT_EQ(parseError("{\"a\x01\": 1}"),
            "header is not valid JSON: control character in a string at "
            "byte 3");
  EXPECT_EQ(parseError("{\"a\xff\": 1}"),
            "header is not valid JSON: invalid UTF-8 in a string at byte 3");
  EXPECT_EQ(parseError("{\"\xc0\x80\": 1}"), // overlong NUL
            "header is not valid JSON: invalid UTF-8 in a string at byte 2");
  EXPECT_EQ(parseError("{\"\xed\xa0\x80\": 1}"), // a surrogate
            "header is not valid JSON: invalid UTF-8 in a string at byte 2");
  EXPECT_EQ(parseError(R"({"\ud800": 1})"),
            "header is not valid JSON: unpaired UTF-16 surrogate in a \\u "
            "escape at byte 8");
  EXPECT_EQ(parseError(R"({"\q": 1})"),
            "header is not valid JSON: invalid escape in a string at byte 3");
  EXPECT_EQ(parseError(R"({"a)"),
            "header is not valid JSON: unterminated string at its end");
  EXPECT_EQ(parseError(R"({"a": {"dtype": "F32", "shape": [01]}})"),
            "header is not valid JSON: number with a leading zero at byte 34");
  EXPECT_EQ(parseError(R"({"a": {"dtype": "F32", "shape": [1.]}})"),
            "header is not valid JSON: invalid number at byte 35");
}

TEST(Header, NestingIsBoundedByTheSchema) {
  // Hostile headers nest tens of thousands of levels deep; the parser never
  // descends into anything the schema does not have.
  std::string deep(50000, '[');
  EXPECT_EQ(parseError(deep), "header is not a JSON object");
  EXPECT_EQ(parseError("{\"a\": " + deep),
            "tensor 'a': entry is not a JSON object");
  EXPECT_EQ(parseError("{\"a\": {\"shape\": " + deep),
            "tensor 'a': shape entries must be non-negative integers");
  EXPECT_EQ(parseError("{\"__metadata__\": {\"k\": " + std::string(50000, '{')),
            "'__metadata__' value for 'k' must be a string");
}

TEST(Header, RejectsSchemaViolations) {
  EXPECT_EQ(parseError(R"({"__metadata__": []})"),
            "'__metadata__' must be an object of strings");
  EXPECT_EQ(parseError(R"({"__metadata__": {"k": 1}})"),
            "'__metadata__' value for 'k' must be a string");
  EXPECT_EQ(parseError(R"({"__metadata__": {}, "__metadata__": {}})"),
            "header has the key '__metadata__' twice");
  EXPECT_EQ(parseError(R"({"__metadata__": {"k": "a", "k": "b"}})"),
            "'__metadata__' has the key 'k' twice");
  EXPECT_EQ(parseError(R"({"": {}})"), "a tensor has an empty name");
  EXPECT_EQ(parseError(R"({"a": 1})"),
            "tensor 'a': entry is not a JSON object");
  EXPECT_EQ(parseError(R"({"a": {"dtype": "F32", "extra": 1}})"),
            "tensor 'a': unexpected key 'extra'");
  EXPECT_EQ(parseError(R"({"a": {"dtype": "F32", "dtype": "F32"}})"),
            "tensor 'a': key 'dtype' appears twice");
  EXPECT_EQ(parseError(R"({"a": {"shape": [], "data_offsets": [0, 4]}})"),
            "tensor 'a': 'dtype' must be a string");
  EXPECT_EQ(parseError(R"({"a": {"dtype": 4}})"),
            "tensor 'a': 'dtype' must be a string");
  EXPECT_EQ(parseError(R"({"a": {"dtype": "Q4"}})"),
            "tensor 'a': unknown dtype 'Q4'");
  EXPECT_EQ(parseError(R"({"a": {"dtype": "F32", "data_offsets": [0, 4]}})"),
            "tensor 'a': 'shape' must be an array");
  EXPECT_EQ(parseError(R"({"a": {"dtype": "F32", "shape": [-1]}})"),
            "tensor 'a': shape entries must be non-negative integers");
  EXPECT_EQ(parseError(R"({"a": {"dtype": "F32", "shape": [1.5]}})"),
            "tensor 'a': shape entries must be non-negative integers");
  EXPECT_EQ(
      parseError(R"({"a": {"dtype": "F32", "shape": [18446744073709551616]}})"),
      "tensor 'a': shape entries must be non-negative integers");
  EXPECT_EQ(parseError(R"({"a": {"dtype": "F32", "shape": ["1"]}})"),
            "tensor 'a': shape entries must be non-negative integers");
  std::string manyDims = R"({"a": {"dtype": "F32", "shape": [)";
  for (int i = 0; i < 65; ++i)
    manyDims += i ? ",1" : "1";
  EXPECT_EQ(parseError(manyDims + "]}}"),
            "tensor 'a': shape has more than 64 dimensions");
  EXPECT_EQ(parseError(R"({"a": {"dtype": "F32", "shape": []}})"),
            "tensor 'a': 'data_offsets' must be an array [begin, end]");
  EXPECT_EQ(parseError(
                R"({"a": {"dtype": "F32", "shape": [], "data_offsets": [0]}})"),
            "tensor 'a': 'data_offsets' must be an array [begin, end]");
  EXPECT_EQ(parseError(R"({"a": {"dtype": "F32", "shape": [],
                               "data_offsets": [0, 4, 8]}})"),
            "tensor 'a': 'data_offsets' must be an array [begin, end]");
  EXPECT_EQ(parseError(R"({"a": {"dtype": "F32", "shape": [],
                               "data_offsets": [-4, 0]}})"),
            "tensor 'a': data offsets must be non-negative integers");
}

TEST(Header, ChecksSizesAndOffsets) {
  EXPECT_EQ(parseError(R"({"a": {"dtype": "F32", "shape": [1],
                               "data_offsets": [8, 4]}})"),
            "tensor 'a': data offsets [8, 4) are reversed");
  EXPECT_EQ(parseError(R"({"a": {"dtype": "F32", "shape": [3],
                               "data_offsets": [0, 8]}})"),
            "tensor 'a': F32 [3] needs 12 bytes but its data offsets [0, 8) "
            "hold 8");
  EXPECT_EQ(parseError(R"({"a": {"dtype": "F32",
                               "shape": [4294967296, 4294967296],
                               "data_offsets": [0, 8]}})"),
            "tensor 'a': shape [4294967296, 4294967296] overflows");
  EXPECT_EQ(parseError(R"({"a": {"dtype": "F64",
                               "shape": [4294967296, 1073741824],
                               "data_offsets": [0, 8]}})"),
            "tensor 'a': F64 [4294967296, 1073741824] needs more than 8 bytes "
            "but its data offsets [0, 8) hold 8");
  // The file's end, in absolute bytes: a truncated file.
  std::string json = R"({"a": {"dtype": "F32", "shape": [20],
                              "data_offsets": [0, 80]}})";
  EXPECT_EQ(parseError(json, 64),
            "tensor 'a' ends at byte " + std::to_string(8 + json.size() + 80) +
                ", past the end of the file (" +
                std::to_string(8 + json.size() + 64) + " bytes)");
  // Offsets so large that the absolute end overflows.
  json = R"({"a": {"dtype": "U8", "shape": [1],
                   "data_offsets": [18446744073709551614,
                                    18446744073709551615]}})";
  EXPECT_EQ(parseError(json, 64),
            "tensor 'a': data offsets [18446744073709551614, "
            "18446744073709551615) run past the end of the file (" +
                std::to_string(8 + json.size() + 64) + " bytes)");
  EXPECT_EQ(parseError(R"({"b": {"dtype": "F32", "shape": [2],
                               "data_offsets": [4, 12]},
                         "a": {"dtype": "F32", "shape": [2],
                               "data_offsets": [0, 8]},
                         "e": {"dtype": "F32", "shape": [0],
                               "data_offsets": [4, 4]}})"),
            "tensors 'a' [0, 8) and 'b' [4, 12) overlap");
  EXPECT_EQ(parseError(R"({"a": {"dtype": "F32", "shape": [0],
                               "data_offsets": [0, 0]},
                         "a": {"dtype": "F32", "shape": [0],
                               "data_offsets": [0, 0]}})"),
            "header has the tensor 'a' twice");
}

TEST(Header, QuotesNamesSafely) {
  std::string json = "{\"\\u001b[31m" + std::string(300, 'x') + "\": 1}";
  EXPECT_EQ(parseError(json), "tensor '\\x1b[31m" + std::string(195, 'x') +
                                  "...': entry is not a JSON object");
}

TEST(Header, LengthPrefix) {
  std::string img = image(kTwo, 32);
  uint64_t size = img.size();
  auto bytes = reinterpret_cast<const unsigned char *>(img.data());
  EXPECT_EQ(headerImageBytes(bytes, 8, size), 8 + std::strlen(kTwo));
  EXPECT_EQ(headerImageBytes(bytes, 3, 3), 3u);
  EXPECT_EQ(checkWeightFile(bytes, 0, 0, nullptr, 0),
            "file is 0 bytes, too short for the 8-byte header length");
  EXPECT_EQ(checkWeightFile(bytes, 7, 7, nullptr, 0),
            "file is 7 bytes, too short for the 8-byte header length");
  EXPECT_EQ(checkWeightFile(bytes, img.size(), size, nullptr, 0), "");
  // A length past the end is not read; nor is one beyond the limit, even in
  // a file large enough to hold it.
  std::string longer = img;
  longer[3] = 1; // + 2^24
  auto lb = reinterpret_cast<const unsigned char *>(longer.data());
  EXPECT_EQ(headerImageBytes(lb, 8, size), 8u);
  EXPECT_EQ(checkWeightFile(lb, 8, size, nullptr, 0),
            "header length " + std::to_string((1u << 24) + std::strlen(kTwo)) +
                " runs past the end of the file (" + std::to_string(size) +
                " bytes)");
  std::string huge(8, '\0');
  huge[3] = 0x10; // 268435456
  auto hb = reinterpret_cast<const unsigned char *>(huge.data());
  EXPECT_EQ(headerImageBytes(hb, 8, uint64_t(1) << 30), 8u);
  EXPECT_EQ(checkWeightFile(hb, 8, uint64_t(1) << 30, nullptr, 0),
            "header length 268435456 exceeds the 100000000-byte limit");
  std::string maxLength(8, '\xff');
  auto mb = reinterpret_cast<const unsigned char *>(maxLength.data());
  EXPECT_EQ(checkWeightFile(mb, 8, 100, nullptr, 0),
            "header length 18446744073709551615 runs past the end of the file "
            "(100 bytes)");
}

/// Manifest entries for kTwo's tensors as a compiler would record them.
struct Manifest {
  uint64_t data = 8 + std::strlen(kTwo);
  moert_weight_desc a{"a", "f", data + 0, 8, MOERT_BF16, 4, 1, 1};
  moert_weight_desc b{"b", "f", data + 8, 24, MOERT_F32, 2, 3, 2};
  std::string check() const {
    const moert_weight_desc *both[2] = {&a, &b};
    std::string img = image(kTwo, 32);
    return checkWeightFile(reinterpret_cast<const unsigned char *>(img.data()),
                           img.size(), img.size(), both, 2);
  }
};

TEST(Manifest, MatchingEntriesPass) { EXPECT_EQ(Manifest().check(), ""); }

TEST(Manifest, ReportsEachDifference) {
  Manifest m;
  m.b.name = "c";
  EXPECT_EQ(m.check(), "tensor 'c' is not in the file");
  m = Manifest();
  m.b.dtype = MOERT_F16;
  EXPECT_EQ(m.check(), "tensor 'b' is F32 in the file, but the model was "
                       "compiled for F16");
  m = Manifest();
  m.b.rows = 3;
  m.b.cols = 2;
  EXPECT_EQ(m.check(), "tensor 'b' has shape [2, 3] in the file, but the model "
                       "was compiled for [3, 2]");
  m = Manifest();
  m.a.rank = 2; // [4, 1]: the file says [4]
  EXPECT_EQ(m.check(), "tensor 'a' has shape [4] in the file, but the model "
                       "was compiled for [4, 1]");
  m = Manifest();
  m.b.offset += 4;
  EXPECT_EQ(m.check(), "tensor 'b' is at bytes [" + std::to_string(m.data + 8) +
                           ", " + std::to_string(m.data + 32) +
                           ") in the file, but the model was compiled for [" +
                           std::to_string(m.data + 12) + ", " +
                           std::to_string(m.data + 36) + ")");
  m = Manifest();
  m.a.size = 4;
  EXPECT_EQ(m.check(), "tensor 'a' is at bytes [" + std::to_string(m.data) +
                           ", " + std::to_string(m.data + 8) +
                           ") in the file, but the model was compiled for [" +
                           std::to_string(m.data) + ", " +
                           std::to_string(m.data + 4) + ")");
  m = Manifest();
  m.a.dtype = moert_dtype(7);
  EXPECT_EQ(m.check(), "the manifest gives tensor 'a' an unknown dtype (7)");
}

/// A quantised weight [rows, cols] is its raw blocks in the file: U8
/// [rows, cols / 32 * block bytes].
TEST(Manifest, QuantisedWeightsAreTheirBlocks) {
  const char *json =
      R"({"q":{"dtype":"U8","shape":[2,68],"data_offsets":[0,136]}})";
  uint64_t data = 8 + std::strlen(json);
  std::string img = image(json, 136);
  auto check = [&](const moert_weight_desc &w) {
    const moert_weight_desc *one[1] = {&w};
    return checkWeightFile(reinterpret_cast<const unsigned char *>(img.data()),
                           img.size(), img.size(), one, 1);
  };
  // Two rows of 64 elements: two 34-byte q8_0 blocks each.
  moert_weight_desc q{"q", "f", data, 136, MOERT_Q8_0, 2, 64, 2, 1};
  EXPECT_EQ(check(q), "");
  // As q4_0 the rows would be 36 bytes: not this file.
  q.dtype = MOERT_Q4_0;
  q.size = 72;
  EXPECT_EQ(check(q), "tensor 'q' has shape [2, 68] in the file, but the "
                      "model was compiled for [2, 36]");
  // Nor is an f32 [2, 68] weight.
  moert_weight_desc f{"q", "f", data, 544, MOERT_F32, 2, 68, 2, 0};
  EXPECT_EQ(check(f), "tensor 'q' is U8 in the file, but the model was "
                      "compiled for F32");
}

/// The quantised weights file must be the one written with the executable:
/// its "moe.build" metadata equals the program's.
TEST(Manifest, BuildIdOfTheWeightsFile) {
  auto check = [](const std::string &json, const char *build) {
    uint64_t data = 8 + json.size();
    std::string img = image(json, 68);
    moert_weight_desc q{"q", "f", data, 68, MOERT_Q8_0, 1, 64, 2, 1};
    const moert_weight_desc *one[1] = {&q};
    return checkWeightFile(reinterpret_cast<const unsigned char *>(img.data()),
                           img.size(), img.size(), one, 1, build);
  };
  const std::string tensor =
      R"("q":{"dtype":"U8","shape":[1,68],"data_offsets":[0,68]})";
  std::string ours =
      R"({"__metadata__":{"producer":"moe-compile","moe.build":"0123abcd"},)" +
      tensor + "}";
  EXPECT_EQ(check(ours, "0123abcd"), "");
  EXPECT_EQ(check(ours, nullptr), ""); // a model file: no build to match
  EXPECT_EQ(check(ours, "ffff0000"),
            "it was written by another moe-compile run (build '0123abcd', not "
            "'ffff0000'); the executable and its weights file are written "
            "together");
  EXPECT_EQ(check("{" + tensor + "}", "0123abcd"),
            "it was written by another moe-compile run (build unknown, not "
            "'0123abcd'); the executable and its weights file are written "
            "together");
}

} // namespace
