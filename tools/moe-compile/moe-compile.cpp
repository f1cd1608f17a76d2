//===- moe-compile.cpp - the moe-compile driver -----------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
//   moe-compile MODEL -o PATH [--target cpu|cuda] [--emit=bin|mlir|cpp|cu]
//
// MODEL is a Hugging Face directory (or moe IR from moe-translate). The
// driver imports it, runs the pipeline, emits the host plan and kernels
// (C++ for the CPU target; CUDA kernels plus a C++ host plan for the CUDA
// target, built with nvcc), and builds them with the runtime into one
// executable at PATH. PATH is replaced only when every step succeeded.
//
//===----------------------------------------------------------------------===//

#include "compiler/cpu/EmitCpp.h"
#include "compiler/cuda/EmitCuda.h"
#include "dialects/MoE/MoEDialect.h"
#include "frontends/hf/HFImporter.h"
#include "passes/Passes.h"
#include "tools/common/CommandLine.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/AsmState.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Support/Timing.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/WithColor.h"

using namespace llvm;

static cl::OptionCategory category("moe-compile options");

static cl::opt<std::string> input(cl::Positional, cl::Required,
                                  cl::desc("<model dir | model.mlir>"),
                                  cl::cat(category));
static cl::opt<std::string>
    outputPath("o",
               cl::desc("Output: the executable (or the --emit text; "
                        "'-' for stdout)"),
               cl::value_desc("path"), cl::cat(category));
enum class Target { Cpu, Cuda };
static cl::opt<Target> target(
    "target", cl::desc("Where the executable runs"), cl::init(Target::Cpu),
    cl::values(clEnumValN(Target::Cpu, "cpu", "C++ kernels (default)"),
               clEnumValN(Target::Cuda, "cuda",
                          "CUDA kernels built with nvcc; runs on GPU 0")),
    cl::cat(category));
enum class Emit { Binary, MLIR, Cpp, Cu };
static cl::opt<Emit> emit(
    "emit", cl::desc("What to produce"), cl::init(Emit::Binary),
    cl::values(clEnumValN(Emit::Binary, "bin", "the executable (default)"),
               clEnumValN(Emit::MLIR, "mlir", "moe IR after the pipeline"),
               clEnumValN(Emit::Cpp, "cpp",
                          "the generated C++ (for cuda: the host plan)"),
               clEnumValN(Emit::Cu, "cu",
                          "the generated CUDA kernels (--target cuda)")),
    cl::cat(category));
static cl::list<std::string> cudaArch(
    "cuda-arch",
    cl::desc("GPU architectures the CUDA kernels are built for, "
             "comma-separated: sm_80, sm_86, sm_89, sm_90 (default sm_90)"),
    cl::CommaSeparated, cl::value_desc("sm_XY"), cl::cat(category));
static cl::opt<std::string> nvcc("nvcc",
                                 cl::desc("nvcc that builds the CUDA kernels"),
                                 cl::init(MOE_DEFAULT_NVCC), cl::cat(category));
static cl::opt<int64_t>
    maxSeq("max-seq",
           cl::desc("Longest sequence a session may reach (sizes the KV "
                    "cache); default: the model's max_position_embeddings"),
           cl::init(0), cl::cat(category));
static cl::opt<unsigned>
    optLevel("O", cl::Prefix,
             cl::desc("Optimization level: -O0 runs no fusion and gives "
                      "every buffer its own memory; -O2 (default) fuses and "
                      "plans the arena by liveness"),
             cl::init(2), cl::cat(category));
static cl::opt<bool> fuseEpilogues(
    "fuse-epilogues",
    cl::desc("At -O2, fold residual adds, silu*up and RoPE into the GEMMs "
             "that feed them (moe-fuse-epilogues; default true, "
             "--fuse-epilogues=false to compare)"),
    cl::init(true), cl::cat(category));
static cl::opt<int64_t> maxBatchTokens(
    "max-batch-tokens",
    cl::desc("Batch size the memory plan reports its bytes for (the binary "
             "takes its own --max-batch-tokens; the plan fits any size)"),
    cl::init(512), cl::cat(category));
static cl::opt<bool> printMemoryPlan(
    "print-memory-plan",
    cl::desc("Print the KV-cache and activation memory plan as JSON on "
             "stdout (then build only if -o is given)"),
    cl::cat(category));
static cl::opt<std::string> cxx("cxx",
                                cl::desc("C++ compiler that builds the binary"),
                                cl::init(MOE_DEFAULT_CXX), cl::cat(category));
static cl::opt<std::string>
    march("march", cl::desc("-march for the generated code (default native)"),
          cl::init("native"), cl::cat(category));
static cl::opt<bool> verbose("v", cl::desc("Show the build commands"),
                             cl::cat(category));
static cl::opt<bool> quiet("quiet", cl::desc("No progress messages"),
                           cl::cat(category));

namespace {

int fail(const Twine &message) {
  WithColor::error(errs(), "moe-compile") << message << "\n";
  return 1;
}

void progress(int step, int steps, const Twine &message) {
  if (!quiet)
    errs() << "[" << step << "/" << steps << "] " << message << "\n";
}

mlir::OwningOpRef<mlir::ModuleOp> load(mlir::MLIRContext &context) {
  if (!sys::fs::exists(input)) {
    fail(input + ": no such model directory or .mlir file");
    return nullptr;
  }
  if (sys::fs::is_directory(input)) {
    auto module = mlir::moe::hf::importModel(context, input);
    if (!module) {
      handleAllErrors(module.takeError(),
                      [](const ErrorInfoBase &e) { fail(e.message()); });
      return nullptr;
    }
    return std::move(*module);
  }
  std::string error;
  auto file = mlir::openInputFile(input, &error);
  if (!file) {
    fail(error);
    return nullptr;
  }
  SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(std::move(file), SMLoc());
  return mlir::parseSourceFile<mlir::ModuleOp>(sourceMgr, &context);
}

/// Runs `args` with its output in `log`; on failure shows the end of the
/// log and says what failed.
bool run(ArrayRef<std::string> args, StringRef log, const Twine &what) {
  std::vector<StringRef> argv(args.begin(), args.end());
  if (verbose)
    errs() << join(args, " ") << "\n";
  std::optional<StringRef> redirects[] = {std::nullopt, log, log};
  std::string error;
  int rc = sys::ExecuteAndWait(args.front(), argv, std::nullopt, redirects, 0,
                               0, &error);
  if (rc == 0)
    return true;
  if (auto text = MemoryBuffer::getFile(log))
    errs() << (*text)->getBuffer().take_back(4000);
  fail(what + " failed" + (error.empty() ? "" : ": " + error));
  return false;
}

bool writeFile(StringRef path, StringRef text) {
  std::error_code ec;
  raw_fd_ostream os(path, ec);
  if (ec) {
    fail(path + ": " + ec.message());
    return false;
  }
  os << text;
  return true;
}

/// Builds the host plan `source` (and for CUDA the device code `cuda`, with
/// nvcc, into a fatbin the plan embeds) into the executable `path`,
/// atomically: PATH is replaced only when every step succeeded.
int build(StringRef source, const mlir::moe::CudaProgram *cuda, StringRef path,
          int step, int steps) {
  SmallString<128> dir;
  if (std::error_code ec = sys::fs::createUniqueDirectory("moe-compile", dir))
    return fail("cannot create a temporary directory: " + ec.message());
  scope_exit cleanup([&] { sys::fs::remove_directories(dir); });
  SmallString<128> cpp(dir), log(dir), tmp(path);
  sys::path::append(cpp, "program.cpp");
  sys::path::append(log, "build.log");
  tmp += ".tmp-moe-compile";
  if (!writeFile(cpp, source))
    return 1;
  std::vector<std::string> args = {cxx, "-std=c++17", "-O2", "-march=" + march,
                                   "-w", "-I" MOE_RUNTIME_INCLUDE_DIR};
  if (cuda) {
    SmallString<128> cu(dir), fatbin(dir);
    sys::path::append(cu, "kernels.cu");
    sys::path::append(fatbin, "kernels.fatbin");
    if (!writeFile(cu, cuda->deviceCode))
      return 1;
    std::vector<std::string> nv = {nvcc, "-fatbin", "-O3", "-std=c++17",
                                   "-I" MOE_RUNTIME_INCLUDE_DIR};
    for (const std::string &arch : cudaArch) {
      std::string cc = arch.substr(3);
      nv.push_back("-gencode=arch=compute_" + cc + ",code=sm_" + cc);
    }
    nv.insert(nv.end(), {std::string(cu), "-o", std::string(fatbin)});
    progress(step++, steps,
             "compiling " + Twine(cuda->kernelNames.size()) +
                 " CUDA kernels with " + nvcc + " for " +
                 join(cudaArch.begin(), cudaArch.end(), ","));
    if (!run(nv, log, "compiling the CUDA kernels"))
      return 1;
    args.push_back("-DMOERT_FATBIN=\"" + std::string(fatbin) + "\"");
  }
  args.insert(args.end(), {std::string(cpp), MOE_RUNTIME_MAIN_LIB,
                           MOE_RUNTIME_LIB, "-lpthread", "-ldl", "-o",
                           std::string(tmp)});
  progress(step, steps, "building " + path + " with " + cxx);
  if (!run(args, log, "building the executable")) {
    sys::fs::remove(tmp);
    return 1;
  }
  if (std::error_code ec = sys::fs::rename(tmp, path)) {
    sys::fs::remove(tmp);
    return fail(path + ": " + ec.message());
  }
  return 0;
}

/// The plan moe-plan-kv-cache and moe-plan-memory recorded on @forward, as
/// JSON on stdout.
mlir::LogicalResult printPlanJSON(mlir::ModuleOp module) {
  auto func = module.lookupSymbol<mlir::func::FuncOp>("forward");
  auto kv = func
                ? func->getAttrOfType<mlir::DictionaryAttr>("moe.kv_cache_plan")
                : nullptr;
  auto memory =
      func ? func->getAttrOfType<mlir::DictionaryAttr>("moe.memory_plan")
           : nullptr;
  if (!kv || !memory) {
    fail("no memory plan: the pipeline did not plan @forward");
    return mlir::failure();
  }
  auto field = [](mlir::DictionaryAttr d, StringRef key) -> int64_t {
    auto a = dyn_cast_or_null<mlir::IntegerAttr>(d.get(key));
    return a ? a.getInt() : 0;
  };
  json::OStream j(outs(), 2);
  j.object([&] {
    j.attribute("opt_level", int64_t(optLevel));
    j.attribute("max_seq", field(kv, "max_seq"));
    j.attribute("max_batch_tokens", field(memory, "max_batch_tokens"));
    j.attribute("kv_cache_bytes", field(kv, "total_bytes"));
    j.attribute("arena_bytes", field(memory, "arena_bytes"));
    j.attribute("naive_bytes", field(memory, "naive_bytes"));
    j.attribute("lower_bound_bytes", field(memory, "lower_bound_bytes"));
    j.attributeArray("layers", [&] {
      for (auto [i, layer] :
           llvm::enumerate(cast<mlir::ArrayAttr>(kv.get("layers"))
                               .getAsRange<mlir::DictionaryAttr>())) {
        j.object([&] {
          j.attribute("layer", int64_t(i));
          j.attribute("kv_cache_bytes", field(layer, "bytes"));
          j.attribute("capacity", field(layer, "capacity"));
          j.attribute("window", field(layer, "window"));
        });
      }
    });
  });
  outs() << "\n";
  return mlir::success();
}

} // namespace

int main(int argc, char **argv) {
  InitLLVM init(argc, argv);
  mlir::registerAsmPrinterCLOptions();
  mlir::registerMLIRContextCLOptions();
  mlir::registerPassManagerCLOptions();
  mlir::moe::registerMoEPasses();
  mlir::registerDefaultTimingManagerCLOptions();
  mlir::moe::hideForeignOptions(category);
  cl::ParseCommandLineOptions(
      argc, argv,
      "moe-compile: compile a Mixture-of-Experts model into an executable\n\n"
      "  moe-compile MODEL_DIR -o PATH [--target cpu|cuda] "
      "[--cuda-arch sm_80,sm_90]\n"
      "  moe-compile MODEL_DIR --emit=mlir|cpp|cu [-o FILE]\n"
      "  moe-compile MODEL_DIR --print-memory-plan\n\n"
      "The executable runs the model on token ids (see PATH --help); it\n"
      "memory-maps the weights from MODEL_DIR (or --weights DIR) at run "
      "time.\n");

  const bool isCuda = target == Target::Cuda;
  if (emit == Emit::Cu && !isCuda)
    return fail("--emit=cu needs --target cuda");
  if (!isCuda && !cudaArch.empty())
    return fail("--cuda-arch needs --target cuda");
  if (cudaArch.empty())
    cudaArch.push_back("sm_90");
  for (const std::string &arch : cudaArch)
    if (!is_contained({"sm_80", "sm_86", "sm_89", "sm_90"}, arch))
      return fail("--cuda-arch " + arch +
                  " is not supported: use sm_80, sm_86, sm_89 or sm_90 (the "
                  "kernels need bf16 tensor cores)");
  if (emit == Emit::Binary && outputPath.empty() && !printMemoryPlan)
    return fail("-o PATH is required to build an executable");
  if (optLevel != 0 && optLevel != 2)
    return fail("-O" + Twine(optLevel.getValue()) +
                " is not a level: use -O0 or -O2");
  if (maxSeq < 0)
    return fail("--max-seq must be positive");
  const int steps = emit == Emit::Binary ? (isCuda ? 5 : 4) : 3;

  mlir::DialectRegistry registry;
  registry.insert<mlir::moe::MoEDialect, mlir::func::FuncDialect,
                  mlir::arith::ArithDialect>();
  mlir::MLIRContext context(registry);
  context.loadAllAvailableDialects();

  // --mlir-timing reports every step, the pipeline's passes included.
  mlir::DefaultTimingManager tm;
  mlir::applyDefaultTimingManagerCLOptions(tm);
  mlir::TimingScope timing = tm.getRootScope();

  progress(1, steps, "importing " + input);
  mlir::TimingScope importTimer = timing.nest("import");
  mlir::OwningOpRef<mlir::ModuleOp> module = load(context);
  if (!module || failed(mlir::verify(*module)))
    return 1;

  importTimer.stop();

  progress(2, steps, "optimizing");
  mlir::PassManager pm(&context);
  if (failed(mlir::applyPassManagerCLOptions(pm)))
    return 1;
  mlir::TimingScope pipelineTimer = timing.nest("pipeline");
  pm.enableTiming(pipelineTimer);
  mlir::moe::PipelineOptions pipeline;
  pipeline.optLevel = optLevel;
  pipeline.maxSeq = maxSeq;
  pipeline.maxBatchTokens = maxBatchTokens;
  pipeline.fuseEpilogues = fuseEpilogues;
  mlir::moe::buildDefaultPipeline(pm, pipeline);
  if (failed(pm.run(*module)))
    return 1;

  if (printMemoryPlan) {
    if (failed(printPlanJSON(*module)))
      return 1;
    if (outputPath.empty())
      return 0;
  }

  std::string outName = outputPath.empty() ? "-" : outputPath.getValue();
  std::string error;
  if (emit == Emit::MLIR) {
    if (!mlir::moe::writeOutputFile(
            outName, [&](raw_ostream &os) { os << **module << "\n"; }, error))
      return fail(error);
    return 0;
  }

  pipelineTimer.stop();

  progress(3, steps,
           isCuda ? "emitting CUDA for the CUDA target"
                  : "emitting C++ for the CPU target");
  mlir::TimingScope emitTimer = timing.nest(isCuda ? "emit CUDA" : "emit C++");
  mlir::moe::EmitOptions options;
  options.maxPositions = maxSeq;
  SmallString<128> absolute(input);
  sys::fs::make_absolute(absolute);
  sys::path::remove_dots(absolute, true);
  options.modelName = sys::path::filename(absolute).str();
  std::string source;
  std::optional<mlir::moe::CudaProgram> cuda;
  if (isCuda) {
    auto program = mlir::moe::emitCudaProgram(*module, options);
    if (failed(program))
      return 1;
    cuda = std::move(*program);
    source = cuda->hostPlan;
  } else {
    raw_string_ostream os(source);
    if (failed(mlir::moe::emitCpuProgram(*module, options, os)))
      return 1;
  }

  if (emit == Emit::Cpp || emit == Emit::Cu) {
    StringRef text = emit == Emit::Cu ? StringRef(cuda->deviceCode) : source;
    if (!mlir::moe::writeOutputFile(
            outName, [&](raw_ostream &os) { os << text; }, error))
      return fail(error);
    return 0;
  }
  emitTimer.stop();
  mlir::TimingScope buildTimer = timing.nest("build executable");
  return build(source, cuda ? &*cuda : nullptr, outputPath, 4, steps);
}
