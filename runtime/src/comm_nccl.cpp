//===- comm_nccl.cpp - the NCCL backend of moert_comm ----------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// The communicator of GPU ranks: NCCL (from the CUDA toolkit), bootstrapped
// over MPI (rank 0's ncclUniqueId broadcast with MPI_Bcast), one GPU a rank
// (the node-local rank's device, or the only one the rank sees). The buffers
// the collectives take are device addresses. All-to-all(v) are grouped
// ncclSend/ncclRecv pairs, the all-gather one ncclBroadcast per rank; each
// collective is enqueued on the rank's stream and waited for against a deadline
// (MOERT_EP_TIMEOUT), with ncclCommGetAsyncError polled: a dead peer ends the
// job with an error (ncclCommAbort, then MPI_Abort), never a hang.
//
// libmoert_nccl: moe-compile links it into CUDA programs compiled with
// --expert-parallel (test/e2e/nccl-compile.test builds one). It has not run
// on GPUs yet: the same plan runs on the CUDA emulator with the MPI
// communicator (cuda-emu-expert-parallel.test).
//
//===----------------------------------------------------------------------===//

#include "moert/comm.h"

#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

struct NcclComm final : moert_comm {
  int rank_ = 0, size_ = 1, device_ = 0;
  double timeout = 60;
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char *backend() const override { return "nccl"; }
  int device() const override { return device_; }

  [[noreturn]] void abort(const char *message) override {
    std::fprintf(stderr, "error: rank %d: %s\n", rank_, message);
    std::fflush(stderr);
    if (comm)
      ncclCommAbort(comm);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::_Exit(1);
  }

  void check(ncclResult_t r, const char *what) {
    if (r != ncclSuccess && r != ncclInProgress)
      abort((std::string(what) + ": " + ncclGetErrorString(r)).c_str());
  }

  /// The stream's work done, or the deadline passed, or NCCL saw an error.
  void wait(const char *what) {
    auto start = std::chrono::steady_clock::now();
    for (;;) {
      cudaError_t done = cudaStreamQuery(stream);
      if (done == cudaSuccess)
        return;
      if (done != cudaErrorNotReady)
        abort((std::string(what) + ": " + cudaGetErrorString(done)).c_str());
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm, &async);
      check(async, what);
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                        start)
              .count() > timeout)
        abort((std::string("no answer from the other ranks while ") + what +
               ": a rank died or hangs (MOERT_EP_TIMEOUT sets the limit)")
                  .c_str());
    }
  }

  void alltoall(const int32_t *send, int32_t *recv, const char *what) override {
    check(ncclGroupStart(), what);
    for (int r = 0; r < size_; ++r) {
      check(ncclSend(send + r, 1, ncclInt32, r, comm, stream), what);
      check(ncclRecv(recv + r, 1, ncclInt32, r, comm, stream), what);
    }
    check(ncclGroupEnd(), what);
    wait(what);
    bytesSent += uint64_t(size_ - 1) * sizeof(int32_t);
    ++collectives;
  }

  void alltoallv(const void *send, const int64_t *sendBytes, void *recv,
                 const int64_t *recvBytes, const char *what) override {
    auto *s = static_cast<const char *>(send);
    auto *d = static_cast<char *>(recv);
    check(ncclGroupStart(), what);
    for (int r = 0; r < size_; ++r) {
      if (sendBytes[r])
        check(ncclSend(s, size_t(sendBytes[r]), ncclChar, r, comm, stream),
              what);
      if (recvBytes[r])
        check(ncclRecv(d, size_t(recvBytes[r]), ncclChar, r, comm, stream),
              what);
      s += sendBytes[r];
      d += recvBytes[r];
      if (r != rank_)
        bytesSent += uint64_t(sendBytes[r]);
    }
    check(ncclGroupEnd(), what);
    wait(what);
    ++collectives;
  }

  void allgatherv(void *buffer, const int64_t *bytes,
                  const char *what) override {
    auto *p = static_cast<char *>(buffer);
    check(ncclGroupStart(), what);
    for (int r = 0; r < size_; ++r) {
      if (bytes[r])
        check(ncclBroadcast(p, p, size_t(bytes[r]), ncclChar, r, comm, stream),
              what);
      p += bytes[r];
    }
    check(ncclGroupEnd(), what);
    wait(what);
    bytesSent += uint64_t(size_ - 1) * uint64_t(bytes[rank_]);
    ++collectives;
  }

  ~NcclComm() override {
    if (comm)
      ncclCommDestroy(comm);
    if (stream)
      cudaStreamDestroy(stream);
  }
};

} // namespace

extern "C" int moert_comm_nccl_create(int *argc, char ***argv, moert_comm **out,
                                      char *error, unsigned long errorSize) {
  *out = nullptr;
  if (MPI_Init(argc, argv) != MPI_SUCCESS) {
    std::snprintf(error, errorSize, "MPI_Init failed");
    return 1;
  }
  auto *c = new NcclComm;
  MPI_Comm_rank(MPI_COMM_WORLD, &c->rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &c->size_);
  if (const char *t = std::getenv("MOERT_EP_TIMEOUT"))
    c->timeout = std::atof(t) > 0 ? std::atof(t) : c->timeout;
  // One GPU a rank: the rank's index among the ranks of its node, or the
  // only GPU the rank sees when the launcher gives each rank its own
  // (CUDA_VISIBLE_DEVICES per rank, SLURM's --gpus-per-task=1).
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, c->rank_,
                      MPI_INFO_NULL, &node);
  int local = 0, nodeRanks = 1, devices = 0;
  MPI_Comm_rank(node, &local);
  MPI_Comm_size(node, &nodeRanks);
  if (cudaGetDeviceCount(&devices) != cudaSuccess)
    devices = 0;
  int device = devices == 1 ? 0 : local;
  // Ranks that each see one GPU must see different ones: the node's ranks
  // compare PCI addresses (every rank of the node takes part, whatever it
  // sees; one that sees several sends none).
  bool shared = false;
  if (nodeRanks > 1) {
    char bus[32] = {0};
    if (devices == 1)
      cudaDeviceGetPCIBusId(bus, sizeof bus, 0);
    std::string all(sizeof bus * size_t(nodeRanks), '\0');
    MPI_Allgather(bus, sizeof bus, MPI_CHAR, all.data(), sizeof bus, MPI_CHAR,
                  node);
    for (int r = 0; r < nodeRanks; ++r)
      shared |= devices == 1 && bus[0] && r != local &&
                std::strncmp(all.data() + r * sizeof bus, bus, sizeof bus) == 0;
  }
  MPI_Comm_free(&node);
  if (shared) {
    std::snprintf(error, errorSize,
                  "rank %d shares its only GPU with another rank of its node: "
                  "start at most one rank per GPU",
                  c->rank_);
    delete c;
    return 1;
  }
  if (device >= devices) {
    std::snprintf(error, errorSize,
                  "rank %d is rank %d of its node, which has %d GPUs: start "
                  "at most one rank per GPU, or give each rank its own GPU "
                  "(CUDA_VISIBLE_DEVICES)",
                  c->rank_, local, devices);
    delete c;
    return 1;
  }
  cudaSetDevice(device);
  c->device_ = device;
  cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
  ncclUniqueId id;
  if (c->rank_ == 0)
    ncclGetUniqueId(&id);
  MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
  ncclResult_t r = ncclCommInitRank(&c->comm, c->size_, id, c->rank_);
  if (r != ncclSuccess) {
    std::snprintf(error, errorSize, "ncclCommInitRank failed: %s",
                  ncclGetErrorString(r));
    delete c;
    return 1;
  }
  *out = c;
  return 0;
}

extern "C" void moert_comm_nccl_free(moert_comm *comm) {
  delete comm;
  MPI_Finalize();
}
