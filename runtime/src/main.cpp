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
//===----------------------------------------------------------------------===//

#include "moert/moert.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

extern "C" const moert_program moert_compiled_program;

namespace {

const char *kUsage =
    "usage: %s --tokens IDS [-n N] [options]\n"
    "\n"
    "Runs the compiled model '%s': prefill on the prompt's token ids, then\n"
    "decodes N tokens. Generated ids go to stdout on one line; speeds go to\n"
    "stderr.\n"
    "\n"
    "  --tokens IDS          prompt token ids, comma-separated (required)\n"
    "  -n N                  tokens to generate (default 16)\n"
    "  --temperature T       sampling temperature; 0 = greedy (default 0)\n"
    "  --top-p P             nucleus sampling threshold in (0, 1] (default 1)\n"
    "  --seed N              seed of the sampler (default 0)\n"
    "  --threads N           CPU threads; 0 = all cores (default 0; CUDA\n"
    "                        programs run on GPU 0 and ignore it)\n"
    "  --max-batch-tokens N  most tokens per forward pass; longer prompts run\n"
    "                        in chunks with the same results (default 512)\n"
    "  --weights DIR         directory holding the model's safetensors files\n"
    "                        (default: the directory it was compiled from)\n"
    "  --dump-logits FILE    write the logits as float32 .npy [prompt + N,\n"
    "                        vocab]: row i holds the logits after position i\n"
    "  --print-plan          print the compiled plan and exit\n"
    "  --help                this text\n";

[[noreturn]] void die(const char *format, const char *arg = "") {
  std::fprintf(stderr, "error: ");
  std::fprintf(stderr, format, arg);
  std::fprintf(stderr, "\n");
  std::exit(1);
}

long long parseInt(const char *flag, const char *text, long long lo,
                   long long hi) {
  char *end = nullptr;
  errno = 0;
  long long v = std::strtoll(text, &end, 10);
  if (errno || !end || *end || end == text || v < lo || v > hi) {
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

std::vector<int32_t> parseTokens(const char *text) {
  std::vector<int32_t> ids;
  std::string s(text);
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    std::string item = s.substr(start, comma - start);
    ids.push_back(int32_t(parseInt("--tokens", item.c_str(), 0, INT32_MAX)));
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

bool writeNpy(const char *path, const std::vector<float> &data, int64_t rows,
              int64_t cols) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" +
                       std::to_string(rows) + ", " + std::to_string(cols) +
                       "), }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string tmp = std::string(path) + ".tmp";
  FILE *f = std::fopen(tmp.c_str(), "wb");
  if (!f)
    return false;
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
  bool ok =
      std::fwrite(magic, 1, 10, f) == 10 &&
      std::fwrite(header.data(), 1, header.size(), f) == header.size() &&
      std::fwrite(data.data(), sizeof(float), data.size(), f) == data.size();
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path) != 0) {
    std::remove(tmp.c_str());
    return false;
  }
  return true;
}

} // namespace

int main(int argc, char **argv) {
  const moert_program *program = &moert_compiled_program;
  const char *tokensArg = nullptr, *weights = nullptr, *dump = nullptr;
  long long n = 16, seed = 0, threads = 0, maxBatch = 512;
  double temperature = 0, topP = 1;
  bool printPlan = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char * {
      if (i + 1 >= argc)
        die("%s needs a value", argv[i]);
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::printf(kUsage, argv[0], program->model_name);
      return 0;
    } else if (a == "--tokens") {
      tokensArg = value();
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
    return 0;
  }
  if (!tokensArg)
    die("--tokens is required (see --help)");
  std::vector<int32_t> prompt = parseTokens(tokensArg);
  if (int64_t(prompt.size()) + n > program->max_positions) {
    std::fprintf(stderr,
                 "error: prompt (%zu) + generated (%lld) tokens exceed the "
                 "model's %lld positions\n",
                 prompt.size(), n, (long long)program->max_positions);
    return 1;
  }

  moert_model *model = nullptr;
  if (moert_model_load(program, weights, int(threads), int(maxBatch), &model) !=
      MOERT_OK)
    die("%s", moert_last_error());
  moert_session *session = nullptr;
  if (moert_session_create(model, &session) != MOERT_OK)
    die("%s", moert_last_error());

  const int64_t vocab = program->vocab_size;
  std::vector<float> dumped;
  std::mt19937_64 rng{static_cast<uint64_t>(seed)};
  using Clock = std::chrono::steady_clock;

  auto t0 = Clock::now();
  if (moert_prefill(session, prompt.data(), int64_t(prompt.size())) != MOERT_OK)
    die("%s", moert_last_error());
  auto t1 = Clock::now();
  int64_t rows = 0;
  const float *logits = moert_logits(session, &rows);
  if (dump)
    dumped.insert(dumped.end(), logits, logits + rows * vocab);
  std::vector<int32_t> generated;
  const float *last = logits + (rows - 1) * vocab;
  for (long long i = 0; i < n; ++i) {
    int32_t token = sample(last, vocab, temperature, topP, rng);
    generated.push_back(token);
    if (moert_decode(session, token) != MOERT_OK)
      die("%s", moert_last_error());
    last = moert_logits(session, &rows);
    if (dump)
      dumped.insert(dumped.end(), last, last + vocab);
  }
  auto t2 = Clock::now();

  for (size_t i = 0; i < generated.size(); ++i)
    std::printf("%s%d", i ? " " : "", generated[i]);
  std::printf("\n");
  double prefillS = std::chrono::duration<double>(t1 - t0).count();
  double decodeS = std::chrono::duration<double>(t2 - t1).count();
  std::fprintf(stderr,
               "prefill: %zu tokens in %.3f s (%.1f tok/s); decode: %lld "
               "tokens in %.3f s (%.1f tok/s) on %s\n",
               prompt.size(), prefillS, double(prompt.size()) / prefillS, n,
               decodeS, n ? double(n) / decodeS : 0.0,
               moert_model_device(model));
  if (dump && !writeNpy(dump, dumped, int64_t(dumped.size()) / vocab, vocab))
    die("cannot write %s", dump);
  moert_session_free(session);
  moert_model_free(model);
  return 0;
}
