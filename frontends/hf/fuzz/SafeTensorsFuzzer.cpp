//===- SafeTensorsFuzzer.cpp - libFuzzer target for the parsers -*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Feeds arbitrary bytes to the safetensors header parser (as a whole file
// image) and to the index.json parser; the first byte picks which. Beyond
// "no crash, no sanitizer report", it checks the invariants the importer
// relies on for every header the parser accepts.
//
//===----------------------------------------------------------------------===//

#include "frontends/hf/SafeTensors.h"

#include <cstdlib>

using namespace mlir::moe::hf;

static void check(bool condition) {
  if (!condition)
    std::abort();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  llvm::StringRef input(reinterpret_cast<const char *>(data) + 1, size - 1);
  if (data[0] & 1) {
    auto index = parseSafeTensorsIndex("fuzz.index.json", input);
    if (!index) {
      llvm::consumeError(index.takeError());
      return 0;
    }
    for (const auto &kv : *index)
      check(!kv.second.empty() && kv.second.find('/') == std::string::npos);
    return 0;
  }
  auto header = parseSafeTensorsImage("fuzz.safetensors", input);
  if (!header) {
    llvm::consumeError(header.takeError());
    return 0;
  }
  check(header->dataOffset + header->dataSize == input.size());
  uint64_t previousEnd = 0;
  for (const TensorInfo &t : header->tensors) {
    check(t.begin <= t.end && t.end <= header->dataSize);
    uint64_t elements = 1;
    for (int64_t d : t.shape)
      elements *= static_cast<uint64_t>(d);
    check(elements * bytesPerElement(t.dtype) == t.end - t.begin);
    if (t.begin != t.end) {
      check(t.begin >= previousEnd); // sorted, no overlap
      previousEnd = t.end;
    }
  }
  return 0;
}
