//===- Translations.cpp - the launch-plan printers as translations -*- C++ -*-//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "compiler/Passes.h"
#include "compiler/common/HostPlan.h"

#include "dialects/MoE/MoEDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Tools/mlir-translate/Translation.h"

using namespace mlir;

namespace {
void registerDialects(DialectRegistry &registry) {
  registry.insert<moe::MoEDialect, moert::MoERTDialect, arith::ArithDialect,
                  func::FuncDialect>();
  moe::registerTargetModels(registry);
}
} // namespace

void mlir::moe::registerTargetTranslations() {
  static TranslateFromMLIRRegistration cpp(
      "moe-to-cpp",
      "Print a module lowered by --moe-lower-to-cpu as the CPU target's C++",
      [](ModuleOp module, raw_ostream &os) {
        return printCpuProgram(module, EmitOptions(), os);
      },
      registerDialects);
  // The two files of a CUDA program, each its own translation.
  auto cudaFile = [](std::string CudaProgram::*file) {
    return [file](ModuleOp module, raw_ostream &os) -> LogicalResult {
      FailureOr<CudaProgram> program = printCudaProgram(module, EmitOptions());
      if (failed(program))
        return failure();
      os << (*program).*file;
      return success();
    };
  };
  static TranslateFromMLIRRegistration cuda(
      "moe-to-cuda",
      "Print the kernels (.cu) of a module lowered by --moe-lower-to-cuda",
      cudaFile(&CudaProgram::deviceCode), registerDialects);
  static TranslateFromMLIRRegistration cudaHost(
      "moe-to-cuda-host",
      "Print the host plan (.cpp) of a module lowered by --moe-lower-to-cuda",
      cudaFile(&CudaProgram::hostPlan), registerDialects);
}
