//===- QuantizedWeights.h - the artifact's quantised weights ----*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// moe-quantize-weights only retypes weights; the bytes are made here, once,
// by moe-compile: each weight whose moe.weight_source is marked `quantized
// to` is read from the model's file, quantised block by block
// (moert/quant.h), and written into one safetensors file beside the
// executable. Planning the file (its header and every tensor's offset) is
// separate from writing it, so --emit=cpp can print a plan that names the
// file without writing it.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_COMPILER_COMMON_QUANTIZEDWEIGHTS_H
#define MOE_COMPILER_COMMON_QUANTIZEDWEIGHTS_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Support/LLVM.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mlir::moe {

/// The layout of the quantised weights file and where each tensor comes
/// from.
struct QuantizedWeightsPlan {
  struct Tensor {
    std::string name;
    std::string sourcePath; // the model's file
    uint64_t sourceOffset = 0;
    Type sourceElement; // f32, f16 or bf16
    Type quantElement;  // !moe.quant<...>
    int64_t rows = 0, cols = 0;
    uint64_t offset = 0, size = 0; // absolute, in the new file
  };
  /// The file's first bytes: the 8-byte length and the JSON header.
  std::string header;
  /// "moe.build" in the header's metadata, which the executable requires
  /// of the file: a hash of the format and of every source tensor's name,
  /// place and file (path, size, modification time), so an executable
  /// never runs with the weights file of another build.
  std::string buildId;
  std::vector<Tensor> tensors;
  uint64_t fileSize = 0;
  bool empty() const { return tensors.empty(); }
};

/// Lays out `fileName` (a plain file name, written beside the executable)
/// for every weight source of `module` with a pending quantisation, and
/// points those sources at it (`in artifact FILE at OFFSET : quantised
/// type`). Sources without one are left alone; with none, the plan is empty
/// and the module unchanged.
FailureOr<QuantizedWeightsPlan> planQuantizedWeights(ModuleOp module,
                                                     StringRef fileName);

/// Writes the planned file to `os`, tensor by tensor and a bounded number of
/// rows at a time (memory stays small whatever the model's size), calling
/// `progress(done, total)` in bytes. A weight holding NaN or infinity is an
/// error naming it and the element: the formats have no code for those.
llvm::Error writeQuantizedWeights(
    const QuantizedWeightsPlan &plan, llvm::raw_ostream &os,
    llvm::function_ref<void(uint64_t done, uint64_t total)> progress);

} // namespace mlir::moe

#endif // MOE_COMPILER_COMMON_QUANTIZEDWEIGHTS_H
