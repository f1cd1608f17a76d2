//===- ConfigFuzzer.cpp - libFuzzer target for config.json ------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Feeds arbitrary bytes to the config.json parser. Beyond "no crash, no
// sanitizer report, no stack overflow on deep nesting", every config it
// accepts must describe a model whose sizes the rest of the compiler can
// compute without overflow: the bounds ModelSpec::validate promises.
//
//===----------------------------------------------------------------------===//

#include "frontends/hf/Config.h"

#include <cstdlib>

using namespace mlir::moe;

static void check(bool condition) {
  if (!condition)
    std::abort();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::StringRef text(reinterpret_cast<const char *>(data), size);
  llvm::Expected<ModelSpec> spec = hf::parseConfig("fuzz/config.json", text);
  if (!spec) {
    std::string message = llvm::toString(spec.takeError());
    check(llvm::StringRef(message).starts_with("fuzz/config.json"));
    return 0;
  }
  check(!spec->validate("fuzz"));
  constexpr int64_t kMaxDim = int64_t(1) << 24;
  for (int64_t v :
       {spec->vocabSize, spec->hiddenSize, spec->intermediateSize,
        spec->numHeads, spec->numKvHeads, spec->headDim, spec->maxPositions})
    check(v >= 1 && v <= kMaxDim);
  check(spec->numLayers >= 1 && spec->numLayers <= 1024);
  check(spec->numExperts >= 1 && spec->numExperts <= 1024);
  check(spec->topK >= 1 && spec->topK <= spec->numExperts);
  check(spec->numHeads % spec->numKvHeads == 0 && spec->headDim % 2 == 0);
  check(int64_t(spec->layerWindows.size()) == spec->numLayers);
  check(expectedTensorCount(*spec) > 0);
  return 0;
}
