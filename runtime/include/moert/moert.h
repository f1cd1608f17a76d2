/*===- moert.h - moe-compile runtime C API ----------------------*- C -*-===*
 *
 * Part of moe-compile.
 *
 *===----------------------------------------------------------------------===*
 *
 * Load a compiled program's weights, open a session (which owns the KV
 * caches), prefill tokens, decode one token at a time, read the logits.
 * Errors are returned as moert_status; moert_last_error() says what failed.
 * Nothing here aborts on bad input, and no C++ exception leaves these calls
 * (running out of memory is MOERT_ERROR_MEMORY).
 *
 * The weights are memory-mapped from the model's own files, and the CPU
 * target reads them in place while it runs. Loading checks each file's
 * safetensors header against the manifest the model was compiled with, but
 * a file truncated or rewritten in place *after* loading makes the next read
 * of the mapping raise SIGBUS, which by default kills the process. Embedders
 * should keep the weight files immutable while a model is loaded (write new
 * versions elsewhere and rename them into place), or install a SIGBUS
 * handler that reports it; moert_model_file_at() tells which file the
 * faulting address belongs to. The binaries moe-compile builds do the
 * latter: they print which file changed and exit with status 1.
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOERT_MOERT_H
#define MOERT_MOERT_H

#include "moert/program.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum moert_status {
  MOERT_OK = 0,
  MOERT_ERROR_IO = 1,      /* a weight file is missing, short or unreadable */
  MOERT_ERROR_INVALID = 2, /* an argument is out of range (token id, ...) */
  MOERT_ERROR_MEMORY = 3,
  MOERT_ERROR_DEVICE = 4,   /* no GPU or driver, or a CUDA call failed */
  MOERT_ERROR_INTERNAL = 5, /* an unexpected failure (see the message) */
} moert_status;

typedef struct moert_model moert_model;
typedef struct moert_session moert_session;

/* The message of the last error on this thread. */
const char *moert_last_error(void);

/* Memory-maps the weights of `program` from `weight_dir` (NULL: the
 * directory recorded at compile time) and checks every file: a regular file
 * (symbolic links are followed) whose safetensors header gives each tensor
 * of the manifest the name, dtype, shape and byte range it had at compile
 * time. `threads` <= 0 uses all cores (fewer when the system cannot start
 * that many threads); `max_batch_tokens` bounds one forward call (longer
 * prompts run in chunks). */
moert_status moert_model_load(const moert_program *program,
                              const char *weight_dir, int threads,
                              int max_batch_tokens, moert_model **out);
/* As moert_model_load, with the directory of the quantised weights file
 * that moe-compile --quantize wrote beside the executable (`artifact_dir`;
 * NULL: the directory recorded at compile time), checked the same way. */
moert_status moert_model_load_from(const moert_program *program,
                                   const char *weight_dir,
                                   const char *artifact_dir, int threads,
                                   int max_batch_tokens, moert_model **out);
/* An expert-parallel program (program->ep_ranks > 0) runs as one rank of
 * `comm` (moert/comm.h), which must have ep_ranks ranks: the rank maps only
 * its own experts' weights (and those every rank reads), and its forward
 * passes exchange tokens through `comm`. `comm` is ignored for other
 * programs, and an expert-parallel program without one is refused. */
struct moert_comm;
moert_status moert_model_load_ranked(const moert_program *program,
                                     const char *weight_dir,
                                     const char *artifact_dir, int threads,
                                     int max_batch_tokens,
                                     struct moert_comm *comm,
                                     moert_model **out);
/* Bytes of the weights this process reads (its rank's share) and of the
 * whole manifest. */
void moert_model_weight_bytes(const moert_model *model, uint64_t *mine,
                              uint64_t *all);
void moert_model_free(moert_model *model);
const moert_program *moert_model_program(const moert_model *model);
/* Where the model runs: "cpu", or the GPU's name for CUDA programs. */
const char *moert_model_device(const moert_model *model);
/* The path of the mapped weight file that holds `address`, or NULL.
 * Async-signal-safe (it reads what loading wrote and allocates nothing), for
 * SIGBUS handlers; CUDA programs keep no mapping once loaded. */
const char *moert_model_file_at(const moert_model *model, const void *address);

moert_status moert_session_create(moert_model *model, moert_session **out);
void moert_session_free(moert_session *session);
/* Tokens processed so far (the next position). */
int64_t moert_session_position(const moert_session *session);

/* Runs `n` tokens at the next positions, in chunks of at most
 * max_batch_tokens; afterwards moert_logits() holds one row per token. */
moert_status moert_prefill(moert_session *session, const int32_t *tokens,
                           int64_t n);
/* As moert_prefill, for a caller that reads the last token's logits only:
 * afterwards moert_logits() holds that one row. CPU programs then skip the
 * language-model head for the other tokens (moert_exec::logits_from). */
moert_status moert_prefill_last(moert_session *session, const int32_t *tokens,
                                int64_t n);
/* Runs one token; afterwards moert_logits() holds one row. */
moert_status moert_decode(moert_session *session, int32_t token);
/* Logits of the last prefill/decode: `*rows` rows of `vocab` floats. */
const float *moert_logits(const moert_session *session, int64_t *rows);
/* A program compiled with a capacity factor (moert_program::
 * capacity_factor > 0): the (token, choice) pairs its MoE layers routed so
 * far in this session, and how many of them a full expert dropped. Both 0
 * for other programs. */
void moert_session_route_stats(const moert_session *session, int64_t *routed,
                               int64_t *dropped);

/* Tokenizer. Programs compiled from a model directory with tokenizer.json or
 * tokenizer.model carry its tokenizer (docs/tokenizers.md); for a program
 * compiled without one these calls return MOERT_ERROR_INVALID and say so.
 * The tokenizer is parsed on the first call; the calls are thread-safe. */

/* The ids of UTF-8 `text` (`len` bytes; invalid UTF-8 is
 * MOERT_ERROR_INVALID). With `add_special`, the BOS id comes first when the
 * model's config asks for it. `*n` is set to the number of ids even when
 * `capacity` is too small, in which case nothing is written and the call
 * returns MOERT_ERROR_INVALID: call again with `*n` slots. */
moert_status moert_tokenize(moert_model *model, const char *text, size_t len,
                            int add_special, int32_t *out, int64_t capacity,
                            int64_t *n);
/* The text of `ids[0..n)` (special tokens left out when `skip_special`),
 * NUL-terminated in `out`. `*len` is set to its length in bytes (without
 * the NUL) even when `capacity` (bytes, NUL included) is too small, in which
 * case nothing is written and the call returns MOERT_ERROR_INVALID. */
moert_status moert_detokenize(moert_model *model, const int32_t *ids, int64_t n,
                              int skip_special, char *out, size_t capacity,
                              size_t *len);
/* Whether `id` ends generation (one of the model's EOS ids); 0 when the
 * program has no tokenizer. */
int moert_token_is_eos(moert_model *model, int32_t id);

/* Streaming detokenisation: push ids as they are generated; each push gives
 * the text that became final (possibly empty: the start of a character
 * whose bytes are split over several ids is held back). After the last id,
 * finish gives the rest. The concatenation of all the texts equals
 * moert_detokenize of all the ids. The text stays valid until the next call
 * on the handle. */
typedef struct moert_detokenizer moert_detokenizer;
moert_status moert_detokenizer_create(moert_model *model, int skip_special,
                                      moert_detokenizer **out);
moert_status moert_detokenizer_push(moert_detokenizer *stream, int32_t id,
                                    const char **text, size_t *len);
moert_status moert_detokenizer_finish(moert_detokenizer *stream,
                                      const char **text, size_t *len);
void moert_detokenizer_free(moert_detokenizer *stream);

#ifdef __cplusplus
}
#endif

#endif /* MOERT_MOERT_H */
