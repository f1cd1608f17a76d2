//===- cuda.cpp - moert's CUDA backend over the driver API -----*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// The CUDA driver (libcuda.so.1) is opened with dlopen the first time a CUDA
// program is loaded, as IREE's CUDA HAL does, so libmoert builds, links and
// runs its CPU programs on machines without a GPU or a driver. Only the
// handful of driver entry points below are used; their declarations mirror
// cuda.h (test/unit/CudaDriverTest.cpp checks them against it).
//
// A model owns the context, the module loaded from the program's embedded
// fatbin, and one device allocation holding every weight. A session owns a
// stream and one device allocation for its KV caches, the activation arena
// (sized by the memory plan) and its token/position/logit buffers. `forward`
// enqueues the host plan's launches; the single-token decode step is
// captured once into a CUDA graph and replayed (positions and tokens live in
// device memory, so the graph is the same for every step).
//
//===----------------------------------------------------------------------===//

#include "cuda_api.h"
#include "internal.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace {

// cuda.h's types, spelled here so libmoert builds without the toolkit.
using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
using CUdevice_attribute = int;
using CUstreamCaptureMode = int;
using CUcontext = struct CUctx_st *;
using CUmodule = struct CUmod_st *;
using CUfunction = struct CUfunc_st *;
using CUstream = struct CUstream_st *;
using CUgraph = struct CUgraph_st *;
using CUgraphExec = struct CUgraphExec_st *;

constexpr CUresult kSuccess = 0;
constexpr CUresult kNoBinaryForGpu = 209;
constexpr int kAttrComputeMajor = 75, kAttrComputeMinor = 76;
constexpr int kCaptureThreadLocal = 1;

/// The driver entry points moert uses.
struct Driver {
#define MOERT_CU_MEMBER(name, symbol, ...)                                     \
  using name##_fn = __VA_ARGS__;                                               \
  name##_fn name = nullptr;
  MOERT_CU_FUNCTIONS(MOERT_CU_MEMBER)
#undef MOERT_CU_MEMBER
  void *library = nullptr;
  std::string error; // why the driver is unusable; empty when loaded

  const char *describe(CUresult r) const {
    const char *s = nullptr;
    if (cuGetErrorString && cuGetErrorString(r, &s) == kSuccess && s)
      return s;
    return "unknown CUDA error";
  }
};

/// The process's driver, opened on first use ($MOERT_CUDA_DRIVER overrides
/// the library's name).
const Driver &driver() {
  static Driver d;
  static std::once_flag once;
  std::call_once(once, [] {
    const char *path = std::getenv("MOERT_CUDA_DRIVER");
    if (!path || !*path)
      path = "libcuda.so.1";
    d.library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!d.library) {
      const char *why = dlerror();
      d.error = std::string("no CUDA driver: cannot load ") + path + " (" +
                (why ? why : "?") +
                "); this program was compiled for the CUDA target and needs "
                "an NVIDIA GPU with its driver";
      return;
    }
#define MOERT_CU_RESOLVE(name, symbol, ...)                                    \
  d.name = reinterpret_cast<Driver::name##_fn>(dlsym(d.library, symbol));      \
  if (!d.name && d.error.empty())                                              \
    d.error = std::string(path) + " lacks " symbol                             \
                                  " (a CUDA 12 or newer driver is needed)";
    MOERT_CU_FUNCTIONS(MOERT_CU_RESOLVE)
#undef MOERT_CU_RESOLVE
    if (d.error.empty()) {
      CUresult r = d.cuInit(0);
      if (r != kSuccess)
        d.error =
            std::string("the CUDA driver did not initialise: ") + d.describe(r);
    }
  });
  return d;
}

CUdeviceptr align(CUdeviceptr v, CUdeviceptr a) { return (v + a - 1) / a * a; }

} // namespace

struct moert_cuda_model {
  const moert_program *program = nullptr;
  CUdevice device = 0;
  CUcontext context = nullptr;
  CUmodule module = nullptr;
  std::vector<CUfunction> functions;
  CUdeviceptr weightMemory = 0;
  std::vector<const void *> weights; // device addresses, manifest order
  std::string deviceName;
};

struct moert_cuda_session {
  moert_cuda_model *model = nullptr;
  CUstream stream = nullptr;
  CUdeviceptr memory = 0;
  std::vector<moert_kv> caches;
  moert_exec exec{};
  CUdeviceptr tokens = 0, positions = 0, logits = 0, routeStats = 0;
  /// The device counters, copied back after each forward call.
  int64_t hostRouteStats[2] = {0, 0};
  CUgraphExec decodeGraph = nullptr;
  bool useGraphs = true;
  CUresult launchError = kSuccess;
  int64_t failedKernel = -1;
};

namespace {

#define MOERT_CU_CHECK(call, what)                                             \
  do {                                                                         \
    CUresult r_ = (call);                                                      \
    if (r_ != kSuccess)                                                        \
      return moert_fail(MOERT_ERROR_DEVICE, "CUDA: %s failed: %s", what,       \
                        d.describe(r_));                                       \
  } while (0)

/// exec.launch: enqueues a kernel on the session's stream; the first error
/// is kept for moert_cuda_forward to report.
void launchKernel(void *device, int64_t kernel, unsigned gridX, unsigned gridY,
                  unsigned block, void **args) {
  auto *s = static_cast<moert_cuda_session *>(device);
  if (s->launchError != kSuccess)
    return;
  CUresult r =
      driver().cuLaunchKernel(s->model->functions[size_t(kernel)], gridX, gridY,
                              1, block, 1, 1, 0, s->stream, args, nullptr);
  if (r != kSuccess) {
    s->launchError = r;
    s->failedKernel = kernel;
  }
}

/// exec.sync: waits for the session's stream; a failure is kept as a launch
/// error is.
void syncStream(void *device) {
  auto *s = static_cast<moert_cuda_session *>(device);
  if (s->launchError != kSuccess)
    return;
  CUresult r = driver().cuStreamSynchronize(s->stream);
  if (r != kSuccess) {
    s->launchError = r;
    s->failedKernel = -1; // not a launch: the wait
  }
}

moert_status launchFailure(moert_cuda_session *s) {
  const Driver &d = driver();
  CUresult r = s->launchError;
  s->launchError = kSuccess;
  if (s->failedKernel < 0)
    return moert_fail(MOERT_ERROR_DEVICE,
                      "CUDA: the kernels before a collective of expert "
                      "parallelism failed: %s",
                      d.describe(r));
  return moert_fail(MOERT_ERROR_DEVICE, "CUDA: launching kernel %s failed: %s",
                    s->model->program->kernel_names[s->failedKernel],
                    d.describe(r));
}

} // namespace

moert_status moert_cuda_model_load(const moert_program *p,
                                   const std::vector<const void *> &host,
                                   int deviceIndex, moert_cuda_model **out) {
  *out = nullptr;
  const Driver &d = driver();
  if (!d.error.empty())
    return moert_fail(MOERT_ERROR_DEVICE, "%s", d.error.c_str());
  int count = 0;
  MOERT_CU_CHECK(d.cuDeviceGetCount(&count), "counting devices");
  if (count < 1)
    return moert_fail(MOERT_ERROR_DEVICE, "CUDA: no GPU found");
  if (deviceIndex < 0 || deviceIndex >= count)
    return moert_fail(MOERT_ERROR_DEVICE, "CUDA: no GPU %d (%d found)",
                      deviceIndex, count);
  auto *m = new moert_cuda_model;
  m->program = p;
  auto bail = [&](moert_status st) {
    moert_cuda_model_free(m);
    return st;
  };
  CUresult r = d.cuDeviceGet(&m->device, deviceIndex);
  if (r == kSuccess)
    r = d.cuDevicePrimaryCtxRetain(&m->context, m->device);
  if (r == kSuccess)
    r = d.cuCtxSetCurrent(m->context);
  if (r != kSuccess)
    return bail(moert_fail(MOERT_ERROR_DEVICE,
                           "CUDA: cannot open device %d: %s", deviceIndex,
                           d.describe(r)));
  char name[256] = {};
  d.cuDeviceGetName(name, sizeof(name) - 1, m->device);
  m->deviceName = name;
  int major = 0, minor = 0;
  d.cuDeviceGetAttribute(&major, kAttrComputeMajor, m->device);
  d.cuDeviceGetAttribute(&minor, kAttrComputeMinor, m->device);
  r = d.cuModuleLoadData(&m->module, p->device_image);
  if (r == kNoBinaryForGpu)
    return bail(moert_fail(MOERT_ERROR_DEVICE,
                           "CUDA: the program has no kernels for %s (sm_%d%d); "
                           "compile it with --cuda-arch sm_%d%d",
                           name, major, minor, major, minor));
  if (r != kSuccess)
    return bail(moert_fail(MOERT_ERROR_DEVICE,
                           "CUDA: loading the kernels failed: %s",
                           d.describe(r)));
  for (int64_t k = 0; k < p->num_kernels; ++k) {
    CUfunction f = nullptr;
    r = d.cuModuleGetFunction(&f, m->module, p->kernel_names[k]);
    if (r != kSuccess)
      return bail(moert_fail(MOERT_ERROR_DEVICE,
                             "CUDA: kernel %s is missing from the fatbin: %s",
                             p->kernel_names[k], d.describe(r)));
    m->functions.push_back(f);
  }
  // Every weight this rank holds in one allocation, 256-byte aligned.
  std::vector<CUdeviceptr> offsets;
  CUdeviceptr total = 0;
  for (int64_t i = 0; i < p->num_weights; ++i) {
    uint64_t size = host[size_t(i)] ? p->weights[i].size : 0;
    if (total > UINT64_MAX - 255 ||
        __builtin_add_overflow(align(total, 256), size, &total))
      return bail(moert_fail(MOERT_ERROR_MEMORY,
                             "CUDA: the weights need more than 2^64 bytes"));
    offsets.push_back(total - size);
  }
  r = d.cuMemAlloc(&m->weightMemory, size_t(total ? total : 1));
  if (r != kSuccess)
    return bail(moert_fail(MOERT_ERROR_MEMORY,
                           "CUDA: cannot allocate %llu bytes of weights on %s: "
                           "%s",
                           (unsigned long long)total, name, d.describe(r)));
  for (int64_t i = 0; i < p->num_weights; ++i) {
    if (!host[size_t(i)]) { // another rank's
      m->weights.push_back(nullptr);
      continue;
    }
    CUdeviceptr at = m->weightMemory + offsets[size_t(i)];
    r = d.cuMemcpyHtoD(at, host[size_t(i)], size_t(p->weights[i].size));
    if (r != kSuccess)
      return bail(moert_fail(MOERT_ERROR_DEVICE,
                             "CUDA: uploading weight '%s' failed: %s",
                             p->weights[i].name, d.describe(r)));
    m->weights.push_back(reinterpret_cast<const void *>(at));
  }
  *out = m;
  return MOERT_OK;
}

void moert_cuda_model_free(moert_cuda_model *m) {
  if (!m)
    return;
  const Driver &d = driver();
  if (m->weightMemory)
    d.cuMemFree(m->weightMemory);
  if (m->module)
    d.cuModuleUnload(m->module);
  if (m->context)
    d.cuDevicePrimaryCtxRelease(m->device);
  delete m;
}

const char *moert_cuda_device_name(const moert_cuda_model *m) {
  return m->deviceName.c_str();
}

moert_status moert_cuda_session_create(moert_cuda_model *m, int64_t maxTokens,
                                       moert_comm *comm,
                                       moert_cuda_session **out) {
  *out = nullptr;
  const Driver &d = driver();
  const moert_program *p = m->program;
  MOERT_CU_CHECK(d.cuCtxSetCurrent(m->context), "making the context current");
  auto *s = new moert_cuda_session;
  s->model = m;
  const char *graphs = std::getenv("MOERT_CUDA_GRAPHS");
  // Expert-parallel steps wait for the stream inside `forward` (the
  // collectives), which a graph capture cannot hold.
  s->useGraphs = !(graphs && std::strcmp(graphs, "0") == 0) && !p->ep_ranks;
  // A multiple of 8 rows keeps every planned buffer (arena + rows * offset)
  // 32-byte aligned for the vector loads.
  int64_t rows = (maxTokens + 7) / 8 * 8;
  // One allocation: caches, arena, tokens, positions, logits; every size
  // checked against overflow.
  uint64_t cacheFloats = 0, arenaFloats = 0, logitFloats = 0;
  moert_status st = moert_cache_floats(p, &cacheFloats);
  if (st == MOERT_OK)
    st = moert_scratch_floats(p, rows, &arenaFloats);
  if (st != MOERT_OK) {
    delete s;
    return st;
  }
  CUdeviceptr size = 0;
  bool tooLarge = __builtin_mul_overflow(uint64_t(rows),
                                         uint64_t(p->vocab_size), &logitFloats);
  // Appends `floats` floats, 256-byte aligned; returns where they start.
  auto place = [&](uint64_t floats) {
    CUdeviceptr at = size;
    uint64_t bytes;
    if (__builtin_mul_overflow(floats, uint64_t(4), &bytes) ||
        __builtin_add_overflow(size, bytes, &size) || size > UINT64_MAX - 255)
      tooLarge = true;
    else
      size = align(size, 256);
    return at;
  };
  std::vector<CUdeviceptr> cacheAt;
  for (int64_t l = 0; l < p->num_layers; ++l) {
    // Cannot overflow: moert_cache_floats summed these.
    const moert_cache_desc &c = p->caches[l];
    cacheAt.push_back(place(2 * uint64_t(c.kv_heads) * uint64_t(c.capacity) *
                            uint64_t(c.head_dim)));
  }
  CUdeviceptr arenaAt = place(arenaFloats);
  CUdeviceptr tokensAt = place(uint64_t(rows));
  CUdeviceptr positionsAt = place(uint64_t(rows));
  CUdeviceptr logitsAt = place(logitFloats);
  CUdeviceptr routeStatsAt = place(4); // two int64 counters
  if (tooLarge) {
    delete s;
    return moert_fail(MOERT_ERROR_MEMORY,
                      "CUDA: the KV cache and activations for %lld positions "
                      "and %lld tokens per forward pass need more than 2^64 "
                      "bytes",
                      (long long)p->max_positions, (long long)maxTokens);
  }
  CUresult r = d.cuMemAlloc(&s->memory, size_t(size));
  if (r != kSuccess) {
    delete s;
    return moert_fail(MOERT_ERROR_MEMORY,
                      "CUDA: cannot allocate %llu bytes for the KV cache and "
                      "activations: %s",
                      (unsigned long long)size, d.describe(r));
  }
  r = d.cuMemsetD8(s->memory, 0, size_t(size));
  if (r == kSuccess)
    r = d.cuStreamCreate(&s->stream, 1 /* non-blocking */);
  if (r != kSuccess) {
    moert_cuda_session_free(s);
    return moert_fail(MOERT_ERROR_DEVICE, "CUDA: cannot create a stream: %s",
                      d.describe(r));
  }
  for (int64_t l = 0; l < p->num_layers; ++l) {
    const moert_cache_desc &c = p->caches[l];
    auto *k = reinterpret_cast<float *>(s->memory + cacheAt[size_t(l)]);
    s->caches.push_back({k, k + c.kv_heads * c.capacity * c.head_dim});
  }
  s->tokens = s->memory + tokensAt;
  s->positions = s->memory + positionsAt;
  s->logits = s->memory + logitsAt;
  s->routeStats = s->memory + routeStatsAt;
  s->exec.weights = m->weights.data();
  s->exec.caches = s->caches.data();
  s->exec.scratch = reinterpret_cast<float *>(s->memory + arenaAt);
  s->exec.max_tokens = rows;
  s->exec.device = s;
  s->exec.launch = launchKernel;
  s->exec.sync = syncStream;
  s->exec.comm = comm;
  s->exec.route_stats = reinterpret_cast<int64_t *>(s->routeStats);
  *out = s;
  return MOERT_OK;
}

void moert_cuda_session_free(moert_cuda_session *s) {
  if (!s)
    return;
  const Driver &d = driver();
  if (s->decodeGraph)
    d.cuGraphExecDestroy(s->decodeGraph);
  if (s->stream)
    d.cuStreamDestroy(s->stream);
  if (s->memory)
    d.cuMemFree(s->memory);
  delete s;
}

moert_status moert_cuda_forward(moert_cuda_session *s, int64_t n,
                                const int32_t *tokens, const int32_t *positions,
                                float *logits) {
  const Driver &d = driver();
  const moert_program *p = s->model->program;
  MOERT_CU_CHECK(d.cuCtxSetCurrent(s->model->context),
                 "making the context current");
  MOERT_CU_CHECK(
      d.cuMemcpyHtoDAsync(s->tokens, tokens, size_t(n) * 4, s->stream),
      "copying the tokens");
  MOERT_CU_CHECK(
      d.cuMemcpyHtoDAsync(s->positions, positions, size_t(n) * 4, s->stream),
      "copying the positions");
  auto *devTokens = reinterpret_cast<const int32_t *>(s->tokens);
  auto *devPositions = reinterpret_cast<const int32_t *>(s->positions);
  auto *devLogits = reinterpret_cast<float *>(s->logits);
  if (n == 1 && s->useGraphs && !s->decodeGraph) {
    // Capture the decode step once; if the driver refuses, run it directly.
    CUgraph graph = nullptr;
    if (d.cuStreamBeginCapture(s->stream, kCaptureThreadLocal) == kSuccess) {
      p->forward(&s->exec, 1, devTokens, devPositions, devLogits);
      CUresult r = d.cuStreamEndCapture(s->stream, &graph);
      if (s->launchError != kSuccess) {
        if (graph)
          d.cuGraphDestroy(graph);
        return launchFailure(s);
      }
      if (r == kSuccess &&
          d.cuGraphInstantiate(&s->decodeGraph, graph, 0) != kSuccess)
        s->decodeGraph = nullptr;
      if (graph)
        d.cuGraphDestroy(graph);
    }
    if (!s->decodeGraph)
      s->useGraphs = false;
  }
  if (n == 1 && s->decodeGraph) {
    MOERT_CU_CHECK(d.cuGraphLaunch(s->decodeGraph, s->stream),
                   "launching the decode graph");
  } else {
    p->forward(&s->exec, n, devTokens, devPositions, devLogits);
    if (s->launchError != kSuccess)
      return launchFailure(s);
  }
  MOERT_CU_CHECK(d.cuMemcpyDtoHAsync(logits, s->logits,
                                     size_t(n * p->vocab_size) * 4, s->stream),
                 "copying the logits");
  if (p->capacity_factor > 0)
    MOERT_CU_CHECK(d.cuMemcpyDtoHAsync(s->hostRouteStats, s->routeStats,
                                       sizeof s->hostRouteStats, s->stream),
                   "copying the routing counters");
  MOERT_CU_CHECK(d.cuStreamSynchronize(s->stream), "running the step");
  return MOERT_OK;
}

void moert_cuda_route_stats(const moert_cuda_session *s, int64_t stats[2]) {
  stats[0] = s->hostRouteStats[0];
  stats[1] = s->hostRouteStats[1];
}
