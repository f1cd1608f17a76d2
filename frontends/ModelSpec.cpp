//===- ModelSpec.cpp - frontend-neutral description of a model --*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "frontends/ModelSpec.h"

#include "llvm/Support/FormatVariadic.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>

using namespace llvm;

namespace mlir::moe {

StringRef stringifyWeightDType(WeightDType type) {
  switch (type) {
  case WeightDType::F32:
    return "f32";
  case WeightDType::F16:
    return "f16";
  case WeightDType::BF16:
    return "bf16";
  case WeightDType::Q8_0:
    return "q8_0";
  case WeightDType::Q4_0:
    return "q4_0";
  case WeightDType::Q4_1:
    return "q4_1";
  case WeightDType::Q4_K:
    return "q4_K";
  case WeightDType::Q5_K:
    return "q5_K";
  case WeightDType::Q6_K:
    return "q6_K";
  }
  llvm_unreachable("unknown WeightDType");
}

int64_t bytesPerElement(WeightDType type) {
  if (isBlockDType(type))
    return 0;
  return type == WeightDType::F32 ? 4 : 2;
}

std::string formatNumber(double v) {
  // %.17g reads back as the same double; shorter forms first when exact.
  char text[32];
  for (int digits : {6, 17}) {
    std::snprintf(text, sizeof(text), "%.*g", digits, v);
    if (std::strtod(text, nullptr) == v)
      break;
  }
  return text;
}

int64_t expectedTensorCount(const ModelSpec &s) {
  // Embedding and final norm; lm_head unless tied; per layer 7 tensors and
  // 3 per expert. Fits easily: layers and experts are bounded by validate().
  return 2 + (s.tieWordEmbeddings ? 0 : 1) +
         s.numLayers * (7 + 3 * s.numExperts);
}

StringRef stringifyRopeType(RopeScalingSpec::Type type) {
  switch (type) {
  case RopeScalingSpec::Type::Default:
    return "default";
  case RopeScalingSpec::Type::Linear:
    return "linear";
  case RopeScalingSpec::Type::Dynamic:
    return "dynamic";
  case RopeScalingSpec::Type::Yarn:
    return "yarn";
  case RopeScalingSpec::Type::Llama3:
    return "llama3";
  }
  llvm_unreachable("unknown RoPE type");
}

/// The ranges #moe.rope_scaling's verifier also checks, named by key.
static Error
validateRopeScaling(const ModelSpec &spec,
                    const std::function<Error(const Twine &)> &fail) {
  const RopeScalingSpec &r = spec.ropeScaling;
  using Type = RopeScalingSpec::Type;
  if (r.type == Type::Default)
    return Error::success();
  auto key = [&](StringRef name) -> std::string {
    return (Twine("'") + r.key + "." + name + "'").str();
  };
  if (!(r.factor > 0) || !std::isfinite(r.factor))
    return fail(key("factor") + " must be positive and finite, got " +
                formatNumber(r.factor));
  // All but dynamic divide frequencies by the factor: the angles at every
  // position an int32 can name must stay finite (the cosine of an infinite
  // angle is NaN, the logits too).
  if (r.type != Type::Dynamic &&
      !std::isfinite(double((int64_t(1) << 31) - 1) / r.factor))
    return fail(key("factor") +
                " is so small that the RoPE angles overflow, got " +
                formatNumber(r.factor));
  if (r.type == Type::Dynamic && spec.headDim <= 2)
    return fail(formatv("rope_type 'dynamic' needs head_dim > 2, got {0}",
                        spec.headDim));
  if (r.type == Type::Yarn || r.type == Type::Llama3) {
    constexpr int64_t kMaxPositions = (int64_t(1) << 31) - 1;
    if (r.originalMaxPositions < 1 || r.originalMaxPositions > kMaxPositions)
      return fail(formatv("{0} must be in [1, {1}], got {2}",
                          key("original_max_position_embeddings"),
                          kMaxPositions, r.originalMaxPositions));
  }
  if (r.type == Type::Yarn) {
    if (!(r.betaSlow > 0) || !std::isfinite(r.betaFast) ||
        !(r.betaFast >= r.betaSlow))
      return fail(formatv("{0} and {1} must satisfy beta_fast >= beta_slow > "
                          "0, got {2} and {3}",
                          key("beta_fast"), key("beta_slow"),
                          formatNumber(r.betaFast), formatNumber(r.betaSlow)));
    if (!(r.attention > 0) || !std::isfinite(r.attention))
      return fail(key("attention_factor") +
                  " (or the factor mscale and mscale_all_dim give) must be "
                  "positive and finite, got " +
                  formatNumber(r.attention));
    if (spec.ropeTheta == 1.0)
      return fail("rope_type 'yarn' needs rope_theta != 1");
  }
  if (r.type == Type::Llama3 &&
      (!(r.lowFreqFactor > 0) || !std::isfinite(r.highFreqFactor) ||
       !(r.highFreqFactor > r.lowFreqFactor)))
    return fail(formatv("{0} and {1} must satisfy 0 < low_freq_factor < "
                        "high_freq_factor, got {2} and {3}",
                        key("low_freq_factor"), key("high_freq_factor"),
                        formatNumber(r.lowFreqFactor),
                        formatNumber(r.highFreqFactor)));
  return Error::success();
}

Error ModelSpec::validate(StringRef source) const {
  auto fail = [&](const Twine &message) {
    return createStringError(inconvertibleErrorCode(), source + ": " + message);
  };
  struct Positive {
    const char *name;
    int64_t value;
  };
  // Bounded so that every shape product below fits comfortably in int64.
  constexpr int64_t kMaxDim = int64_t(1) << 24;
  for (Positive p : {Positive{"vocab_size", vocabSize},
                     {"hidden_size", hiddenSize},
                     {"intermediate_size", intermediateSize},
                     {"num_hidden_layers", numLayers},
                     {"num_attention_heads", numHeads},
                     {"num_key_value_heads", numKvHeads},
                     {"head_dim", headDim},
                     {"num_local_experts", numExperts},
                     {"num_experts_per_tok", topK},
                     {"max_position_embeddings", maxPositions}}) {
    if (p.value <= 0 || p.value > kMaxDim)
      return fail(formatv("'{0}' must be in [1, {1}], got {2}", p.name, kMaxDim,
                          p.value));
  }
  // Layers and experts multiply into name lists and IR: bound them to what
  // real models need by a wide margin.
  constexpr int64_t kMaxLayers = 1024, kMaxExperts = 1024;
  if (numLayers > kMaxLayers)
    return fail(formatv("'num_hidden_layers' must be at most {0}, got {1}",
                        kMaxLayers, numLayers));
  if (numExperts > kMaxExperts)
    return fail(formatv("'num_local_experts' must be at most {0}, got {1}",
                        kMaxExperts, numExperts));
  if (numHeads * headDim > kMaxDim)
    return fail("num_attention_heads * head_dim is too large");
  if (numHeads % numKvHeads != 0)
    return fail(formatv("num_attention_heads ({0}) is not a multiple of "
                        "num_key_value_heads ({1})",
                        numHeads, numKvHeads));
  if (headDim % 2 != 0)
    return fail(
        formatv("head_dim ({0}) must be even for rotary embeddings", headDim));
  if (topK > numExperts)
    return fail(formatv("num_experts_per_tok ({0}) exceeds num_local_experts "
                        "({1})",
                        topK, numExperts));
  // RMSNorm adds it in f32: it must be a positive, finite f32 number.
  if (!(rmsNormEps > 0) || !std::isfinite(rmsNormEps) ||
      !(float(rmsNormEps) > 0.0f) || !std::isfinite(float(rmsNormEps)))
    return fail("'rms_norm_eps' must be positive and finite in float32 "
                "(about 1.4e-45 to 3.4e+38), got " +
                formatNumber(rmsNormEps));
  if (!(ropeTheta > 0) || !std::isfinite(ropeTheta))
    return fail("'rope_theta' must be positive and finite, got " +
                formatNumber(ropeTheta));
  if (Error e = validateRopeScaling(
          *this, [&](const Twine &message) { return fail(message); }))
    return e;
  if (static_cast<int64_t>(layerWindows.size()) != numLayers)
    return fail("one sliding-window entry per layer is required");
  for (const std::optional<int64_t> &w : layerWindows)
    if (w && *w <= 0)
      return fail(
          formatv("'sliding_window' must be positive or null, got {0}", *w));
  return Error::success();
}

SmallVector<int64_t, 2> weightShape(const ModelSpec &s, WeightRole role) {
  switch (role) {
  case WeightRole::Embedding:
  case WeightRole::LmHead:
    return {s.vocabSize, s.hiddenSize};
  case WeightRole::AttnNorm:
  case WeightRole::FfnNorm:
  case WeightRole::FinalNorm:
    return {s.hiddenSize};
  case WeightRole::QProj:
    return {s.numHeads * s.headDim, s.hiddenSize};
  case WeightRole::KProj:
  case WeightRole::VProj:
    return {s.numKvHeads * s.headDim, s.hiddenSize};
  case WeightRole::OProj:
    return {s.hiddenSize, s.numHeads * s.headDim};
  case WeightRole::RouterGate:
    return {s.numExperts, s.hiddenSize};
  case WeightRole::ExpertGate:
  case WeightRole::ExpertUp:
    return {s.intermediateSize, s.hiddenSize};
  case WeightRole::ExpertDown:
    return {s.hiddenSize, s.intermediateSize};
  }
  llvm_unreachable("unknown WeightRole");
}

} // namespace mlir::moe
