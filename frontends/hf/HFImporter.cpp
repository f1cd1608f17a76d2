//===- HFImporter.cpp - Hugging Face model directory importer ---*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "frontends/hf/HFImporter.h"

#include "frontends/InputFiles.h"
#include "frontends/ModelBuilder.h"
#include "frontends/hf/Problems.h"
#include "frontends/hf/SafeTensors.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <map>

using namespace llvm;
using mlir::moe::ModelSpec;
using mlir::moe::WeightDType;
using mlir::moe::WeightRole;
using mlir::moe::WeightSource;

namespace mlir::moe::hf {

namespace {
/// A tensor found in one of the model's files.
struct FoundTensor {
  std::string file; // relative to the model directory
  const TensorInfo *info;
  uint64_t dataOffset;
};

} // namespace

std::string tensorName(const ModelSpec &spec, WeightRole role, int64_t layer,
                       int64_t expert) {
  std::string l = "model.layers." + std::to_string(layer) + ".";
  std::string e =
      l + "block_sparse_moe.experts." + std::to_string(expert) + ".";
  switch (role) {
  case WeightRole::Embedding:
    return "model.embed_tokens.weight";
  case WeightRole::AttnNorm:
    return l + "input_layernorm.weight";
  case WeightRole::QProj:
    return l + "self_attn.q_proj.weight";
  case WeightRole::KProj:
    return l + "self_attn.k_proj.weight";
  case WeightRole::VProj:
    return l + "self_attn.v_proj.weight";
  case WeightRole::OProj:
    return l + "self_attn.o_proj.weight";
  case WeightRole::FfnNorm:
    return l + "post_attention_layernorm.weight";
  case WeightRole::RouterGate:
    return l + "block_sparse_moe.gate.weight";
  case WeightRole::ExpertGate:
    return e + "w1.weight";
  case WeightRole::ExpertDown:
    return e + "w2.weight";
  case WeightRole::ExpertUp:
    return e + "w3.weight";
  case WeightRole::FinalNorm:
    return "model.norm.weight";
  case WeightRole::LmHead:
    return spec.tieWordEmbeddings ? "model.embed_tokens.weight"
                                  : "lm_head.weight";
  }
  llvm_unreachable("unknown WeightRole");
}

/// Every tensor the config implies: name -> shape, in model order.
static std::vector<std::pair<std::string, SmallVector<int64_t, 2>>>
expectedTensors(const ModelSpec &spec) {
  std::vector<std::pair<std::string, SmallVector<int64_t, 2>>> out;
  auto add = [&](WeightRole role, int64_t layer = -1, int64_t expert = -1) {
    out.emplace_back(tensorName(spec, role, layer, expert),
                     weightShape(spec, role));
  };
  add(WeightRole::Embedding);
  for (int64_t l = 0; l < spec.numLayers; ++l) {
    for (WeightRole role :
         {WeightRole::AttnNorm, WeightRole::QProj, WeightRole::KProj,
          WeightRole::VProj, WeightRole::OProj, WeightRole::FfnNorm,
          WeightRole::RouterGate})
      add(role, l);
    for (int64_t e = 0; e < spec.numExperts; ++e)
      for (WeightRole role : {WeightRole::ExpertGate, WeightRole::ExpertDown,
                              WeightRole::ExpertUp})
        add(role, l, e);
  }
  add(WeightRole::FinalNorm);
  if (!spec.tieWordEmbeddings)
    add(WeightRole::LmHead);
  return out;
}

Expected<mlir::OwningOpRef<mlir::ModuleOp>>
importModel(mlir::MLIRContext &context, StringRef dirArg) {
  // The real path: `link/../model` is the `model` beside link's target, as
  // the file system resolves it, and the manifest names that directory.
  SmallString<256> dir;
  if (std::error_code ec = sys::fs::real_path(dirArg, dir))
    return createStringError(ec, dirArg + ": " +
                                     (ec == std::errc::no_such_file_or_directory
                                          ? "no such model directory"
                                          : "cannot access: " + ec.message()));
  if (!sys::fs::is_directory(dir))
    return createStringError(inconvertibleErrorCode(),
                             dir + ": not a model directory");
  auto inDir = [&](StringRef name) {
    SmallString<256> p(dir);
    sys::path::append(p, name);
    return std::string(p);
  };

  // config.json.
  std::string configPath = inDir("config.json");
  auto configText = readInputFile(configPath, 16 << 20);
  if (!configText)
    return configText.takeError();
  std::vector<std::string> warnings;
  Expected<ModelSpec> spec =
      parseConfig(configPath, (*configText)->getBuffer(), &warnings);
  if (!spec)
    return spec.takeError();
  // Through the context's diagnostics: the tools print them on stderr.
  for (const std::string &w : warnings)
    mlir::emitWarning(UnknownLoc::get(&context)) << w;

  // Which files hold the weights.
  Problems problems;
  std::string indexPath = inDir("model.safetensors.index.json");
  std::optional<StringMap<std::string>> index;
  std::vector<std::string> shards;
  Expected<bool> hasIndex = pathExists(indexPath);
  if (!hasIndex)
    return hasIndex.takeError();
  Expected<bool> hasSingle = pathExists(inDir("model.safetensors"));
  if (!hasSingle)
    return hasSingle.takeError();
  if (*hasIndex) {
    auto indexText = readInputFile(indexPath, 64 << 20);
    if (!indexText)
      return indexText.takeError();
    auto parsed = parseSafeTensorsIndex(indexPath, (*indexText)->getBuffer());
    if (!parsed)
      return parsed.takeError();
    index = std::move(*parsed);
    // Each shard, with the first tensor (by name) the index maps to it.
    std::map<std::string, std::string> firstTensorOfShard;
    for (const auto &kv : *index) {
      auto [it, inserted] =
          firstTensorOfShard.emplace(kv.second, kv.first().str());
      if (!inserted && kv.first() < it->second)
        it->second = kv.first().str();
    }
    for (const auto &[shard, tensor] : firstTensorOfShard) {
      Expected<bool> present = pathExists(inDir(shard));
      if (!present)
        problems.add(present.takeError());
      else if (!*present)
        problems.add(indexPath + ": names shard '" + shard + "' (for tensor '" +
                     tensor + "'), which does not exist");
      else
        shards.push_back(shard);
    }
  } else if (*hasSingle) {
    shards.push_back("model.safetensors");
  } else {
    return createStringError(inconvertibleErrorCode(),
                             dir + ": found neither model.safetensors nor "
                                   "model.safetensors.index.json");
  }

  // Headers only; keep them alive while TensorInfo pointers are in use.
  std::vector<SafeTensorsHeader> headers;
  headers.reserve(shards.size());
  StringMap<FoundTensor> found;
  for (const std::string &shard : shards) {
    std::string path = inDir(shard);
    Expected<SafeTensorsHeader> header = readSafeTensorsHeader(path);
    if (!header) {
      problems.add(header.takeError());
      continue;
    }
    headers.push_back(std::move(*header));
    const SafeTensorsHeader &h = headers.back();
    for (const TensorInfo &t : h.tensors) {
      auto [it, inserted] =
          found.try_emplace(t.name, FoundTensor{shard, &t, h.dataOffset});
      if (!inserted)
        problems.add("tensor '" + t.name + "' appears in both " +
                     it->second.file + " and " + shard);
      if (index) {
        auto mapped = index->find(t.name);
        if (mapped == index->end())
          problems.add(path + ": tensor '" + t.name +
                       "' is not listed in model.safetensors.index.json");
        else if (mapped->second != shard)
          problems.add(path + ": tensor '" + t.name + "' is mapped to " +
                       mapped->second + " by model.safetensors.index.json");
      }
    }
  }
  // Checking tensors against the config only makes sense when every file
  // could be read.
  if (!problems.empty())
    return problems.takeError();

  if (index)
    for (const auto &kv : *index)
      if (!found.count(kv.first()) && llvm::is_contained(shards, kv.second))
        problems.add(indexPath + ": maps tensor '" + kv.first().str() +
                     "' to " + kv.second + ", which does not contain it");

  // Compare counts before building name lists: a config.json that claims
  // 1024 layers of 1024 experts must not first build three million names.
  uint64_t implied = uint64_t(expectedTensorCount(*spec));
  if (implied > found.size() + Problems::kLimit)
    return createStringError(
        inconvertibleErrorCode(),
        formatv("{0}: config.json implies {1} tensors ({2} layers of {3} "
                "experts), but the weight files hold {4}: the config does not "
                "describe these files",
                dir, implied, spec->numLayers, spec->numExperts, found.size()));

  // Against the config: presence, shape, dtype; then anything left over.
  StringMap<WeightSource> sources;
  StringSet<> expected;
  for (const auto &[name, shape] : expectedTensors(*spec)) {
    expected.insert(name);
    auto it = found.find(name);
    if (it == found.end()) {
      if (!index || index->count(name) == 0)
        problems.add(dir + ": missing tensor '" + name +
                     "' (config.json implies shape " + formatShape(shape) +
                     ")");
      // else: reported above as mapped to a shard that lacks it.
      continue;
    }
    const FoundTensor &f = it->second;
    const TensorInfo &t = *f.info;
    std::string where = inDir(f.file);
    if (ArrayRef<int64_t>(t.shape) != ArrayRef<int64_t>(shape)) {
      problems.add(where + ": tensor '" + name + "' has shape " +
                   formatShape(t.shape) + " but config.json implies " +
                   formatShape(shape));
      continue;
    }
    WeightDType dtype;
    switch (t.dtype) {
    case STDType::F32:
      dtype = WeightDType::F32;
      break;
    case STDType::F16:
      dtype = WeightDType::F16;
      break;
    case STDType::BF16:
      dtype = WeightDType::BF16;
      break;
    default:
      problems.add(where + ": tensor '" + name + "' has dtype " +
                   stringifySTDType(t.dtype) + "; supported: F32, F16, BF16");
      continue;
    }
    // The kernels read elements in place: each must be aligned to its size
    // in the file (safetensors pads its header to 8 bytes; a file written
    // without padding is valid but cannot be mapped as it is).
    uint64_t offset = f.dataOffset + t.begin;
    if (offset % uint64_t(bytesPerElement(dtype)) != 0) {
      problems.add(formatv("{0}: tensor '{1}' starts at byte {2}, which is "
                           "not a multiple of its {3}-byte elements; re-save "
                           "the file with its header padded to 8 bytes",
                           where, name, offset, bytesPerElement(dtype)));
      continue;
    }
    sources[name] =
        WeightSource{f.file, f.dataOffset + t.begin, t.end - t.begin, dtype,
                     SmallVector<int64_t, 2>(t.shape.begin(), t.shape.end())};
  }
  std::vector<std::string> unexpected;
  for (const auto &kv : found)
    if (!expected.contains(kv.first()))
      unexpected.push_back(kv.first().str());
  llvm::sort(unexpected);
  for (const std::string &name : unexpected)
    problems.add(inDir(found.find(name)->second.file) +
                 ": unexpected tensor '" + name +
                 "' (not part of the model config.json describes)");
  if (!problems.empty())
    return problems.takeError();

  return buildModel(
      context, *spec,
      [&](WeightRole role, int64_t layer, int64_t expert) {
        return tensorName(*spec, role, layer, expert);
      },
      sources, dir);
}

} // namespace mlir::moe::hf
