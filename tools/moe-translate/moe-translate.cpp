//===- moe-translate.cpp - import models as moe IR --------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
//   moe-translate --import-hf MODEL_DIR [-o FILE]
//   moe-translate --moe-to-cpp|--moe-to-cuda|--moe-to-cuda-host FILE.mlir
//
// Imports a Hugging Face model directory and prints the verified moe IR; or
// prints a lowered module (moert launch plan) as the target's C++ or CUDA.
// The output file is written only when the whole translation succeeds.
//
//===----------------------------------------------------------------------===//

#include "compiler/Passes.h"
#include "dialects/MoE/MoEDialect.h"
#include "frontends/InputFiles.h"
#include "frontends/gguf/GGUFImporter.h"
#include "frontends/hf/HFImporter.h"
#include "frontends/hf/WeightFiles.h"
#include "frontends/onnx/ONNXImporter.h"
#include "tools/common/CommandLine.h"
#include "tools/common/OutputFile.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/AsmState.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Tools/mlir-translate/Translation.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/SourceMgr.h"
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

static cl::opt<std::string> importGGUF(
    "import-gguf",
    cl::desc(
        "Import a Mixtral GGUF file (llama.cpp's format: "
        "general.architecture llama with llama.expert_count; F32, F16, "
        "BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K and Q6_K weights). Maps the file "
        "and reads only its header; the weights stay in it"),
    cl::value_desc("file"), cl::cat(category));

static cl::opt<std::string> importONNX(
    "import-onnx",
    cl::desc("Import a Mixtral ONNX model (ONNX Runtime GenAI's graph: "
             "GroupQueryAttention and com.microsoft.MoE nodes; weights in "
             "external data files, [out, in]; docs/frontends.md). Reads the "
             "ModelProto; the weights stay in their files"),
    cl::value_desc("file"), cl::cat(category));

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
  // The printers of the targets' launch plans, as registered translations.
  mlir::moe::registerTargetTranslations();
  static cl::opt<const mlir::Translation *, false, mlir::TranslationParser>
      translation("", cl::desc("Print a lowered module:"), cl::cat(category));
  static cl::opt<std::string> inputFile(
      cl::Positional, cl::desc("[input.mlir for a --moe-to-* translation]"),
      cl::init(""), cl::cat(category));
  mlir::moe::hideForeignOptions(category);
  cl::ParseCommandLineOptions(
      argc, argv,
      "moe-translate: import models into the moe dialect, print launch "
      "plans\n\n"
      "  moe-translate --import-hf MODEL_DIR [-o out.mlir]\n"
      "  moe-translate --import-gguf MODEL.gguf [-o out.mlir]\n"
      "  moe-translate --import-onnx MODEL.onnx [-o out.mlir]\n"
      "  moe-translate --moe-to-cpp lowered.mlir [-o out.cpp]\n"
      "  moe-translate --moe-to-cuda lowered.mlir [-o out.cu]\n"
      "  moe-translate --moe-to-cuda-host lowered.mlir [-o out.cpp]\n");

  int actions = !importHF.empty() + !importGGUF.empty() + !importONNX.empty() +
                (translation ? 1 : 0);
  if (actions != 1)
    return fail(actions == 0
                    ? "nothing to do: give --import-hf MODEL_DIR, "
                      "--import-gguf MODEL.gguf, --import-onnx MODEL.onnx or "
                      "a --moe-to-* translation (see --help)"
                    : "give one of --import-hf, --import-gguf, --import-onnx "
                      "or a --moe-to-* translation");
  if (Error e =
          mlir::moe::checkOutputPath(outputFile, mlir::moe::OutputKind::Text))
    return fail(toString(std::move(e)));
  if (translation) {
    StringRef in = inputFile.empty() ? StringRef("-") : StringRef(inputFile);
    std::string error;
    std::unique_ptr<MemoryBuffer> buffer = mlir::openInputFile(in, &error);
    if (!buffer)
      return fail(error);
    if (Error e = mlir::moe::checkIRNesting(
            in == "-" ? std::string("<stdin>") : in.str(), buffer->getBuffer()))
      return fail(toString(std::move(e)));
    if (Error e = mlir::moe::checkNotAnInput(outputFile, {in.str()}))
      return fail(toString(std::move(e)));
    mlir::MLIRContext context;
    mlir::moe::PrintableDiagnostics diagnostics(&context);
    context.printOpOnDiagnostic(false);
    auto sourceMgr = std::make_shared<SourceMgr>();
    sourceMgr->AddNewSourceBuffer(std::move(buffer), SMLoc());
    std::string text;
    raw_string_ostream os(text);
    if (failed((*translation)(sourceMgr, os, &context)))
      return 1;
    if (Error e = mlir::moe::writeOutputFile(
            outputFile, [&](raw_ostream &out) { out << text; }))
      return fail(toString(std::move(e)));
    return 0;
  }

  mlir::MLIRContext context;
  context.loadDialect<mlir::moe::MoEDialect, mlir::func::FuncDialect>();
  // Diagnostics quote names from the user's files: shown printable.
  mlir::moe::PrintableDiagnostics diagnostics(&context);
  context.printOpOnDiagnostic(false);
  auto module =
      !importONNX.empty() ? mlir::moe::onnxfe::importModel(context, importONNX)
      : importHF.empty()  ? mlir::moe::gguf::importModel(context, importGGUF)
                          : mlir::moe::hf::importModel(context, importHF);
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
