//===- GGUFImporter.cpp - GGUF model file importer --------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "frontends/gguf/GGUFImporter.h"

#include "frontends/InputFiles.h"
#include "frontends/ModelBuilder.h"
#include "frontends/hf/Problems.h"
#include "runtime/src/gguf.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"

#include <cmath>
#include <cstring>

using namespace llvm;
namespace G = moert::gguf;

namespace mlir::moe::gguf {

namespace {

/// The architecture prefix of the hyper-parameter keys (llama.cpp stores
/// Mixtral as a llama model with experts).
constexpr const char *kArch = "llama";

std::optional<WeightDType> weightDType(uint32_t ggmlType) {
  using namespace G;
  switch (ggmlType) {
  case kF32:
    return WeightDType::F32;
  case kF16:
    return WeightDType::F16;
  case kBF16:
    return WeightDType::BF16;
  case kQ8_0:
    return WeightDType::Q8_0;
  case kQ4_0:
    return WeightDType::Q4_0;
  case kQ4_1:
    return WeightDType::Q4_1;
  case kQ4_K:
    return WeightDType::Q4_K;
  case kQ5_K:
    return WeightDType::Q5_K;
  case kQ6_K:
    return WeightDType::Q6_K;
  default:
    return std::nullopt;
  }
}

/// Reads the hyper-parameters; every problem goes to `problems`, prefixed
/// with the file.
class Metadata {
public:
  Metadata(const G::File &file, StringRef path, hf::Problems &problems)
      : file(file), path(path), problems(problems) {}

  /// The integer at `key` (a non-negative scalar of any integer type);
  /// `fallback` when absent, or a problem when there is none.
  int64_t integer(const std::string &key,
                  std::optional<int64_t> fallback = std::nullopt) {
    const G::Value *v = file.find(key);
    if (!v) {
      if (!fallback)
        problems.add(path + ": key '" + key + "' is missing");
      return fallback.value_or(0);
    }
    std::optional<uint64_t> u = v->asUInt();
    if (!u || *u > uint64_t(INT64_MAX)) {
      problems.add(path + ": key '" + key + "' must be a non-negative " +
                   "integer, got " + describe(*v));
      return 0;
    }
    return int64_t(*u);
  }

  /// The number at `key` (a float, or an integer), as integer() does.
  double number(const std::string &key,
                std::optional<double> fallback = std::nullopt) {
    const G::Value *v = file.find(key);
    if (!v) {
      if (!fallback)
        problems.add(path + ": key '" + key + "' is missing");
      return fallback.value_or(0);
    }
    if (std::optional<double> f = v->asFloat())
      return *f;
    if (std::optional<int64_t> i = v->asInt())
      return double(*i);
    problems.add(path + ": key '" + key + "' must be a number, got " +
                 describe(*v));
    return 0;
  }

  /// The string at `key`, or null when absent (a problem when it is not a
  /// string).
  const std::string *string(const std::string &key) {
    const G::Value *v = file.find(key);
    if (!v)
      return nullptr;
    if (const std::string *s = v->asString())
      return s;
    problems.add(path + ": key '" + key + "' must be a string, got " +
                 describe(*v));
    return nullptr;
  }

  /// "an ARRAY of 32 UINT32", "a FLOAT32 (0.5)", ...
  static std::string describe(const G::Value &v) {
    if (v.isArray())
      return formatv("an ARRAY of {0} {1}", v.count,
                     G::valueTypeName(v.elemType))
          .str();
    std::string type = G::valueTypeName(v.type);
    if (const std::string *s = v.asString())
      return "a STRING ('" + printableText(*s) + "')";
    std::string value;
    if (std::optional<int64_t> i = v.asInt())
      value = " (" + std::to_string(*i) + ")";
    else if (std::optional<uint64_t> u = v.asUInt())
      value = " (" + std::to_string(*u) + ")";
    else if (std::optional<double> f = v.asFloat())
      value = " (" + formatNumber(*f) + ")";
    else if (std::optional<bool> b = v.asBool())
      value = *b ? " (true)" : " (false)";
    bool vowel = type[0] == 'I' || type[0] == 'A'; // "a UINT32"
    return (vowel ? "an " : "a ") + type + value;
  }

private:
  const G::File &file;
  std::string path;
  hf::Problems &problems;
};

std::string layerPrefix(int64_t layer) {
  return "blk." + std::to_string(layer) + ".";
}

/// The stacked experts' tensor of a role, or empty.
const char *stackedExpertName(WeightRole role) {
  switch (role) {
  case WeightRole::ExpertGate:
    return "ffn_gate_exps";
  case WeightRole::ExpertDown:
    return "ffn_down_exps";
  case WeightRole::ExpertUp:
    return "ffn_up_exps";
  default:
    return "";
  }
}

} // namespace

bool isGGUFFile(StringRef path) {
  if (sys::fs::is_directory(path))
    return false;
  // By name, so that a damaged .gguf file gets the GGUF parser's message.
  if (sys::path::extension(path).equals_insensitive(".gguf"))
    return true;
  Expected<InputFile> file = InputFile::open(path);
  if (!file) {
    consumeError(file.takeError());
    return false;
  }
  if (file->size() < 4)
    return false;
  Expected<std::unique_ptr<MemoryBuffer>> magic = file->read(0, 4);
  if (!magic) {
    consumeError(magic.takeError());
    return false;
  }
  return (*magic)->getBuffer() == "GGUF";
}

std::string tensorName(const ModelSpec &spec, WeightRole role, int64_t layer,
                       int64_t expert, bool stackedExperts) {
  std::string l = layerPrefix(layer);
  switch (role) {
  case WeightRole::Embedding:
    return "token_embd.weight";
  case WeightRole::AttnNorm:
    return l + "attn_norm.weight";
  case WeightRole::QProj:
    return l + "attn_q.weight";
  case WeightRole::KProj:
    return l + "attn_k.weight";
  case WeightRole::VProj:
    return l + "attn_v.weight";
  case WeightRole::OProj:
    return l + "attn_output.weight";
  case WeightRole::FfnNorm:
    return l + "ffn_norm.weight";
  case WeightRole::RouterGate:
    return l + "ffn_gate_inp.weight";
  case WeightRole::ExpertGate:
  case WeightRole::ExpertDown:
  case WeightRole::ExpertUp: {
    const char *stacked = stackedExpertName(role);
    if (stackedExperts)
      return l + stacked + ".weight[" + std::to_string(expert) + "]";
    // Older files: blk.L.ffn_gate.E.weight.
    std::string base(stacked, std::strlen(stacked) - 5); // drop "_exps"
    return l + base + "." + std::to_string(expert) + ".weight";
  }
  case WeightRole::FinalNorm:
    return "output_norm.weight";
  case WeightRole::LmHead:
    return spec.tieWordEmbeddings ? "token_embd.weight" : "output.weight";
  }
  llvm_unreachable("unknown WeightRole");
}

Expected<MappedFile> mapFile(StringRef path) {
  Expected<InputFile> input = InputFile::open(path);
  if (!input)
    return input.takeError();
  Expected<std::unique_ptr<MemoryBuffer>> mapped = input->map();
  if (!mapped)
    return mapped.takeError();
  MappedFile result{std::move(*mapped), {}};
  std::string error = G::parse(
      reinterpret_cast<const unsigned char *>(result.buffer->getBufferStart()),
      result.buffer->getBufferSize(), result.header);
  if (!error.empty())
    return createStringError(inconvertibleErrorCode(), path + ": " + error);
  return std::move(result);
}

Expected<OwningOpRef<ModuleOp>> importModel(MLIRContext &context,
                                            StringRef pathArg) {
  Expected<std::string> realPath = realInputPath(pathArg);
  if (!realPath)
    return realPath.takeError();
  StringRef path = *realPath;
  Expected<MappedFile> mapped = mapFile(path);
  if (!mapped)
    return mapped.takeError();
  const G::File &file = mapped->header;

  hf::Problems problems;
  Metadata meta(file, path, problems);
  const std::string *arch = meta.string("general.architecture");
  if (!problems.empty())
    return problems.takeError();
  if (!arch)
    return createStringError(inconvertibleErrorCode(),
                             path + ": key 'general.architecture' is missing");
  if (*arch != kArch)
    return createStringError(
        inconvertibleErrorCode(),
        path + ": general.architecture is '" + printableText(*arch) +
            "'; moe-compile imports Mixtral models, which GGUF files store "
            "as 'llama' with llama.expert_count");
  std::string k = std::string(kArch) + ".";
  if (!file.find(k + "expert_count"))
    return createStringError(
        inconvertibleErrorCode(),
        path + ": key '" + k +
            "expert_count' is missing: a dense llama model, not a "
            "mixture of experts (moe-compile imports Mixtral models)");

  ModelSpec spec;
  spec.architecture = "mixtral";
  spec.numLayers = meta.integer(k + "block_count");
  spec.hiddenSize = meta.integer(k + "embedding_length");
  spec.intermediateSize = meta.integer(k + "feed_forward_length");
  spec.numHeads = meta.integer(k + "attention.head_count");
  spec.numKvHeads = meta.integer(k + "attention.head_count_kv", spec.numHeads);
  spec.numExperts = meta.integer(k + "expert_count");
  spec.topK = meta.integer(k + "expert_used_count");
  spec.maxPositions = meta.integer(k + "context_length");
  spec.rmsNormEps = meta.number(k + "attention.layer_norm_rms_epsilon");
  // llama.cpp's default when a file does not say.
  spec.ropeTheta = meta.number(k + "rope.freq_base", 10000.0);
  // llama.cpp's Mixtral renormalises the top-k weights, as transformers'.
  spec.normTopKProb = true;
  // The q and k rows are permuted for llama.cpp's RoPE: adjacent pairs.
  spec.ropeInterleaved = true;
  if (!problems.empty())
    return problems.takeError();
  // What ModelSpec::validate would say with the HF names, said with the
  // file's keys.
  auto atLeast = [&](const char *key, int64_t v, int64_t min) {
    if (file.find(k + key) && v < min)
      problems.add(formatv("{0}: key '{1}{2}' is {3}; it must be at least {4}",
                           path, k, key, v, min));
  };
  atLeast("block_count", spec.numLayers, 1);
  atLeast("embedding_length", spec.hiddenSize, 1);
  atLeast("feed_forward_length", spec.intermediateSize, 1);
  atLeast("attention.head_count", spec.numHeads, 1);
  atLeast("attention.head_count_kv", spec.numKvHeads, 1);
  atLeast("expert_count", spec.numExperts, 1);
  atLeast("expert_used_count", spec.topK, 1);
  atLeast("context_length", spec.maxPositions, 1);
  if (spec.numExperts >= 1 && spec.topK > spec.numExperts)
    problems.add(formatv("{0}: key '{1}expert_used_count' is {2}, more than "
                         "the {3} experts of '{1}expert_count'",
                         path, k, spec.topK, spec.numExperts));
  for (auto [key, v] :
       {std::pair<const char *, double>{"attention.layer_norm_rms_epsilon",
                                        spec.rmsNormEps},
        {"rope.freq_base", spec.ropeTheta}})
    if (file.find(k + key) && !(v > 0 && std::isfinite(v)))
      problems.add(path + ": key '" + k + key + "' is " + formatNumber(v) +
                   "; it must be a positive number");
  if (!problems.empty())
    return problems.takeError();
  spec.headDim = spec.hiddenSize / spec.numHeads;
  for (const char *key : {"rope.dimension_count", "attention.key_length",
                          "attention.value_length"}) {
    if (!file.find(k + key))
      continue;
    int64_t v = meta.integer(k + key);
    if (v != spec.headDim)
      problems.add(formatv("{0}: key '{1}{2}' is {3}, but embedding_length / "
                           "head_count is {4}; moe-compile needs them equal "
                           "(partial rotary embeddings and other head sizes "
                           "are not supported)",
                           path, k, key, v, spec.headDim));
  }
  // RoPE scaling as llama.cpp's loader reads it: the type defaults to
  // linear, whose factor is rope.scaling.factor (older files:
  // rope.scale_linear), 0 or absent meaning none. llama.cpp's linear
  // (freq_scale = 1 / factor) is transformers' linear; its yarn and
  // longrope differ from transformers' in details not mapped here.
  const std::string *scaling = meta.string(k + "rope.scaling.type");
  if (scaling && *scaling != "none" && *scaling != "linear") {
    problems.add(path + ": key '" + k + "rope.scaling.type' is '" +
                 printableText(*scaling) +
                 "'; RoPE scaling of that type is not supported (supported: "
                 "none, linear)");
  } else if (!scaling || *scaling == "linear") {
    std::string factorKey = k + "rope.scaling.factor";
    if (!file.find(factorKey))
      factorKey = k + "rope.scale_linear";
    double factor = meta.number(factorKey, 0.0);
    if (file.find(factorKey) && !(factor >= 0 && std::isfinite(factor)))
      problems.add(path + ": key '" + factorKey + "' is " +
                   formatNumber(factor) +
                   "; it must be a positive number (or 0 for none)");
    else if (factor != 0 && factor != 1) {
      spec.ropeScaling.type = RopeScalingSpec::Type::Linear;
      spec.ropeScaling.factor = factor;
      spec.ropeScaling.key = k + "rope.scaling";
    }
  }
  std::optional<int64_t> window;
  if (file.find(k + "attention.sliding_window")) {
    window = meta.integer(k + "attention.sliding_window");
    if (*window == 0) // llama.cpp writes 0 for none in some converters
      window.reset();
  }
  if (!problems.empty())
    return problems.takeError();
  if (spec.numLayers > 0 && spec.numLayers <= (1 << 20))
    spec.layerWindows.assign(spec.numLayers, window);

  // The token embedding gives the vocabulary (llama.vocab_size, where
  // present, must agree).
  const G::TensorInfo *embedding = file.findTensor("token_embd.weight");
  if (!embedding)
    return createStringError(inconvertibleErrorCode(),
                             path + ": tensor 'token_embd.weight' is missing");
  std::vector<uint64_t> embShape = embedding->shape();
  spec.vocabSize = embShape.size() == 2 ? int64_t(embShape[0]) : 0;
  if (file.find(k + "vocab_size")) {
    int64_t v = meta.integer(k + "vocab_size");
    if (v != spec.vocabSize)
      return createStringError(
          inconvertibleErrorCode(),
          formatv("{0}: key '{1}vocab_size' is {2}, but tensor "
                  "'token_embd.weight' has {3} rows",
                  path, k, v, spec.vocabSize));
  }
  spec.tieWordEmbeddings = !file.findTensor("output.weight");
  if (Error e = spec.validate(path))
    return std::move(e);

  // Where each weight is. Stacked experts when layer 0 has them (then in
  // every layer), one tensor per expert otherwise.
  bool stacked =
      file.findTensor(layerPrefix(0) + "ffn_gate_exps.weight") != nullptr;
  StringMap<WeightSource> sources;
  std::string fileName = sys::path::filename(path).str();
  // Tensors looked at, and those already reported (a stacked tensor is
  // looked at once per expert).
  StringSet<> seen, reported;
  auto problem = [&](const std::string &tensor, const Twine &message) {
    if (reported.insert(tensor).second)
      problems.add(message);
  };
  auto addSource = [&](WeightRole role, int64_t layer, int64_t expert) {
    std::string name = tensorName(spec, role, layer, expert, stacked);
    if (sources.count(name))
      return; // a tied lm_head
    SmallVector<int64_t, 2> want = weightShape(spec, role);
    bool slice = stacked && (role == WeightRole::ExpertGate ||
                             role == WeightRole::ExpertDown ||
                             role == WeightRole::ExpertUp);
    std::string tensor = slice ? name.substr(0, name.rfind('[')) : name;
    seen.insert(tensor);
    const G::TensorInfo *t = file.findTensor(tensor);
    if (!t) {
      problem(tensor, path + ": tensor '" + tensor + "' is missing");
      return;
    }
    std::vector<uint64_t> shape = t->shape();
    SmallVector<int64_t, 3> expect(want.begin(), want.end());
    if (slice)
      expect.insert(expect.begin(), spec.numExperts);
    if (!llvm::equal(shape, expect,
                     [](uint64_t a, int64_t b) { return a == uint64_t(b); })) {
      auto fmt = [](auto &dims) {
        std::string s = "[";
        for (auto [i, d] : llvm::enumerate(dims))
          s += (i ? ", " : "") + std::to_string(d);
        return s + "]";
      };
      problem(tensor, path + ": tensor '" + tensor + "' has shape " +
                          fmt(shape) +
                          " (row-major), but the hyper-parameters imply " +
                          fmt(expect));
      return;
    }
    std::optional<WeightDType> dtype = weightDType(t->type);
    if (!dtype) {
      const char *type = G::typeName(t->type);
      problem(tensor,
              formatv("{0}: tensor '{1}' is {2}; moe-compile reads F32, "
                      "F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K and Q6_K",
                      path, tensor, type ? type : "of an unknown type"));
      return;
    }
    bool floatOnly = want.size() == 1 || role == WeightRole::RouterGate;
    if (floatOnly && isBlockDType(*dtype)) {
      problem(tensor, path + ": tensor '" + tensor + "' is " +
                          G::typeName(t->type) +
                          "; the norms and the router gate must be F32, F16 "
                          "or BF16 (the router's scores decide which experts "
                          "run)");
      return;
    }
    // The kernels read elements (blocks: their 16-bit scales) in place.
    uint64_t align =
        isBlockDType(*dtype) ? 2 : uint64_t(bytesPerElement(*dtype));
    if (t->offset % align != 0) {
      problem(tensor,
              formatv("{0}: tensor '{1}' starts at byte {2}, not a multiple "
                      "of {3} (general.alignment {4} lets it; the kernels "
                      "read it in place)",
                      path, tensor, t->offset, align, file.alignment));
      return;
    }
    uint64_t offset = t->offset, size = t->bytes;
    if (slice) {
      size = t->bytes / uint64_t(spec.numExperts);
      offset += size * uint64_t(expert);
    }
    sources[name] = WeightSource{fileName, offset, size, *dtype, want};
  };
  addSource(WeightRole::Embedding, -1, -1);
  for (int64_t l = 0; l < spec.numLayers; ++l) {
    for (WeightRole role :
         {WeightRole::AttnNorm, WeightRole::QProj, WeightRole::KProj,
          WeightRole::VProj, WeightRole::OProj, WeightRole::FfnNorm,
          WeightRole::RouterGate})
      addSource(role, l, -1);
    for (int64_t e = 0; e < spec.numExperts; ++e)
      for (WeightRole role : {WeightRole::ExpertGate, WeightRole::ExpertDown,
                              WeightRole::ExpertUp})
        addSource(role, l, e);
  }
  addSource(WeightRole::FinalNorm, -1, -1);
  addSource(WeightRole::LmHead, -1, -1);
  // Every tensor of the file is part of the model (as the HF importer
  // requires): a file with more layers or experts than its keys say is
  // inconsistent, not a smaller model.
  for (const G::TensorInfo &t : file.tensors)
    if (!seen.contains(t.name))
      problem(t.name, formatv("{0}: tensor '{1}' is not part of the model "
                              "the keys describe ({2}block_count {3}, "
                              "{2}expert_count {4})",
                              path, printableText(t.name), k, spec.numLayers,
                              spec.numExperts));
  if (!problems.empty())
    return problems.takeError();

  auto namer = [&](WeightRole role, int64_t layer, int64_t expert) {
    return tensorName(spec, role, layer, expert, stacked);
  };
  SmallString<256> dir(path);
  sys::path::remove_filename(dir);
  Expected<OwningOpRef<ModuleOp>> module =
      buildModel(context, spec, namer, sources, dir);
  if (!module)
    return module.takeError();

  // The tokenizer metadata, for the tokenizer (which reads the vocabulary
  // from the file itself).
  Builder b(&context);
  SmallVector<NamedAttribute> tokenizer;
  tokenizer.push_back(b.getNamedAttr("file", b.getStringAttr(fileName)));
  if (const G::Value *m = file.find("tokenizer.ggml.model"))
    if (const std::string *s = m->asString())
      tokenizer.push_back(
          b.getNamedAttr("model", b.getStringAttr(printableText(*s))));
  if (const G::Value *tokens = file.find("tokenizer.ggml.tokens");
      tokens && tokens->isArray())
    tokenizer.push_back(
        b.getNamedAttr("tokens", b.getI64IntegerAttr(int64_t(tokens->count))));
  for (const char *id :
       {"bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id"})
    if (const G::Value *v = file.find(std::string("tokenizer.ggml.") + id))
      if (std::optional<uint64_t> u = v->asUInt(); u && *u <= INT64_MAX)
        tokenizer.push_back(b.getNamedAttr(id, b.getI64IntegerAttr(*u)));
  (**module)->setAttr("moe.tokenizer", b.getDictionaryAttr(tokenizer));
  return module;
}

} // namespace mlir::moe::gguf
