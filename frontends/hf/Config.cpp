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
  ConfigReader(StringRef file, const json::Object &object, Problems &problems)
      : file(file), object(object), problems(problems) {}

  int64_t integer(StringRef key) {
    const json::Value *v = object.get(key);
    if (!v) {
      problems.add(file + ": missing key '" + key + "'");
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
      problems.add(file + ": missing key '" + key + "'");
      return 0;
    }
    if (std::optional<double> d = v->getAsNumber())
      return *d;
    problems.add(file + ": '" + key + "' must be a number, got " +
                 describe(*v));
    return 0;
  }

  bool boolean(StringRef key, bool defaultValue) {
    const json::Value *v = object.get(key);
    if (!v || v->kind() == json::Value::Null)
      return defaultValue;
    if (std::optional<bool> b = v->getAsBoolean())
      return *b;
    problems.add(file + ": '" + key + "' must be true or false, got " +
                 describe(*v));
    return defaultValue;
  }

  std::optional<std::string> string(StringRef key) {
    const json::Value *v = object.get(key);
    if (!v || v->kind() == json::Value::Null)
      return std::nullopt;
    if (std::optional<StringRef> s = v->getAsString())
      return s->str();
    problems.add(file + ": '" + key + "' must be a string, got " +
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
    problems.add(file + ": '" + key + "' must be an integer, got " +
                 describe(v));
    return 0;
  }

  StringRef file;
  const json::Object &object;
  Problems &problems;
};

} // namespace

Expected<ModelSpec> parseConfig(StringRef file, StringRef text) {
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
  spec.ropeTheta = config.number("rope_theta");
  std::optional<int64_t> headDim = config.optionalInteger("head_dim");
  std::optional<int64_t> window = config.optionalInteger("sliding_window");
  spec.tieWordEmbeddings = config.boolean("tie_word_embeddings", false);
  spec.normTopKProb = config.boolean("norm_topk_prob", true);
  std::optional<std::string> act = config.string("hidden_act");
  if (act && *act != "silu")
    problems.add(file + ": hidden_act '" + *act +
                 "' is not supported (supported: silu)");
  config.unsupported("rope_scaling", "RoPE scaling");
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
  return spec;
}

} // namespace mlir::moe::hf
