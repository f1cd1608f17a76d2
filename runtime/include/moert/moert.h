/*===- moert.h - moe-compile runtime C API ----------------------*- C -*-===*
 *
 * Part of moe-compile.
 *
 *===----------------------------------------------------------------------===*
 *
 * Load a compiled program's weights, open a session (which owns the KV
 * caches), prefill tokens, decode one token at a time, read the logits.
 * Errors are returned as moert_status; moert_last_error() says what failed.
 * Nothing here aborts on bad input.
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
  MOERT_ERROR_DEVICE = 4,  /* no GPU or driver, or a CUDA call failed */
} moert_status;

typedef struct moert_model moert_model;
typedef struct moert_session moert_session;

/* The message of the last error on this thread. */
const char *moert_last_error(void);

/* Memory-maps the weights of `program` from `weight_dir` (NULL: the
 * directory recorded at compile time) and checks every file and range.
 * `threads` <= 0 uses all cores; `max_batch_tokens` bounds one forward
 * call (longer prompts run in chunks). */
moert_status moert_model_load(const moert_program *program,
                              const char *weight_dir, int threads,
                              int max_batch_tokens, moert_model **out);
void moert_model_free(moert_model *model);
const moert_program *moert_model_program(const moert_model *model);
/* Where the model runs: "cpu", or the GPU's name for CUDA programs. */
const char *moert_model_device(const moert_model *model);

moert_status moert_session_create(moert_model *model, moert_session **out);
void moert_session_free(moert_session *session);
/* Tokens processed so far (the next position). */
int64_t moert_session_position(const moert_session *session);

/* Runs `n` tokens at the next positions, in chunks of at most
 * max_batch_tokens; afterwards moert_logits() holds one row per token. */
moert_status moert_prefill(moert_session *session, const int32_t *tokens,
                           int64_t n);
/* Runs one token; afterwards moert_logits() holds one row. */
moert_status moert_decode(moert_session *session, int32_t token);
/* Logits of the last prefill/decode: `*rows` rows of `vocab` floats. */
const float *moert_logits(const moert_session *session, int64_t *rows);

#ifdef __cplusplus
}
#endif

#endif /* MOERT_MOERT_H */
