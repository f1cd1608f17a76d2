//===- runtime.cpp - moert: load, sessions, prefill, decode ----*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Every extern "C" entry point runs inside `moert_guarded`: no C++ exception
// crosses the C ABI (out of memory becomes MOERT_ERROR_MEMORY with a
// message). Every size is computed with checked arithmetic.
//
//===----------------------------------------------------------------------===//

#include "gguf.h"
#include "header.h"
#include "internal.h"
#include "moert/comm.h"
#include "moert/pool.h"
#include "tokenizer.h"

#include <fcntl.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

namespace {
/// The message of the last error, in a fixed buffer so that recording one
/// never allocates (it also reports running out of memory).
thread_local char lastError[8192];

/// What to do about a weight file that no longer matches the manifest.
constexpr const char *kChanged = "the file changed since the model was "
                                 "compiled: restore it or recompile the model";
} // namespace

moert_status moert_fail(moert_status status, const char *format, ...) {
  va_list args;
  va_start(args, format);
  std::vsnprintf(lastError, sizeof(lastError), format, args);
  va_end(args);
  return status;
}

namespace {

struct Mapping {
  std::string path;
  void *base = nullptr;
  size_t size = 0;
};

struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0)
      close(fd);
  }
};

/// Reads exactly `n` bytes at `offset`; false with errno set (0 when the
/// file ended first).
bool readAt(int fd, void *buffer, size_t n, uint64_t offset) {
  auto *p = static_cast<char *>(buffer);
  while (n) {
    ssize_t got = pread(fd, p, n, off_t(offset));
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0) {
      if (got == 0)
        errno = 0;
      return false;
    }
    p += got;
    n -= size_t(got);
    offset += uint64_t(got);
  }
  return true;
}

/// The ggml type id of a manifest dtype (gguf.h's typeName knows them).
uint32_t ggmlType(moert_dtype d) {
  using namespace moert::gguf;
  switch (d) {
  case MOERT_F32:
    return kF32;
  case MOERT_F16:
    return kF16;
  case MOERT_BF16:
    return kBF16;
  case MOERT_Q8_0:
    return kQ8_0;
  case MOERT_Q4_0:
    return kQ4_0;
  case MOERT_Q4_1:
    return kQ4_1;
  case MOERT_Q4_K:
    return kQ4_K;
  case MOERT_Q5_K:
    return kQ5_K;
  case MOERT_Q6_K:
    return kQ6_K;
  }
  return UINT32_MAX;
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 // Linux 5.14
#endif

/// Maps the page tables of this process's weights (CPU target) at load,
/// where a first forward pass would otherwise take a page fault per 4 KiB
/// page it reads (on `mini` f32, 3.2 GB, up to half of a cold 512-token
/// prefill). Only when the weights fit in three quarters of the physical
/// memory: a model larger than that streams from the file as it runs, and
/// populating it at load would only evict its own pages. Failures (a kernel
/// before 5.14) change nothing but the first pass's speed.
void populateWeights(const std::vector<const void *> &weights,
                     const moert_program *program) {
  const long pageSize = sysconf(_SC_PAGESIZE), pages = sysconf(_SC_PHYS_PAGES);
  uint64_t total = 0;
  for (size_t i = 0; i < weights.size(); ++i)
    if (weights[i])
      total += program->weights[i].size;
  if (pageSize <= 0 || pages <= 0 ||
      total > uint64_t(pages) / 4 * 3 * uint64_t(pageSize))
    return;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (!weights[i])
      continue;
    uintptr_t begin = reinterpret_cast<uintptr_t>(weights[i]);
    uintptr_t first = begin / uintptr_t(pageSize) * uintptr_t(pageSize);
    size_t length = size_t(begin - first + program->weights[i].size);
    (void)madvise(reinterpret_cast<void *>(first), length, MADV_POPULATE_READ);
  }
}

/// Maps the whole file `path` (open as `fd`, `size` > 0 bytes) read-only
/// into `out`.
moert_status mapWhole(const std::string &path, int fd, uint64_t size,
                      Mapping &out) {
  void *base = mmap(nullptr, size_t(size), PROT_READ, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED)
    return moert_fail(MOERT_ERROR_IO, "%s: cannot map %llu bytes: %s",
                      path.c_str(), (unsigned long long)size,
                      std::strerror(errno));
  // Ask for 2 MiB pages: decode streams every weight once per token, and
  // fewer TLB misses and page boundaries can only help it (a probe read
  // 2 MiB pages at twice the speed of 4 KiB ones once, and at the same
  // speed at other times: bench/RESULTS.md, issue 12). Pages the page cache
  // does not hold yet are then read in 2 MiB folios that later runs map
  // whole too; pages it already holds in small folios stay small. Without
  // transparent huge pages this fails, which changes nothing.
  (void)madvise(base, size_t(size), MADV_HUGEPAGE);
  out.path = path;
  out.base = base;
  out.size = size_t(size);
  return MOERT_OK;
}

/// mapWeightFile for a GGUF file (open as `fd`, `size` bytes): its header
/// has no length prefix, so the whole file is mapped first and the header
/// parsed in place (moert::gguf), then every weight checked against it.
moert_status mapGgufFile(const std::string &path, int fd, uint64_t size,
                         const std::vector<const moert_weight_desc *> &weights,
                         Mapping &out) {
  if (size < moert::gguf::kFixedHeaderBytes) {
    // Too short to map usefully: the parser's message from what is there.
    unsigned char head[moert::gguf::kFixedHeaderBytes] = {};
    moert::gguf::File file;
    std::string problem =
        readAt(fd, head, size_t(size), 0)
            ? moert::gguf::parse(head, size, file)
            : std::string("cannot read it: ") + std::strerror(errno);
    return moert_fail(MOERT_ERROR_IO, "%s: %s; %s", path.c_str(),
                      problem.c_str(), kChanged);
  }
  Mapping mapped;
  if (moert_status status = mapWhole(path, fd, size, mapped))
    return status;
  moert::gguf::File file;
  std::string problem = moert::gguf::parse(
      static_cast<const unsigned char *>(mapped.base), size, file);
  for (size_t i = 0; problem.empty() && i < weights.size(); ++i) {
    const moert_weight_desc &w = *weights[i];
    std::vector<uint64_t> shape = {uint64_t(w.rows)};
    if (w.rank != 1)
      shape.push_back(uint64_t(w.cols));
    problem = moert::gguf::checkWeight(
        file, w.name ? w.name : "", ggmlType(w.dtype), shape, w.offset, w.size);
  }
  if (!problem.empty()) {
    munmap(mapped.base, mapped.size);
    return moert_fail(MOERT_ERROR_IO, "%s: %s; %s", path.c_str(),
                      problem.c_str(), kChanged);
  }
  out = std::move(mapped);
  return MOERT_OK;
}

/// Opens, checks and maps the weight file `path` that holds `weights`:
/// a regular file (symbolic links followed) whose safetensors header still
/// describes every one of them as the manifest does (and, with `build`,
/// names that moe-compile run).
moert_status
mapWeightFile(const std::string &path,
              const std::vector<const moert_weight_desc *> &weights,
              const char *build, Mapping &out) {
  const char *name = weights.front()->name;
  // O_NONBLOCK: opening a FIFO must not wait for a writer.
  Fd f{open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC)};
  if (f.fd < 0)
    return moert_fail(MOERT_ERROR_IO, "%s: cannot open: %s (weight '%s')",
                      path.c_str(), std::strerror(errno), name);
  struct stat st;
  if (fstat(f.fd, &st) != 0)
    return moert_fail(MOERT_ERROR_IO, "%s: cannot stat: %s (weight '%s')",
                      path.c_str(), std::strerror(errno), name);
  if (!S_ISREG(st.st_mode))
    return moert_fail(MOERT_ERROR_IO,
                      "%s: is %s, not a regular file (weight '%s')",
                      path.c_str(), moert_file_kind(st.st_mode), name);
  uint64_t size = uint64_t(st.st_size);

  // A raw data file (ONNX external data) has no header to check: its size
  // when compiled is recorded, and each weight's range must lie within it.
  if (uint64_t raw = weights.front()->raw_file_size) {
    if (size != raw)
      return moert_fail(MOERT_ERROR_IO,
                        "%s: is %llu bytes, but was %llu bytes when the model "
                        "was compiled (weight '%s'); %s",
                        path.c_str(), (unsigned long long)size,
                        (unsigned long long)raw, name, kChanged);
    for (const moert_weight_desc *w : weights)
      if (w->raw_file_size != raw || w->offset > size ||
          w->size > size - w->offset)
        return moert_fail(MOERT_ERROR_IO,
                          "%s: weight '%s' at bytes [%llu, %llu) is not "
                          "within the %llu bytes the file had when compiled",
                          path.c_str(), w->name, (unsigned long long)w->offset,
                          (unsigned long long)(w->offset + w->size),
                          (unsigned long long)raw);
    return mapWhole(path, f.fd, size, out);
  }

  // The length prefix, then as much of the file as the check needs.
  unsigned char prefix[8];
  size_t got = size_t(std::min<uint64_t>(size, 8));
  std::string image;
  bool read = readAt(f.fd, prefix, got, 0);
  // GGUF by its magic, or by its name (a damaged .gguf file then gets the
  // GGUF parser's message, not the safetensors one).
  bool ggufName = path.size() >= 5 &&
                  strcasecmp(path.c_str() + path.size() - 5, ".gguf") == 0;
  if (read && ((got >= 4 && std::memcmp(prefix, "GGUF", 4) == 0) || ggufName))
    return mapGgufFile(path, f.fd, size, weights, out);
  if (read) {
    image.resize(size_t(moert::headerImageBytes(prefix, got, size)));
    read = readAt(f.fd, &image[0], image.size(), 0);
  }
  if (!read)
    return moert_fail(
        MOERT_ERROR_IO, "%s: cannot read its header: %s", path.c_str(),
        errno ? std::strerror(errno) : "the file ended before its size");
  std::string problem = moert::checkWeightFile(
      reinterpret_cast<const unsigned char *>(image.data()), image.size(), size,
      weights.data(), weights.size(), build);
  if (!problem.empty())
    return moert_fail(MOERT_ERROR_IO, "%s: %s; %s", path.c_str(),
                      problem.c_str(), kChanged);
  // Implied by the header check; kept as the last guard before the mapping
  // is used.
  for (const moert_weight_desc *w : weights)
    if (w->offset > size || w->size > size - w->offset)
      return moert_fail(MOERT_ERROR_IO,
                        "%s: weight '%s' at bytes [%llu, %llu) is beyond the "
                        "end of the file (%llu bytes); %s",
                        path.c_str(), w->name, (unsigned long long)w->offset,
                        (unsigned long long)(w->offset + w->size),
                        (unsigned long long)size, kChanged);
  // size >= 8 here: the header check needs the length prefix.
  return mapWhole(path, f.fd, size, out);
}

} // namespace

struct moert_model {
  const moert_program *program = nullptr;
  /// Written while loading, read-only afterwards (moert_model_file_at reads
  /// it from signal handlers).
  std::vector<Mapping> files;
  std::vector<const void *> weights;
  moert_pool *pool = nullptr;
  int64_t maxTokens = 0;
  moert_cuda_model *cuda = nullptr;
  /// Expert parallelism: this rank's communicator (else null).
  moert_comm *comm = nullptr;
  uint64_t weightBytesMine = 0, weightBytesAll = 0;
  /// The program's tokenizer, parsed on first use (moert_model_tokenizer).
  std::once_flag tokenizerOnce;
  std::unique_ptr<moert::Tokenizer> tokenizer;
  std::string tokenizerError;
};

const moert::Tokenizer *moert_model_tokenizer(moert_model *model,
                                              std::string &error) {
  std::call_once(model->tokenizerOnce, [&] {
    const moert_program *p = model->program;
    model->tokenizer =
        moert::Tokenizer::load(p->tokenizer, size_t(p->tokenizer_size),
                               p->vocab_size, model->tokenizerError);
  });
  error = model->tokenizerError;
  return model->tokenizer.get();
}

struct moert_session {
  moert_model *model = nullptr;
  std::vector<moert_kv> caches;
  /// calloc'd: pages of a long cache are committed only when written.
  std::unique_ptr<float, decltype(&std::free)> cacheMemory{nullptr, &std::free};
  std::vector<float> scratch;
  std::vector<float> logits;
  int64_t logitRows = 0;
  /// The row of `logits` moert_logits starts at.
  int64_t logitFirst = 0;
  int64_t position = 0;
  std::vector<int32_t> positions;
  /// moert_exec::route_stats: pairs routed, pairs a capacity dropped.
  int64_t routeStats[2] = {0, 0};
  moert_cuda_session *cuda = nullptr;
  ~moert_session() { moert_cuda_session_free(cuda); }
};

moert_status moert_cache_floats(const moert_program *p, uint64_t *total) {
  uint64_t sum = 0;
  for (int64_t l = 0; l < p->num_layers; ++l) {
    const moert_cache_desc &c = p->caches[l];
    if (c.kv_heads < 0 || c.capacity < 0 || c.head_dim < 0)
      return moert_fail(MOERT_ERROR_INVALID,
                        "the program's KV-cache plan of layer %lld is invalid "
                        "(%lld kv heads x %lld slots x %lld)",
                        (long long)l, (long long)c.kv_heads,
                        (long long)c.capacity, (long long)c.head_dim);
    uint64_t one, bytes;
    if (__builtin_mul_overflow(uint64_t(c.kv_heads), uint64_t(c.capacity),
                               &one) ||
        __builtin_mul_overflow(one, uint64_t(c.head_dim), &one) ||
        __builtin_add_overflow(sum, one, &sum) ||
        __builtin_add_overflow(sum, one, &sum) ||
        __builtin_mul_overflow(sum, uint64_t(sizeof(float)), &bytes) ||
        bytes > uint64_t(PTRDIFF_MAX))
      return moert_fail(MOERT_ERROR_MEMORY,
                        "the KV cache for %lld positions needs more than %llu "
                        "bytes (at layer %lld: %lld kv heads x %lld slots x "
                        "%lld floats, for keys and values); compile the model "
                        "with a smaller --max-seq",
                        (long long)p->max_positions,
                        (unsigned long long)PTRDIFF_MAX, (long long)l,
                        (long long)c.kv_heads, (long long)c.capacity,
                        (long long)c.head_dim);
  }
  *total = sum;
  return MOERT_OK;
}

moert_status moert_scratch_floats(const moert_program *p, int64_t tokens,
                                  uint64_t *out) {
  // scratch_floats(n) is n * perToken + workspace (the memory plan is per
  // batch token); derive both and check before calling it with `tokens`.
  int64_t workspace = p->scratch_floats(0), one = p->scratch_floats(1);
  if (workspace < 0 || one < workspace || tokens < 0)
    return moert_fail(MOERT_ERROR_INVALID,
                      "the program's activation arena is invalid (%lld floats "
                      "for no token, %lld for one)",
                      (long long)workspace, (long long)one);
  uint64_t perToken = uint64_t(one - workspace), floats, bytes;
  if (__builtin_mul_overflow(perToken, uint64_t(tokens), &floats) ||
      __builtin_add_overflow(floats, uint64_t(workspace), &floats) ||
      __builtin_mul_overflow(floats, uint64_t(sizeof(float)), &bytes) ||
      bytes > uint64_t(PTRDIFF_MAX))
    return moert_fail(MOERT_ERROR_MEMORY,
                      "the activation arena for %lld tokens per forward pass "
                      "(%llu floats per token) needs more than %llu bytes; "
                      "lower the max batch tokens",
                      (long long)tokens, (unsigned long long)perToken,
                      (unsigned long long)PTRDIFF_MAX);
  if (p->scratch_floats(tokens) != int64_t(floats))
    return moert_fail(MOERT_ERROR_INVALID,
                      "the program's activation arena is not %llu floats per "
                      "token plus %lld",
                      (unsigned long long)perToken, (long long)workspace);
  *out = floats;
  return MOERT_OK;
}

const char *moert_file_kind(unsigned mode) {
  if (S_ISDIR(mode))
    return "a directory";
  if (S_ISLNK(mode))
    return "a symbolic link";
  if (S_ISFIFO(mode))
    return "a FIFO";
  if (S_ISCHR(mode))
    return "a character device";
  if (S_ISBLK(mode))
    return "a block device";
  if (S_ISSOCK(mode))
    return "a socket";
  return "a special file";
}

extern "C" const char *moert_last_error(void) { return lastError; }

extern "C" void moert_model_free(moert_model *model) {
  if (!model)
    return;
  moert_cuda_model_free(model->cuda);
  for (Mapping &m : model->files)
    munmap(m.base, m.size);
  moert_pool_free(model->pool);
  delete model;
}

extern "C" const char *moert_model_file_at(const moert_model *model,
                                           const void *address) {
  if (!model)
    return nullptr;
  auto *a = static_cast<const char *>(address);
  for (const Mapping &m : model->files) {
    auto *base = static_cast<const char *>(m.base);
    if (a >= base && a < base + m.size)
      return m.path.c_str();
  }
  return nullptr;
}

extern "C" moert_status moert_model_load(const moert_program *program,
                                         const char *weightDir, int threads,
                                         int maxBatchTokens,
                                         moert_model **out) {
  return moert_model_load_from(program, weightDir, nullptr, threads,
                               maxBatchTokens, out);
}

extern "C" moert_status moert_model_load_from(const moert_program *program,
                                              const char *weightDir,
                                              const char *artifactDir,
                                              int threads, int maxBatchTokens,
                                              moert_model **out) {
  return moert_model_load_ranked(program, weightDir, artifactDir, threads,
                                 maxBatchTokens, nullptr, out);
}

extern "C" void moert_model_weight_bytes(const moert_model *model,
                                         uint64_t *mine, uint64_t *all) {
  *mine = model->weightBytesMine;
  *all = model->weightBytesAll;
}

extern "C" moert_status moert_model_load_ranked(const moert_program *program,
                                                const char *weightDir,
                                                const char *artifactDir,
                                                int threads, int maxBatchTokens,
                                                moert_comm *comm,
                                                moert_model **out) {
  *out = nullptr;
  return moert_guarded("loading the model", [&] {
    if (!program || program->abi_version != MOERT_ABI_VERSION)
      return moert_fail(MOERT_ERROR_INVALID,
                        "program was compiled for another runtime ABI");
    if (maxBatchTokens < 1)
      return moert_fail(MOERT_ERROR_INVALID,
                        "max batch tokens must be >= 1, got %d",
                        maxBatchTokens);
    std::string dir = weightDir && *weightDir ? weightDir : program->model_dir;
    std::string artifact = artifactDir && *artifactDir ? artifactDir
                           : program->artifact_dir     ? program->artifact_dir
                                                       : "";
    auto pathOf = [&](const moert_weight_desc &w) {
      return (w.in_artifact ? artifact : dir) + "/" + w.file;
    };
    std::unique_ptr<moert_model, decltype(&moert_model_free)> model(
        new moert_model, &moert_model_free);
    model->program = program;
    model->maxTokens = maxBatchTokens;
    // Expert parallelism: this rank reads only its own experts' weights.
    int64_t rank = -1;
    if (program->ep_ranks > 0) {
      if (!comm)
        return moert_fail(MOERT_ERROR_INVALID,
                          "the model was compiled with --expert-parallel "
                          "%lld: run it as %lld ranks (mpirun -np %lld)",
                          (long long)program->ep_ranks,
                          (long long)program->ep_ranks,
                          (long long)program->ep_ranks);
      if (comm->size() != program->ep_ranks)
        return moert_fail(MOERT_ERROR_INVALID,
                          "the model was compiled with --expert-parallel "
                          "%lld, but runs as %d rank%s: start it with mpirun "
                          "-np %lld",
                          (long long)program->ep_ranks, comm->size(),
                          comm->size() == 1 ? "" : "s",
                          (long long)program->ep_ranks);
      rank = comm->rank();
      model->comm = comm;
    }
    auto mine = [&](int64_t i) {
      return rank < 0 || !program->weight_ranks ||
             program->weight_ranks[i] < 0 || program->weight_ranks[i] == rank;
    };

    // The weights of each file, files in manifest order.
    std::vector<std::string> paths;
    std::map<std::string, std::vector<const moert_weight_desc *>> byFile;
    for (int64_t i = 0; i < program->num_weights; ++i) {
      const moert_weight_desc &w = program->weights[i];
      model->weightBytesAll += w.size;
      if (!mine(i))
        continue;
      model->weightBytesMine += w.size;
      if (w.in_artifact && artifact.empty())
        return moert_fail(MOERT_ERROR_INVALID,
                          "weight '%s' is in the artifact weights file, "
                          "but the program names no directory for it",
                          w.name);
      std::string path = pathOf(w);
      auto &list = byFile[path];
      if (list.empty())
        paths.push_back(path);
      list.push_back(&w);
    }
    std::map<std::string, const Mapping *> mapped;
    model->files.reserve(paths.size());
    for (const std::string &path : paths) {
      Mapping m;
      // The quantised weights file must be this build's.
      const char *build =
          byFile[path].front()->in_artifact ? program->artifact_build : nullptr;
      moert_status st = mapWeightFile(path, byFile[path], build, m);
      if (st != MOERT_OK)
        return st;
      model->files.push_back(std::move(m));
      mapped[path] = &model->files.back();
    }
    for (int64_t i = 0; i < program->num_weights; ++i) {
      const moert_weight_desc &w = program->weights[i];
      if (!mine(i)) {
        model->weights.push_back(nullptr);
        continue;
      }
      const Mapping &m = *mapped[pathOf(w)];
      model->weights.push_back(static_cast<const char *>(m.base) + w.offset);
    }

    if (program->target == MOERT_TARGET_CUDA) {
      moert_status st = moert_cuda_model_load(
          program, model->weights, comm && rank >= 0 ? comm->device() : 0,
          &model->cuda);
      if (st != MOERT_OK)
        return st;
      // The weights live on the device now.
      for (Mapping &m : model->files)
        munmap(m.base, m.size);
      model->files.clear();
      model->weights.clear();
    } else {
      populateWeights(model->weights, program);
      model->pool = moert_pool_create(threads);
      if (!model->pool)
        return moert_fail(MOERT_ERROR_MEMORY, "cannot create the thread pool");
    }
    *out = model.release();
    return MOERT_OK;
  });
}

extern "C" const char *moert_model_device(const moert_model *m) {
  return m->cuda ? moert_cuda_device_name(m->cuda) : "cpu";
}

extern "C" const moert_program *moert_model_program(const moert_model *m) {
  return m->program;
}

extern "C" moert_status moert_session_create(moert_model *model,
                                             moert_session **out) {
  *out = nullptr;
  return moert_guarded("creating a session", [&] {
    const moert_program *p = model->program;
    std::unique_ptr<moert_session> s(new moert_session);
    s->model = model;
    if (model->cuda) {
      moert_status st = moert_cuda_session_create(model->cuda, model->maxTokens,
                                                  model->comm, &s->cuda);
      if (st != MOERT_OK)
        return st;
      *out = s.release();
      return MOERT_OK;
    }
    uint64_t total = 0, scratch = 0;
    moert_status st = moert_cache_floats(p, &total);
    if (st != MOERT_OK)
      return st;
    st = moert_scratch_floats(p, model->maxTokens, &scratch);
    if (st != MOERT_OK)
      return st;
    s->cacheMemory.reset(
        static_cast<float *>(std::calloc(size_t(total), sizeof(float))));
    if (!s->cacheMemory && total)
      return moert_fail(MOERT_ERROR_MEMORY,
                        "cannot allocate %llu bytes of KV cache for %lld "
                        "positions; compile the model with a smaller "
                        "--max-seq",
                        (unsigned long long)(total * sizeof(float)),
                        (long long)p->max_positions);
    try {
      s->scratch.assign(size_t(scratch), 0.0f);
    } catch (const std::bad_alloc &) {
      return moert_fail(MOERT_ERROR_MEMORY,
                        "cannot allocate %llu bytes for the activation arena "
                        "(%lld tokens per forward pass); lower the max batch "
                        "tokens",
                        (unsigned long long)(scratch * sizeof(float)),
                        (long long)model->maxTokens);
    }
    float *next = s->cacheMemory.get();
    for (int64_t l = 0; l < p->num_layers; ++l) {
      // Cannot overflow: moert_cache_floats summed these.
      const moert_cache_desc &c = p->caches[l];
      size_t one = size_t(c.kv_heads) * size_t(c.capacity) * size_t(c.head_dim);
      s->caches.push_back({next, next + one});
      next += 2 * one;
    }
    *out = s.release();
    return MOERT_OK;
  });
}

extern "C" void moert_session_free(moert_session *session) { delete session; }

extern "C" int64_t moert_session_position(const moert_session *s) {
  return s->position;
}

namespace {

/// moert_prefill, or with `lastOnly` moert_prefill_last.
moert_status prefill(moert_session *s, const int32_t *tokens, int64_t n,
                     bool lastOnly) {
  return moert_guarded("running the model", [&] {
    const moert_program *p = s->model->program;
    if (n < 1)
      return moert_fail(MOERT_ERROR_INVALID, "no tokens to run");
    if (n > p->max_positions - s->position)
      return moert_fail(
          MOERT_ERROR_INVALID,
          "positions up to %lld exceed the model's maximum of %lld",
          (long long)(n - 1 > INT64_MAX - s->position ? INT64_MAX
                                                      : s->position + n - 1),
          (long long)p->max_positions - 1);
    // forward takes int32 positions.
    if (s->position + n - 1 > INT32_MAX)
      return moert_fail(MOERT_ERROR_INVALID,
                        "positions up to %lld exceed the runtime's maximum "
                        "of %d",
                        (long long)(s->position + n - 1), INT32_MAX);
    for (int64_t i = 0; i < n; ++i)
      if (tokens[i] < 0 || tokens[i] >= p->vocab_size)
        return moert_fail(MOERT_ERROR_INVALID,
                          "token id %d at index %lld is outside the "
                          "vocabulary [0, %lld)",
                          tokens[i], (long long)i, (long long)p->vocab_size);
    // Programs that honour logits_from (CPU) compute the last row only;
    // others write every row, and the last is then read from them.
    const bool skipRows = lastOnly && p->logits_from && !s->cuda;
    const int64_t rows = skipRows ? 1 : n;
    uint64_t floats;
    if (__builtin_mul_overflow(uint64_t(rows), uint64_t(p->vocab_size),
                               &floats) ||
        floats > uint64_t(PTRDIFF_MAX) / sizeof(float))
      return moert_fail(MOERT_ERROR_MEMORY,
                        "the logits of %lld tokens (%lld each) need more than "
                        "%llu bytes",
                        (long long)rows, (long long)p->vocab_size,
                        (unsigned long long)PTRDIFF_MAX);
    try {
      s->logits.resize(size_t(floats));
    } catch (const std::bad_alloc &) {
      return moert_fail(MOERT_ERROR_MEMORY,
                        "cannot allocate %llu bytes for the logits of %lld "
                        "tokens",
                        (unsigned long long)(floats * sizeof(float)),
                        (long long)rows);
    }
    // Rows of an earlier call no longer describe anything.
    s->logitRows = 0;
    s->logitFirst = 0;
    moert_exec exec{s->model->weights.data(),
                    s->caches.data(),
                    s->scratch.data(),
                    s->model->maxTokens,
                    s->model->pool,
                    nullptr,
                    nullptr,
                    s->model->comm,
                    0,
                    s->routeStats};
    for (int64_t done = 0; done < n;) {
      int64_t chunk = std::min<int64_t>(n - done, s->model->maxTokens);
      s->positions.resize(size_t(chunk));
      for (int64_t i = 0; i < chunk; ++i)
        s->positions[size_t(i)] = int32_t(s->position + i);
      // Skipping rows: the earlier chunks' logits are not read at all, the
      // last chunk's last row lands at the start of the buffer.
      if (skipRows)
        exec.logits_from = done + chunk == n ? chunk - 1 : chunk;
      float *logits = s->logits.data() + (skipRows ? 0 : done * p->vocab_size);
      if (s->cuda) {
        moert_status st = moert_cuda_forward(s->cuda, chunk, tokens + done,
                                             s->positions.data(), logits);
        if (st != MOERT_OK)
          return st;
      } else {
        p->forward(&exec, chunk, tokens + done, s->positions.data(), logits);
      }
      s->position += chunk;
      done += chunk;
    }
    s->logitRows = lastOnly ? 1 : n;
    s->logitFirst = lastOnly && !skipRows ? n - 1 : 0;
    return MOERT_OK;
  });
}

} // namespace

extern "C" moert_status moert_prefill(moert_session *s, const int32_t *tokens,
                                      int64_t n) {
  return prefill(s, tokens, n, false);
}

extern "C" moert_status moert_prefill_last(moert_session *s,
                                           const int32_t *tokens, int64_t n) {
  return prefill(s, tokens, n, true);
}

extern "C" moert_status moert_decode(moert_session *s, int32_t token) {
  return moert_prefill(s, &token, 1);
}

extern "C" void moert_session_route_stats(const moert_session *s,
                                          int64_t *routed, int64_t *dropped) {
  int64_t stats[2] = {s->routeStats[0], s->routeStats[1]};
  if (s->cuda)
    moert_cuda_route_stats(s->cuda, stats);
  *routed = stats[0];
  *dropped = stats[1];
}

extern "C" const float *moert_logits(const moert_session *s, int64_t *rows) {
  *rows = s->logitRows;
  return s->logits.data() + s->logitFirst * s->model->program->vocab_size;
}
