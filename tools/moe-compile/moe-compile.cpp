//===- moe-compile.cpp - the moe-compile driver -----------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
//   moe-compile MODEL -o PATH [--target cpu|cuda] [--emit=bin|mlir|cpp|cu]
//
// MODEL is a Hugging Face directory, a Mixtral GGUF file (llama.cpp's
// format, its weights read in place), or moe IR from moe-translate (checked
// against the weight files it names). The driver imports it, runs the
// pipeline, emits the host plan and kernels (C++ for the CPU target; CUDA
// kernels plus a C++ host plan for the CUDA target, built with nvcc), and
// builds them with the runtime into one executable at PATH. PATH is checked
// before any work, is never one of the inputs, and is replaced (through a
// unique temporary file) only when every step succeeded.
//
//===----------------------------------------------------------------------===//

#include "compiler/Passes.h"
#include "compiler/common/ArtifactWeights.h"
#include "compiler/common/HostPlan.h"
#include "dialects/MoE/MoEDialect.h"
#include "frontends/InputFiles.h"
#include "frontends/gguf/GGUFImporter.h"
#include "frontends/hf/ChatTemplate.h"
#include "frontends/hf/HFImporter.h"
#include "frontends/hf/Tokenizer.h"
#include "frontends/hf/WeightFiles.h"
#include "frontends/onnx/ONNXImporter.h"
#include "passes/Passes.h"
#include "tools/common/CommandLine.h"
#include "tools/common/OutputFile.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/AsmState.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Support/Timing.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/Signals.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/WithColor.h"

#include <atomic>
#include <cmath>
#include <csignal>
#include <cstring>
#include <sys/wait.h>
#include <unistd.h>

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
static cl::opt<Target>
    target("target", cl::desc("Where the executable runs"),
           cl::init(Target::Cpu),
           cl::values(clEnumValN(Target::Cpu, "cpu", "C++ kernels (default)"),
                      clEnumValN(Target::Cuda, "cuda",
                                 "CUDA kernels built with nvcc; runs on GPU 0 "
                                 "(one GPU a rank with --expert-parallel)")),
           cl::cat(category));
enum class Emit { Binary, MLIR, LaunchPlan, Cpp, Cu };
static cl::opt<Emit>
    emit("emit", cl::desc("What to produce"), cl::init(Emit::Binary),
         cl::values(clEnumValN(Emit::Binary, "bin", "the executable (default)"),
                    clEnumValN(Emit::MLIR, "mlir",
                               "moe IR after the pipeline (planned; "
                               "moe-compile takes it back as input)"),
                    clEnumValN(Emit::LaunchPlan, "moert",
                               "the target's launch plan: moert IR after "
                               "--moe-lower-to-cpu/cuda, every target "
                               "decision in it"),
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
                    "cache), at most 2147483647; default: the model's "
                    "max_position_embeddings"),
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
    cl::desc("Batch size the memory plan reports its bytes for, in [1, "
             "1048576] (the binary takes its own --max-batch-tokens; the "
             "plan fits any size)"),
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
static cl::opt<std::string> quantize(
    "quantize",
    cl::desc("Store weights block-quantised: q8_0 (8-bit), q4_0 (4-bit), "
             "q4_1 (4-bit with a minimum), 32 elements per block as in "
             "llama.cpp. The quantised tensors are written once into "
             "PATH.weights.safetensors beside the executable (beside the "
             "plan with --emit=cpp -o PATH); the model's files are not "
             "changed (docs/quantisation.md)"),
    cl::value_desc("q8_0|q4_0|q4_1"), cl::cat(category));
static cl::opt<std::string> quantizeOnly(
    "quantize-only",
    cl::desc("With --quantize: all (default: embedding, attention, experts, "
             "lm_head; never norms or router gates) or experts"),
    cl::value_desc("all|experts"), cl::init("all"), cl::cat(category));
static cl::opt<int64_t> expertParallel(
    "expert-parallel",
    cl::desc("Split the experts across N ranks (moe-shard-experts): the "
             "executable runs as N MPI processes, mpirun -np N PATH ..., "
             "each mapping only its own experts' weights; attention and "
             "the dense layers are replicated. N in [1, experts]; E % N "
             "need not be 0 (the first E % N ranks hold one more). CPU "
             "ranks over MPI; with --target cuda, GPU ranks over NCCL, one "
             "GPU a rank (docs/distributed.md)"),
    cl::value_desc("N"), cl::init(0), cl::cat(category));
static cl::opt<double> capacityFactor(
    "capacity-factor",
    cl::desc("Give each expert a capacity (moe-expert-capacity, as in "
             "GShard and the Switch Transformer): in a forward call of T "
             "tokens, expert e processes at most ceil(C * T * k / experts) "
             "(token, choice) pairs, first choices first, in token order; "
             "the pairs over it are dropped, and the binary reports the "
             "drop rate. Bounds each expert's work (and, with "
             "--expert-parallel, the rows each rank receives) at the cost "
             "of exactness. C > 0; off by default (exact) "
             "(docs/tools.md)"),
    cl::value_desc("C"), cl::init(0.0), cl::cat(category));
static cl::opt<bool> checkWeights(
    "check-weights",
    cl::desc("Scan every weight for NaN and infinity before compiling "
             "(reads all the weights once; off by default)"),
    cl::cat(category));

static cl::opt<std::string> tokenizerOpt(
    "tokenizer",
    cl::desc("The tokenizer embedded in the executable (for --prompt): "
             "'auto' (default: the model directory's tokenizer.json, else "
             "its tokenizer.model), 'none', or the path of a tokenizer.json "
             "or SentencePiece .model file (BOS/EOS from the model "
             "directory's config.json and tokenizer_config.json)"),
    cl::init("auto"), cl::value_desc("auto|none|PATH"), cl::cat(category));

static cl::opt<std::string> chatTemplateOpt(
    "chat-template",
    cl::desc("The chat template whose text around one user message the "
             "executable's --chat uses: 'auto' (default: the model "
             "directory's chat_template.jinja, else its "
             "tokenizer_config.json's chat_template; one our Jinja subset "
             "cannot render is a warning and leaves --chat off), 'none', or "
             "the path of a template file or a tokenizer_config.json (which "
             "must render)"),
    cl::init("auto"), cl::value_desc("auto|none|PATH"), cl::cat(category));

namespace {

int fail(const Twine &message) {
  // One line, whatever names it quotes (a newline or an escape sequence in
  // a file or tensor name is shown as '?').
  WithColor::error(errs(), "moe-compile")
      << mlir::moe::printableText(message.str()) << "\n";
  return 1;
}

void progress(int step, int steps, const Twine &message) {
  if (!quiet)
    errs() << "[" << step << "/" << steps << "] " << message << "\n";
}

/// Progress of a long pass over the weights, in MB: about every 5% (and at
/// the end), on one line of its own each.
class ByteProgress {
public:
  explicit ByteProgress(StringRef what) : what(what.str()) {}
  void operator()(uint64_t done, uint64_t total) {
    if (quiet || (done < total && done - shown < total / 20))
      return;
    shown = done;
    errs() << "      " << what
           << format(" %.1f of %.1f MB\n", done / 1e6, total / 1e6);
  }

private:
  std::string what;
  uint64_t shown = 0;
};

/// Largest .mlir input read (IR never holds the weights).
constexpr uint64_t kMaxMLIRBytes = uint64_t(1) << 30;

/// Imports the model directory or parses the .mlir file `input` (into
/// `sourceMgr`, which the diagnostics quote); the module returned verifies.
mlir::OwningOpRef<mlir::ModuleOp> load(mlir::MLIRContext &context,
                                       SourceMgr &sourceMgr) {
  sys::fs::file_status status;
  if (std::error_code ec = sys::fs::status(input, status)) {
    fail(input + (ec == std::errc::no_such_file_or_directory
                      ? ": no such model directory, GGUF, ONNX or .mlir file"
                      : ": cannot access: " + ec.message()));
    return nullptr;
  }
  bool gguf = status.type() != sys::fs::file_type::directory_file &&
              mlir::moe::gguf::isGGUFFile(input);
  bool onnx = status.type() != sys::fs::file_type::directory_file &&
              mlir::moe::onnxfe::isONNXFile(input);
  if (status.type() == sys::fs::file_type::directory_file || gguf || onnx) {
    auto module = onnx   ? mlir::moe::onnxfe::importModel(context, input)
                  : gguf ? mlir::moe::gguf::importModel(context, input)
                         : mlir::moe::hf::importModel(context, input);
    if (!module) {
      handleAllErrors(module.takeError(),
                      [](const ErrorInfoBase &e) { fail(e.message()); });
      return nullptr;
    }
    if (failed(mlir::verify(**module)))
      return nullptr;
    return std::move(*module);
  }
  auto file = mlir::moe::readInputFile(input, kMaxMLIRBytes);
  if (!file) {
    fail(toString(file.takeError()));
    return nullptr;
  }
  if (Error e = mlir::moe::checkIRNesting(input, (*file)->getBuffer())) {
    fail(toString(std::move(e)));
    return nullptr;
  }
  sourceMgr.AddNewSourceBuffer(std::move(*file), SMLoc());
  auto module = mlir::parseSourceFile<mlir::ModuleOp>(sourceMgr, &context);
  if (module && (*module)->hasAttr("moert.target")) {
    fail(input + " is a launch plan (moert IR, after --moe-lower-to-" +
         "cpu/cuda); moe-compile takes moe IR (moe-translate's output or "
         "--emit=mlir), and moe-translate --moe-to-cpp prints a plan");
    return nullptr;
  }
  // IR from a file is untrusted: its manifest must match the weight files
  // it names before anything is built from it.
  if (module && (failed(mlir::verify(*module)) ||
                 failed(mlir::moe::hf::verifyWeightFiles(*module))))
    return nullptr;
  return module;
}

/// The model's name as the binary shows it: the input's own name, with
/// control characters (a newline, an escape sequence) shown as '?'.
std::string displayName() {
  SmallString<256> real;
  if (sys::fs::real_path(input, real))
    real = input;
  std::string name = mlir::moe::printableText(sys::path::filename(real));
  return name.empty() ? "model" : name;
}

/// What an interrupted build (SIGINT, SIGTERM) must undo, in storage a
/// signal handler may read: the compiler it is waiting for, and the files
/// of its temporary directory.
struct InterruptedBuild {
  std::atomic<pid_t> child{0};
  char dir[4096] = "";
  char files[6][4096] = {};
  int numFiles = 0;

  /// Records `path` for removal (before the file exists).
  void add(StringRef path) {
    if (numFiles < 6 && path.size() < sizeof(files[0]))
      memcpy(files[numFiles++], path.data(), path.size());
  }
} interrupted;

/// Runs in LLVM's SIGINT/SIGTERM handler (only async-signal-safe calls):
/// stops the compiler, removes the temporary directory, and exits. The
/// temporary output beside -o is removed by RemoveFileOnSignal.
void onInterrupt() {
  if (pid_t child = interrupted.child.load(); child > 0) {
    // SIGTERM: the compiler driver removes its own temporaries and stops
    // its subprocesses.
    kill(child, SIGTERM);
    waitpid(child, nullptr, 0);
  }
  for (int i = 0; i < interrupted.numFiles; ++i)
    unlink(interrupted.files[i]);
  if (interrupted.dir[0])
    rmdir(interrupted.dir);
  const char message[] = "moe-compile: interrupted; nothing was written\n";
  ssize_t ignored = write(STDERR_FILENO, message, sizeof(message) - 1);
  (void)ignored;
  _exit(1);
}

/// Runs `args` with its output in `log`. On failure shows the tool's own
/// messages (the start of its log, where the first error is, and the end)
/// and says what failed and how.
bool run(ArrayRef<std::string> args, StringRef log, const Twine &what) {
  std::vector<StringRef> argv(args.begin(), args.end());
  if (verbose)
    errs() << join(args, " ") << "\n";
  std::optional<StringRef> redirects[] = {std::nullopt, log, log};
  std::string error;
  bool notRun = false;
  sys::ProcessInfo child = sys::ExecuteNoWait(args.front(), argv, std::nullopt,
                                              redirects, 0, &error, &notRun);
  if (notRun || child.Pid == sys::ProcessInfo::InvalidPid) {
    fail(what + " failed: cannot run " + args.front() + ": " + error);
    return false;
  }
  interrupted.child.store(child.Pid);
  sys::ProcessInfo done = sys::Wait(child, std::nullopt, &error);
  interrupted.child.store(0);
  int rc = done.ReturnCode;
  bool crashed = rc == -2;
  if (rc == 0)
    return true;
  if (rc == -1) {
    fail(what + " failed: " + error);
    return false;
  }
  if (auto text = MemoryBuffer::getFile(log)) {
    SmallVector<StringRef> lines;
    (*text)->getBuffer().split(lines, '\n');
    constexpr size_t kHead = 60, kTail = 10;
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i == kHead && lines.size() > kHead + kTail + 1) {
        errs() << "... (" << lines.size() - kHead - kTail << " more lines)\n";
        i = lines.size() - kTail - 1;
        continue;
      }
      if (!lines[i].empty() || i + 1 < lines.size())
        errs() << lines[i] << "\n";
    }
  }
  fail(what + " failed: " + sys::path::filename(args.front()) +
       (crashed ? " crashed" + (error.empty() ? "" : ": " + error)
                : " exited with code " + Twine(rc)) +
       " (its messages are above; -v shows the command)");
  return false;
}

/// Writes `text` to `path` or says why it could not.
bool writeFile(StringRef path, StringRef text) {
  if (Error e = mlir::moe::writeOutputFile(
          path, [&](raw_ostream &os) { os << text; })) {
    fail(toString(std::move(e)));
    return false;
  }
  return true;
}

/// Builds the host plan `source` (and for CUDA the device code `cuda`, with
/// nvcc, into a fatbin the plan embeds) into the executable `path`,
/// atomically: PATH is replaced only when every step succeeded.
int build(StringRef source, const mlir::moe::CudaProgram *cuda, StringRef path,
          int step, int steps, bool sentencePiece, bool mpi,
          function_ref<int()> writeBeside) {
  SmallString<128> dir;
  if (std::error_code ec = sys::fs::createUniqueDirectory("moe-compile", dir))
    return fail("cannot create a temporary directory: " + ec.message());
  scope_exit cleanup([&] { sys::fs::remove_directories(dir); });
  // The fatbin's path is pasted into a string literal and an assembler
  // string: only a temporary directory that needs no quoting is used.
  if (llvm::any_of(dir, [](char c) {
        return (unsigned char)c < 0x20 || c == '"' || c == '\\' || c == 0x7f;
      }))
    return fail("the temporary directory " + dir +
                " has characters the build cannot quote; set TMPDIR to "
                "another directory");
  SmallString<128> cpp(dir), log(dir), built(dir), cu(dir), fatbin(dir);
  sys::path::append(cpp, "program.cpp");
  sys::path::append(log, "build.log");
  sys::path::append(built, "program");
  sys::path::append(cu, "kernels.cu");
  sys::path::append(fatbin, "kernels.fatbin");
  // Interrupted, the build leaves nothing behind either.
  if (dir.size() < sizeof(interrupted.dir)) {
    memcpy(interrupted.dir, dir.data(), dir.size());
    for (StringRef file :
         {cpp.str(), log.str(), built.str(), cu.str(), fatbin.str()})
      interrupted.add(file);
    sys::SetInterruptFunction(onInterrupt);
  }
  if (!writeFile(cpp, source))
    return 1;
  std::vector<std::string> args = {cxx,   "-std=c++17",
                                   "-O2", "-march=" + march,
                                   "-w",  "-I" MOE_RUNTIME_INCLUDE_DIR};
  if (cuda) {
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
  args.insert(args.end(), {std::string(cpp), MOE_RUNTIME_MAIN_LIB});
  // A SentencePiece tokenizer runs through libsentencepiece (shared: Debian
  // ships no archive); other programs do without it.
  // (Whole: libmoert refers to it weakly, which pulls nothing from an
  // archive.)
  if (sentencePiece)
    args.insert(args.end(), {"-Wl,--whole-archive", MOE_RUNTIME_SPM_LIB,
                             "-Wl,--no-whole-archive"});
  // Expert parallelism: the MPI communicator (CPU) or the NCCL one (CUDA,
  // bootstrapped over MPI), and MPI, NCCL and the CUDA runtime (shared).
  if (mpi)
    args.insert(args.end(), {"-Wl,--whole-archive",
                             cuda ? MOE_RUNTIME_NCCL_LIB : MOE_RUNTIME_MPI_LIB,
                             "-Wl,--no-whole-archive"});
  args.push_back(MOE_RUNTIME_LIB);
  if (mpi) {
    SmallVector<StringRef> libs;
    if (cuda)
      StringRef(MOE_NCCL_LIBS).split(libs, ',', -1, false);
    StringRef(MOE_MPI_LIBS).split(libs, ',', -1, false);
    // Each by full path, and its directory as a run path, so that the
    // executable finds libnccl and libcudart where the CUDA toolkit keeps
    // them without LD_LIBRARY_PATH (which still takes precedence: RUNPATH,
    // not RPATH, whatever the linker's default).
    StringSet<> runPaths;
    for (StringRef lib : libs) {
      args.push_back(lib.str());
      StringRef dir = sys::path::parent_path(lib);
      if (sys::path::is_absolute(lib) && runPaths.insert(dir).second)
        args.insert(args.end(), {"-Xlinker", "-rpath", "-Xlinker", dir.str()});
    }
    if (!runPaths.empty())
      args.push_back("-Wl,--enable-new-dtags");
  }
  // The tokenizer's regexes: libpcre2-8's archive, so that the executable
  // needs no shared library it did not need before.
  args.push_back("-l:libpcre2-8.a");
  if (sentencePiece)
    args.push_back("-lsentencepiece");
  args.insert(args.end(), {"-lpthread", "-ldl", "-o", std::string(built)});
  progress(step, steps, "building " + path + " with " + cxx);
  if (!run(args, log, "building the executable"))
    return 1;
  // Into place beside PATH under a unique name, then renamed over it.
  auto binary = MemoryBuffer::getFile(built, /*IsText=*/false,
                                      /*RequiresNullTerminator=*/false);
  if (!binary)
    return fail("building the executable failed: " + cxx +
                " exited with code 0 but wrote no executable (" +
                binary.getError().message() + ")");
  // What goes beside the executable, before the executable itself: PATH is
  // replaced only when that was written too.
  if (int rc = writeBeside())
    return rc;
  if (Error e = mlir::moe::writeOutputFile(
          path, [&](raw_ostream &os) { os << (*binary)->getBuffer(); },
          mlir::moe::OutputKind::Executable))
    return fail(toString(std::move(e)));
  return 0;
}

/// The plan moe-plan-kv-cache and moe-plan-memory recorded on @forward, as
/// JSON on stdout.
mlir::LogicalResult printPlanJSON(mlir::ModuleOp module) {
  auto func = module.lookupSymbol<mlir::func::FuncOp>("forward");
  auto kv = func ? func->getAttrOfType<mlir::moe::KVCachePlanAttr>(
                       mlir::moe::kKVCachePlanAttrName)
                 : nullptr;
  auto memory = func ? func->getAttrOfType<mlir::moe::MemoryPlanAttr>(
                           mlir::moe::kMemoryPlanAttrName)
                     : nullptr;
  if (!kv || !memory) {
    fail("no memory plan: the pipeline did not plan @forward");
    return mlir::failure();
  }
  json::OStream j(outs(), 2);
  j.object([&] {
    j.attribute("opt_level", int64_t(optLevel));
    j.attribute("max_seq", kv.getMaxSeq());
    j.attribute("max_batch_tokens", memory.getMaxBatchTokens());
    j.attribute("kv_cache_bytes", kv.getTotalBytes());
    j.attribute("arena_bytes", memory.getArenaBytes());
    j.attribute("naive_bytes", memory.getNaiveBytes());
    j.attribute("lower_bound_bytes", memory.getLowerBoundBytes());
    j.attributeArray("layers", [&] {
      for (int64_t i = 0, e = kv.getBytes().size(); i < e; ++i) {
        j.object([&] {
          j.attribute("layer", i);
          j.attribute("kv_cache_bytes", kv.getBytes()[i]);
          j.attribute("capacity", kv.getCapacities()[i]);
          j.attribute("window", kv.getWindows()[i]);
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
  mlir::moe::exitCleanlyOnStdoutErrors("moe-compile");
  mlir::registerAsmPrinterCLOptions();
  mlir::registerMLIRContextCLOptions();
  mlir::registerPassManagerCLOptions();
  mlir::moe::registerMoEPasses();
  mlir::moe::registerMoETargetPasses();
  mlir::registerDefaultTimingManagerCLOptions();
  mlir::moe::hideForeignOptions(category);
  cl::ParseCommandLineOptions(
      argc, argv,
      "moe-compile: compile a Mixture-of-Experts model into an executable\n\n"
      "  moe-compile MODEL_DIR -o PATH [--target cpu|cuda] "
      "[--cuda-arch sm_80,sm_90]\n"
      "  moe-compile MODEL_DIR --emit=mlir|moert|cpp|cu [-o FILE]\n"
      "  moe-compile MODEL_DIR --print-memory-plan\n"
      "  moe-compile MODEL.gguf -o PATH      (a Mixtral GGUF file: F32, F16,\n"
      "                                       BF16, Q8_0, Q4_0, Q4_1, Q4_K,\n"
      "                                       Q5_K, Q6_K weights, read in\n"
      "                                       place)\n"
      "  moe-compile MODEL.onnx -o PATH      (ONNX Runtime GenAI's Mixtral\n"
      "                                       graph, com.microsoft.MoE or\n"
      "                                       QMoE and GroupQueryAttention,\n"
      "                                       or torch.onnx.export's\n"
      "                                       decomposed one (dynamo,\n"
      "                                       transformers 5); weights in\n"
      "                                       external data, in place when\n"
      "                                       stored [out, in])\n"
      "  moe-compile MODEL.mlir -o PATH      (IR from moe-translate)\n\n"
      "The executable runs the model on token ids (see PATH --help); it\n"
      "memory-maps the weights from MODEL_DIR or the GGUF or ONNX file's\n"
      "directory\n"
      "(or --weights DIR) at run time. Weights that cannot be mapped as\n"
      "they are (--quantize; ONNX weights stored [in, out], with\n"
      "interleaved rows, or QMoE's) are written once, at compile time, into\n"
      "PATH.weights.safetensors beside the executable, which maps it too.\n"
      "PATH is checked before any work, is never one of the model's files,\n"
      "and is replaced only when every step succeeded (docs/hardening.md).\n");

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
  mlir::moe::PipelineOptions pipeline;
  pipeline.optLevel = optLevel;
  pipeline.maxSeq = maxSeq;
  pipeline.maxBatchTokens = maxBatchTokens;
  pipeline.fuseEpilogues = fuseEpilogues;
  pipeline.target = isCuda ? "cuda" : "cpu";
  pipeline.quantize = quantize;
  pipeline.quantizeOnly = quantizeOnly;
  if (expertParallel.getNumOccurrences() && expertParallel < 1)
    return fail("--expert-parallel must be at least 1, got " +
                Twine(expertParallel.getValue()));
  pipeline.expertParallel = expertParallel;
  if (capacityFactor.getNumOccurrences() &&
      (!std::isfinite(capacityFactor.getValue()) || capacityFactor <= 0))
    return fail("--capacity-factor must be a finite number above 0, got " +
                formatv("{0}", capacityFactor.getValue()).str());
  pipeline.capacityFactor = capacityFactor;
  if (expertParallel > 0 && emit == Emit::Binary &&
      StringRef(MOE_RUNTIME_MPI_LIB).empty())
    return fail("--expert-parallel needs MPI, and this moe-compile was built "
                "without it: install openmpi-bin and libopenmpi-dev "
                "(scripts/setup.sh does) and rebuild");
  if (expertParallel > 0 && emit == Emit::Binary && isCuda &&
      StringRef(MOE_RUNTIME_NCCL_LIB).empty())
    return fail("--expert-parallel with --target cuda needs NCCL (nccl.h and "
                "libnccl beside nvcc, in the CUDA toolkit), and this "
                "moe-compile was built without it");
  if (Error e = mlir::moe::checkPipelineOptions(pipeline, "--"))
    return fail(toString(std::move(e)));
  // Where the output goes is checked before any work is done.
  const mlir::moe::OutputKind outputKind =
      emit == Emit::Binary ? mlir::moe::OutputKind::Executable
                           : mlir::moe::OutputKind::Text;
  if (!outputPath.empty())
    if (Error e = mlir::moe::checkOutputPath(outputPath, outputKind))
      return fail(toString(std::move(e)));
  // The quantised weights go beside the executable, or beside the host plan
  // of --emit=cpp -o FILE (other text emits name the file and write none).
  std::string weightsPath =
      (outputPath.empty() || outputPath == "-" ? std::string("model")
                                               : outputPath.getValue()) +
      ".weights.safetensors";
  SmallString<256> artifactDir(sys::path::parent_path(weightsPath));
  if (std::error_code ec = sys::fs::make_absolute(artifactDir))
    return fail("cannot tell the absolute path of " + weightsPath + ": " +
                ec.message());
  const bool writesWeights =
      !quantize.empty() &&
      (emit == Emit::Binary ||
       (emit == Emit::Cpp && outputPath != "-" && !outputPath.empty()));
  if (writesWeights)
    if (Error e = mlir::moe::checkOutputPath(weightsPath,
                                             mlir::moe::OutputKind::Data))
      return fail(toString(std::move(e)));
  const int steps =
      emit == Emit::Binary ? (isCuda ? 5 : 4) + !quantize.empty() : 3;

  mlir::DialectRegistry registry;
  registry.insert<mlir::moe::MoEDialect, mlir::moert::MoERTDialect,
                  mlir::func::FuncDialect, mlir::arith::ArithDialect>();
  mlir::moe::registerTargetModels(registry);
  mlir::MLIRContext context(registry);
  context.loadAllAvailableDialects();
  // Diagnostics quote names from the user's files: shown printable.
  mlir::moe::PrintableDiagnostics diagnostics(&context);
  context.printOpOnDiagnostic(false);
  SourceMgr sourceMgr;

  // --mlir-timing reports every step, the pipeline's passes included.
  mlir::DefaultTimingManager tm;
  mlir::applyDefaultTimingManagerCLOptions(tm);
  mlir::TimingScope timing = tm.getRootScope();

  progress(1, steps, "importing " + input);
  mlir::TimingScope importTimer = timing.nest("import");
  mlir::OwningOpRef<mlir::ModuleOp> module = load(context, sourceMgr);
  if (!module)
    return 1;
  if (!outputPath.empty()) {
    // Never one of the files this compilation reads.
    std::vector<std::string> inputs = mlir::moe::hf::modelFilePaths(*module);
    inputs.push_back(input);
    if (Error e = mlir::moe::checkNotAnInput(outputPath, inputs))
      return fail(toString(std::move(e)));
    if (Error e = mlir::moe::checkNotAnInput(weightsPath, inputs))
      return fail(toString(std::move(e)));
  }
  // The tokenizer, converted now so that a bad one fails before any work.
  mlir::moe::hf::TokenizerBlob tokenizer;
  if (tokenizerOpt != "none") {
    auto dir = (*module)->getAttrOfType<mlir::StringAttr>("moe.weight_dir");
    mlir::moe::ModelAttr model = mlir::moe::getModel(*module);
    // A GGUF file carries its tokenizer in its metadata (moe.tokenizer
    // names the file).
    auto gguf = (*module)->getAttrOfType<mlir::DictionaryAttr>("moe.tokenizer");
    auto ggufFile = gguf ? gguf.getAs<mlir::StringAttr>("file") : nullptr;
    mlir::moe::hf::TokenizerExtras extras;
    // The chat template's text around one user message (--chat), from
    // the model's directory (a GGUF file's own is not read yet).
    if (dir && chatTemplateOpt != "none") {
      bool given = chatTemplateOpt != "auto";
      auto found = mlir::moe::hf::findChatTemplate(
          dir.getValue(), given ? StringRef(chatTemplateOpt) : "");
      auto format = [&]() -> Expected<mlir::moe::hf::ChatFormat> {
        if (!found)
          return found.takeError();
        const mlir::moe::hf::ModelChatTemplate &t = **found;
        return mlir::moe::hf::chatFormat(t.file, t.config.chatTemplate,
                                         t.config.bosToken, t.config.eosToken);
      };
      if (!found || *found) {
        Expected<mlir::moe::hf::ChatFormat> chat = format();
        if (chat) {
          extras.chatPrefix = std::move(chat->prefix);
          extras.chatSuffix = std::move(chat->suffix);
        } else if (given) {
          return fail(toString(chat.takeError()));
        } else {
          WithColor::warning(errs(), "moe-compile")
              << mlir::moe::printableText(toString(chat.takeError()))
              << "; the executable's --chat is off "
                 "(--chat-template=PATH gives another template)\n";
        }
      } else if (given) {
        return fail(chatTemplateOpt + ": no chat template");
      }
    }
    if (dir && model && ggufFile && tokenizerOpt == "auto") {
      SmallString<256> path(dir.getValue());
      sys::path::append(path, ggufFile.getValue());
      auto blob = mlir::moe::hf::convertGGUFTokenizer(
          path, model.getVocabSize(), extras);
      if (!blob)
        return fail(toString(blob.takeError()) +
                    " (--tokenizer=none compiles the model without a "
                    "tokenizer; --tokenizer=PATH takes a tokenizer.json or "
                    ".model instead)");
      tokenizer = std::move(*blob);
    } else if (dir && model) {
      // A GGUF file's BOS and EOS, where its directory has no config.json
      // that names them.
      if (gguf) {
        if (auto bos = gguf.getAs<mlir::IntegerAttr>("bos_token_id"))
          extras.fallbackBos = bos.getInt();
        if (auto eos = gguf.getAs<mlir::IntegerAttr>("eos_token_id"))
          extras.fallbackEos = eos.getInt();
      }
      auto blob =
          tokenizerOpt == "auto"
              ? mlir::moe::hf::findTokenizer(dir.getValue(),
                                             model.getVocabSize(), extras)
              : mlir::moe::hf::convertTokenizer(tokenizerOpt, dir.getValue(),
                                                model.getVocabSize(), extras);
      if (!blob)
        return fail(toString(blob.takeError()));
      tokenizer = std::move(*blob);
      if (!outputPath.empty() && !tokenizer.source.empty())
        if (Error e =
                mlir::moe::checkNotAnInput(outputPath, {tokenizer.source}))
          return fail(toString(std::move(e)));
      if (!tokenizer.data.empty() && !quiet)
        errs() << "      tokenizer: " << tokenizer.source << " ("
               << tokenizer.pieces << " pieces)\n";
    }
  }
  if (checkWeights) {
    ByteProgress report("checking weights:");
    if (failed(mlir::moe::hf::checkWeightValues(*module, report)))
      return fail("the weights hold NaN or infinity (see above); fix the "
                  "checkpoint before compiling it");
  }
  importTimer.stop();

  progress(2, steps, "optimizing");
  mlir::PassManager pm(&context);
  if (failed(mlir::applyPassManagerCLOptions(pm)))
    return 1;
  mlir::TimingScope pipelineTimer = timing.nest("pipeline");
  pm.enableTiming(pipelineTimer);
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
  auto writeText = [&](llvm::function_ref<void(raw_ostream &)> write) {
    if (Error e = mlir::moe::writeOutputFile(outName, write))
      return fail(toString(std::move(e)));
    return 0;
  };
  if (emit == Emit::MLIR)
    return writeText([&](raw_ostream &os) { os << **module << "\n"; });
  // Weights with a pending quantisation or a layout (an importer's
  // `transposed`, `rows S step K of T`) now name their place in the
  // artifact's weights file (written with the executable).
  FailureOr<mlir::moe::ArtifactWeightsPlan> quantized =
      mlir::moe::planArtifactWeights(*module, sys::path::filename(weightsPath));
  if (failed(quantized))
    return 1;
  // Without --quantize the file may still be due (an importer's layouts):
  // its path is checked as soon as that is known.
  if (!writesWeights && !quantized->empty() &&
      (emit == Emit::Binary ||
       (emit == Emit::Cpp && outputPath != "-" && !outputPath.empty())))
    if (Error e = mlir::moe::checkOutputPath(weightsPath,
                                             mlir::moe::OutputKind::Data))
      return fail(toString(std::move(e)));
  // Below the memory plan: the target's launch plan, which the printers
  // only print.
  mlir::PassManager lower(&context);
  if (failed(mlir::applyPassManagerCLOptions(lower)))
    return 1;
  lower.enableTiming(pipelineTimer);
  if (isCuda)
    lower.addPass(mlir::moe::createLowerToCuda());
  else
    lower.addPass(mlir::moe::createLowerToCpu());
  if (failed(lower.run(*module)))
    return 1;
  if (emit == Emit::LaunchPlan)
    return writeText([&](raw_ostream &os) { os << **module << "\n"; });

  pipelineTimer.stop();

  progress(3, steps,
           isCuda ? "emitting CUDA for the CUDA target"
                  : "emitting C++ for the CPU target");
  mlir::TimingScope emitTimer = timing.nest(isCuda ? "emit CUDA" : "emit C++");
  mlir::moe::EmitOptions options;
  options.modelName = displayName();
  options.tokenizer = tokenizer.data;
  options.tokenizerSource = sys::path::filename(tokenizer.source).str();
  if (!quantized->empty()) {
    options.artifactDir = std::string(artifactDir);
    options.artifactBuild = quantized->buildId;
  }
  std::string source;
  std::optional<mlir::moe::CudaProgram> cuda;
  if (isCuda) {
    auto program = mlir::moe::printCudaProgram(*module, options);
    if (failed(program))
      return 1;
    cuda = std::move(*program);
    source = cuda->hostPlan;
  } else {
    raw_string_ostream os(source);
    if (failed(mlir::moe::printCpuProgram(*module, options, os)))
      return 1;
  }

  auto writeWeights = [&]() -> int {
    if (quantized->empty())
      return 0;
    // Its own step with --quantize (IR with a pending quantisation, from
    // --emit=mlir, gets it without the flag).
    size_t q = quantized->numQuantized(), r = quantized->numRelaidOut();
    std::string what =
        (q ? "quantising " + std::to_string(q) + " weights" : std::string()) +
        (q && r ? ", " : "") +
        (r ? "re-laying out " + std::to_string(r) + " weights" : "") +
        " into " + weightsPath;
    if (!quantize.empty() && emit == Emit::Binary)
      progress(steps, steps, what);
    else if (!quiet)
      errs() << "      " << what << "\n";
    ByteProgress report("written");
    if (Error e = mlir::moe::writeOutputFileOrFail(
            weightsPath,
            [&](raw_ostream &os) {
              return mlir::moe::writeArtifactWeights(*quantized, os, report);
            },
            mlir::moe::OutputKind::Data))
      return fail(toString(std::move(e)));
    return 0;
  };
  if (emit == Emit::Cpp || emit == Emit::Cu) {
    StringRef text = emit == Emit::Cu ? StringRef(cuda->deviceCode) : source;
    // The host plan names the weights file beside it: whoever builds the
    // plan (a cross-build, the CUDA emulator) needs that file too. It is
    // written first, so a plan never names a file that failed.
    if (emit == Emit::Cpp && !quantized->empty()) {
      if (outName != "-") {
        if (int rc = writeWeights())
          return rc;
      } else if (!quiet) {
        WithColor::warning(errs(), "moe-compile")
            << "the plan names " << weightsPath
            << ", which is written only with -o FILE\n";
      }
    }
    return writeText([&](raw_ostream &os) { os << text; });
  }
  emitTimer.stop();
  mlir::TimingScope buildTimer = timing.nest("build executable");
  return build(source, cuda ? &*cuda : nullptr, outputPath, 4, steps,
               tokenizer.sentencePiece, expertParallel > 0, writeWeights);
}
