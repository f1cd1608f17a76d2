//===- ONNXFuzzer.cpp - libFuzzer target for the ONNX frontend --*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Feeds arbitrary bytes to the ONNX frontend as a model file: the protobuf
// reader (ONNXProto.cpp) and the pattern raising (ONNXModel.cpp,
// ONNXDecomposed.cpp). External
// data is looked up in a scratch directory holding `concat.onnx.data` shaped
// as the seed's (fuzz/corpus/tiny-concat.onnx, the tiny model with fusion
// concat): its size, and the RoPE tables at the offsets the seed gives them,
// the weights zero (a sparse file). So mutations of the seed get through the
// whole pattern. A second seed, fuzz/corpus/torch-tiny.onnx, is the graph
// torch.onnx.export writes (test/Frontends/onnx/Inputs/torch-tiny.onnx,
// its data location renamed concat.onnx.data; its weights fit in the
// file): mutations of it drive the decomposed patterns (ONNXDecomposed.cpp)
// and the evaluator of the mask and RoPE subgraphs (ONNXEval.cpp). Beyond "no
// crash, no sanitizer report", every failure must be one message naming the
// file, and every model raised must validate with each weight inside the data
// file.
//
//===----------------------------------------------------------------------===//

#include "frontends/onnx/ONNXModel.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <unistd.h>
#include <vector>

using namespace mlir::moe;

static void check(bool condition) {
  if (!condition)
    std::abort();
}

/// The seed's data file: 1051904 bytes, cos_cache [512, 8] at 0 and
/// sin_cache at 16384 (theta 10000, head_dim 16), zeros elsewhere.
constexpr uint64_t kDataBytes = 1051904;

static char scratch[] = "/tmp/moe-onnx-fuzz-XXXXXX";
static std::string scratchFile;

static void removeScratch() {
  unlink(scratchFile.c_str());
  rmdir(scratch);
}

static std::string scratchDir() {
  check(mkdtemp(scratch) != nullptr);
  std::string dir = scratch;
  std::string path = scratchFile = dir + "/concat.onnx.data";
  std::atexit(removeScratch);
  std::FILE *f = std::fopen(path.c_str(), "wb");
  check(f != nullptr);
  std::vector<float> table(2 * 512 * 8);
  for (int p = 0; p < 512; ++p)
    for (int i = 0; i < 8; ++i) {
      double angle = p * std::pow(10000.0, -2.0 * i / 16.0);
      table[p * 8 + i] = float(std::cos(angle));
      table[512 * 8 + p * 8 + i] = float(std::sin(angle));
    }
  check(std::fwrite(table.data(), 4, table.size(), f) == table.size());
  check(ftruncate(fileno(f), off_t(kDataBytes)) == 0);
  std::fclose(f);
  return dir;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const std::string dir = scratchDir();
  llvm::StringRef bytes(reinterpret_cast<const char *>(data), size);
  llvm::Expected<onnxfe::RaisedModel> model =
      onnxfe::raiseModel("fuzz/model.onnx", dir, bytes);
  if (!model) {
    std::string message = llvm::toString(model.takeError());
    check(llvm::StringRef(message).starts_with("fuzz/model.onnx: "));
    return 0;
  }
  check(!model->spec.validate("fuzz"));
  for (const auto &w : model->weights)
    check(w.getValue().offset <= kDataBytes &&
          w.getValue().size <= kDataBytes - w.getValue().offset);
  return 0;
}
