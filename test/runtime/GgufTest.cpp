//===- GgufTest.cpp - the GGUF header parser ---------------------*- C++
//-*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// gguf::parse, which the GGUF frontend and libmoert share: what it accepts
// (every value type, every accepted ggml type, versions 2 and 3), and the
// exact message for each way a file can be wrong. Files are built in memory
// with the small writer below.
//
//===----------------------------------------------------------------------===//

#include "gguf.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

using namespace moert::gguf;

namespace {

constexpr uint32_t kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ8_0 = 8,
                   kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kBF16 = 30;

/// Little-endian bytes of `v`.
std::string le(uint64_t v, unsigned bytes) {
  std::string s;
  for (unsigned i = 0; i < bytes; ++i)
    s += char(v >> (8 * i) & 0xff);
  return s;
}
std::string u32(uint32_t v) { return le(v, 4); }
std::string u64(uint64_t v) { return le(v, 8); }
std::string f32(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return u32(bits);
}
std::string f64(double d) {
  uint64_t bits;
  std::memcpy(&bits, &d, 8);
  return u64(bits);
}
/// A gguf_string.
std::string str(const std::string &s) { return u64(s.size()) + s; }
/// An array value (after its ARRAY type): element type, count, elements.
std::string arr(ValueType elem, uint64_t count, const std::string &elements) {
  return u32(uint32_t(elem)) + u64(count) + elements;
}

/// A GGUF file under construction.
struct Gguf {
  uint32_t version = 3;
  std::string kvs, infos;
  uint64_t kvCount = 0, tensorCount = 0;
  uint64_t alignment = 32;
  /// Bytes of data after the padding.
  uint64_t dataBytes = 0;

  /// A key-value pair; `value` is the encoded value.
  Gguf &kv(const std::string &key, ValueType type, const std::string &value) {
    kvs += str(key) + u32(uint32_t(type)) + value;
    ++kvCount;
    return *this;
  }
  Gguf &tensor(const std::string &name, const std::vector<uint64_t> &dims,
               uint32_t type, uint64_t offset) {
    infos += str(name) + u32(uint32_t(dims.size()));
    for (uint64_t d : dims)
      infos += u64(d);
    infos += u32(type) + u64(offset);
    ++tensorCount;
    return *this;
  }
  /// The header without padding or data.
  std::string header() const {
    return "GGUF" + u32(version) + u64(tensorCount) + u64(kvCount) + kvs +
           infos;
  }
  std::string bytes() const {
    std::string h = header();
    h += std::string((alignment - h.size() % alignment) % alignment, '\0');
    return h + std::string(dataBytes, '\x5a');
  }
};

std::string parseError(const std::string &image) {
  File f;
  return parse(reinterpret_cast<const unsigned char *>(image.data()),
               image.size(), f);
}

std::string sizeOf(const std::string &image) {
  return std::to_string(image.size());
}

TEST(Gguf, ParsesEveryValueTypeAndTensorType) {
  Gguf g;
  g.kv("u8", ValueType::UINT8, le(200, 1))
      .kv("i8", ValueType::INT8, le(uint8_t(-100), 1))
      .kv("u16", ValueType::UINT16, le(60000, 2))
      .kv("i16", ValueType::INT16, le(uint16_t(-30000), 2))
      .kv("u32", ValueType::UINT32, u32(4000000000u))
      .kv("i32", ValueType::INT32, u32(uint32_t(-2000000000)))
      .kv("f32", ValueType::FLOAT32, f32(1.5f))
      .kv("bool", ValueType::BOOL, le(1, 1))
      .kv("str", ValueType::STRING, str("h\xc3\xa9llo\xff")) // bytes kept
      .kv("u64", ValueType::UINT64, u64(0x8000000000000005ull))
      .kv("i64", ValueType::INT64, u64(uint64_t(-(int64_t(1) << 62))))
      .kv("f64", ValueType::FLOAT64, f64(-0.25))
      .kv("tokens", ValueType::ARRAY,
          arr(ValueType::STRING, 3,
              str("<s>") + str("") + str("\xe2\x96\x81the")))
      .kv("scores", ValueType::ARRAY,
          arr(ValueType::FLOAT32, 2, f32(0.5f) + f32(-2.0f)))
      .kv("types", ValueType::ARRAY,
          arr(ValueType::INT32, 3, u32(uint32_t(-1)) + u32(0) + u32(7)))
      .kv("bytes", ValueType::ARRAY, arr(ValueType::UINT8, 2, "\x01\xff"))
      .kv("flags", ValueType::ARRAY,
          arr(ValueType::BOOL, 2, std::string("\x01\x00", 2)))
      .kv("f64s", ValueType::ARRAY, arr(ValueType::FLOAT64, 1, f64(3.25)))
      .kv("nested", ValueType::ARRAY,
          arr(ValueType::ARRAY, 2,
              arr(ValueType::INT16, 2, le(1, 2) + le(uint16_t(-2), 2)) +
                  arr(ValueType::STRING, 1, str("x"))))
      .kv("empty", ValueType::ARRAY, arr(ValueType::UINT64, 0, ""))
      .kv("general.alignment", ValueType::UINT32, u32(64));
  g.alignment = 64;
  // One tensor of each accepted type, data offsets multiples of 64.
  g.tensor("f32", {4, 2}, kF32, 0)               // 32 bytes
      .tensor("f16", {4}, kF16, 64)              // 8
      .tensor("bf16", {2, 2}, kBF16, 128)        // 8
      .tensor("q4_0", {32, 3}, kQ4_0, 192)       // 54
      .tensor("q4_1", {64}, kQ4_1, 256)          // 40
      .tensor("q8_0", {32, 1, 1, 2}, kQ8_0, 320) // 68
      .tensor("q4_k", {256, 2}, kQ4_K, 448)      // 288
      .tensor("q6_k", {512}, kQ6_K, 768)         // 420
      .tensor("q5_k", {256}, kQ5_K, 1216)        // 176
      .tensor("empty", {0, 3}, kF32, 1408);      // 0, at the very end
  g.dataBytes = 1408;
  std::string image = g.bytes();
  File f;
  ASSERT_EQ(parse(reinterpret_cast<const unsigned char *>(image.data()),
                  image.size(), f),
            "");
  EXPECT_EQ(f.version, 3u);
  EXPECT_EQ(f.alignment, 64u);
  uint64_t headerSize = g.header().size();
  EXPECT_EQ(f.dataOffset, (headerSize + 63) / 64 * 64);
  EXPECT_EQ(f.dataOffset + 1408, image.size());

  ASSERT_EQ(f.metadata.size(), 21u);
  EXPECT_EQ(f.metadata[0].first, "u8");
  EXPECT_EQ(f.metadata[20].first, "general.alignment");
  EXPECT_EQ(f.find("u8")->asUInt(), 200u);
  EXPECT_EQ(f.find("u8")->asInt(), 200);
  EXPECT_TRUE(f.find("u8")->isInteger());
  EXPECT_EQ(f.find("i8")->asInt(), -100);
  EXPECT_EQ(f.find("i8")->asUInt(), std::nullopt);
  EXPECT_EQ(f.find("i8")->type, ValueType::INT8);
  EXPECT_EQ(f.find("u16")->asUInt(), 60000u);
  EXPECT_EQ(f.find("i16")->asInt(), -30000);
  EXPECT_EQ(f.find("u32")->asUInt(), 4000000000u);
  EXPECT_EQ(f.find("i32")->asInt(), -2000000000);
  EXPECT_EQ(f.find("f32")->asFloat(), 1.5);
  EXPECT_EQ(f.find("f32")->asInt(), std::nullopt);
  EXPECT_FALSE(f.find("f32")->isInteger());
  EXPECT_EQ(f.find("bool")->asBool(), true);
  EXPECT_FALSE(f.find("bool")->isInteger());
  EXPECT_EQ(f.find("bool")->asUInt(), std::nullopt);
  ASSERT_NE(f.find("str")->asString(), nullptr);
  EXPECT_EQ(*f.find("str")->asString(), "h\xc3\xa9llo\xff");
  EXPECT_EQ(f.find("u8")->asString(), nullptr);
  EXPECT_EQ(f.find("u64")->asUInt(), 0x8000000000000005ull);
  EXPECT_EQ(f.find("u64")->asInt(), std::nullopt);
  EXPECT_EQ(f.find("i64")->asInt(), -(int64_t(1) << 62));
  EXPECT_EQ(f.find("f64")->asFloat(), -0.25);
  EXPECT_EQ(f.find("f64")->asBool(), std::nullopt);

  const Value *tokens = f.find("tokens");
  ASSERT_NE(tokens, nullptr);
  EXPECT_TRUE(tokens->isArray());
  EXPECT_EQ(tokens->elemType, ValueType::STRING);
  EXPECT_EQ(tokens->count, 3u);
  EXPECT_EQ(tokens->strings,
            std::vector<std::string>({"<s>", "", "\xe2\x96\x81the"}));
  EXPECT_EQ(tokens->asUInt(), std::nullopt);
  EXPECT_EQ(f.find("scores")->floats, std::vector<double>({0.5, -2.0}));
  EXPECT_EQ(f.find("types")->ints, std::vector<int64_t>({-1, 0, 7}));
  EXPECT_EQ(f.find("bytes")->uints, std::vector<uint64_t>({1, 255}));
  EXPECT_EQ(f.find("flags")->uints, std::vector<uint64_t>({1, 0}));
  EXPECT_EQ(f.find("f64s")->floats, std::vector<double>({3.25}));
  const Value *nested = f.find("nested");
  ASSERT_EQ(nested->arrays.size(), 2u);
  EXPECT_EQ(nested->count, 2u);
  EXPECT_EQ(nested->arrays[0].elemType, ValueType::INT16);
  EXPECT_EQ(nested->arrays[0].ints, std::vector<int64_t>({1, -2}));
  EXPECT_EQ(nested->arrays[1].strings, std::vector<std::string>({"x"}));
  EXPECT_EQ(f.find("empty")->count, 0u);
  EXPECT_EQ(f.find("empty")->elemType, ValueType::UINT64);
  EXPECT_EQ(f.find("missing"), nullptr);

  ASSERT_EQ(f.tensors.size(), 10u);
  struct Want {
    const char *name;
    uint32_t type;
    uint64_t offset, bytes;
    std::vector<uint64_t> shape;
  } want[] = {
      {"f32", kF32, 0, 32, {2, 4}},
      {"f16", kF16, 64, 8, {4}},
      {"bf16", kBF16, 128, 8, {2, 2}},
      {"q4_0", kQ4_0, 192, 54, {3, 32}},
      {"q4_1", kQ4_1, 256, 40, {64}},
      {"q8_0", kQ8_0, 320, 68, {2, 1, 1, 32}},
      {"q4_k", kQ4_K, 448, 288, {2, 256}},
      {"q6_k", kQ6_K, 768, 420, {512}},
      {"q5_k", kQ5_K, 1216, 176, {256}},
      {"empty", kF32, 1408, 0, {3, 0}},
  };
  for (size_t i = 0; i < 10; ++i) {
    const TensorInfo &t = f.tensors[i];
    EXPECT_EQ(t.name, want[i].name);
    EXPECT_EQ(t.type, want[i].type) << t.name;
    EXPECT_EQ(t.offset, f.dataOffset + want[i].offset) << t.name;
    EXPECT_EQ(t.bytes, want[i].bytes) << t.name;
    EXPECT_EQ(t.shape(), want[i].shape) << t.name;
    EXPECT_EQ(f.findTensor(want[i].name), &t);
  }
  EXPECT_EQ(f.tensors[0].dims, std::vector<uint64_t>({4, 2}));
  EXPECT_EQ(f.tensors[5].elements(), 64u);
  EXPECT_EQ(f.findTensor("q5_0"), nullptr);
}

TEST(Gguf, AcceptsVersion2AndTheDefaultAlignment) {
  Gguf g;
  g.version = 2;
  g.kv("general.architecture", ValueType::STRING, str("llama"))
      .tensor("a", {8}, kF32, 0)
      .tensor("b", {8}, kF16, 32);
  g.dataBytes = 48;
  std::string image = g.bytes();
  File f;
  ASSERT_EQ(parse(reinterpret_cast<const unsigned char *>(image.data()),
                  image.size(), f),
            "");
  EXPECT_EQ(f.version, 2u);
  EXPECT_EQ(f.alignment, 32u);
  EXPECT_EQ(f.dataOffset % 32, 0u);
  EXPECT_EQ(f.tensors[1].offset, f.dataOffset + 32);
  EXPECT_EQ(*f.find("general.architecture")->asString(), "llama");

  // Nothing but the fixed header and its padding; another alignment.
  Gguf empty;
  EXPECT_EQ(parseError(empty.bytes()), "");
  empty.kv("general.alignment", ValueType::UINT32, u32(8));
  empty.alignment = 8;
  EXPECT_EQ(parseError(empty.bytes()), "");
}

TEST(Gguf, LookupsScale) {
  Gguf g;
  for (int i = 0; i < 20000; ++i)
    g.kv("k." + std::to_string(i), ValueType::UINT32, u32(uint32_t(i)));
  for (int i = 0; i < 5000; ++i)
    g.tensor("t." + std::to_string(i), {8}, kF32, uint64_t(i) * 32);
  g.dataBytes = 5000 * 32;
  std::string image = g.bytes();
  File f;
  ASSERT_EQ(parse(reinterpret_cast<const unsigned char *>(image.data()),
                  image.size(), f),
            "");
  for (int i = 0; i < 20000; i += 7)
    EXPECT_EQ(f.find("k." + std::to_string(i))->asUInt(), uint64_t(i));
  for (int i = 0; i < 5000; i += 7)
    EXPECT_EQ(f.findTensor("t." + std::to_string(i)), &f.tensors[size_t(i)]);
  // A File changed by hand still finds what it holds.
  f.metadata.emplace_back("added", Value());
  EXPECT_NE(f.find("added"), nullptr);
}

TEST(Gguf, RejectsBadFixedHeader) {
  EXPECT_EQ(parseError(""), "file is 0 bytes, shorter than the 24-byte GGUF "
                            "header");
  EXPECT_EQ(parseError("GGUF" + u32(3)),
            "file is 8 bytes, shorter than the 24-byte GGUF header");
  Gguf g;
  std::string image = g.bytes();
  image.replace(0, 4, "GGML");
  EXPECT_EQ(parseError(image),
            "not a GGUF file: it starts with 'GGML', not 'GGUF'");
  EXPECT_EQ(parseError("\x89PNG\r\n\x1a\n"),
            "not a GGUF file: it starts with '\\x89PNG', not 'GGUF'");
  g.version = 1;
  EXPECT_EQ(parseError(g.bytes()), "unsupported GGUF version 1");
  g.version = 4;
  EXPECT_EQ(parseError(g.bytes()), "unsupported GGUF version 4");
  g.version = 0;
  EXPECT_EQ(parseError(g.bytes()), "unsupported GGUF version 0");
  g.version = 0x03000000; // bytes 00 00 00 03
  EXPECT_EQ(parseError(g.bytes()),
            "big-endian GGUF file (version 3, byte-swapped); only "
            "little-endian GGUF files are supported");
  g.version = 0x02000000;
  EXPECT_EQ(parseError(g.bytes()),
            "big-endian GGUF file (version 2, byte-swapped); only "
            "little-endian GGUF files are supported");
}

TEST(Gguf, RejectsCountsTheFileCannotHold) {
  // Checked before anything is allocated for them.
  Gguf g;
  g.kvCount = uint64_t(1) << 60;
  EXPECT_EQ(parseError(g.bytes()),
            "key-value count 1152921504606846976 is more than the 8 bytes "
            "after the header can hold (at least 13 bytes each)");
  g.kvCount = UINT64_MAX;
  EXPECT_EQ(parseError(g.bytes()),
            "key-value count 18446744073709551615 is more than the 8 bytes "
            "after the header can hold (at least 13 bytes each)");
  Gguf t;
  t.tensorCount = uint64_t(1) << 60;
  EXPECT_EQ(parseError(t.bytes()),
            "tensor count 1152921504606846976 is more than the 8 bytes after "
            "the key-value pairs can hold (at least 32 bytes each)");
  // Fits by size, but the infos are not there: data bytes read as a name.
  t.tensorCount = 1;
  t.alignment = 8;
  t.dataBytes = 40;
  EXPECT_EQ(parseError(t.bytes()),
            "tensor 0: name length 6510615555426900570 runs past the end of "
            "the file (64 bytes)");
}

TEST(Gguf, RejectsBadKeys) {
  Gguf g;
  g.kv("", ValueType::UINT8, "\x01");
  EXPECT_EQ(parseError(g.bytes()), "key-value pair 0: key is empty");
  Gguf nul;
  nul.kv("a", ValueType::UINT8, "\x01")
      .kv(std::string("b\0c", 3), ValueType::UINT8, "\x01");
  EXPECT_EQ(parseError(nul.bytes()),
            "key-value pair 1: key 'b\\x00c' contains a NUL byte");
  Gguf utf8;
  utf8.kv("a\xff", ValueType::UINT8, "\x01");
  EXPECT_EQ(parseError(utf8.bytes()),
            "key-value pair 0: key 'a\\xff' is not valid UTF-8");
  Gguf overlong;
  overlong.kv("\xc0\x80", ValueType::UINT8, "\x01");
  EXPECT_EQ(parseError(overlong.bytes()),
            "key-value pair 0: key '\\xc0\\x80' is not valid UTF-8");
  Gguf surrogate;
  surrogate.kv("\xed\xa0\x80", ValueType::UINT8, "\x01");
  EXPECT_EQ(parseError(surrogate.bytes()),
            "key-value pair 0: key '\\xed\\xa0\\x80' is not valid UTF-8");
  Gguf longKey;
  longKey.kv(std::string(kMaxNameBytes + 1, 'k'), ValueType::UINT8, "\x01");
  EXPECT_EQ(parseError(longKey.bytes()),
            "key-value pair 0: key is 65537 bytes, more than the 65536-byte "
            "limit");
  Gguf okKey;
  okKey.kv(std::string(kMaxNameBytes, 'k'), ValueType::UINT8, "\x01");
  EXPECT_EQ(parseError(okKey.bytes()), "");
  Gguf twice;
  twice.kv("k", ValueType::UINT8, "\x01")
      .kv("j", ValueType::UINT8, "\x01")
      .kv("k", ValueType::STRING, str("v"));
  EXPECT_EQ(parseError(twice.bytes()), "key 'k' appears twice");
  // The key's length itself past the end of the file.
  Gguf past;
  past.kvs = u64(100) + "abcdefgh";
  past.kvCount = 1;
  std::string image = past.header();
  EXPECT_EQ(parseError(image), "key-value pair 0: key length 100 runs past "
                               "the end of the file (" +
                                   sizeOf(image) + " bytes)");
}

TEST(Gguf, RejectsBadValues) {
  Gguf g;
  g.kv("name", ValueType::STRING, u64(1000) + "hello");
  std::string image = g.header();
  EXPECT_EQ(parseError(image), "key 'name': string length 1000 runs past the "
                               "end of the file (" +
                                   sizeOf(image) + " bytes)");
  Gguf unknown;
  unknown.kv("k", ValueType(13), u32(0));
  EXPECT_EQ(parseError(unknown.bytes()), "key 'k': unknown value type 13");
  Gguf huge;
  huge.kv("k", ValueType(0xffffffffu), "");
  EXPECT_EQ(parseError(huge.bytes()), "key 'k': unknown value type 4294967295");
  Gguf boolean;
  boolean.kv("k", ValueType::BOOL, "\x02");
  EXPECT_EQ(parseError(boolean.bytes()),
            "key 'k': BOOL value 2 is neither 0 nor 1");
  Gguf truncated;
  truncated.kv("k", ValueType::UINT64, "abc");
  image = truncated.header();
  EXPECT_EQ(parseError(image), "key 'k': value runs past the end of the file "
                               "(" +
                                   sizeOf(image) + " bytes)");
  Gguf noType;
  noType.kvs = str("key") + "\x01\x02";
  noType.kvCount = 1;
  image = noType.header();
  EXPECT_EQ(parseError(image), "key 'key': value type runs past the end of the "
                               "file (" +
                                   sizeOf(image) + " bytes)");
}

TEST(Gguf, RejectsBadArrays) {
  // count * 8 wraps around to 0 in 64 bits.
  Gguf g;
  g.kv("k", ValueType::ARRAY, arr(ValueType::UINT64, uint64_t(1) << 61, ""));
  std::string image = g.bytes();
  EXPECT_EQ(parseError(image), "key 'k': array of 2305843009213693952 UINT64 "
                               "elements runs past the end of the file (" +
                                   sizeOf(image) + " bytes)");
  Gguf strings;
  strings.kv("tokens", ValueType::ARRAY,
             arr(ValueType::STRING, UINT64_MAX, ""));
  image = strings.bytes();
  EXPECT_EQ(parseError(image),
            "key 'tokens': array of 18446744073709551615 STRING elements "
            "runs past the end of the file (" +
                sizeOf(image) + " bytes)");
  Gguf element;
  element.kv("tokens", ValueType::ARRAY,
             arr(ValueType::STRING, 2, str("a") + u64(99)));
  image = element.header();
  EXPECT_EQ(parseError(image), "key 'tokens': element 1: string length 99 "
                               "runs past the end of the file (" +
                                   sizeOf(image) + " bytes)");
  Gguf unknown;
  unknown.kv("k", ValueType::ARRAY, arr(ValueType(20), 0, ""));
  EXPECT_EQ(parseError(unknown.bytes()),
            "key 'k': array of unknown value type 20");
  Gguf deep;
  deep.kv("k", ValueType::ARRAY,
          arr(ValueType::ARRAY, 1,
              arr(ValueType::ARRAY, 1, arr(ValueType::UINT8, 0, ""))));
  EXPECT_EQ(parseError(deep.bytes()), "key 'k': element 0: arrays nested "
                                      "more than 2 deep");
  Gguf inner;
  inner.kv("k", ValueType::ARRAY,
           arr(ValueType::ARRAY, 2,
               arr(ValueType::UINT8, 0, "") + arr(ValueType(99), 0, "")));
  EXPECT_EQ(parseError(inner.bytes()),
            "key 'k': element 1: array of unknown value type 99");
  Gguf flags;
  flags.kv("k", ValueType::ARRAY,
           arr(ValueType::BOOL, 3, std::string("\x01\x00\x07", 3)));
  EXPECT_EQ(parseError(flags.bytes()),
            "key 'k': element 2: BOOL value 7 is neither 0 nor 1");
}

TEST(Gguf, RejectsBadAlignment) {
  auto withAlignment = [](ValueType type, const std::string &value) {
    Gguf g;
    g.kv("general.alignment", type, value);
    g.alignment = 1;
    return parseError(g.bytes() + std::string(64, '\0'));
  };
  EXPECT_EQ(withAlignment(ValueType::UINT32, u32(0)),
            "key 'general.alignment' is 0, not a power of two");
  EXPECT_EQ(withAlignment(ValueType::UINT32, u32(3)),
            "key 'general.alignment' is 3, not a power of two");
  EXPECT_EQ(withAlignment(ValueType::UINT32, u32(1u << 21)),
            "key 'general.alignment' is 2097152, more than the 1048576 "
            "limit");
  EXPECT_EQ(withAlignment(ValueType::INT32, u32(32)),
            "key 'general.alignment' must be a UINT32, not INT32");
  EXPECT_EQ(withAlignment(ValueType::UINT64, u64(32)),
            "key 'general.alignment' must be a UINT32, not UINT64");
  EXPECT_EQ(withAlignment(ValueType::STRING, str("32")),
            "key 'general.alignment' must be a UINT32, not STRING");
  EXPECT_EQ(withAlignment(ValueType::UINT32, u32(1)), "");
}

TEST(Gguf, RejectsBadTensorInfos) {
  auto one = [](const std::vector<uint64_t> &dims, uint32_t type,
                uint64_t offset = 0, uint64_t data = 1024) {
    Gguf g;
    g.tensor("w", dims, type, offset);
    g.dataBytes = data;
    return parseError(g.bytes());
  };
  EXPECT_EQ(one({8}, 99), "tensor 'w': unknown ggml type id 99");
  EXPECT_EQ(one({8}, 4), "tensor 'w': unknown ggml type id 4");
  EXPECT_EQ(one({8}, 40), "tensor 'w': unknown ggml type id 40");
  EXPECT_EQ(one({32}, 6), "tensor 'w': unsupported ggml type 6 (Q5_0)");
  EXPECT_EQ(one({256}, 23), "tensor 'w': unsupported ggml type 23 (IQ4_XS)");
  EXPECT_EQ(one({256}, 39), "tensor 'w': unsupported ggml type 39 (MXFP4)");
  EXPECT_EQ(one({8}, 28), "tensor 'w': unsupported ggml type 28 (F64)");
  EXPECT_EQ(one({}, kF32), "tensor 'w': n_dims is 0, not between 1 and 4");
  EXPECT_EQ(one({1, 1, 1, 1, 1}, kF32),
            "tensor 'w': n_dims is 5, not between 1 and 4");
  EXPECT_EQ(one({uint64_t(1) << 32, uint64_t(1) << 32}, kF32),
            "tensor 'w': dims [4294967296, 4294967296] overflow int64");
  EXPECT_EQ(one({uint64_t(1) << 63, 0}, kF32),
            "tensor 'w': dims [9223372036854775808, 0] overflow int64");
  EXPECT_EQ(one({uint64_t(1) << 62}, kF32),
            "tensor 'w': F32 dims [4611686018427387904] take more than 2^64 "
            "bytes");
  EXPECT_EQ(one({33}, kQ4_0),
            "tensor 'w': row length 33 (dims[0]) is not a multiple of the "
            "Q4_0 block (32 elements)");
  EXPECT_EQ(one({32, 256}, kQ4_K),
            "tensor 'w': row length 32 (dims[0]) is not a multiple of the "
            "Q4_K block (256 elements)");
  EXPECT_EQ(one({8}, kF32, 8),
            "tensor 'w': offset 8 is not a multiple of the alignment (32)");
  EXPECT_EQ(one({16}, kF32, 0, 32),
            "tensor 'w': 64 bytes at data offset 0 run past the end of the "
            "file (the data section has 32 bytes)");
  EXPECT_EQ(one({8}, kF32, uint64_t(1) << 63),
            "tensor 'w': 32 bytes at data offset 9223372036854775808 run past "
            "the end of the file (the data section has 1024 bytes)");
  EXPECT_EQ(one({8}, kF32, 0, 32), "");
  EXPECT_EQ(one({0}, kF32, 32, 32), ""); // empty, at the end

  Gguf name;
  name.tensor("", {8}, kF32, 0);
  EXPECT_EQ(parseError(name.bytes()), "tensor 0: name is empty");
  Gguf utf8;
  utf8.tensor("a", {8}, kF32, 0).tensor("\xf5", {8}, kF32, 32);
  EXPECT_EQ(parseError(utf8.bytes()),
            "tensor 1: name '\\xf5' is not valid UTF-8");
  Gguf truncated;
  truncated.infos = str("w") + u32(2) + u64(8) + u64(1) + u32(kF32) + "abc";
  truncated.tensorCount = 1;
  std::string image = truncated.header(); // ends inside the offset
  EXPECT_EQ(parseError(image),
            "tensor 'w': offset runs past the end of the file (" +
                sizeOf(image) + " bytes)");
}

TEST(Gguf, RejectsDuplicateAndOverlappingTensors) {
  Gguf twice;
  twice.tensor("w", {8}, kF32, 0)
      .tensor("v", {8}, kF32, 32)
      .tensor("w", {8}, kF32, 64);
  twice.dataBytes = 96;
  EXPECT_EQ(parseError(twice.bytes()), "tensor 'w' appears twice");

  Gguf overlap;
  overlap.tensor("a", {16}, kF32, 0).tensor("b", {16}, kF32, 32);
  overlap.dataBytes = 96;
  EXPECT_EQ(parseError(overlap.bytes()),
            "tensors 'a' (data offsets [0, 64)) and 'b' (data offsets [32, "
            "96)) overlap");
  // In any order in the file; the same range twice.
  Gguf same;
  same.tensor("b", {8}, kF32, 64).tensor("a", {8}, kF32, 64);
  same.dataBytes = 96;
  EXPECT_EQ(parseError(same.bytes()),
            "tensors 'a' (data offsets [64, 96)) and 'b' (data offsets [64, "
            "96)) overlap");
  // Empty tensors hold no bytes, and touching ranges do not overlap.
  Gguf fine;
  fine.tensor("a", {8}, kF32, 32)
      .tensor("e", {0}, kF32, 32)
      .tensor("b", {8}, kF32, 0);
  fine.dataBytes = 64;
  EXPECT_EQ(parseError(fine.bytes()), "");
}

TEST(Gguf, RejectsADataSectionPastTheEnd) {
  Gguf g;
  g.tensor("e", {0}, kF32, 0);
  std::string image = g.header(); // 57 bytes, the padding cut off
  EXPECT_EQ(parseError(image), "the data section starts at byte 64, past "
                               "the end of the file (" +
                                   sizeOf(image) + " bytes)");
}

TEST(Gguf, KnowsTheGgmlTypes) {
  EXPECT_STREQ(typeName(0), "F32");
  EXPECT_STREQ(typeName(12), "Q4_K");
  EXPECT_STREQ(typeName(13), "Q5_K");
  EXPECT_STREQ(typeName(23), "IQ4_XS");
  EXPECT_STREQ(typeName(30), "BF16");
  EXPECT_STREQ(typeName(34), "TQ1_0");
  EXPECT_STREQ(typeName(35), "TQ2_0");
  EXPECT_STREQ(typeName(39), "MXFP4");
  EXPECT_EQ(typeName(4), nullptr);
  EXPECT_EQ(typeName(40), nullptr);
  uint64_t elems = 0, bytes = 0;
  EXPECT_TRUE(typeLayout(14, elems, bytes));
  EXPECT_EQ(elems, 256u);
  EXPECT_EQ(bytes, 210u);
  EXPECT_TRUE(typeLayout(8, elems, bytes));
  EXPECT_EQ(elems, 32u);
  EXPECT_EQ(bytes, 34u);
  EXPECT_TRUE(typeLayout(13, elems, bytes));
  EXPECT_EQ(elems, 256u);
  EXPECT_EQ(bytes, 176u);
  EXPECT_FALSE(typeLayout(6, elems, bytes));
  EXPECT_FALSE(typeLayout(23, elems, bytes));
  EXPECT_FALSE(typeLayout(1000, elems, bytes));
  int accepted = 0;
  for (uint32_t t = 0; t < 64; ++t)
    accepted += typeLayout(t, elems, bytes);
  EXPECT_EQ(accepted, 9);
  EXPECT_STREQ(valueTypeName(ValueType::FLOAT64), "FLOAT64");
  EXPECT_EQ(valueTypeName(ValueType(13)), nullptr);
}

TEST(Gguf, FailureLeavesAnEmptyFile) {
  Gguf g;
  g.kv("a", ValueType::UINT8, "\x01").tensor("w", {8}, 99, 0);
  std::string image = g.bytes();
  File f;
  f.version = 7;
  EXPECT_NE(parse(reinterpret_cast<const unsigned char *>(image.data()),
                  image.size(), f),
            "");
  EXPECT_EQ(f.version, 0u);
  EXPECT_TRUE(f.metadata.empty());
  EXPECT_TRUE(f.tensors.empty());
}

} // namespace
