//===- ArtifactWeights.h - the artifact's weights file ----------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Weights are mapped in place from the model's files, except those whose
// bytes must be made once, at compile time, by moe-compile: each weight
// whose moe.weight_source is marked `quantized to` (moe-quantize-weights)
// or has a layout (`transposed`, `rows S step K of T`, from a frontend) is
// read from the model's file, re-laid out to its [rows, cols] type and/or
// quantised block by block (moert/quant.h), and written into one
// safetensors file beside the executable. Planning the file (its header and
// every tensor's offset) is separate from writing it, so --emit=cpp can
// print a plan that names the file without writing it.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_COMPILER_COMMON_ARTIFACTWEIGHTS_H
#define MOE_COMPILER_COMMON_ARTIFACTWEIGHTS_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Support/LLVM.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mlir::moe {

/// The layout of the artifact's weights file and where each tensor comes
/// from.
struct ArtifactWeightsPlan {
  struct Tensor {
    std::string name;
    std::string sourcePath; // the model's file
    uint64_t sourceOffset = 0;
    Type sourceElement; // f32, f16 or bf16
    Type quantElement;  // !moe.quant<...>, or null: stored as sourceElement
    int64_t rows = 0, cols = 0; // the weight's own [rows, cols]
    /// The source's layout: the file holds the [cols, rows] transpose, or
    /// (rowStep > 0) `sourceRows` rows of `cols` of which the weight is
    /// rows rowStart, rowStart + rowStep, ...; else [rows, cols] itself.
    bool transposed = false;
    int64_t rowStart = 0, rowStep = 0, sourceRows = 0;
    /// scalesPerRow > 0: the file holds quantElement's blocks as ONNX
    /// Runtime's QMoE does, offset-binary values at sourceOffset (its
    /// sourceElement is then quantElement) and scalesPerRow scales of
    /// scalesElement per source row at scalesOffset.
    int64_t scalesPerRow = 0;
    uint64_t scalesOffset = 0;
    Type scalesElement;
    uint64_t offset = 0, size = 0; // absolute, in the new file
  };
  /// The file's first bytes: the 8-byte length and the JSON header.
  std::string header;
  /// "moe.build" in the header's metadata, which the executable requires
  /// of the file: a hash of the format and of every source tensor's name,
  /// place, layout and file (path, size, modification time), so an
  /// executable never runs with the weights file of another build.
  std::string buildId;
  std::vector<Tensor> tensors;
  uint64_t fileSize = 0;
  bool empty() const { return tensors.empty(); }
  /// Tensors with a pending quantisation, and with a layout (separate
  /// scales included).
  size_t numQuantized() const;
  size_t numRelaidOut() const;
};

/// Lays out `fileName` (a plain file name, written beside the executable)
/// for every weight source of `module` with a pending quantisation or a
/// layout, and points those sources at it (`in artifact FILE at OFFSET :
/// stored type`). Sources without either are left alone; with none, the
/// plan is empty and the module unchanged.
FailureOr<ArtifactWeightsPlan> planArtifactWeights(ModuleOp module,
                                                   StringRef fileName);

/// Writes the planned file to `os`, tensor by tensor and a bounded number of
/// rows at a time (memory stays small whatever the model's size; a
/// transposed source is read in strips of its rows and transposed in
/// cache-sized tiles), calling `progress(done, total)` in bytes. A weight to
/// quantise holding NaN or infinity is an error naming it and the element:
/// the formats have no code for those. `chunkBytes` bounds the source
/// bytes read at a time (whole rows of the weight, at least one).
llvm::Error writeArtifactWeights(
    const ArtifactWeightsPlan &plan, llvm::raw_ostream &os,
    llvm::function_ref<void(uint64_t done, uint64_t total)> progress,
    uint64_t chunkBytes = uint64_t(16) << 20);

} // namespace mlir::moe

#endif // MOE_COMPILER_COMMON_ARTIFACTWEIGHTS_H
