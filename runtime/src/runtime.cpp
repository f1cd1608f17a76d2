//===- runtime.cpp - moert: load, sessions, prefill, decode ----*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "internal.h"
#include "moert/pool.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace {
thread_local std::string lastError;
} // namespace

moert_status moert_fail(moert_status status, const char *format, ...) {
  char buffer[1024];
  va_list args;
  va_start(args, format);
  std::vsnprintf(buffer, sizeof(buffer), format, args);
  va_end(args);
  lastError = buffer;
  return status;
}

namespace {

struct Mapping {
  void *base = nullptr;
  size_t size = 0;
};

} // namespace

struct moert_model {
  const moert_program *program = nullptr;
  std::map<std::string, Mapping> files;
  std::vector<const void *> weights;
  moert_pool *pool = nullptr;
  int64_t maxTokens = 0;
  moert_cuda_model *cuda = nullptr;
};

struct moert_session {
  moert_model *model = nullptr;
  std::vector<moert_kv> caches;
  /// calloc'd: pages of a long cache are committed only when written.
  std::unique_ptr<float, decltype(&std::free)> cacheMemory{nullptr, &std::free};
  std::vector<float> scratch;
  std::vector<float> logits;
  int64_t logitRows = 0;
  int64_t position = 0;
  std::vector<int32_t> positions;
  moert_cuda_session *cuda = nullptr;
  ~moert_session() { moert_cuda_session_free(cuda); }
};

extern "C" const char *moert_last_error(void) { return lastError.c_str(); }

extern "C" void moert_model_free(moert_model *model) {
  if (!model)
    return;
  moert_cuda_model_free(model->cuda);
  for (auto &kv : model->files)
    munmap(kv.second.base, kv.second.size);
  moert_pool_free(model->pool);
  delete model;
}

extern "C" moert_status moert_model_load(const moert_program *program,
                                         const char *weightDir, int threads,
                                         int maxBatchTokens,
                                         moert_model **out) {
  *out = nullptr;
  if (!program || program->abi_version != MOERT_ABI_VERSION)
    return moert_fail(MOERT_ERROR_INVALID,
                      "program was compiled for another runtime ABI");
  if (maxBatchTokens < 1)
    return moert_fail(MOERT_ERROR_INVALID,
                      "max batch tokens must be >= 1, got %d", maxBatchTokens);
  std::string dir = weightDir && *weightDir ? weightDir : program->model_dir;
  auto *model = new moert_model;
  model->program = program;
  model->maxTokens = maxBatchTokens;
  for (int64_t i = 0; i < program->num_weights; ++i) {
    const moert_weight_desc &w = program->weights[i];
    std::string path = dir + "/" + w.file;
    auto it = model->files.find(path);
    if (it == model->files.end()) {
      int fd = open(path.c_str(), O_RDONLY);
      if (fd < 0) {
        moert_model_free(model);
        return moert_fail(MOERT_ERROR_IO, "%s: cannot open: %s (weight '%s')",
                          path.c_str(), std::strerror(errno), w.name);
      }
      struct stat st;
      fstat(fd, &st);
      Mapping m;
      m.size = static_cast<size_t>(st.st_size);
      m.base = m.size ? mmap(nullptr, m.size, PROT_READ, MAP_SHARED, fd, 0)
                      : MAP_FAILED;
      close(fd);
      if (m.base == MAP_FAILED) {
        moert_model_free(model);
        return moert_fail(MOERT_ERROR_IO, "%s: cannot map: %s", path.c_str(),
                          std::strerror(errno));
      }
      it = model->files.emplace(path, m).first;
    }
    const Mapping &m = it->second;
    if (w.offset > m.size || w.size > m.size - w.offset) {
      moert_model_free(model);
      return moert_fail(
          MOERT_ERROR_IO,
          "%s: weight '%s' at bytes [%llu, %llu) is beyond the end "
          "of the file (%zu bytes); was the model changed since it "
          "was compiled?",
          path.c_str(), w.name, (unsigned long long)w.offset,
          (unsigned long long)(w.offset + w.size), m.size);
    }
    model->weights.push_back(static_cast<const char *>(m.base) + w.offset);
  }
  if (program->target == MOERT_TARGET_CUDA) {
    moert_status st =
        moert_cuda_model_load(program, model->weights, &model->cuda);
    if (st != MOERT_OK) {
      moert_model_free(model);
      return st;
    }
    // The weights live on the device now.
    for (auto &kv : model->files)
      munmap(kv.second.base, kv.second.size);
    model->files.clear();
    model->weights.clear();
  } else {
    model->pool = moert_pool_create(threads);
  }
  *out = model;
  return MOERT_OK;
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
  const moert_program *p = model->program;
  auto *s = new moert_session;
  s->model = model;
  if (model->cuda) {
    moert_status st =
        moert_cuda_session_create(model->cuda, model->maxTokens, &s->cuda);
    if (st != MOERT_OK) {
      delete s;
      return st;
    }
    *out = s;
    return MOERT_OK;
  }
  size_t total = 0;
  for (int64_t l = 0; l < p->num_layers; ++l) {
    const moert_cache_desc &c = p->caches[l];
    total += 2 * size_t(c.kv_heads * c.capacity * c.head_dim);
  }
  s->cacheMemory.reset(static_cast<float *>(std::calloc(total, sizeof(float))));
  if (!s->cacheMemory) {
    delete s;
    return moert_fail(MOERT_ERROR_MEMORY,
                      "cannot allocate %zu bytes of KV cache",
                      total * sizeof(float));
  }
  try {
    s->scratch.assign(size_t(p->scratch_floats(model->maxTokens)), 0.0f);
  } catch (const std::bad_alloc &) {
    delete s;
    return moert_fail(MOERT_ERROR_MEMORY,
                      "cannot allocate the activation arena");
  }
  float *next = s->cacheMemory.get();
  for (int64_t l = 0; l < p->num_layers; ++l) {
    const moert_cache_desc &c = p->caches[l];
    size_t one = size_t(c.kv_heads * c.capacity * c.head_dim);
    s->caches.push_back({next, next + one});
    next += 2 * one;
  }
  *out = s;
  return MOERT_OK;
}

extern "C" void moert_session_free(moert_session *session) { delete session; }

extern "C" int64_t moert_session_position(const moert_session *s) {
  return s->position;
}

extern "C" moert_status moert_prefill(moert_session *s, const int32_t *tokens,
                                      int64_t n) {
  const moert_program *p = s->model->program;
  if (n < 1)
    return moert_fail(MOERT_ERROR_INVALID, "no tokens to run");
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= p->vocab_size)
      return moert_fail(MOERT_ERROR_INVALID,
                        "token id %d at index %lld is outside the vocabulary "
                        "[0, %lld)",
                        tokens[i], (long long)i, (long long)p->vocab_size);
  if (s->position + n > p->max_positions)
    return moert_fail(MOERT_ERROR_INVALID,
                      "positions up to %lld exceed the model's maximum of %lld",
                      (long long)(s->position + n - 1),
                      (long long)p->max_positions - 1);
  s->logits.resize(size_t(n * p->vocab_size));
  moert_exec exec{s->model->weights.data(),
                  s->caches.data(),
                  s->scratch.data(),
                  s->model->maxTokens,
                  s->model->pool,
                  nullptr,
                  nullptr};
  for (int64_t done = 0; done < n;) {
    int64_t chunk = std::min<int64_t>(n - done, s->model->maxTokens);
    s->positions.resize(size_t(chunk));
    for (int64_t i = 0; i < chunk; ++i)
      s->positions[size_t(i)] = int32_t(s->position + i);
    float *logits = s->logits.data() + done * p->vocab_size;
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
  s->logitRows = n;
  return MOERT_OK;
}

extern "C" moert_status moert_decode(moert_session *s, int32_t token) {
  return moert_prefill(s, &token, 1);
}

extern "C" const float *moert_logits(const moert_session *s, int64_t *rows) {
  *rows = s->logitRows;
  return s->logits.data();
}
