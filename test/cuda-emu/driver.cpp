//===- driver.cpp - a fake libcuda that runs kernels on fibers --*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Exports the driver entry points libmoert's CUDA backend resolves, over host
// memory, so a CUDA program built against cuda_emu.h runs on the CPU with
// MOERT_CUDA_DRIVER pointing here. Launches run the kernel's blocks one
// after another (last block first), each thread of a block on its own fiber
// (a stack and a 7-instruction x86-64 context switch; highest thread first);
// barriers and shuffles switch fibers. Stream capture records launches (with copies of their arguments)
// into a graph that cuGraphLaunch replays, so the runtime's decode graph
// path is exercised too. MOERT_CUDA_EMU_TRACE=FILE appends one line per
// executed launch (kernel name, grid, block).
//
//===----------------------------------------------------------------------===//

#include "cuda_emu.h"

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#if !defined(__x86_64__)
#error "the CUDA emulator's context switch is written for x86-64"
#endif

// moert_emu_switch(&saveSp, loadSp): pushes the callee-saved registers,
// stores the stack pointer, loads the other one and pops its registers.
asm(R"(
  .text
  .p2align 4
  .type moert_emu_switch, @function
moert_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size moert_emu_switch, .-moert_emu_switch
)");
extern "C" void moert_emu_switch(void **save, void *load);

namespace moert_emu {

Dim blockIdx, blockDim, gridDim;

namespace {

enum class State { Ready, AtWarpBarrier, AtBlockBarrier, Done };

constexpr size_t kStackBytes = 256 * 1024;

struct Fiber {
  std::unique_ptr<char[]> stack{new char[kStackBytes]};
  void *sp = nullptr;
  State state = State::Done;
  float exchange = 0; // a shuffle's value
};

std::vector<Fiber> fibers;
unsigned current = 0;
void *schedulerSp = nullptr;
const Kernel *runningKernel = nullptr;
void **runningArgs = nullptr;

void yield(State state) {
  fibers[current].state = state;
  moert_emu_switch(&fibers[current].sp, schedulerSp);
}

[[noreturn]] void fiberEntry() {
  runningKernel->call(runningArgs);
  fibers[current].state = State::Done;
  moert_emu_switch(&fibers[current].sp, schedulerSp);
  std::abort(); // never resumed
}

void startFiber(Fiber &f) {
  auto top = reinterpret_cast<uintptr_t>(f.stack.get() + kStackBytes) & ~15ull;
  void **sp = reinterpret_cast<void **>(top);
  *--sp = nullptr;                                // fiberEntry's return slot
  *--sp = reinterpret_cast<void *>(&fiberEntry); // popped by `ret`
  for (int i = 0; i < 6; ++i)
    *--sp = nullptr; // callee-saved registers
  f.sp = sp;
  f.state = State::Ready;
}

void runBlock(unsigned threads) {
  for (unsigned t = 0; t < threads; ++t)
    startFiber(fibers[t]);
  for (;;) {
    // Highest thread first: code that relies on an order the hardware
    // does not promise (between barriers) goes wrong here too.
    for (unsigned t = threads; t-- > 0;)
      if (fibers[t].state == State::Ready) {
        current = t;
        moert_emu_switch(&schedulerSp, fibers[t].sp);
      }
    bool live = false, released = false;
    for (unsigned w = 0; w < threads; w += 32) {
      unsigned end = std::min(threads, w + 32);
      bool waiting = false, all = true;
      for (unsigned t = w; t < end; ++t) {
        waiting |= fibers[t].state == State::AtWarpBarrier;
        all &= fibers[t].state == State::AtWarpBarrier ||
               fibers[t].state == State::Done;
      }
      if (waiting && all) {
        for (unsigned t = w; t < end; ++t)
          if (fibers[t].state == State::AtWarpBarrier)
            fibers[t].state = State::Ready;
        released = true;
      }
    }
    if (released)
      continue;
    bool allAtBlock = true;
    for (unsigned t = 0; t < threads; ++t) {
      live |= fibers[t].state != State::Done;
      allAtBlock &= fibers[t].state == State::AtBlockBarrier ||
                    fibers[t].state == State::Done;
    }
    if (!live)
      return;
    if (!allAtBlock) {
      std::fprintf(stderr,
                   "cuda-emu: kernel %s block (%u, %u): threads wait at "
                   "barriers that can never complete (divergent "
                   "__syncthreads or shuffle)\n",
                   runningKernel->name, blockIdx.x, blockIdx.y);
      std::abort();
    }
    for (unsigned t = 0; t < threads; ++t)
      if (fibers[t].state == State::AtBlockBarrier)
        fibers[t].state = State::Ready;
  }
}

} // namespace

unsigned threadIndex() { return current; }
void syncThreads() { yield(State::AtBlockBarrier); }
void syncWarp() { yield(State::AtWarpBarrier); }
float shuffleXor(float v, int laneMask) {
  fibers[current].exchange = v;
  yield(State::AtWarpBarrier);
  float other = fibers[current ^ unsigned(laneMask)].exchange;
  yield(State::AtWarpBarrier); // nobody overwrites before all have read
  return other;
}

void launch(const Kernel &k, unsigned gx, unsigned gy, unsigned block,
            void **args) {
  if (fibers.size() < block)
    fibers.resize(block);
  runningKernel = &k;
  runningArgs = args;
  gridDim = {gx, gy, 1};
  blockDim = {block, 1, 1};
  // Blocks last to first, for the same reason: a kernel whose blocks race
  // (write the same memory, or read what another block writes) gives the
  // result of the reverse of the launch order.
  for (unsigned y = gy; y-- > 0;)
    for (unsigned x = gx; x-- > 0;) {
      blockIdx = {x, y, 0};
      runBlock(block);
    }
  if (const char *trace = std::getenv("MOERT_CUDA_EMU_TRACE")) {
    if (FILE *f = std::fopen(trace, "a")) {
      std::fprintf(f, "%s %u %u %u\n", k.name, gx, gy, block);
      std::fclose(f);
    }
  }
}

} // namespace moert_emu

//===----------------------------------------------------------------------===//
// Driver API
//===----------------------------------------------------------------------===//

namespace {

using CUresult = int;
using CUdeviceptr = unsigned long long;

struct Launch {
  const moert_emu::Kernel *kernel;
  unsigned gx, gy, block;
  std::vector<std::vector<char>> args;
};
struct Graph {
  std::vector<Launch> launches;
};
struct Stream {
  Graph *capturing = nullptr;
};

const moert_emu::Image *image = nullptr;

void run(const Launch &l) {
  std::vector<void *> args;
  for (const auto &a : l.args)
    args.push_back(const_cast<char *>(a.data()));
  moert_emu::launch(*l.kernel, l.gx, l.gy, l.block, args.data());
}

} // namespace

extern "C" {

CUresult cuInit(unsigned) { return 0; }
CUresult cuDeviceGetCount(int *n) {
  *n = 1;
  return 0;
}
CUresult cuDeviceGet(int *d, int) {
  *d = 0;
  return 0;
}
CUresult cuDeviceGetName(char *name, int len, int) {
  std::snprintf(name, size_t(len), "CUDA emulator (CPU)");
  return 0;
}
CUresult cuDeviceGetAttribute(int *v, int attribute, int) {
  *v = attribute == 75 ? 8 : 0; // compute capability 8.0
  return 0;
}
CUresult cuDevicePrimaryCtxRetain(void **ctx, int) {
  static int context;
  *ctx = &context;
  return 0;
}
CUresult cuDevicePrimaryCtxRelease_v2(int) { return 0; }
CUresult cuCtxSetCurrent(void *) { return 0; }
CUresult cuModuleLoadData(void **module, const void *data) {
  auto *img = static_cast<const moert_emu::Image *>(data);
  if (std::strcmp(img->magic, "moert-cuda-emu") != 0)
    return 209; // CUDA_ERROR_NO_BINARY_FOR_GPU: a real fatbin
  image = img;
  *module = const_cast<moert_emu::Image *>(img);
  return 0;
}
CUresult cuModuleUnload(void *) { return 0; }
CUresult cuModuleGetFunction(const void **f, void *, const char *name) {
  for (size_t i = 0; i < image->numKernels; ++i)
    if (std::strcmp(image->kernels[i].name, name) == 0) {
      *f = &image->kernels[i];
      return 0;
    }
  return 500; // CUDA_ERROR_NOT_FOUND
}
CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t bytes) {
  void *m = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  if (!m)
    return 2; // CUDA_ERROR_OUT_OF_MEMORY
  *p = reinterpret_cast<CUdeviceptr>(m);
  return 0;
}
CUresult cuMemFree_v2(CUdeviceptr p) {
  std::free(reinterpret_cast<void *>(p));
  return 0;
}
CUresult cuMemsetD8_v2(CUdeviceptr p, unsigned char v, size_t n) {
  std::memset(reinterpret_cast<void *>(p), v, n);
  return 0;
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void *s, size_t n) {
  std::memcpy(reinterpret_cast<void *>(d), s, n);
  return 0;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void *s, size_t n, void *) {
  return cuMemcpyHtoD_v2(d, s, n);
}
CUresult cuMemcpyDtoHAsync_v2(void *d, CUdeviceptr s, size_t n, void *) {
  std::memcpy(d, reinterpret_cast<void *>(s), n);
  return 0;
}
CUresult cuStreamCreate(void **s, unsigned) {
  *s = new Stream;
  return 0;
}
CUresult cuStreamDestroy_v2(void *s) {
  delete static_cast<Stream *>(s);
  return 0;
}
CUresult cuStreamSynchronize(void *) { return 0; }
CUresult cuLaunchKernel(const void *f, unsigned gx, unsigned gy, unsigned gz,
                        unsigned bx, unsigned by, unsigned bz, unsigned shared,
                        void *stream, void **params, void **extra) {
  auto *k = static_cast<const moert_emu::Kernel *>(f);
  if (gz != 1 || by != 1 || bz != 1 || shared != 0 || extra || bx > 1024 ||
      gx == 0 || gy == 0 || gy > 65535)
    return 1; // CUDA_ERROR_INVALID_VALUE: not a launch moert makes
  Launch l{k, gx, gy, bx, {}};
  for (size_t i = 0; i < k->numArgs; ++i) {
    const char *a = static_cast<const char *>(params[i]);
    l.args.emplace_back(a, a + k->argSizes[i]);
  }
  auto *s = static_cast<Stream *>(stream);
  if (s && s->capturing)
    s->capturing->launches.push_back(std::move(l));
  else
    run(l);
  return 0;
}
CUresult cuStreamBeginCapture_v2(void *stream, int) {
  static_cast<Stream *>(stream)->capturing = new Graph;
  return 0;
}
CUresult cuStreamEndCapture(void *stream, void **graph) {
  auto *s = static_cast<Stream *>(stream);
  *graph = s->capturing;
  s->capturing = nullptr;
  return 0;
}
CUresult cuGraphInstantiateWithFlags(void **exec, void *graph,
                                     unsigned long long) {
  *exec = new Graph(*static_cast<Graph *>(graph));
  return 0;
}
CUresult cuGraphLaunch(void *exec, void *) {
  for (const Launch &l : static_cast<Graph *>(exec)->launches)
    run(l);
  return 0;
}
CUresult cuGraphExecDestroy(void *exec) {
  delete static_cast<Graph *>(exec);
  return 0;
}
CUresult cuGraphDestroy(void *graph) {
  delete static_cast<Graph *>(graph);
  return 0;
}
CUresult cuGetErrorString(CUresult r, const char **s) {
  *s = r == 209   ? "no kernel image for this device (not an emulator image)"
       : r == 500 ? "named symbol not found"
       : r == 2   ? "out of memory"
                  : "invalid value";
  return 0;
}

} // extern "C"
