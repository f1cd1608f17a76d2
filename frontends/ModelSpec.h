//===- ModelSpec.h - frontend-neutral description of a model ----*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// What every frontend extracts from a model file before it builds moe IR: the
// hyper-parameters (ModelSpec), the role of each weight, and where each
// weight's bytes live (WeightSource). Nothing here depends on MLIR.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_MODELSPEC_H
#define MOE_FRONTENDS_MODELSPEC_H

#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <optional>
#include <string>

namespace mlir::moe {

/// Storage types of weights that moe IR accepts: floats, and the block
/// formats a GGUF file may hold (rank-2 weights only; !moe.quant).
enum class WeightDType { F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K };
llvm::StringRef stringifyWeightDType(WeightDType type);
/// Bytes per element of a float type (the block formats: 0).
int64_t bytesPerElement(WeightDType type);
/// Whether `type` is a block format.
inline bool isBlockDType(WeightDType type) {
  return type != WeightDType::F32 && type != WeightDType::F16 &&
         type != WeightDType::BF16;
}

/// transformers' RoPE type (rope_type) and its parameters, as
/// transformers' standardisation leaves them (defaults filled in; yarn's
/// attention factor resolved from attention_factor, mscale and
/// mscale_all_dim). Dynamic scaling's threshold is the spec's maxPositions.
struct RopeScalingSpec {
  enum class Type { Default, Linear, Dynamic, Yarn, Llama3 };
  Type type = Type::Default;
  /// The config.json key the parameters came from (rope_parameters or
  /// rope_scaling): messages name `<key>.<parameter>`.
  std::string key = "rope_parameters";
  /// linear, dynamic, yarn, llama3.
  double factor = 1.0;
  /// yarn, llama3: original_max_position_embeddings.
  int64_t originalMaxPositions = 0;
  /// yarn.
  double betaFast = 32.0, betaSlow = 1.0, attention = 1.0;
  bool truncate = true;
  /// llama3.
  double lowFreqFactor = 0.0, highFreqFactor = 0.0;
};
/// transformers' name of a RoPE type ("default", "linear", ...).
llvm::StringRef stringifyRopeType(RopeScalingSpec::Type type);

/// The hyper-parameters of a Mixtral-family decoder (DESIGN.md section 4).
struct ModelSpec {
  std::string architecture = "mixtral";
  int64_t vocabSize = 0;
  int64_t hiddenSize = 0;
  int64_t intermediateSize = 0;
  int64_t numLayers = 0;
  int64_t numHeads = 0;
  int64_t numKvHeads = 0;
  int64_t headDim = 0;
  int64_t numExperts = 0;
  int64_t topK = 0;
  int64_t maxPositions = 0;
  double rmsNormEps = 0;
  double ropeTheta = 0;
  RopeScalingSpec ropeScaling;
  /// Sliding window of each layer's attention; std::nullopt = full attention.
  llvm::SmallVector<std::optional<int64_t>> layerWindows;
  bool normTopKProb = true;
  bool tieWordEmbeddings = false;
  /// RoPE pairs adjacent features (2i, 2i + 1) rather than (i, i + D/2):
  /// the q and k rows are stored permuted for that pairing (GGUF).
  bool ropeInterleaved = false;

  /// Checks that the values can form a model (k <= E, heads % kv_heads == 0,
  /// even head_dim, ...). `source` prefixes the messages.
  llvm::Error validate(llvm::StringRef source) const;
};

/// How many weight tensors a Mixtral-family model of `spec` has.
int64_t expectedTensorCount(const ModelSpec &spec);

/// `v` with as many digits as it takes to read back the same (never "-0.00"
/// for -1e-5, as a fixed two-digit format would print it).
std::string formatNumber(double v);

/// The role a weight plays; frontends map roles to their own tensor names.
enum class WeightRole {
  Embedding,
  AttnNorm,
  QProj,
  KProj,
  VProj,
  OProj,
  FfnNorm,
  RouterGate,
  ExpertGate, // w1
  ExpertDown, // w2
  ExpertUp,   // w3
  FinalNorm,
  LmHead,
};

/// Shape of the weight playing `role` (HF [out, in] layout).
llvm::SmallVector<int64_t, 2> weightShape(const ModelSpec &spec,
                                          WeightRole role);

/// Where a weight's bytes are: `size` bytes at absolute `offset` in `file`,
/// as the row-major tensor `shape` (the weight's own, [out, in] for a
/// linear layer), or laid out otherwise (moe.weight_source's layouts, which
/// moe-compile re-lays out into the artifact's weights file):
///  * `transposed`: the file holds the row-major transpose of `shape`;
///  * `rowStep` > 0: the file holds `rowsOf` rows of shape[1] elements
///    (`size` bytes), and the weight is rows rowStart, rowStart + rowStep,
///    ... of them;
///  * `scalesPerRow` > 0 (dtype Q8_0 or Q4_0): the file holds the blocks as
///    ONNX Runtime's QMoE does, the offset-binary values at `offset` (`size`
///    bytes) and `scalesPerRow` scales of `scalesDType` per stored row at
///    `scalesOffset`.
struct WeightSource {
  std::string file;
  uint64_t offset = 0;
  uint64_t size = 0;
  WeightDType dtype = WeightDType::F32;
  llvm::SmallVector<int64_t, 2> shape;
  bool transposed = false;
  int64_t rowStart = 0, rowStep = 0, rowsOf = 0;
  int64_t scalesPerRow = 0;
  uint64_t scalesOffset = 0;
  WeightDType scalesDType = WeightDType::F32;
};

} // namespace mlir::moe

#endif // MOE_FRONTENDS_MODELSPEC_H
