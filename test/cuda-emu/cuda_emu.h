//===- cuda_emu.h - moert's CUDA kernels, compiled for the CPU --*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// A test harness, not a target: it lets the generated .cu (and
// runtime/include/moert/cuda/kernels.cuh) compile as C++ and run on a
// machine without a GPU, so the CUDA kernels' index arithmetic, tiling,
// barriers and numerics are checked against the reference forward pass in
// CI. Each CUDA thread of a block is a fiber (driver.cpp); blocks run one
// after another, so `__shared__` variables are plain statics. __syncthreads,
// __syncwarp and warp shuffles switch fibers and wait for every live thread
// of the block (or warp); a barrier that can never complete aborts with a
// message. WMMA fragments hold the whole 16x16 tile in every lane.
// Memory-model and hardware details (coalescing, bank conflicts, alignment
// faults, register limits) are not emulated: those are checked on a GPU by
// scripts/gpu-check.sh.
//
// Used with `-include cuda_emu.h -DMOERT_CUDA_EMULATOR`; the generated .cu
// then also defines the kernel table the fake driver (driver.cpp) loads.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_CUDA_EMU_H
#define MOERT_CUDA_EMU_H

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __grid_constant__
#define __align__(n) __attribute__((aligned(n)))

namespace moert_emu {

struct Dim {
  unsigned x = 0, y = 0, z = 0;
};
extern Dim blockIdx, blockDim, gridDim;
/// The running fiber's thread index in its block.
unsigned threadIndex();
void syncThreads();
void syncWarp();
float shuffleXor(float v, int laneMask);

/// A kernel as the fake driver sees it: its name, how to call it with
/// cuLaunchKernel's argument array, and its argument sizes (to copy the
/// arguments of launches captured into a graph).
struct Kernel {
  const char *name;
  void (*call)(void **args);
  const size_t *argSizes;
  size_t numArgs;
};
struct Image {
  char magic[16]; // "moert-cuda-emu"
  const Kernel *kernels;
  size_t numKernels;
};

template <typename... A, size_t... I>
void callWith(void (*f)(A...), void **args, std::index_sequence<I...>) {
  f(*static_cast<std::remove_cv_t<A> *>(args[I])...);
}
template <auto F> struct Entry;
template <typename... A, void (*F)(A...)> struct Entry<F> {
  static void call(void **args) {
    callWith(F, args, std::index_sequence_for<A...>{});
  }
  static constexpr size_t sizes[sizeof...(A) + 1] = {sizeof(A)..., 0};
  static constexpr Kernel kernel(const char *name) {
    return {name, &call, sizes, sizeof...(A)};
  }
};

/// Runs a kernel's grid (gx x gy blocks of `block` threads) now, as
/// cuLaunchKernel does outside a capture: for tests that launch kernels
/// without libmoert (quant_kernels_test.cpp).
void launch(const Kernel &k, unsigned gx, unsigned gy, unsigned block,
            void **args);

} // namespace moert_emu

#define threadIdx (moert_emu::Dim{moert_emu::threadIndex(), 0, 0})
using moert_emu::blockDim;
using moert_emu::blockIdx;
using moert_emu::gridDim;

inline void __syncthreads() { moert_emu::syncThreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { moert_emu::syncWarp(); }
inline float __shfl_xor_sync(unsigned, float v, int laneMask) {
  return moert_emu::shuffleXor(v, laneMask);
}

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
// expf, fmaxf, sqrtf, pow and sincos are glibc's.

// The vector types have CUDA's alignment, so the tests' UBSan alignment
// check (check_e2e.py) reports a vector access the hardware would fault on.
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) {
  return {x, y, z, w};
}
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) {
  return {x, y, z, w};
}
template <typename T> inline T __ldg(const T *p) { return *p; }

// f16 and bf16 with round-to-nearest-even conversions (_Float16 is IEEE
// binary16 in GCC and Clang on x86-64).
struct __half {
  uint16_t bits;
};
struct alignas(4) __half2 {
  __half x, y;
};
struct __nv_bfloat16 {
  uint16_t bits;
};
struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
inline float __half2float(__half h) {
  _Float16 f;
  std::memcpy(&f, &h.bits, 2);
  return float(f);
}
inline __half __float2half_rn(float v) {
  _Float16 f = static_cast<_Float16>(v);
  __half h;
  std::memcpy(&h.bits, &f, 2);
  return h;
}
inline float __bfloat162float(__nv_bfloat16 h) {
  uint32_t u = uint32_t(h.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if (std::isnan(v))
    return {uint16_t((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return {uint16_t(u >> 16)};
}
inline __half __ushort_as_half(unsigned short bits) { return {bits}; }
inline float2 __half22float2(__half2 h) {
  return {__half2float(h.x), __half2float(h.y)};
}
inline __half2 __floats2half2_rn(float a, float b) {
  return {__float2half_rn(a), __float2half_rn(b)};
}
inline float2 __bfloat1622float2(__nv_bfloat162 h) {
  return {__bfloat162float(h.x), __bfloat162float(h.y)};
}
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
  return {__float2bfloat16_rn(a), __float2bfloat16_rn(b)};
}
inline float toFloatEmu(float v) { return v; }
inline float toFloatEmu(__half v) { return __half2float(v); }
inline float toFloatEmu(__nv_bfloat16 v) { return __bfloat162float(v); }

/// WMMA with 16x16x16 tiles; every lane holds (and computes) the whole tile.
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  float v[16][16];
};

template <typename Use, typename T, typename L>
inline void fill_fragment(fragment<Use, 16, 16, 16, T, L> &f, float x) {
  for (auto &row : f.v)
    for (float &e : row)
      e = x;
}
template <typename T>
inline void load_matrix_sync(fragment<matrix_a, 16, 16, 16, T, row_major> &f,
                             const T *p, unsigned ldm) {
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c)
      f.v[r][c] = toFloatEmu(p[r * ldm + c]);
}
/// B (k x n) column-major: element (k, n) at p[n * ldm + k].
template <typename T>
inline void load_matrix_sync(fragment<matrix_b, 16, 16, 16, T, col_major> &f,
                             const T *p, unsigned ldm) {
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < 16; ++n)
      f.v[k][n] = toFloatEmu(p[n * ldm + k]);
}
template <typename T>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float> &d,
                     const fragment<matrix_a, 16, 16, 16, T, row_major> &a,
                     const fragment<matrix_b, 16, 16, 16, T, col_major> &b,
                     const fragment<accumulator, 16, 16, 16, float> &c) {
  float out[16][16];
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      float s = c.v[m][n];
      for (int k = 0; k < 16; ++k)
        s += a.v[m][k] * b.v[k][n];
      out[m][n] = s;
    }
  std::memcpy(d.v, out, sizeof(out));
}
inline void store_matrix_sync(float *p,
                              const fragment<accumulator, 16, 16, 16, float> &f,
                              unsigned ldm, layout_t layout) {
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) {
      if (layout == mem_row_major)
        p[r * ldm + c] = f.v[r][c];
      else
        p[c * ldm + r] = f.v[r][c];
    }
}
} // namespace wmma
} // namespace nvcuda

/// The image the generated .cu defines under MOERT_CUDA_EMULATOR, in place
/// of the fatbin the host plan embeds.
#define MOERT_EMU_IMAGE(table)                                                 \
  extern "C" const moert_emu::Image moert_device_image = {                     \
      "moert-cuda-emu", table, sizeof(table) / sizeof(table[0])};              \
  extern "C" const unsigned char moert_device_image_end[1] = {0};

#endif // MOERT_CUDA_EMU_H
