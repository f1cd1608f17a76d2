//===- EmitCuda.h - CUDA target: moe IR to kernels + host plan --*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Translates a planned model into two files:
//  - device code (.cu): one `extern "C" __global__` kernel per distinct
//    specialisation of the templates in runtime/include/moert/cuda/
//    kernels.cuh, with the model's shapes and weight types as template
//    arguments and explicit launch bounds;
//  - the host plan (.cpp): the weight manifest, the KV-cache plan, the
//    kernel table and `forward`, which enqueues one launch per op (the
//    decode or prefill variant chosen from the token count) over buffers at
//    moe-plan-memory's offsets of the device arena.
// nvcc builds the device code into a fatbin that the host plan embeds;
// libmoert loads it through the CUDA driver at run time.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_COMPILER_CUDA_EMITCUDA_H
#define MOE_COMPILER_CUDA_EMITCUDA_H

#include "compiler/common/HostPlan.h"

namespace mlir::moe {

struct CudaProgram {
  std::string deviceCode; // the .cu file
  std::string hostPlan;   // the .cpp file
  std::vector<std::string> kernelNames;
};

/// Emits the CUDA program for `module`. Diagnoses and fails on anything the
/// CUDA target cannot run (the unfused expert ops among them: it needs the
/// -O2 pipeline).
FailureOr<CudaProgram> emitCudaProgram(ModuleOp module,
                                       const EmitOptions &options);

/// Largest token count the host plan runs with the decode variants (gemv
/// matmuls, per-query attention); larger chunks use the prefill variants.
constexpr int64_t kCudaDecodeMaxTokens = 8;

} // namespace mlir::moe

#endif // MOE_COMPILER_CUDA_EMITCUDA_H
