//===- SafeTensorsTest.cpp - safetensors header parser ----------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Parser rules that the importer-level lit tests do not reach: each test
// builds a file image by hand and checks the exact outcome.
//
//===----------------------------------------------------------------------===//

#include "frontends/hf/SafeTensors.h"

#include "llvm/Support/Endian.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FileUtilities.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

using namespace llvm;
using namespace mlir::moe::hf;

namespace {

/// length prefix + header + `dataBytes` zero bytes.
std::string image(StringRef header, size_t dataBytes) {
  std::string out(8, '\0');
  support::endian::write64le(out.data(), header.size());
  out += header.str();
  out.append(dataBytes, '\0');
  return out;
}

std::string errorOf(Expected<SafeTensorsHeader> result) {
  if (result)
    return "<success>";
  return toString(result.takeError());
}

TEST(SafeTensors, AcceptsEmptyTensorsAndMetadata) {
  auto header =
      parseSafeTensorsImage("f", image(R"({"__metadata__": {"format": "pt"},
                    "b": {"dtype": "BF16", "shape": [2], "data_offsets": [8, 12]},
                    "e": {"dtype": "F32", "shape": [0, 5], "data_offsets": [8, 8]},
                    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})",
                                       12));
  ASSERT_TRUE(bool(header)) << toString(header.takeError());
  // File order (by offset), metadata skipped, empty tensor kept.
  ASSERT_EQ(header->tensors.size(), 3u);
  EXPECT_EQ(header->tensors[0].name, "a");
  EXPECT_EQ(header->tensors[1].name, "e");
  EXPECT_EQ(header->tensors[2].name, "b");
  EXPECT_EQ(header->tensors[2].dtype, STDType::BF16);
  EXPECT_EQ(header->dataSize, 12u);
  EXPECT_EQ(header->byName.lookup("b"), 2u);
}

TEST(SafeTensors, RejectsMetadataThatIsNotStrings) {
  EXPECT_EQ(errorOf(parseSafeTensorsImage(
                "f", image(R"({"__metadata__": {"n": 3}})", 0))),
            "f: '__metadata__' value for 'n' must be a string");
}

TEST(SafeTensors, RejectsUnknownEntryKeys) {
  EXPECT_EQ(errorOf(parseSafeTensorsImage(
                "f", image(R"({"a": {"dtype": "F32", "shape": [1],
                               "data_offsets": [0, 4], "stride": [1]}})",
                           4))),
            "f: tensor 'a': unexpected key 'stride'");
}

TEST(SafeTensors, RejectsShapeOverflow) {
  EXPECT_EQ(errorOf(parseSafeTensorsImage("f", image(R"({"a": {"dtype": "F32",
                                     "shape": [4294967296, 4294967296, 16],
                                     "data_offsets": [0, 4]}})",
                                                     4))),
            "f: tensor 'a': shape [4294967296, 4294967296, 16] overflows");
}

TEST(SafeTensors, RejectsUnknownDTypeAndBadShapes) {
  EXPECT_EQ(errorOf(parseSafeTensorsImage(
                "f", image(R"({"a": {"dtype": "F4", "shape": [1],
                                     "data_offsets": [0, 1]}})",
                           1))),
            "f: tensor 'a': unknown dtype 'F4'");
  EXPECT_EQ(errorOf(parseSafeTensorsImage(
                "f", image(R"({"a": {"dtype": "F32", "shape": [-1],
                                     "data_offsets": [0, 4]}})",
                           4))),
            "f: tensor 'a': shape entries must be non-negative integers");
  EXPECT_EQ(errorOf(parseSafeTensorsImage(
                "f", image(R"({"a": {"dtype": "F32", "shape": [1],
                                     "data_offsets": [0]}})",
                           4))),
            "f: tensor 'a': 'data_offsets' must be an array [begin, end]");
}

TEST(SafeTensors, RejectsHeaderAboveLimit) {
  // A sparse file larger than the limit whose prefix claims a huge header.
  SmallString<128> path;
  int fd = -1;
  ASSERT_FALSE(sys::fs::createTemporaryFile("moe-st", "safetensors", fd, path));
  FileRemover remover(path);
  {
    raw_fd_ostream os(fd, /*shouldClose=*/true);
    char prefix[8];
    support::endian::write64le(prefix, kMaxHeaderBytes + 1);
    os.write(prefix, 8);
    os.flush();
    ASSERT_FALSE(sys::fs::resize_file(fd, 2 * kMaxHeaderBytes));
  }
  EXPECT_EQ(errorOf(readSafeTensorsHeader(path)),
            (path + ": header length 100000001 exceeds the 100000000-byte "
                    "limit")
                .str());
}

TEST(SafeTensors, IndexRules) {
  auto ok = parseSafeTensorsIndex(
      "i", R"({"metadata": {}, "weight_map": {"a": "s1", "b": "s2"}})");
  ASSERT_TRUE(bool(ok));
  EXPECT_EQ(ok->lookup("b"), "s2");
  auto message = [](Expected<StringMap<std::string>> r) {
    return r ? std::string("<success>") : toString(r.takeError());
  };
  EXPECT_EQ(message(parseSafeTensorsIndex("i", R"({"weight_map": {}})")),
            "i: 'weight_map' is empty");
  EXPECT_EQ(message(parseSafeTensorsIndex("i", R"({"weight_map": {"a": 1}})")),
            "i: weight_map entry for 'a' must be a string");
  EXPECT_EQ(
      message(parseSafeTensorsIndex("i", R"({"weight_map": {"a": "d/s"}})")),
      "i: weight_map entry for 'a' names 'd/s', which is not a plain "
      "file name");
  EXPECT_EQ(message(parseSafeTensorsIndex("i", R"([1])")),
            "i: not a JSON object");
}

} // namespace
