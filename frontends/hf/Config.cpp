//===- Config.cpp - config.json of a Hugging Face model ---------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Depends on LLVM Support only (no MLIR), so the config fuzzer builds it.
//
//===----------------------------------------------------------------------===//

#include "frontends/hf/Config.h"

#include "frontends/InputFiles.h"
#include "frontends/hf/Problems.h"

// yarn's attention factor: the formula the kernels' header keeps.
#include "runtime/include/moert/kernel_math.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"

using namespace llvm;

namespace mlir::moe::hf {

namespace {

std::string describe(const json::Value &v) {
  std::string text;
  raw_string_ostream os(text);
  os << v;
  if (text.size() > 40)
    text = text.substr(0, 37) + "...";
  switch (v.kind()) {
  case json::Value::Null:
    return "null";
  case json::Value::Boolean:
    return "boolean " + text;
  case json::Value::Number:
    return "number " + text;
  case json::Value::String:
    return "string " + text;
  case json::Value::Array:
    return "an array";
  case json::Value::Object:
    return "an object";
  }
  return text;
}

/// Typed access to config.json keys; problems are recorded, not thrown.
class ConfigReader {
public:
  /// `prefix` (e.g. "rope_parameters.") names the keys of a nested object.
  ConfigReader(StringRef file, const json::Object &object, Problems &problems,
               StringRef prefix = "")
      : file(file), object(object), problems(problems), prefix(prefix) {}

  bool has(StringRef key) const {
    const json::Value *v = object.get(key);
    return v && v->kind() != json::Value::Null;
  }

  /// A number that may be absent (or null).
  std::optional<double> optionalNumber(StringRef key) {
    if (!has(key))
      return std::nullopt;
    return number(key);
  }

  int64_t integer(StringRef key) {
    const json::Value *v = object.get(key);
    if (!v) {
      problems.add(file + ": missing key '" + prefix + key + "'");
      return 0;
    }
    return integerValue(key, *v);
  }

  std::optional<int64_t> optionalInteger(StringRef key) {
    const json::Value *v = object.get(key);
    if (!v || v->kind() == json::Value::Null)
      return std::nullopt;
    return integerValue(key, *v);
  }

  double number(StringRef key) {
    const json::Value *v = object.get(key);
    if (!v) {
      problems.add(file + ": missing key '" + prefix + key + "'");
      return 0;
    }
    if (std::optional<double> d = v->getAsNumber())
      return *d;
    problems.add(file + ": '" + prefix + key + "' must be a number, got " +
                 describe(*v));
    return 0;
  }

  bool boolean(StringRef key, bool defaultValue) {
    const json::Value *v = object.get(key);
    if (!v || v->kind() == json::Value::Null)
      return defaultValue;
    if (std::optional<bool> b = v->getAsBoolean())
      return *b;
    problems.add(file + ": '" + prefix + key + "' must be true or false, got " +
                 describe(*v));
    return defaultValue;
  }

  std::optional<std::string> string(StringRef key) {
    const json::Value *v = object.get(key);
    if (!v || v->kind() == json::Value::Null)
      return std::nullopt;
    if (std::optional<StringRef> s = v->getAsString())
      return s->str();
    problems.add(file + ": '" + prefix + key + "' must be a string, got " +
                 describe(*v));
    return std::nullopt;
  }

  /// Keys whose presence (non-null, non-false) means a feature we lack.
  void unsupported(StringRef key, StringRef what) {
    const json::Value *v = object.get(key);
    if (!v || v->kind() == json::Value::Null ||
        v->getAsBoolean() == std::optional<bool>(false))
      return;
    problems.add(file + ": " + what + " ('" + key + "') is not supported");
  }

private:
  int64_t integerValue(StringRef key, const json::Value &v) {
    if (v.kind() == json::Value::Number)
      if (std::optional<int64_t> i = v.getAsInteger())
        return *i;
    problems.add(file + ": '" + prefix + key + "' must be an integer, got " +
                 describe(v));
    return 0;
  }

  StringRef file;
  const json::Object &object;
  Problems &problems;
  StringRef prefix;
};

/// RoPE from config.json as transformers' standardisation
/// (RotaryEmbeddingConfigMixin: convert_rope_params_to_dict,
/// standardize_rope_params) reads it:
///  - the parameters are `rope_scaling` (transformers 4) when it is a
///    non-empty object, else `rope_parameters` (transformers 5);
///  - `rope_theta` inside them wins over the top-level `rope_theta`, which
///    fills it in when absent (a warning says so when both differ);
///  - `rope_type` (or the legacy `type`) defaults to "default";
///  - yarn and llama3 take `original_max_position_embeddings` from the top
///    level when it is there, else from the parameters, else
///    `max_position_embeddings`.
/// Unlike transformers, which warns, an unknown key or an out-of-range
/// value is an error.
void parseRope(StringRef file, const json::Object &top, ConfigReader &config,
               ModelSpec &spec, Problems &problems,
               std::vector<std::string> &warnings) {
  const json::Object *params = nullptr;
  StringRef key;
  for (StringRef k : {"rope_scaling", "rope_parameters"}) {
    const json::Value *v = top.get(k);
    if (!v || v->kind() == json::Value::Null)
      continue;
    const json::Object *o = v->getAsObject();
    if (!o) {
      problems.add(file + ": '" + k + "' must be an object or null, got " +
                   describe(*v));
      return;
    }
    if (o->empty())
      continue;
    params = o, key = k;
    break;
  }
  RopeScalingSpec &r = spec.ropeScaling;
  if (!params) {
    spec.ropeTheta = config.number("rope_theta");
    return;
  }
  r.key = key.str();
  std::string prefix = (key + ".").str();
  ConfigReader rope(file, *params, problems, prefix);

  std::optional<double> topTheta = config.optionalNumber("rope_theta");
  if (std::optional<double> theta = rope.optionalNumber("rope_theta")) {
    spec.ropeTheta = *theta;
    if (topTheta && *topTheta != *theta)
      warnings.push_back((file + ": 'rope_theta' (" + formatNumber(*topTheta) +
                          ") and '" + prefix + "rope_theta' (" +
                          formatNumber(*theta) + ") differ; using '" + prefix +
                          "rope_theta', as transformers does")
                             .str());
  } else if (topTheta) {
    spec.ropeTheta = *topTheta;
  } else {
    problems.add(file + ": missing key 'rope_theta' (top level or in '" + key +
                 "')");
  }

  std::optional<std::string> typeName = rope.string("rope_type");
  StringRef typeKey = "rope_type";
  if (!typeName && rope.has("type")) {
    typeName = rope.string("type");
    typeKey = "type";
  }
  using Type = RopeScalingSpec::Type;
  static const std::pair<StringRef, Type> kTypes[] = {
      {"default", Type::Default},
      {"linear", Type::Linear},
      {"dynamic", Type::Dynamic},
      {"yarn", Type::Yarn},
      {"llama3", Type::Llama3}};
  r.type = Type::Default;
  if (typeName) {
    auto it = llvm::find_if(
        kTypes, [&](const auto &t) { return t.first == *typeName; });
    if (it == std::end(kTypes)) {
      problems.add(file + ": '" + prefix + typeKey + "' is '" + *typeName +
                   "', which is not supported (supported: default, linear, "
                   "dynamic, yarn, llama3)");
      return;
    }
    r.type = it->second;
  }

  // The keys each type takes; any other is refused.
  SmallVector<StringRef> allowed = {"rope_type", "type", "rope_theta",
                                    "partial_rotary_factor"};
  switch (r.type) {
  case Type::Default:
    break;
  case Type::Linear:
  case Type::Dynamic:
    allowed.push_back("factor");
    break;
  case Type::Yarn:
    allowed.append({"factor", "original_max_position_embeddings",
                    "attention_factor", "beta_fast", "beta_slow", "mscale",
                    "mscale_all_dim", "truncate"});
    break;
  case Type::Llama3:
    allowed.append({"factor", "original_max_position_embeddings",
                    "low_freq_factor", "high_freq_factor"});
    break;
  }
  SmallVector<std::string> unknown;
  for (const auto &kv : *params)
    if (!llvm::is_contained(allowed, StringRef(kv.first)))
      unknown.push_back(kv.first.str());
  llvm::sort(unknown);
  for (const std::string &k : unknown)
    problems.add(file + ": '" + prefix + k +
                 "' is not a parameter of rope_type '" +
                 stringifyRopeType(r.type) + "'");
  if (std::optional<double> partial =
          rope.optionalNumber("partial_rotary_factor");
      partial && *partial != 1.0)
    problems.add(file + ": '" + prefix +
                 "partial_rotary_factor' other than 1 is not supported, got " +
                 formatNumber(*partial));
  if (r.type == Type::Default)
    return;

  r.factor = rope.number("factor");
  if (r.type == Type::Yarn || r.type == Type::Llama3) {
    if (std::optional<int64_t> topOriginal =
            config.optionalInteger("original_max_position_embeddings"))
      r.originalMaxPositions = *topOriginal;
    else if (std::optional<int64_t> original =
                 rope.optionalInteger("original_max_position_embeddings"))
      r.originalMaxPositions = *original;
    else
      r.originalMaxPositions = spec.maxPositions;
  }
  if (r.type == Type::Yarn && spec.maxPositions > 0 &&
      r.originalMaxPositions > 0) {
    // transformers 5 uses the explicit factor and warns when the context
    // lengths imply another (some 4.x releases used the ratio instead).
    double implicit =
        double(spec.maxPositions) / double(r.originalMaxPositions);
    if (implicit != 1.0 && implicit != r.factor)
      warnings.push_back((file + ": '" + prefix + "factor' (" +
                          formatNumber(r.factor) +
                          ") differs from max_position_embeddings / "
                          "original_max_position_embeddings (" +
                          formatNumber(implicit) +
                          "); using the factor, as transformers 5 does")
                             .str());
  }
  if (r.type == Type::Yarn) {
    // transformers: `get("beta_fast") or 32`, so 0 or null is the default.
    std::optional<double> fast = rope.optionalNumber("beta_fast");
    std::optional<double> slow = rope.optionalNumber("beta_slow");
    r.betaFast = fast && *fast != 0 ? *fast : 32.0;
    r.betaSlow = slow && *slow != 0 ? *slow : 1.0;
    r.truncate = rope.boolean("truncate", true);
    if (std::optional<double> attention =
            rope.optionalNumber("attention_factor")) {
      r.attention = *attention;
    } else {
      std::optional<double> mscale = rope.optionalNumber("mscale");
      std::optional<double> mscaleAllDim =
          rope.optionalNumber("mscale_all_dim");
      r.attention = ::moert::ropeYarnAttention(r.factor, mscale.value_or(0.0),
                                               mscaleAllDim.value_or(0.0));
    }
  }
  if (r.type == Type::Llama3) {
    r.lowFreqFactor = rope.number("low_freq_factor");
    r.highFreqFactor = rope.number("high_freq_factor");
  }
}

} // namespace

Expected<ModelSpec> parseConfig(StringRef file, StringRef text,
                                std::vector<std::string> *warnings) {
  Expected<json::Value> parsed = parseJSON(file, text);
  if (!parsed)
    return parsed.takeError();
  const json::Object *object = parsed->getAsObject();
  if (!object)
    return createStringError(inconvertibleErrorCode(),
                             file + ": expected a JSON object");

  Problems problems;
  ConfigReader config(file, *object, problems);
  std::optional<std::string> modelType = config.string("model_type");
  if (!modelType) {
    if (problems.empty())
      problems.add(file + ": missing key 'model_type'");
    return problems.takeError();
  }
  if (*modelType != "mixtral")
    return createStringError(inconvertibleErrorCode(),
                             file + ": unsupported model_type '" + *modelType +
                                 "' (supported: mixtral)");

  ModelSpec spec;
  spec.vocabSize = config.integer("vocab_size");
  spec.hiddenSize = config.integer("hidden_size");
  spec.intermediateSize = config.integer("intermediate_size");
  spec.numLayers = config.integer("num_hidden_layers");
  spec.numHeads = config.integer("num_attention_heads");
  spec.numKvHeads = config.integer("num_key_value_heads");
  spec.numExperts = config.integer("num_local_experts");
  spec.topK = config.integer("num_experts_per_tok");
  spec.maxPositions = config.integer("max_position_embeddings");
  spec.rmsNormEps = config.number("rms_norm_eps");
  std::vector<std::string> notes;
  parseRope(file, *object, config, spec, problems, notes);
  std::optional<int64_t> headDim = config.optionalInteger("head_dim");
  std::optional<int64_t> window = config.optionalInteger("sliding_window");
  spec.tieWordEmbeddings = config.boolean("tie_word_embeddings", false);
  // transformers' Mixtral always renormalises the top-k weights, whatever
  // norm_topk_prob says (its router ignores the key): so do we.
  if (!config.boolean("norm_topk_prob", true))
    notes.push_back((file + ": 'norm_topk_prob' is false, but transformers' "
                            "Mixtral ignores it and always renormalises the "
                            "top-k routing weights; so does moe-compile")
                        .str());
  spec.normTopKProb = true;
  std::optional<std::string> act = config.string("hidden_act");
  if (act && *act != "silu")
    problems.add(file + ": hidden_act '" + *act +
                 "' is not supported (supported: silu)");
  config.unsupported("quantization_config", "a quantized checkpoint");
  config.unsupported("attention_bias", "attention bias");
  config.unsupported("mlp_bias", "MLP bias");
  if (!problems.empty())
    return problems.takeError();

  if (headDim) {
    spec.headDim = *headDim;
  } else if (spec.numHeads > 0 && spec.hiddenSize % spec.numHeads == 0) {
    spec.headDim = spec.hiddenSize / spec.numHeads;
  } else {
    return createStringError(
        inconvertibleErrorCode(),
        formatv("{0}: hidden_size ({1}) is not a multiple of "
                "num_attention_heads ({2}) and head_dim is not given",
                file, spec.hiddenSize, spec.numHeads));
  }
  spec.layerWindows.assign(std::max<int64_t>(spec.numLayers, 0), window);
  if (Error e = spec.validate(file))
    return std::move(e);
  if (warnings)
    llvm::append_range(*warnings, notes);
  return spec;
}

} // namespace mlir::moe::hf
