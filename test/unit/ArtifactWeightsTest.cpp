//===- ArtifactWeightsTest.cpp - the artifact's weights file ----*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// planArtifactWeights / writeArtifactWeights on layouts the lit tests reach
// only in one chunk: odd shapes, every chunk size from one row up (so the
// transposition's strips and tiles have ragged edges), each dtype, and a
// layout with a quantisation on top. Expectations are computed here, by
// the naive index formula, from the bytes written to the source file.
//
//===----------------------------------------------------------------------===//

#include "compiler/common/ArtifactWeights.h"

#include "dialects/MoE/MoEOps.h"
#include "moert/quant.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <unistd.h>
#include <vector>

using namespace mlir;
using namespace mlir::moe;

namespace {

class ArtifactWeightsTest : public ::testing::Test {
protected:
  void SetUp() override {
    context.loadDialect<MoEDialect>();
    llvm::SmallString<128> d;
    ASSERT_FALSE(llvm::sys::fs::createUniqueDirectory("artifact-test", d));
    llvm::SmallString<128> abs(d);
    ASSERT_FALSE(llvm::sys::fs::make_absolute(abs));
    dir = std::string(abs);
  }
  void TearDown() override { llvm::sys::fs::remove_directories(dir); }

  /// Writes `bytes` as the model's file `name`.
  void writeFile(const std::string &name, const std::vector<char> &bytes) {
    std::error_code ec;
    llvm::raw_fd_ostream os(dir + "/" + name, ec);
    ASSERT_FALSE(ec);
    os.write(bytes.data(), bytes.size());
  }

  /// Plans and writes the artifact for `sources` (moe.weight_source ops)
  /// with `chunkBytes`; returns the file's bytes, `module` keeps the
  /// rewritten manifest.
  std::string build(const std::string &sources, uint64_t chunkBytes,
                    ArtifactWeightsPlan &plan) {
    std::string text = "module attributes {moe.weight_dir = \"" + dir +
                       "\"} {\n" + sources + "}\n";
    module = parseSourceString<ModuleOp>(text, &context);
    EXPECT_TRUE(module);
    if (!module)
      return "";
    FailureOr<ArtifactWeightsPlan> planned =
        planArtifactWeights(*module, "m.weights.safetensors");
    EXPECT_TRUE(succeeded(planned));
    plan = *planned;
    EXPECT_TRUE(succeeded(verify(*module)));
    std::string out;
    llvm::raw_string_ostream os(out);
    uint64_t last = 0;
    llvm::Error e = writeArtifactWeights(
        plan, os, [&](uint64_t done, uint64_t) { last = done; }, chunkBytes);
    EXPECT_FALSE(bool(e)) << llvm::toString(std::move(e));
    EXPECT_EQ(out.size(), plan.fileSize);
    EXPECT_EQ(last, plan.fileSize);
    return out;
  }

  MLIRContext context;
  OwningOpRef<ModuleOp> module;
  std::string dir;
};

/// Distinct bit patterns per element (no two equal), as `bytes`-byte words.
std::vector<char> pattern(int64_t count, int bytes, uint32_t seed) {
  std::vector<char> out(size_t(count * bytes));
  for (int64_t i = 0; i < count; ++i) {
    // A finite f32 / f16 / bf16 value's bits: exponent kept away from
    // all-ones.
    uint32_t v = uint32_t(i) * 2654435761u + seed;
    if (bytes == 4) {
      v = (v & 0x807fffffu) | 0x3c000000u;
      llvm::support::endian::write32le(out.data() + 4 * i, v);
    } else {
      uint16_t h = uint16_t((v & 0x83ffu) | 0x3800u);
      llvm::support::endian::write16le(out.data() + 2 * i, h);
    }
  }
  return out;
}

TEST_F(ArtifactWeightsTest, TransposedAndRowSelectionsAnyChunk) {
  // S: f32 [45, 37] (the weight [37, 45] transposed); R: f16 [31, 40], the
  // weight its rows 1, 4, ..., 28; H: bf16 [70, 33] transposed; an in-place
  // f32 vector stays out of the file.
  const int64_t sRows = 45, sCols = 37, rRows = 31, rCols = 40, hRows = 70,
                hCols = 33;
  std::vector<char> s = pattern(sRows * sCols, 4, 1),
                    r = pattern(rRows * rCols, 2, 2),
                    h = pattern(hRows * hCols, 2, 3);
  std::vector<char> file(s);
  uint64_t rAt = file.size();
  file.insert(file.end(), r.begin(), r.end());
  uint64_t hAt = file.size();
  file.insert(file.end(), h.begin(), h.end());
  uint64_t vAt = file.size();
  file.resize(file.size() + 64);
  writeFile("w.data", file);
  std::string sources = llvm::formatv(
      "moe.weight_source \"t\" in \"w.data\" at 0 : tensor<37x45xf32> "
      "transposed\n"
      "moe.weight_source \"r\" in \"w.data\" at {0} : tensor<10x40xf16> rows "
      "1 step 3 of tensor<31x40xf16>\n"
      "moe.weight_source \"h\" in \"w.data\" at {1} : tensor<33x70xbf16> "
      "transposed\n"
      "moe.weight_source \"v\" in \"w.data\" at {2} : tensor<16xf32>\n",
      rAt, hAt, vAt);

  // The expected data section, by the index formulas.
  std::string want;
  for (int64_t i = 0; i < sCols; ++i)
    for (int64_t j = 0; j < sRows; ++j)
      want.append(s.data() + 4 * (j * sCols + i), 4);
  for (int64_t i = 0; i < 10; ++i)
    want.append(r.data() + 2 * ((1 + 3 * i) * rCols), size_t(2 * rCols));
  for (int64_t i = 0; i < hCols; ++i)
    for (int64_t j = 0; j < hRows; ++j)
      want.append(h.data() + 2 * (j * hCols + i), 2);

  std::string first;
  for (uint64_t chunk : {uint64_t(1), uint64_t(100), uint64_t(333),
                         uint64_t(4096), uint64_t(16) << 20}) {
    ArtifactWeightsPlan plan;
    std::string out = build(sources, chunk, plan);
    ASSERT_EQ(plan.tensors.size(), 3u);
    EXPECT_EQ(plan.numRelaidOut(), 3u);
    EXPECT_EQ(plan.numQuantized(), 0u);
    ASSERT_GE(out.size(), plan.header.size());
    EXPECT_EQ(out.substr(plan.header.size()), want) << "chunk " << chunk;
    EXPECT_NE(plan.header.find("\"dtype\":\"BF16\",\"shape\":[33,70]"),
              std::string::npos)
        << plan.header;
    if (first.empty())
      first = out;
    EXPECT_EQ(out, first); // the same file whatever the chunk
    // The sources name the written bytes, in their own layout now.
    auto ops = llvm::to_vector(module->getOps<WeightSourceOp>());
    EXPECT_TRUE(ops[0].getArtifact() && !ops[0].hasLayout());
    EXPECT_EQ(ops[0].getOffset(), plan.tensors[0].offset);
    EXPECT_EQ(ops[1].getOffset(), plan.tensors[1].offset);
    EXPECT_EQ(ops[1].getSizeInBytes(), 10 * 40 * 2);
    EXPECT_FALSE(ops[3].getArtifact());
  }
}

TEST_F(ArtifactWeightsTest, TransposedThenQuantised) {
  // The file holds [64, 5] f32; the weight [5, 64] quantised to q8_0: each
  // row is a column of the file, quantised block by block.
  const int64_t rows = 5, cols = 64;
  std::vector<char> s = pattern(rows * cols, 4, 7);
  writeFile("q.data", s);
  ArtifactWeightsPlan plan;
  std::string out =
      build("moe.weight_source \"q\" in \"q.data\" at 0 : tensor<5x64xf32> "
            "transposed quantized to tensor<5x64x!moe.quant<q8_0>>\n",
            8, plan);
  EXPECT_EQ(plan.numQuantized(), 1u);
  EXPECT_EQ(plan.numRelaidOut(), 1u);
  std::string want;
  for (int64_t i = 0; i < rows; ++i) {
    float row[64];
    for (int64_t j = 0; j < cols; ++j) {
      uint32_t u =
          llvm::support::endian::read32le(s.data() + 4 * (j * rows + i));
      std::memcpy(&row[j], &u, 4);
    }
    for (int b = 0; b < 2; ++b) {
      moert::q8_0 block;
      moert::quantizeBlock(row + 32 * b, block);
      want.append(reinterpret_cast<const char *>(&block), sizeof(block));
    }
  }
  EXPECT_EQ(out.substr(plan.header.size()), want);
  auto source = *module->getOps<WeightSourceOp>().begin();
  EXPECT_TRUE(source.getArtifact());
  EXPECT_FALSE(source.getQuantized() || source.hasLayout());
  EXPECT_EQ(cast<RankedTensorType>(source.getType()),
            RankedTensorType::get({5, 64},
                                  QuantType::get(&context, QuantFormat::Q8_0)));
}

TEST_F(ArtifactWeightsTest, SplitScalesToBlocksAnyChunk) {
  // ONNX Runtime's QMoE layout: 6 rows of 64 4-bit values (two per byte,
  // the low nibble first) and one f16 scale per row (block_size 64, so
  // both 32-value blocks share it); the weight is rows 1, 3, 5 as q4_0.
  // Then 8-bit values, two f32 scales per row, all 4 rows, as q8_0.
  const int64_t rows = 6, cols = 64;
  std::vector<char> file(size_t(rows * cols / 2));
  for (size_t i = 0; i < file.size(); ++i)
    file[i] = char(i * 37 + 11);
  uint64_t scalesAt = file.size();
  for (int64_t r = 0; r < rows; ++r) {
    char b[2];
    llvm::support::endian::write16le(b, uint16_t(0x3c00 + 0x40 * r));
    file.insert(file.end(), b, b + 2);
  }
  uint64_t q8At = file.size();
  for (int64_t i = 0; i < 4 * cols; ++i)
    file.push_back(char(i * 13 + 5));
  uint64_t q8ScalesAt = file.size();
  for (int64_t i = 0; i < 8; ++i) {
    float f = 0.5f + 0.25f * float(i);
    char b[4];
    std::memcpy(b, &f, 4);
    file.insert(file.end(), b, b + 4);
  }
  writeFile("s.data", file);
  std::string sources = llvm::formatv(
      "moe.weight_source \"a\" in \"s.data\" at 0 : "
      "tensor<3x64x!moe.quant<q4_0>> rows 1 step 2 of "
      "tensor<6x64x!moe.quant<q4_0>> with scales at {0} : tensor<6x1xf16>\n"
      "moe.weight_source \"b\" in \"s.data\" at {1} : "
      "tensor<4x64x!moe.quant<q8_0>> with scales at {2} : tensor<4x2xf32>\n",
      scalesAt, q8At, q8ScalesAt);
  std::string want;
  for (int64_t r = 1; r < rows; r += 2) {
    const auto *v =
        reinterpret_cast<const uint8_t *>(file.data() + r * cols / 2);
    for (int64_t b = 0; b < 2; ++b) {
      moert::q4_0 block;
      block.d = uint16_t(0x3c00 + 0x40 * r);
      for (int j = 0; j < 16; ++j) {
        int64_t lo = b * 32 + j, hi = lo + 16; // values j and j + 16
        uint8_t nlo = (v[lo / 2] >> (4 * (lo % 2))) & 0xf;
        uint8_t nhi = (v[hi / 2] >> (4 * (hi % 2))) & 0xf;
        block.qs[j] = uint8_t(nlo | (nhi << 4));
      }
      want.append(reinterpret_cast<const char *>(&block), sizeof(block));
    }
  }
  for (int64_t r = 0; r < 4; ++r)
    for (int64_t b = 0; b < 2; ++b) {
      moert::q8_0 block;
      block.d = moert::floatToHalfBits(0.5f + 0.25f * float(r * 2 + b));
      for (int i = 0; i < 32; ++i)
        block.qs[i] =
            int8_t(int(uint8_t(file[q8At + r * cols + b * 32 + i])) - 128);
      want.append(reinterpret_cast<const char *>(&block), sizeof(block));
    }
  for (uint64_t chunk : {uint64_t(1), uint64_t(40), uint64_t(1) << 20}) {
    ArtifactWeightsPlan plan;
    std::string out = build(sources, chunk, plan);
    EXPECT_EQ(plan.numRelaidOut(), 2u);
    EXPECT_EQ(plan.numQuantized(), 0u);
    EXPECT_EQ(out.substr(plan.header.size()), want) << "chunk " << chunk;
  }
}

TEST_F(ArtifactWeightsTest, SplitScaleNotHalfIsAnError) {
  std::vector<char> file(32 + 4);
  float f = 0.1f; // not an f16 value
  std::memcpy(file.data() + 32, &f, 4);
  writeFile("s.data", file);
  std::string text = "module attributes {moe.weight_dir = \"" + dir +
                     "\"} {\nmoe.weight_source \"w\" in \"s.data\" at 0 : "
                     "tensor<1x32x!moe.quant<q8_0>> with scales at 32 : "
                     "tensor<1x1xf32>\n}\n";
  module = parseSourceString<ModuleOp>(text, &context);
  ASSERT_TRUE(module);
  FailureOr<ArtifactWeightsPlan> plan =
      planArtifactWeights(*module, "m.weights.safetensors");
  ASSERT_TRUE(succeeded(plan));
  std::string out;
  llvm::raw_string_ostream os(out);
  llvm::Error e = writeArtifactWeights(*plan, os, [](uint64_t, uint64_t) {});
  ASSERT_TRUE(bool(e));
  EXPECT_NE(llvm::toString(std::move(e))
                .find("the scale 1.000000e-01 of its "
                      "values [0, 0..31] is not an "
                      "f16"),
            std::string::npos);
}

/// A source cut short while the artifact is written (the file is opened
/// once, its size taken then): an error naming the weight and the file,
/// never the missing bytes read as zeros.
TEST_F(ArtifactWeightsTest, SourceTruncatedWhileWritingIsAnError) {
  writeFile("t.data", pattern(2 * 64 * 64, 4, 7));
  std::string text = "module attributes {moe.weight_dir = \"" + dir +
                     "\"} {\nmoe.weight_source \"a\" in \"t.data\" at 0 : "
                     "tensor<64x64xf32> transposed\nmoe.weight_source \"b\" "
                     "in \"t.data\" at 16384 : tensor<64x64xf32> "
                     "transposed\n}\n";
  module = parseSourceString<ModuleOp>(text, &context);
  ASSERT_TRUE(module);
  FailureOr<ArtifactWeightsPlan> plan =
      planArtifactWeights(*module, "m.weights.safetensors");
  ASSERT_TRUE(succeeded(plan));
  std::string out;
  llvm::raw_string_ostream os(out);
  // The first weight's last progress report (its rows written): the file
  // is open by then; cut it in the middle of the second weight.
  bool cut = false;
  llvm::Error e = writeArtifactWeights(
      *plan, os,
      [&](uint64_t done, uint64_t) {
        if (!cut && done >= plan->header.size() + 64 * 64 * 4) {
          cut = true;
          ASSERT_EQ(::truncate((dir + "/t.data").c_str(), 20000), 0);
        }
      },
      /*chunkBytes=*/1024);
  ASSERT_TRUE(cut);
  ASSERT_TRUE(bool(e));
  std::string message = llvm::toString(std::move(e));
  EXPECT_NE(message.find("weight 'b'"), std::string::npos) << message;
  EXPECT_NE(message.find(dir + "/t.data"), std::string::npos) << message;
}

/// A source that is not a regular file when the writer opens it: the error
/// names the weight too.
TEST_F(ArtifactWeightsTest, SourceNotARegularFileNamesTheWeight) {
  writeFile("f.data", pattern(64 * 64, 4, 7));
  std::string text = "module attributes {moe.weight_dir = \"" + dir +
                     "\"} {\nmoe.weight_source \"w\" in \"f.data\" at 0 : "
                     "tensor<64x64xf32> transposed\n}\n";
  module = parseSourceString<ModuleOp>(text, &context);
  ASSERT_TRUE(module);
  FailureOr<ArtifactWeightsPlan> plan =
      planArtifactWeights(*module, "m.weights.safetensors");
  ASSERT_TRUE(succeeded(plan));
  ASSERT_FALSE(llvm::sys::fs::remove(dir + "/f.data"));
  ASSERT_FALSE(llvm::sys::fs::create_directory(dir + "/f.data"));
  std::string out;
  llvm::raw_string_ostream os(out);
  llvm::Error e = writeArtifactWeights(*plan, os, [](uint64_t, uint64_t) {});
  ASSERT_TRUE(bool(e));
  std::string message = llvm::toString(std::move(e));
  EXPECT_NE(message.find("weight 'w'"), std::string::npos) << message;
  EXPECT_NE(message.find("is a directory"), std::string::npos) << message;
}

/// One row selected with a step so large that step times the row's bytes
/// wraps to 0 in 64 bits (the verifier lets a single row have any step):
/// the row itself, for floats and for values with their scales apart (the
/// chunk sizing divided by that product).
TEST_F(ArtifactWeightsTest, HugeStepOfOneRow) {
  std::vector<char> floats = pattern(2 * 64, 4, 3);
  writeFile("h.data", floats);
  std::vector<char> split(2 * 64 + 2 * 4);
  for (int i = 0; i < 2 * 64; ++i)
    split[size_t(i)] = char(i);
  float one = 1.0f;
  for (int r = 0; r < 2; ++r)
    std::memcpy(split.data() + 128 + 4 * r, &one, 4);
  writeFile("q.data", split);
  // 64 f32 columns: 256 bytes a row, times 2^56; 64 q8_0 values: 64 bytes
  // a row, times 2^58.
  std::string sources =
      "moe.weight_source \"f\" in \"h.data\" at 0 : tensor<1x64xf32> rows 1 "
      "step 72057594037927936 of tensor<2x64xf32>\n"
      "moe.weight_source \"q\" in \"q.data\" at 0 : "
      "tensor<1x64x!moe.quant<q8_0>> rows 1 step 288230376151711744 of "
      "tensor<2x64x!moe.quant<q8_0>> with scales at 128 : tensor<2x1xf32>\n";
  ArtifactWeightsPlan plan;
  std::string out = build(sources, 1 << 20, plan);
  ASSERT_EQ(plan.tensors.size(), 2u);
  std::string body = out.substr(plan.header.size());
  EXPECT_EQ(body.substr(0, 256), std::string(floats.data() + 256, 256));
  // q8_0: scale 1.0 (f16 0x3c00), then u - 128 of row 1's bytes 64..127.
  ASSERT_EQ(body.size(), 256u + 2 * 34);
  EXPECT_EQ(uint8_t(body[256]), 0x00);
  EXPECT_EQ(uint8_t(body[257]), 0x3c);
  EXPECT_EQ(uint8_t(body[258]), uint8_t(64 ^ 0x80));
}

} // namespace
