//===- ep_host.h - the host side of expert parallelism on GPUs --*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// What the CUDA host plan of an expert-parallel program calls between its
// launches (moert/cuda/kernels.cuh has the kernels): the all-gather of the
// ranks' partial sums, over the runtime's communicator on device buffers
// (NCCL; MPI over the CUDA emulator's host memory).
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_CUDA_EP_HOST_H
#define MOERT_CUDA_EP_HOST_H

#include "moert/comm.h"
#include "moert/program.h"

namespace moert::cuda {

/// partials [R][n][H] floats: this rank's block filled; afterwards every
/// rank's. Waits for the stream first: the block is the kernels' output.
template <int64_t H, int64_t R>
void epAllgather(const moert_exec *ex, float *partials, int64_t n) {
  ex->sync(ex->device);
  int64_t bytes[R];
  for (int64_t r = 0; r < R; ++r)
    bytes[r] = n * H * int64_t(sizeof(float));
  ex->comm->allgatherv(partials, bytes, "sharing the experts' partial sums");
}

} // namespace moert::cuda

#endif // MOERT_CUDA_EP_HOST_H
