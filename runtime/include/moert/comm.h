//===- comm.h - the communicator of expert-parallel ranks -------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// An expert-parallel program (moe-compile --expert-parallel N) runs as N
// processes, the ranks, that exchange tokens through a moert_comm: the
// collectives the EP kernels (moert/ep.h) need, over a backend that already
// exists (MPI: libmoert_mpi, src/comm_mpi.cpp; NCCL between GPUs:
// libmoert_nccl, src/comm_nccl.cpp). No transport of our own. Buffers live
// where the program computes: host memory for the CPU target, device
// memory for the CUDA target.
//
// A collective that cannot complete (a rank died, or no rank answered
// within the backend's timeout) does not return: it prints one
// `error: rank R: ...` line and ends every rank with status 1.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_COMM_H
#define MOERT_COMM_H

#include <cstdint>
#include <vector>

struct moert_comm {
  virtual ~moert_comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// "mpi", ...
  virtual const char *backend() const = 0;
  /// The GPU this rank computes on (CUDA programs): NCCL ranks take one each
  /// by their index on the node; other backends use the first.
  virtual int device() const { return 0; }
  /// recv[r] = what rank r put in its send[this rank]: one int32 per rank.
  virtual void alltoall(const int32_t *send, int32_t *recv,
                        const char *what) = 0;
  /// Bytes by rank: send holds sendBytes[r] bytes for rank r after those
  /// for ranks < r; recv likewise receives recvBytes[r] from rank r.
  virtual void alltoallv(const void *send, const int64_t *sendBytes, void *recv,
                         const int64_t *recvBytes, const char *what) = 0;
  /// In place: rank r's block of bytes[r] bytes follows the blocks of the
  /// ranks before it in `buffer`; afterwards every rank holds every block.
  virtual void allgatherv(void *buffer, const int64_t *bytes,
                          const char *what) = 0;
  /// Ends every rank with status 1 after printing `message`.
  [[noreturn]] virtual void abort(const char *message) = 0;

  /// Bytes this rank sent to other ranks, and collectives it ran.
  uint64_t bytesSent = 0, collectives = 0;
  /// Work space of the EP kernels, grown as needed (not in the arena: the
  /// rows a rank receives are known only at run time).
  std::vector<float> sendRows, recvRows, gathered, hidden, up, down;
  std::vector<int32_t> perm;
};

extern "C" {
/// libmoert_mpi: MPI_Init and a communicator over MPI_COMM_WORLD. On
/// failure returns nonzero with a message in `error`.
int moert_comm_mpi_create(int *argc, char ***argv, moert_comm **comm,
                          char *error, unsigned long errorSize);
/// MPI_Finalize (after the last collective).
void moert_comm_mpi_free(moert_comm *comm);
/// libmoert_nccl: NCCL between GPU ranks (device buffers), bootstrapped
/// over MPI, one GPU a rank.
int moert_comm_nccl_create(int *argc, char ***argv, moert_comm **comm,
                           char *error, unsigned long errorSize);
void moert_comm_nccl_free(moert_comm *comm);
}

#endif // MOERT_COMM_H
