/*===- program.h - the contract between generated code and moert --*- C -*-===*
 *
 * Part of moe-compile.
 *
 *===----------------------------------------------------------------------===*
 *
 * moe-compile emits one C++ file per model that defines `moert_program`: the
 * model's dimensions, its weight manifest (file, offset, dtype, shape of
 * every weight), its KV-cache plan, and `forward`, the host plan that runs
 * kernels on a chunk of tokens. The runtime (libmoert) loads the weights,
 * owns the caches and the scratch memory, and calls `forward`.
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOERT_PROGRAM_H
#define MOERT_PROGRAM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MOERT_ABI_VERSION 10

typedef enum moert_target {
  MOERT_TARGET_CPU = 0,
  MOERT_TARGET_CUDA = 1,
} moert_target;

typedef enum moert_dtype {
  MOERT_F32 = 0,
  MOERT_F16 = 1,
  MOERT_BF16 = 2,
  /* Block-quantised (moert/quant.h): rows of cols / 32 blocks. In a
   * safetensors file such a tensor is U8 [rows, cols / 32 * block bytes]. */
  MOERT_Q8_0 = 3,
  MOERT_Q4_0 = 4,
  MOERT_Q4_1 = 5,
  /* llama.cpp's k-quants, rows of cols / 256 blocks; only ever read from
   * GGUF files, as the file stores them. */
  MOERT_Q4_K = 6,
  MOERT_Q6_K = 7,
  MOERT_Q5_K = 8,
} moert_dtype;

/* One entry of the weight manifest. */
typedef struct moert_weight_desc {
  const char *name;
  const char *file; /* relative to the model directory (or, with
                       in_artifact, to the artifact directory) */
  uint64_t offset;  /* absolute byte offset in `file` */
  uint64_t size;    /* bytes */
  moert_dtype dtype;
  int64_t rows, cols;  /* cols = 1 for vectors */
  int64_t rank;        /* 1: shape [rows] in its file; 2: [rows, cols] */
  int32_t in_artifact; /* 1: in the quantised weights file moe-compile wrote
                          beside the executable */
  /* 0: `file` has a header (safetensors, GGUF) that the load-time check
   * holds the entry against. Otherwise `file` is raw bytes with no header
   * (an ONNX external-data file) that was exactly `raw_file_size` bytes when
   * compiled: the runtime checks that size and each range against it. */
  uint64_t raw_file_size;
} moert_weight_desc;

/* One layer's KV cache: a ring of `capacity` slots per kv head; the key and
 * value of position p live in slot p % capacity. */
typedef struct moert_cache_desc {
  int64_t kv_heads, head_dim, capacity;
  int64_t window; /* 0: full attention */
} moert_cache_desc;

/* One layer's cache storage: keys then values, [kv_heads][capacity][head_dim].
 */
typedef struct moert_kv {
  float *k;
  float *v;
} moert_kv;

struct moert_pool;
/* The communicator of an expert-parallel program's ranks (moert/comm.h). */
struct moert_comm;

/* What `forward` works with. On the CUDA target every pointer here (and
 * forward's tokens, positions and logits) is a device address, and forward
 * only enqueues kernels through `launch`. */
typedef struct moert_exec {
  const void *const *weights; /* manifest order */
  moert_kv *caches;           /* one per layer */
  float *scratch;             /* program->scratch_floats(max_tokens) floats */
  int64_t max_tokens;         /* most tokens per forward call */
  struct moert_pool *pool;    /* CPU target */
  /* CUDA target: enqueues kernel `kernel` (index into kernel_names) on the
   * session's stream; errors are recorded by the runtime, not returned. */
  void *device;
  void (*launch)(void *device, int64_t kernel, unsigned grid_x, unsigned grid_y,
                 unsigned block, void **args);
  /* Expert parallelism: this process's communicator (NULL otherwise). */
  struct moert_comm *comm;
  /* The first row of the logits the caller reads, in [0, n]: a program
   * whose `logits_from` flag is set writes rows [logits_from, n) only,
   * row logits_from at `logits` (0: every row, as without the flag). */
  int64_t logits_from;
  /* The session's routing counters, which a plan with a capacity factor
   * adds to: [0] the (token, choice) pairs routed, [1] those dropped. */
  int64_t *route_stats;
  /* CUDA target: waits for the work enqueued so far (before a collective
   * of expert parallelism reads device buffers on the host's behalf). */
  void (*sync)(void *device);
} moert_exec;

typedef struct moert_program {
  int abi_version;
  const char *model_name;
  const char *model_dir; /* absolute, as compiled */
  int64_t vocab_size, hidden_size, num_layers, max_positions;
  int64_t num_weights;
  const moert_weight_desc *weights;
  const moert_cache_desc *caches; /* num_layers entries */
  /* Scratch floats `forward` needs for up to `max_tokens` tokens. */
  int64_t (*scratch_floats)(int64_t max_tokens);
  /* Runs tokens[0..n) at positions[0..n) (consecutive, continuing the
   * caches), writing logits[n][vocab]. Inputs are validated by the runtime. */
  void (*forward)(const moert_exec *exec, int64_t n, const int32_t *tokens,
                  const int32_t *positions, float *logits);
  const char *plan; /* human-readable summary of the plan */
  moert_target target;
  /* CUDA target: the kernels as a fatbin ([image, image_end)) and their
   * names, which `launch` indexes. */
  const void *device_image, *device_image_end;
  int64_t num_kernels;
  const char *const *kernel_names;
  /* Where the executable and its quantised weights file were written
   * (absolute, as compiled), or NULL when no weight is in_artifact. */
  const char *artifact_dir;
  /* The quantised weights file's "__metadata__" "moe.build": the file must
   * be the one written with this program. NULL when there is none. */
  const char *artifact_build;
  /* The model's tokenizer as moe-compile converted it from tokenizer.json
   * or tokenizer.model (format: runtime/src/tokenizer.h,
   * docs/tokenizers.md), or NULL with size 0 when compiled without one. */
  const unsigned char *tokenizer;
  int64_t tokenizer_size;
  /* Expert parallelism (moe-compile --expert-parallel N): the number of
   * ranks the program runs as, 0 for one process; and for each manifest
   * weight the rank that holds it, -1 for every rank (NULL when 0 ranks). A
   * rank maps only its own weights and those of every rank. */
  int64_t ep_ranks;
  const int32_t *weight_ranks;
  /* 1 when `forward` honours moert_exec::logits_from (the CPU target's
   * plans compute the language-model head for those rows only), 0 when it
   * writes all n rows whatever it says. */
  int64_t logits_from;
  /* moe-compile --capacity-factor: each expert takes at most
   * ceil(factor * n * k / experts) pairs per forward call (0: no capacity,
   * exact). `forward` counts the drops in moert_exec::route_stats. */
  double capacity_factor;
} moert_program;

#ifdef __cplusplus
}
#endif

#endif /* MOERT_PROGRAM_H */
