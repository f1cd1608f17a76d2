//===- moe-opt.cpp - moe optimizer driver -----------------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// mlir-opt for the moe dialect: parses, verifies and transforms moe IR with
// our passes and the generic upstream ones (canonicalize, cse, ...). As
// mlir-opt, but the input's nesting is bounded before the (recursive) parser
// sees it, and an output that cannot be written is one error, not an abort
// (docs/hardening.md).
//
//===----------------------------------------------------------------------===//

#include "compiler/Passes.h"
#include "dialects/MoE/MoEDialect.h"
#include "frontends/InputFiles.h"
#include "passes/Passes.h"
#include "tools/common/OutputFile.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/WithColor.h"

static int fail(const llvm::Twine &message) {
  llvm::WithColor::error(llvm::errs(), "moe-opt") << message << "\n";
  return 1;
}

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  mlir::moe::exitCleanlyOnStdoutErrors("moe-opt");
  mlir::registerTransformsPasses();
  mlir::moe::registerMoEPasses();
  mlir::moe::registerPipelines();
  mlir::moe::registerMoETargetPasses();

  mlir::DialectRegistry registry;
  registry.insert<mlir::moe::MoEDialect, mlir::moert::MoERTDialect,
                  mlir::arith::ArithDialect, mlir::func::FuncDialect,
                  mlir::tensor::TensorDialect>();
  mlir::moe::registerTargetModels(registry);
  auto [inputFilename, outputFilename] = mlir::registerAndParseCLIOptions(
      argc, argv, "moe-compile optimizer driver\n", registry);
  mlir::MlirOptMainConfig config =
      mlir::MlirOptMainConfig::createFromCLOptions();
  if (config.shouldShowDialects() || config.shouldListPasses())
    return mlir::asMainReturnCode(
        mlir::MlirOptMain(argc, argv, inputFilename, outputFilename, registry));

  std::string error;
  std::unique_ptr<llvm::MemoryBuffer> input =
      mlir::openInputFile(inputFilename, &error);
  if (!input)
    return fail(error);
  if (llvm::Error e = mlir::moe::checkIRNesting(
          inputFilename == "-" ? std::string("<stdin>") : inputFilename,
          input->getBuffer()))
    return fail(llvm::toString(std::move(e)));
  std::unique_ptr<llvm::ToolOutputFile> output =
      mlir::openOutputFile(outputFilename, &error);
  if (!output)
    return fail(error);
  bool ok = succeeded(
      mlir::MlirOptMain(output->os(), std::move(input), registry, config));
  output->os().flush();
  if (output->os().has_error()) {
    std::error_code ec = output->os().error();
    output->os().clear_error();
    return fail(outputFilename + ": cannot write: " + ec.message());
  }
  if (!ok)
    return 1;
  output->keep();
  return 0;
}
