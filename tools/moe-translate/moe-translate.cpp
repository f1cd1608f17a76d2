//===- moe-translate.cpp - import models as moe IR --------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
//   moe-translate --import-hf MODEL_DIR [-o FILE]
//
// Imports a Hugging Face model directory and prints the verified moe IR. The
// output file is written only when the import succeeds.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/MoEDialect.h"
#include "frontends/InputFiles.h"
#include "frontends/hf/HFImporter.h"
#include "frontends/hf/WeightFiles.h"
#include "tools/common/CommandLine.h"
#include "tools/common/OutputFile.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/AsmState.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/WithColor.h"

using namespace llvm;

static cl::OptionCategory category("moe-translate options");

static cl::opt<std::string>
    importHF("import-hf",
             cl::desc("Import a Hugging Face model directory (config.json "
                      "plus model.safetensors or sharded safetensors with "
                      "model.safetensors.index.json). Reads only config.json, "
                      "the index and the safetensors headers"),
             cl::value_desc("dir"), cl::cat(category));

static cl::opt<std::string> outputFile("o", cl::desc("Output file"),
                                       cl::value_desc("file"), cl::init("-"),
                                       cl::cat(category));

static int fail(const Twine &message) {
  // One line, whatever names it quotes (control characters shown as '?').
  WithColor::error(errs(), "moe-translate")
      << mlir::moe::printableText(message.str()) << "\n";
  return 1;
}

int main(int argc, char **argv) {
  InitLLVM init(argc, argv);
  mlir::moe::exitCleanlyOnStdoutErrors("moe-translate");
  mlir::registerAsmPrinterCLOptions();
  mlir::registerMLIRContextCLOptions();
  mlir::moe::hideForeignOptions(category);
  cl::ParseCommandLineOptions(
      argc, argv,
      "moe-translate: import models into the moe dialect\n\n"
      "  moe-translate --import-hf MODEL_DIR [-o out.mlir]\n");

  if (importHF.empty())
    return fail("nothing to do: give --import-hf MODEL_DIR (see --help)");
  if (Error e =
          mlir::moe::checkOutputPath(outputFile, mlir::moe::OutputKind::Text))
    return fail(toString(std::move(e)));

  mlir::MLIRContext context;
  context.loadDialect<mlir::moe::MoEDialect, mlir::func::FuncDialect>();
  // Diagnostics quote names from the user's files: shown printable.
  mlir::moe::PrintableDiagnostics diagnostics(&context);
  context.printOpOnDiagnostic(false);
  auto module = mlir::moe::hf::importModel(context, importHF);
  if (!module) {
    handleAllErrors(module.takeError(),
                    [](const ErrorInfoBase &e) { fail(e.message()); });
    return 1;
  }
  if (failed(mlir::verify(**module)))
    return fail("internal error: the imported IR does not verify");

  if (Error e = mlir::moe::checkNotAnInput(
          outputFile, mlir::moe::hf::modelFilePaths(**module)))
    return fail(toString(std::move(e)));
  if (Error e = mlir::moe::writeOutputFile(
          outputFile, [&](raw_ostream &os) { os << **module << "\n"; }))
    return fail(toString(std::move(e)));
  return 0;
}
