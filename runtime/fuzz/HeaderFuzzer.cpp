//===- HeaderFuzzer.cpp - libFuzzer target for the weight check -*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Feeds arbitrary bytes, as a whole weight file, to the check moert_model_load
// runs on every weight file: against a fixed manifest (the tensors of
// corpus/small.safetensors), and, for every header the parser accepts,
// against a manifest made from that header, which must pass, and one with a
// byte range moved, which must not. Beyond "no crash, no sanitizer report",
// it checks the invariants the runtime relies on for every accepted header.
//
//===----------------------------------------------------------------------===//

#include "header.h"

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace moert;

static void check(bool condition) {
  if (!condition)
    std::abort();
}

/// The tensors of corpus/small.safetensors (its header is 144 bytes).
static const moert_weight_desc kSmall[] = {
    {"a", "small.safetensors", 152, 8, MOERT_BF16, 4, 1, 1},
    {"b", "small.safetensors", 160, 24, MOERT_F32, 2, 3, 2},
};

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const moert_weight_desc *fixed[] = {&kSmall[0], &kSmall[1]};
  checkWeightFile(data, size, size, fixed, 2);

  uint64_t need = headerImageBytes(data, size, size);
  check(need <= size);
  if (size < 8 || need == 8)
    return 0;
  Header h;
  std::string error = parseHeader(reinterpret_cast<const char *>(data) + 8,
                                  size_t(need - 8), size, h);
  if (!error.empty())
    return 0;
  check(h.dataOffset == need);
  std::vector<moert_weight_desc> manifest;
  for (size_t i = 0; i < h.tensors.size(); ++i) {
    const HeaderTensor &t = h.tensors[i];
    check(!t.name.empty() && t.dtype && t.shape.size() <= kMaxRank);
    check(i == 0 || h.tensors[i - 1].name < t.name);
    check(t.begin <= t.end && t.end <= size - h.dataOffset);
    check(h.find(t.name.c_str()) == &t || t.name.find('\0') != t.name.npos);
    moert_dtype dtype;
    if (!std::strcmp(t.dtype, "F32"))
      dtype = MOERT_F32;
    else if (!std::strcmp(t.dtype, "F16"))
      dtype = MOERT_F16;
    else if (!std::strcmp(t.dtype, "BF16"))
      dtype = MOERT_BF16;
    else
      continue;
    if (t.shape.empty() || t.shape.size() > 2 ||
        t.name.find('\0') != t.name.npos)
      continue;
    int64_t rank = int64_t(t.shape.size());
    manifest.push_back({t.name.c_str(), "fuzz.safetensors",
                        h.dataOffset + t.begin, t.end - t.begin, dtype,
                        int64_t(t.shape[0]),
                        rank == 2 ? int64_t(t.shape[1]) : 1, rank});
  }
  std::vector<const moert_weight_desc *> all;
  for (const moert_weight_desc &w : manifest)
    all.push_back(&w);
  check(checkManifest(h, all.data(), all.size()).empty());
  check(checkWeightFile(data, size, size, all.data(), all.size()).empty());
  if (!manifest.empty()) {
    ++manifest.back().offset;
    check(!checkManifest(h, all.data(), all.size()).empty());
  }
  return 0;
}
