//===- cuda_api.h - the CUDA driver entry points moert uses ----*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// X(member, exported symbol, function pointer type) for each driver entry
// point libmoert's CUDA backend resolves with dlsym. The types are written
// with cuda.h's type names: cuda.cpp defines them itself (so libmoert builds
// without the CUDA toolkit); test/unit/CudaDriverTest.cpp expands the same
// list against cuda.h to check every signature.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_SRC_CUDA_API_H
#define MOERT_SRC_CUDA_API_H

// clang-format off
#define MOERT_CU_FUNCTIONS(X)                                                  \
  X(cuInit, "cuInit", CUresult (*)(unsigned))                                  \
  X(cuDeviceGetCount, "cuDeviceGetCount", CUresult (*)(int *))                 \
  X(cuDeviceGet, "cuDeviceGet", CUresult (*)(CUdevice *, int))                 \
  X(cuDeviceGetName, "cuDeviceGetName", CUresult (*)(char *, int, CUdevice))   \
  X(cuDeviceGetAttribute, "cuDeviceGetAttribute",                              \
    CUresult (*)(int *, CUdevice_attribute, CUdevice))                         \
  X(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain",                      \
    CUresult (*)(CUcontext *, CUdevice))                                       \
  X(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2",                 \
    CUresult (*)(CUdevice))                                                    \
  X(cuCtxSetCurrent, "cuCtxSetCurrent", CUresult (*)(CUcontext))               \
  X(cuModuleLoadData, "cuModuleLoadData",                                      \
    CUresult (*)(CUmodule *, const void *))                                    \
  X(cuModuleUnload, "cuModuleUnload", CUresult (*)(CUmodule))                  \
  X(cuModuleGetFunction, "cuModuleGetFunction",                                \
    CUresult (*)(CUfunction *, CUmodule, const char *))                        \
  X(cuMemAlloc, "cuMemAlloc_v2", CUresult (*)(CUdeviceptr *, size_t))          \
  X(cuMemFree, "cuMemFree_v2", CUresult (*)(CUdeviceptr))                      \
  X(cuMemsetD8, "cuMemsetD8_v2",                                               \
    CUresult (*)(CUdeviceptr, unsigned char, size_t))                          \
  X(cuMemcpyHtoD, "cuMemcpyHtoD_v2",                                           \
    CUresult (*)(CUdeviceptr, const void *, size_t))                           \
  X(cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2",                                 \
    CUresult (*)(CUdeviceptr, const void *, size_t, CUstream))                 \
  X(cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2",                                 \
    CUresult (*)(void *, CUdeviceptr, size_t, CUstream))                       \
  X(cuStreamCreate, "cuStreamCreate", CUresult (*)(CUstream *, unsigned))      \
  X(cuStreamDestroy, "cuStreamDestroy_v2", CUresult (*)(CUstream))             \
  X(cuStreamSynchronize, "cuStreamSynchronize", CUresult (*)(CUstream))        \
  X(cuLaunchKernel, "cuLaunchKernel",                                          \
    CUresult (*)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, \
                 unsigned, unsigned, CUstream, void **, void **))              \
  X(cuStreamBeginCapture, "cuStreamBeginCapture_v2",                           \
    CUresult (*)(CUstream, CUstreamCaptureMode))                               \
  X(cuStreamEndCapture, "cuStreamEndCapture",                                  \
    CUresult (*)(CUstream, CUgraph *))                                         \
  X(cuGraphInstantiate, "cuGraphInstantiateWithFlags",                         \
    CUresult (*)(CUgraphExec *, CUgraph, unsigned long long))                  \
  X(cuGraphLaunch, "cuGraphLaunch", CUresult (*)(CUgraphExec, CUstream))       \
  X(cuGraphExecDestroy, "cuGraphExecDestroy", CUresult (*)(CUgraphExec))       \
  X(cuGraphDestroy, "cuGraphDestroy", CUresult (*)(CUgraph))                   \
  X(cuGetErrorString, "cuGetErrorString", CUresult (*)(CUresult, const char **))
// clang-format on

#endif // MOERT_SRC_CUDA_API_H
