//===- internal.h - libmoert's pieces, between its files -------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_SRC_INTERNAL_H
#define MOERT_SRC_INTERNAL_H

#include "moert/moert.h"

#include <exception>
#include <new>
#include <string>
#include <vector>

namespace moert {
class Tokenizer;
}

/// Records the message of the failing call (moert_last_error) and returns
/// `status`.
moert_status moert_fail(moert_status status, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

/// Runs a C API entry point's body; turns any exception into a status and
/// a message naming `what`.
template <typename Body>
moert_status moert_guarded(const char *what, const Body &body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc &) {
    return moert_fail(MOERT_ERROR_MEMORY, "%s: out of memory", what);
  } catch (const std::exception &e) {
    return moert_fail(MOERT_ERROR_INTERNAL, "%s: %s", what, e.what());
  } catch (...) {
    return moert_fail(MOERT_ERROR_INTERNAL, "%s: unknown exception", what);
  }
}

/// The floats of every layer's KV cache, keys and values, checked against
/// overflow (MOERT_ERROR_MEMORY with a message when it does not fit).
moert_status moert_cache_floats(const moert_program *program, uint64_t *total);
/// program->scratch_floats(tokens), checked against overflow.
moert_status moert_scratch_floats(const moert_program *program, int64_t tokens,
                                  uint64_t *floats);

/// What a file that is not regular is, for messages: "a FIFO", "a
/// directory", ... (`mode` is struct stat's st_mode).
const char *moert_file_kind(unsigned mode);

/// The program's tokenizer, parsed on the first call (thread-safe); null
/// with `error` set when the program has none or it is corrupt.
const moert::Tokenizer *moert_model_tokenizer(moert_model *model,
                                              std::string &error);

// The CUDA backend (cuda.cpp).
struct moert_cuda_model;
struct moert_cuda_session;
/// Opens the driver and GPU `device`, loads the program's kernels and
/// uploads the weights (`host`: one pointer per manifest entry; a null one,
/// another rank's weight, gets no device memory and a null pointer).
moert_status moert_cuda_model_load(const moert_program *program,
                                   const std::vector<const void *> &host,
                                   int device, moert_cuda_model **out);
void moert_cuda_model_free(moert_cuda_model *model);
const char *moert_cuda_device_name(const moert_cuda_model *model);
moert_status moert_cuda_session_create(moert_cuda_model *model,
                                       int64_t max_tokens, moert_comm *comm,
                                       moert_cuda_session **out);
void moert_cuda_session_free(moert_cuda_session *session);
/// Runs one chunk: host tokens/positions in, host logits out.
moert_status moert_cuda_forward(moert_cuda_session *session, int64_t n,
                                const int32_t *tokens, const int32_t *positions,
                                float *logits);
/// The routing counters (moert_exec::route_stats, device memory) as of the
/// last forward call: pairs routed, pairs dropped.
void moert_cuda_route_stats(const moert_cuda_session *session,
                            int64_t stats[2]);

#endif // MOERT_SRC_INTERNAL_H
