//===- comm_mpi.cpp - the MPI backend of moert_comm ------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// libmoert_mpi: the communicator of expert-parallel ranks over MPI (Open
// MPI from Debian). Only programs compiled with --expert-parallel link it;
// the single-process binaries do not need MPI.
//
// Every collective is nonblocking and polled against a deadline
// (MOERT_EP_TIMEOUT seconds, default 60): a rank that died or hangs makes
// the others print `error: rank R: ...` and MPI_Abort, never wait forever.
//
//===----------------------------------------------------------------------===//

#include "moert/comm.h"

// MPI's C API: no C++ bindings to link.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <sched.h>
#include <string>

namespace {

struct MpiComm final : moert_comm {
  int rank_ = 0, size_ = 1;
  double timeout = 60;
  std::vector<int> sendCounts, sendDispls, recvCounts, recvDispls;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char *backend() const override { return "mpi"; }

  [[noreturn]] void abort(const char *message) override {
    std::fprintf(stderr, "error: rank %d: %s\n", rank_, message);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::_Exit(1);
  }

  [[noreturn]] void failed(const char *what, int code) {
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(code, text, &length);
    std::string message =
        std::string(what) + " failed: " + text + " (another rank died?)";
    abort(message.c_str());
  }

  /// Polls `request` until it completes or the deadline passes.
  void wait(MPI_Request &request, const char *what) {
    auto start = std::chrono::steady_clock::now();
    for (long spins = 0;; ++spins) {
      int done = 0;
      int code = MPI_Test(&request, &done, MPI_STATUS_IGNORE);
      if (code != MPI_SUCCESS)
        failed(what, code);
      if (done)
        return;
      if (spins < 1000) {
        sched_yield();
        continue;
      }
      double waited = std::chrono::duration<double>(
                          std::chrono::steady_clock::now() - start)
                          .count();
      if (waited > timeout) {
        char message[256];
        std::snprintf(message, sizeof message,
                      "no answer from the other ranks for %.0f s while %s: "
                      "a rank died or hangs (MOERT_EP_TIMEOUT sets the "
                      "limit)",
                      timeout, what);
        abort(message);
      }
      timespec nap{0, 50 * 1000};
      nanosleep(&nap, nullptr);
    }
  }

  /// MPI counts are int: byte counts above INT_MAX are refused.
  void toInts(const int64_t *bytes, std::vector<int> &counts,
              std::vector<int> &displs, const char *what) {
    counts.resize(size_t(size_));
    displs.resize(size_t(size_));
    int64_t at = 0;
    for (int r = 0; r < size_; ++r) {
      if (bytes[r] < 0 || bytes[r] > INT_MAX || at > INT_MAX) {
        char message[200];
        std::snprintf(message, sizeof message,
                      "%s: %lld bytes to exchange with rank %d are more than "
                      "one MPI message takes; lower --max-batch-tokens",
                      what, (long long)bytes[r], r);
        abort(message);
      }
      counts[size_t(r)] = int(bytes[r]);
      displs[size_t(r)] = int(at);
      at += bytes[r];
    }
  }

  void alltoall(const int32_t *send, int32_t *recv, const char *what) override {
    MPI_Request request;
    int code = MPI_Ialltoall(send, 1, MPI_INT32_T, recv, 1, MPI_INT32_T,
                             MPI_COMM_WORLD, &request);
    if (code != MPI_SUCCESS)
      failed(what, code);
    wait(request, what);
    bytesSent += uint64_t(size_ - 1) * sizeof(int32_t);
    ++collectives;
  }

  void alltoallv(const void *send, const int64_t *sendBytes, void *recv,
                 const int64_t *recvBytes, const char *what) override {
    toInts(sendBytes, sendCounts, sendDispls, what);
    toInts(recvBytes, recvCounts, recvDispls, what);
    MPI_Request request;
    int code =
        MPI_Ialltoallv(send, sendCounts.data(), sendDispls.data(), MPI_BYTE,
                       recv, recvCounts.data(), recvDispls.data(), MPI_BYTE,
                       MPI_COMM_WORLD, &request);
    if (code != MPI_SUCCESS)
      failed(what, code);
    wait(request, what);
    for (int r = 0; r < size_; ++r)
      if (r != rank_)
        bytesSent += uint64_t(sendBytes[r]);
    ++collectives;
  }

  void allgatherv(void *buffer, const int64_t *bytes,
                  const char *what) override {
    toInts(bytes, recvCounts, recvDispls, what);
    MPI_Request request;
    int code =
        MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_BYTE, buffer, recvCounts.data(),
                        recvDispls.data(), MPI_BYTE, MPI_COMM_WORLD, &request);
    if (code != MPI_SUCCESS)
      failed(what, code);
    wait(request, what);
    bytesSent += uint64_t(size_ - 1) * uint64_t(bytes[rank_]);
    ++collectives;
  }
};

} // namespace

extern "C" int moert_comm_mpi_create(int *argc, char ***argv, moert_comm **out,
                                     char *error, unsigned long errorSize) {
  *out = nullptr;
  int code = MPI_Init(argc, argv);
  if (code != MPI_SUCCESS) {
    std::snprintf(error, errorSize, "MPI_Init failed (code %d)", code);
    return 1;
  }
  // Errors come back as codes, reported by the rank that saw them.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  auto *comm = new MpiComm;
  MPI_Comm_rank(MPI_COMM_WORLD, &comm->rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &comm->size_);
  if (const char *t = std::getenv("MOERT_EP_TIMEOUT")) {
    char *end = nullptr;
    errno = 0;
    double v = std::strtod(t, &end);
    if (errno || end == t || *end || !(v > 0) || v > 86400) {
      std::snprintf(error, errorSize,
                    "MOERT_EP_TIMEOUT must be seconds in (0, 86400], got "
                    "'%s'",
                    t);
      delete comm;
      MPI_Finalize();
      return 1;
    }
    comm->timeout = v;
  }
  *out = comm;
  return 0;
}

extern "C" void moert_comm_mpi_free(moert_comm *comm) {
  delete comm;
  MPI_Finalize();
}
