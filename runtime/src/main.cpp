//===- main.cpp - command line of every compiled model ---------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// The `main` linked into each binary moe-compile builds. The model comes from
// the generated code (`moert_compiled_program`); this file parses the command
// line, loads the weights, runs prefill and decode, samples, and reports.
//
// Every failure ends in one message on stderr and exit status 1, before
// anything is printed on stdout (but for --prompt/--chat, which print text
// as it is generated, when a decode step fails): bad options, weight files
// (checked at load; a file truncated while the model runs raises SIGBUS, which
// is caught and reported), logits that are not finite, and --dump-logits, which
// only ever creates a new file or replaces a regular one, through a temporary
// file created beside it and renamed into place once complete.
//
//===----------------------------------------------------------------------===//

#include "internal.h"
#include "moert/comm.h"
#include "moert/moert.h"
#include "tokenizer.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <numeric>
#include <random>
#include <string>
#include <vector>

extern "C" const moert_program moert_compiled_program;

// libmoert_mpi, linked (whole) only into expert-parallel programs.
extern "C" __attribute__((weak)) int
moert_comm_mpi_create(int *argc, char ***argv, moert_comm **comm, char *error,
                      unsigned long errorSize);
extern "C" __attribute__((weak)) void moert_comm_mpi_free(moert_comm *comm);
// libmoert_nccl, linked instead into expert-parallel CUDA programs.
extern "C" __attribute__((weak)) int
moert_comm_nccl_create(int *argc, char ***argv, moert_comm **comm, char *error,
                       unsigned long errorSize);
extern "C" __attribute__((weak)) void moert_comm_nccl_free(moert_comm *comm);

namespace {

const char *kUsage =
    "usage: %s (--prompt TEXT | --chat TEXT | --tokens IDS) [-n N] [options]\n"
    "       %s --tokenize TEXT | --detokenize IDS\n"
    "\n"
    "Runs the compiled model '%s': prefill on the prompt, then generates up\n"
    "to N tokens. With --prompt or --chat the generated text is printed to\n"
    "stdout as it is generated (then one newline), and generation stops at\n"
    "the model's EOS token; with --tokens the generated ids go to stdout on\n"
    "one line. Speeds go to stderr.\n"
    "\n"
    "  --prompt TEXT         the prompt as text, tokenised with the model's\n"
    "                        tokenizer (a BOS token first when the model's\n"
    "                        config asks for it)\n"
    "  --chat TEXT           one user message, wrapped in the model's chat\n"
    "                        template, then as --prompt (no BOS added: the\n"
    "                        template has it)\n"
    "  --tokens IDS          the prompt as token ids, comma-separated; prints\n"
    "                        ids and never stops early\n"
    "  --tokenize TEXT       print the token ids of TEXT (as --prompt would\n"
    "                        feed them) on one line and exit\n"
    "  --detokenize IDS      print the text of comma-separated ids (special\n"
    "                        tokens left out, decoded as --prompt streams\n"
    "                        them) and exit\n"
    "  -n N                  most tokens to generate (default 16)\n"
    "  --ignore-eos          with --prompt/--chat, generate all N tokens\n"
    "  --temperature T       sampling temperature; 0 = greedy (default 0)\n"
    "  --top-p P             nucleus sampling threshold in (0, 1] (default 1)\n"
    "  --seed N              seed of the sampler (default 0)\n"
    "  --threads N           CPU threads; 0 = all cores (default 0; CUDA\n"
    "                        programs run on GPU 0 and ignore it)\n"
    "  --max-batch-tokens N  most tokens per forward pass; longer prompts run\n"
    "                        in chunks with the same results (default 512;\n"
    "                        dynamic RoPE scaling excepted: its frequencies\n"
    "                        follow each pass's length; and a capacity\n"
    "                        factor: each pass has its own capacity)\n"
    "  --weights DIR         directory holding the model's weight files\n"
    "                        (safetensors, GGUF, or ONNX external data)\n"
    "                        (default: the directory it was compiled from)\n"
    "  --quantized-weights DIR  directory holding the weights file\n"
    "                        moe-compile wrote beside this executable\n"
    "                        (--quantize, or re-laid-out ONNX weights;\n"
    "                        default: this executable's own directory)\n"
    "  --dump-logits FILE    write the logits as float32 .npy [prompt + N,\n"
    "                        vocab]: row i holds the logits after position i\n"
    "                        (FILE: a new or a regular file, replaced whole;\n"
    "                        with --prompt/--chat it needs --ignore-eos)\n"
    "  --print-plan          print the compiled plan and exit\n"
    "  --help                this text\n"
    "\n"
    "A program compiled with moe-compile --expert-parallel N runs as N MPI\n"
    "ranks, each holding its share of the experts: mpirun -np N PATH ...\n"
    "(docs/distributed.md). Rank 0 prints the output and writes\n"
    "--dump-logits; every rank prints an `ep:` line on stderr with its\n"
    "weight bytes, peak memory and the bytes it sent. MOERT_EP_TIMEOUT\n"
    "(seconds, default 60): how long a rank waits for the others before it\n"
    "ends them all with an error.\n";

/// Expert parallelism: this process's communicator (else null).
moert_comm *epComm = nullptr;

/// Peak resident memory of this process, from /proc/self/status (0 when
/// unknown).
long long peakResidentKiB() {
  FILE *f = std::fopen("/proc/self/status", "r");
  if (!f)
    return 0;
  char line[256];
  long long kib = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "VmHWM: %lld kB", &kib) == 1)
      break;
  std::fclose(f);
  return kib;
}

/// The loaded model, for the SIGBUS handler.
std::atomic<moert_model *> loadedModel{nullptr};
/// The --dump-logits temporary file while it exists ("" otherwise), removed
/// on every failure, the SIGBUS handler's included.
char dumpTemp[8192];

void removeDumpTemp() {
  if (dumpTemp[0]) {
    unlink(dumpTemp);
    dumpTemp[0] = '\0';
  }
}

[[noreturn]] void die(const char *format, ...)
    __attribute__((format(printf, 1, 2)));
[[noreturn]] void die(const char *format, ...) {
  removeDumpTemp();
  std::fflush(stdout);
  char message[8192];
  va_list args;
  va_start(args, format);
  std::vsnprintf(message, sizeof(message), format, args);
  va_end(args);
  // One line, whatever names it quotes: control characters (a newline or an
  // escape sequence in a file or tensor name) are shown as '?'.
  for (char *c = message; *c; ++c)
    if ((unsigned char)*c < 0x20 || *c == 0x7f)
      *c = '?';
  std::fprintf(stderr, "error: %s\n", message);
  std::exit(1);
}

/// write(2) of a whole string, for the signal handler.
void writeStderr(const char *text) {
  size_t n = std::strlen(text);
  while (n) {
    ssize_t w = write(STDERR_FILENO, text, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return;
    text += w;
    n -= size_t(w);
  }
}

/// SIGBUS: a read of a memory-mapped weight file failed, because the file
/// was truncated (or rewritten in place) while the model ran. Only
/// async-signal-safe calls here.
extern "C" void onSigbus(int, siginfo_t *info, void *) {
  removeDumpTemp();
  const char *file =
      moert_model_file_at(loadedModel.load(), info ? info->si_addr : nullptr);
  if (file) {
    writeStderr("error: weight file ");
    writeStderr(file);
    writeStderr(" changed or was truncated while the model ran (SIGBUS); "
                "restore it or recompile the model\n");
  } else {
    writeStderr("error: a weight file changed or was truncated while the "
                "model ran (SIGBUS); restore the weight files or recompile "
                "the model\n");
  }
  _exit(1);
}

/// SIGINT, SIGTERM, SIGHUP: the --dump-logits temporary file goes, then the
/// signal does what it always does (the exit status says it).
extern "C" void onInterrupt(int sig) {
  removeDumpTemp();
  signal(sig, SIG_DFL);
  raise(sig);
}

void installSignalHandlers() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = onSigbus;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, nullptr);
  for (int sig : {SIGINT, SIGTERM, SIGHUP})
    signal(sig, onInterrupt);
  // A file size limit makes write(2) fail with EFBIG, reported like a full
  // disk, and a closed pipe on stdout makes it fail with EPIPE, reported
  // like one too, instead of killing the process.
  signal(SIGXFSZ, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
}

/// Fails if stdout could not take everything printed to it (a full disk, a
/// closed pipe): the ids would be lost with exit status 0.
void checkStdout() {
  if (std::fflush(stdout) != 0 || std::ferror(stdout))
    die("cannot write to stdout: %s", std::strerror(errno));
}

long long parseInt(const char *flag, const char *text, long long lo,
                   long long hi) {
  char *end = nullptr;
  errno = 0;
  long long v = std::strtoll(text, &end, 10);
  // Digits with an optional '-': strtoll would also take spaces and '+'.
  bool plain = (*text >= '0' && *text <= '9') ||
               (*text == '-' && text[1] >= '0' && text[1] <= '9');
  if (!plain || errno || !end || *end || end == text || v < lo || v > hi) {
    std::fprintf(stderr,
                 "error: %s expects an integer in [%lld, %lld], got '%s'\n",
                 flag, lo, hi, text);
    std::exit(1);
  }
  return v;
}

double parseFloat(const char *flag, const char *text, double lo, double hi) {
  char *end = nullptr;
  double v = std::strtod(text, &end);
  if (!end || *end || end == text || !(v >= lo && v <= hi)) {
    std::fprintf(stderr, "error: %s expects a number in [%g, %g], got '%s'\n",
                 flag, lo, hi, text);
    std::exit(1);
  }
  return v;
}

std::vector<int32_t> parseTokens(const char *text,
                                 const char *flag = "--tokens") {
  std::vector<int32_t> ids;
  std::string s(text);
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    std::string item = s.substr(start, comma - start);
    ids.push_back(int32_t(parseInt(flag, item.c_str(), 0, INT32_MAX)));
    if (comma == std::string::npos)
      break;
    start = comma + 1;
  }
  return ids;
}

int32_t sample(const float *logits, int64_t vocab, double temperature,
               double topP, std::mt19937_64 &rng) {
  if (temperature <= 0)
    return int32_t(std::max_element(logits, logits + vocab) - logits);
  std::vector<double> p(static_cast<size_t>(vocab));
  double m = *std::max_element(logits, logits + vocab), total = 0;
  for (int64_t i = 0; i < vocab; ++i)
    total += p[size_t(i)] = std::exp((logits[i] - m) / temperature);
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return p[a] > p[b]; });
  double kept = 0;
  size_t n = 0;
  while (n < order.size() && (n == 0 || kept < topP * total))
    kept += p[order[n++]];
  std::uniform_real_distribution<double> u(0.0, kept);
  double r = u(rng);
  for (size_t i = 0; i < n; ++i)
    if ((r -= p[order[i]]) <= 0)
      return order[i];
  return order[n - 1];
}

/// --dump-logits: a .npy file written through a temporary file beside it,
/// created (O_EXCL, so never through a planted link) before the model runs,
/// filled row by row, and renamed over the destination at the end. Only a
/// regular file or nothing may be at the destination.
class LogitsDump {
public:
  /// Checks `path` and creates the temporary file for `rows` x `cols`.
  /// `inputs` (the weight files, the binary itself) are never replaced.
  void open(const char *path, int64_t rows, int64_t cols,
            const std::vector<std::string> &inputs) {
    this->path = path;
    for (const std::string &input : inputs) {
      struct stat st;
      if (stat(input.c_str(), &st) == 0)
        protectedFiles.push_back({st.st_dev, st.st_ino, input});
    }
    if (!*path)
      die("--dump-logits needs a file name");
    checkDestination();
    size_t slash = this->path.rfind('/');
    std::string dir = slash == std::string::npos ? "."
                      : slash == 0               ? "/"
                                                 : this->path.substr(0, slash);
    std::string base =
        this->path.substr(slash == std::string::npos ? 0 : slash + 1);
    if (base.empty() || base == "." || base == "..")
      die("--dump-logits %s: names a directory, not a file", path);
    std::random_device seed;
    std::mt19937_64 rng(uint64_t(seed()) << 32 ^ uint64_t(getpid()));
    int err = 0;
    for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
      char suffix[32];
      std::snprintf(suffix, sizeof(suffix), ".%016llx.tmp",
                    (unsigned long long)rng());
      temp = dir + "/." + base.substr(0, 200) + suffix;
      if (temp.size() >= sizeof(dumpTemp))
        die("--dump-logits %s: the path is too long", path);
      fd = ::open(temp.c_str(),
                  O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
      err = errno;
      if (fd < 0 && err != EEXIST)
        break;
    }
    if (fd < 0)
      die("--dump-logits %s: cannot create a temporary file in %s: %s", path,
          dir.c_str(), std::strerror(err));
    std::strcpy(dumpTemp, temp.c_str());

    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" +
                         std::to_string(rows) + ", " + std::to_string(cols) +
                         "), }";
    size_t total = 10 + header.size() + 1;
    header.append((64 - total % 64) % 64, ' ');
    header += '\n';
    unsigned char magic[10] = {0x93,
                               'N',
                               'U',
                               'M',
                               'P',
                               'Y',
                               1,
                               0,
                               (unsigned char)(header.size() & 0xff),
                               (unsigned char)(header.size() >> 8)};
    write(magic, sizeof(magic));
    write(header.data(), header.size());
  }

  bool active() const { return fd >= 0; }

  void write(const void *data, size_t bytes) {
    auto *p = static_cast<const char *>(data);
    while (bytes) {
      ssize_t w = ::write(fd, p, bytes);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0)
        die("--dump-logits %s: cannot write: %s", path.c_str(),
            w < 0 ? std::strerror(errno) : "no progress");
      p += w;
      bytes -= size_t(w);
    }
  }

  /// Closes the temporary file and renames it over the destination.
  void commit() {
    int rc = close(fd);
    fd = -1;
    if (rc != 0)
      die("--dump-logits %s: cannot write: %s", path.c_str(),
          std::strerror(errno));
    checkDestination();
    if (rename(temp.c_str(), path.c_str()) != 0)
      die("--dump-logits %s: cannot rename %s into place: %s", path.c_str(),
          temp.c_str(), std::strerror(errno));
    dumpTemp[0] = '\0';
  }

private:
  struct Protected {
    dev_t dev;
    ino_t ino;
    std::string path;
  };
  std::string path, temp;
  int fd = -1;
  std::vector<Protected> protectedFiles;

  /// Nothing, or a regular file, may be at the destination (lstat: a
  /// symbolic link is refused, not followed).
  void checkDestination() {
    struct stat st;
    if (lstat(path.c_str(), &st) != 0) {
      if (errno != ENOENT)
        die("--dump-logits %s: %s", path.c_str(), std::strerror(errno));
      return;
    }
    if (S_ISREG(st.st_mode)) {
      for (const Protected &p : protectedFiles)
        if (p.dev == st.st_dev && p.ino == st.st_ino)
          die("--dump-logits %s: is %s; choose another file", path.c_str(),
              p.path == "/proc/self/exe"
                  ? "this program's own executable"
                  : ("the weight file " + p.path + ", which it reads").c_str());
      return;
    }
    die("--dump-logits %s: is %s; give the name of a regular file or of a "
        "new one",
        path.c_str(), moert_file_kind(st.st_mode));
  }
};

/// Fails unless all `rows` x `vocab` logits are finite; `where` names the
/// step, and row r holds the logits after position `firstPosition` + r. One
/// pass over the floats: cheap next to the step that made them.
void checkFinite(const float *logits, int64_t rows, int64_t vocab,
                 const std::string &where, int64_t firstPosition) {
  for (int64_t i = 0; i < rows * vocab; ++i) {
    if (std::isfinite(logits[i]))
      continue;
    float v = logits[i];
    die("the logits are not finite after %s: %s at position %lld, "
        "vocabulary index %lld; the weights hold NaN or Inf values, or the "
        "activations overflowed",
        where.c_str(),
        std::isnan(v) ? "NaN"
        : v > 0       ? "+Inf"
                      : "-Inf",
        (long long)(firstPosition + i / vocab), (long long)(i % vocab));
  }
}

/// The directory of the running executable ("" when it cannot be told, so
/// that the program's compile-time directory is used).
std::string executableDir() {
  char path[4096];
  ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0)
    return "";
  std::string exe(path, size_t(n));
  size_t slash = exe.rfind('/');
  return slash == std::string::npos ? "" : exe.substr(0, slash ? slash : 1);
}

int run(int argc, char **argv) {
  const moert_program *program = &moert_compiled_program;
  const char *tokensArg = nullptr, *weights = nullptr, *dump = nullptr;
  const char *quantized = nullptr;
  const char *promptArg = nullptr, *chatArg = nullptr, *tokenizeArg = nullptr;
  const char *detokenizeArg = nullptr;
  long long n = 16, seed = 0, threads = 0, maxBatch = 512;
  double temperature = 0, topP = 1;
  bool printPlan = false, ignoreEos = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char * {
      if (i + 1 >= argc)
        die("%s needs a value", argv[i]);
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::printf(kUsage, argv[0], argv[0], program->model_name);
      checkStdout();
      return 0;
    } else if (a == "--tokens") {
      tokensArg = value();
    } else if (a == "--prompt") {
      promptArg = value();
    } else if (a == "--chat") {
      chatArg = value();
    } else if (a == "--tokenize") {
      tokenizeArg = value();
    } else if (a == "--detokenize") {
      detokenizeArg = value();
    } else if (a == "--ignore-eos") {
      ignoreEos = true;
    } else if (a == "-n") {
      n = parseInt("-n", value(), 0, 1 << 30);
    } else if (a == "--temperature") {
      temperature = parseFloat("--temperature", value(), 0, 1e6);
    } else if (a == "--top-p") {
      topP = parseFloat("--top-p", value(), 1e-9, 1);
    } else if (a == "--seed") {
      seed = parseInt("--seed", value(), 0, INT64_MAX);
    } else if (a == "--threads") {
      threads = parseInt("--threads", value(), 0, 4096);
    } else if (a == "--max-batch-tokens") {
      maxBatch = parseInt("--max-batch-tokens", value(), 1, 1 << 20);
    } else if (a == "--weights") {
      weights = value();
      if (!*weights)
        die("--weights needs a directory");
    } else if (a == "--quantized-weights") {
      quantized = value();
      if (!*quantized)
        die("--quantized-weights needs a directory");
    } else if (a == "--dump-logits") {
      dump = value();
    } else if (a == "--print-plan") {
      printPlan = true;
    } else {
      std::fprintf(stderr, "error: unknown option '%s' (see --help)\n",
                   argv[i]);
      return 1;
    }
  }
  if (printPlan) {
    std::printf("%s", program->plan);
    checkStdout();
    return 0;
  }
  if (int(!!tokensArg) + int(!!promptArg) + int(!!chatArg) +
          int(!!tokenizeArg) + int(!!detokenizeArg) >
      1)
    die("give one of --tokens, --prompt, --chat, --tokenize and --detokenize");
  if (!tokensArg && !promptArg && !chatArg && !tokenizeArg && !detokenizeArg)
    die("--prompt, --chat or --tokens is required (see --help)");
  // The tokenizer, for everything but --tokens.
  std::unique_ptr<moert::Tokenizer> tokenizer;
  if (!tokensArg) {
    std::string error;
    tokenizer = moert::Tokenizer::load(program->tokenizer,
                                       size_t(program->tokenizer_size),
                                       program->vocab_size, error);
    if (!tokenizer)
      die("%s%s", error.c_str(),
          program->tokenizer_size
              ? ""
              : " (moe-compile found no tokenizer.json or tokenizer.model "
                "in the model directory, or was given --tokenizer=none; give "
                "moe-compile --tokenizer=PATH, or use --tokens)");
  }
  if (detokenizeArg) {
    // Through the streaming decoder, piece by piece, as --prompt prints.
    std::vector<int32_t> ids;
    if (*detokenizeArg)
      ids = parseTokens(detokenizeArg, "--detokenize");
    moert::DecodeStream stream(*tokenizer, true);
    std::string text;
    for (int32_t id : ids) {
      if (id >= program->vocab_size)
        die("--detokenize: id %d is not below the vocabulary size %lld", id,
            (long long)program->vocab_size);
      text += stream.push(id);
    }
    text += stream.finish();
    std::fwrite(text.data(), 1, text.size(), stdout);
    checkStdout();
    return 0;
  }
  std::vector<int32_t> prompt;
  if (tokensArg) {
    prompt = parseTokens(tokensArg);
  } else {
    std::string text;
    bool addSpecial = true;
    if (chatArg) {
      if (tokenizer->chatPrefix().empty() && tokenizer->chatSuffix().empty())
        die("this model was compiled without a chat template; use --prompt");
      text = tokenizer->chatPrefix() + chatArg + tokenizer->chatSuffix();
      addSpecial = false;
    } else {
      text = promptArg ? promptArg : tokenizeArg;
    }
    std::string error;
    if (!tokenizer->encode(text, addSpecial, prompt, error))
      die("%s: %s",
          chatArg     ? "--chat"
          : promptArg ? "--prompt"
                      : "--tokenize",
          error.c_str());
    if (tokenizeArg) {
      for (size_t i = 0; i < prompt.size(); ++i)
        std::printf("%s%d", i ? " " : "", prompt[i]);
      std::printf("\n");
      checkStdout();
      return 0;
    }
    if (prompt.empty())
      die("the prompt gives no tokens (an empty text, and the model adds no "
          "BOS token)");
  }
  const bool textMode = !tokensArg;
  const bool stopAtEos = textMode && !ignoreEos;
  if (dump && stopAtEos)
    die("--dump-logits with --prompt or --chat needs --ignore-eos (the file's "
        "rows are fixed before generation)");
  if (int64_t(prompt.size()) + n > program->max_positions) {
    std::fprintf(stderr,
                 "error: prompt (%zu) + generated (%lld) tokens exceed the "
                 "model's %lld positions\n",
                 prompt.size(), n, (long long)program->max_positions);
    return 1;
  }

  const int64_t vocab = program->vocab_size;
  const int64_t promptSize = int64_t(prompt.size());
  // Before anything runs: a destination we may not replace is refused now,
  // not after the work.
  // The quantised weights file travels with the executable: by default it
  // is looked for beside it, wherever the two were moved.
  std::string artifactDir = quantized ? quantized : executableDir();
  LogitsDump dumped;
  // Every rank must run the same prefill (the head of all rows or of the
  // last: their last rows may differ in rounding, and the ranks must sample
  // the same tokens), so this is decided before the other ranks drop the
  // file.
  const bool allRows = dump != nullptr;
  if (epComm && epComm->rank() != 0)
    dump = nullptr; // rank 0 writes the file
  if (dump) {
    std::vector<std::string> inputs = {"/proc/self/exe"};
    std::string dir = weights ? weights : program->model_dir;
    for (int64_t i = 0; i < program->num_weights; ++i) {
      const moert_weight_desc &w = program->weights[i];
      std::string file = (w.in_artifact ? artifactDir : dir) + "/" + w.file;
      if (std::find(inputs.begin(), inputs.end(), file) == inputs.end())
        inputs.push_back(file);
    }
    dumped.open(dump, promptSize + n, vocab, inputs);
  }

  moert_model *model = nullptr;
  if (moert_model_load_ranked(program, weights, artifactDir.c_str(),
                              int(threads), int(maxBatch), epComm,
                              &model) != MOERT_OK)
    die("%s", moert_last_error());
  // Test hooks of the failure tests: "RANK:STEP" kills that rank with
  // SIGKILL (MOERT_EP_TEST_KILL), or stops it forever (MOERT_EP_TEST_HANG),
  // before decode step STEP.
  long long killRank = -1, killStep = -1, hangRank = -1, hangStep = -1;
  if (const char *hook = std::getenv("MOERT_EP_TEST_KILL"))
    if (std::sscanf(hook, "%lld:%lld", &killRank, &killStep) != 2)
      die("MOERT_EP_TEST_KILL must be RANK:STEP, got '%s'", hook);
  if (const char *hook = std::getenv("MOERT_EP_TEST_HANG"))
    if (std::sscanf(hook, "%lld:%lld", &hangRank, &hangStep) != 2)
      die("MOERT_EP_TEST_HANG must be RANK:STEP, got '%s'", hook);
  loadedModel.store(model);
  moert_session *session = nullptr;
  if (moert_session_create(model, &session) != MOERT_OK)
    die("%s", moert_last_error());

  std::mt19937_64 rng{static_cast<uint64_t>(seed)};
  using Clock = std::chrono::steady_clock;

  auto t0 = Clock::now();
  // Only --dump-logits reads the prompt's rows before the last.
  if ((allRows ? moert_prefill : moert_prefill_last)(session, prompt.data(),
                                                     promptSize) != MOERT_OK)
    die("%s", moert_last_error());
  auto t1 = Clock::now();
  int64_t rows = 0;
  const float *logits = moert_logits(session, &rows);
  checkFinite(logits, rows, vocab, "prefill", 0);
  if (dumped.active())
    dumped.write(logits, size_t(rows * vocab) * sizeof(float));
  std::vector<int32_t> generated;
  const float *last = logits + (rows - 1) * vocab;
  // --prompt/--chat: the text as it completes, special tokens left out.
  std::unique_ptr<moert::DecodeStream> stream;
  if (textMode)
    stream = std::make_unique<moert::DecodeStream>(*tokenizer, true);
  auto print = [&](const std::string &text) {
    if (text.empty())
      return;
    if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size())
      die("cannot write to stdout: %s", std::strerror(errno));
    checkStdout();
  };
  for (long long i = 0; i < n; ++i) {
    if (epComm && epComm->rank() == killRank && i + 1 == killStep) {
      std::fprintf(stderr,
                   "rank %d: killing itself before decode step %lld "
                   "(MOERT_EP_TEST_KILL)\n",
                   epComm->rank(), killStep);
      std::fflush(stderr);
      raise(SIGKILL);
    }
    if (epComm && epComm->rank() == hangRank && i + 1 == hangStep) {
      std::fprintf(stderr,
                   "rank %d: hanging before decode step %lld "
                   "(MOERT_EP_TEST_HANG)\n",
                   epComm->rank(), hangStep);
      std::fflush(stderr);
      for (;;)
        pause();
    }
    int32_t token = sample(last, vocab, temperature, topP, rng);
    if (stopAtEos && tokenizer->isEos(token))
      break;
    generated.push_back(token);
    if (stream)
      print(stream->push(token));
    if (moert_decode(session, token) != MOERT_OK)
      die("%s", moert_last_error());
    last = moert_logits(session, &rows);
    checkFinite(last, 1, vocab,
                "decode step " + std::to_string(i + 1) + " of " +
                    std::to_string(n),
                promptSize + i);
    if (dumped.active())
      dumped.write(last, size_t(vocab) * sizeof(float));
  }
  auto t2 = Clock::now();
  if (dumped.active())
    dumped.commit();

  if (stream) {
    print(stream->finish());
  } else {
    for (size_t i = 0; i < generated.size(); ++i)
      std::printf("%s%d", i ? " " : "", generated[i]);
  }
  std::printf("\n");
  checkStdout();
  double prefillS = std::chrono::duration<double>(t1 - t0).count();
  double decodeS = std::chrono::duration<double>(t2 - t1).count();
  if (!epComm || epComm->rank() == 0)
    std::fprintf(stderr,
                 "prefill: %zu tokens in %.3f s (%.1f tok/s); decode: %lld "
                 "tokens in %.3f s (%.1f tok/s) on %s\n",
                 prompt.size(), prefillS, double(prompt.size()) / prefillS,
                 (long long)generated.size(), decodeS,
                 generated.empty() ? 0.0 : double(generated.size()) / decodeS,
                 moert_model_device(model));
  if (program->capacity_factor > 0 && (!epComm || epComm->rank() == 0)) {
    int64_t routed = 0, dropped = 0;
    moert_session_route_stats(session, &routed, &dropped);
    std::fprintf(stderr,
                 "capacity: factor %.10g: %lld of %lld routed (token, expert) "
                 "pairs dropped (%.2f%%)\n",
                 program->capacity_factor, (long long)dropped,
                 (long long)routed,
                 routed ? 100.0 * double(dropped) / double(routed) : 0.0);
  }
  if (epComm) {
    uint64_t mine = 0, all = 0;
    moert_model_weight_bytes(model, &mine, &all);
    long long steps = 1 + (long long)generated.size();
    std::fprintf(stderr,
                 "ep: rank %d of %d (%s): weights %llu of %llu bytes; peak "
                 "resident %lld KiB; sent %llu bytes in %llu collectives over "
                 "%lld steps (%llu bytes per step)\n",
                 epComm->rank(), epComm->size(), epComm->backend(),
                 (unsigned long long)mine, (unsigned long long)all,
                 peakResidentKiB(), (unsigned long long)epComm->bytesSent,
                 (unsigned long long)epComm->collectives, steps,
                 (unsigned long long)(epComm->bytesSent / uint64_t(steps)));
  }
  loadedModel.store(nullptr);
  moert_session_free(session);
  moert_model_free(model);
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  installSignalHandlers();
  const moert_program *program = &moert_compiled_program;
  bool help = false;
  for (int i = 1; i < argc; ++i)
    help |= !std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h");
  // CUDA programs exchange device buffers over NCCL where it is linked; MPI
  // otherwise (CPU programs, and the CUDA emulator's host memory).
  const bool nccl =
      program->target == MOERT_TARGET_CUDA && moert_comm_nccl_create;
  auto freeComm = nccl ? moert_comm_nccl_free : moert_comm_mpi_free;
  if (program->ep_ranks > 0 && !help) {
    if (!nccl && !moert_comm_mpi_create)
      die("this program was compiled with --expert-parallel %lld but linked "
          "without a communicator (libmoert_mpi or libmoert_nccl)",
          (long long)program->ep_ranks);
    char error[256] = "";
    if ((nccl ? moert_comm_nccl_create : moert_comm_mpi_create)(
            &argc, &argv, &epComm, error, sizeof error))
      die("%s", error);
    // One output: rank 0's (every rank computes the same tokens).
    if (epComm->rank() != 0 && !std::freopen("/dev/null", "w", stdout))
      die("rank %d: cannot silence stdout: %s", epComm->rank(),
          std::strerror(errno));
  }
  try {
    int rc = run(argc, argv);
    if (epComm)
      freeComm(epComm);
    return rc;
  } catch (const std::bad_alloc &) {
    die("out of memory");
  } catch (const std::exception &e) {
    die("%s", e.what());
  }
}
