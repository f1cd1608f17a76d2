//===- RuntimeTest.cpp - libmoert's C API under bad input ------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// moert_model_load against real files (the header check, files that are not
// regular), sizes that overflow or cannot be allocated, the thread pool when
// threads cannot be started, and the CPU attention kernel: same results as a
// direct computation, no allocation, cost independent of the capacity.
//
//===----------------------------------------------------------------------===//

#include "TokenizerBlob.h"
#include "moert/kernels.h"
#include "moert/moert.h"
#include "test/common/AttentionCheck.h"

#include <gtest/gtest.h>

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <new>
#include <string>
#include <vector>

// Counts allocations, for the kernels that must not make any. (GCC cannot
// tell that this operator new is malloc.)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
namespace {
std::atomic<long> allocations{0};
} // namespace
void *operator new(std::size_t n) {
  ++allocations;
  if (void *p = std::malloc(n ? n : 1))
    return p;
  throw std::bad_alloc();
}
void operator delete(void *p) noexcept { std::free(p); }
void operator delete(void *p, std::size_t) noexcept { std::free(p); }

namespace {

//===----------------------------------------------------------------------===//
// A small program: one weight file with two tensors, one layer of cache.
//===----------------------------------------------------------------------===//

const char *kJson =
    R"({"__metadata__":{"format":"pt"},)"
    R"("embed":{"dtype":"F32","shape":[4,2],"data_offsets":[0,32]},)"
    R"("norm":{"dtype":"F32","shape":[2],"data_offsets":[32,40]}})";
const uint64_t kData = 8 + std::strlen(kJson);

moert_weight_desc gWeights[] = {
    {"embed", "model.safetensors", kData, 32, MOERT_F32, 4, 2, 2},
    {"norm", "model.safetensors", kData + 32, 8, MOERT_F32, 2, 1, 1},
};
moert_cache_desc gCache = {1, 2, 8, 0};
int64_t gPerToken = 16, gWorkspace = 4;

int64_t scratchFloats(int64_t n) { return n * gPerToken + gWorkspace; }

/// The first weight's address in the last forward call.
const void *gEmbedAt = nullptr;
/// moert_exec::logits_from of each forward call.
std::vector<int64_t> gLogitsFrom;

/// logits[t][v] = embed[v] · embed[token t] * norm[0], for rows [from, n)
/// with row `from` at `logits`: from = exec->logits_from where `honour`, as
/// a program with moert_program::logits_from set does, else 0.
template <bool honour>
void forwardRows(const moert_exec *ex, int64_t n, const int32_t *tokens,
                 const int32_t *, float *logits) {
  gEmbedAt = ex->weights[0];
  gLogitsFrom.push_back(ex->logits_from);
  auto *embed = static_cast<const float *>(ex->weights[0]);
  auto *norm = static_cast<const float *>(ex->weights[1]);
  const int64_t from = honour ? ex->logits_from : 0;
  for (int64_t t = from; t < n; ++t)
    for (int v = 0; v < 4; ++v)
      logits[(t - from) * 4 + v] =
          (embed[2 * v] * embed[2 * tokens[t]] +
           embed[2 * v + 1] * embed[2 * tokens[t] + 1]) *
          norm[0];
}
void forward(const moert_exec *ex, int64_t n, const int32_t *tokens,
             const int32_t *positions, float *logits) {
  forwardRows<false>(ex, n, tokens, positions, logits);
}

moert_program makeProgram() {
  moert_program p{};
  p.abi_version = MOERT_ABI_VERSION;
  p.model_name = "test";
  p.model_dir = "/nonexistent";
  p.vocab_size = 4;
  p.hidden_size = 2;
  p.num_layers = 1;
  p.max_positions = 8;
  p.num_weights = 2;
  p.weights = gWeights;
  p.caches = &gCache;
  p.scratch_floats = scratchFloats;
  p.forward = forward;
  p.plan = "";
  p.target = MOERT_TARGET_CPU;
  return p;
}

std::string weightImage() {
  std::string s(8, '\0');
  uint64_t n = std::strlen(kJson);
  for (int i = 0; i < 8; ++i)
    s[size_t(i)] = char(n >> (8 * i) & 0xff);
  s += kJson;
  float embed[8] = {1, 0, 0, 1, 1, 1, -1, 2}, norm[2] = {2, 1};
  s.append(reinterpret_cast<const char *>(embed), sizeof(embed));
  s.append(reinterpret_cast<const char *>(norm), sizeof(norm));
  return s;
}

class Load : public ::testing::Test {
protected:
  std::string dir;
  moert_program program = makeProgram();
  moert_model *model = nullptr;

  void SetUp() override {
    char tmpl[] = "/tmp/moert-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir = tmpl;
  }
  void TearDown() override {
    moert_model_free(model);
    std::string cmd = "rm -rf '" + dir + "'";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
  }
  std::string file() const { return dir + "/model.safetensors"; }
  void write(const std::string &bytes) {
    std::ofstream(file(), std::ios::binary) << bytes;
  }
  moert_status load() {
    return moert_model_load(&program, dir.c_str(), 1, 4, &model);
  }
};

TEST_F(Load, RunsFromAMatchingFile) {
  write(weightImage());
  ASSERT_EQ(load(), MOERT_OK) << moert_last_error();
  moert_session *s = nullptr;
  ASSERT_EQ(moert_session_create(model, &s), MOERT_OK) << moert_last_error();
  int32_t tokens[2] = {2, 3};
  ASSERT_EQ(moert_prefill(s, tokens, 2), MOERT_OK) << moert_last_error();
  int64_t rows = 0;
  const float *l = moert_logits(s, &rows);
  ASSERT_EQ(rows, 2);
  // embed rows (1,0) (0,1) (1,1) (-1,2), norm[0] = 2.
  const float want[8] = {2, 2, 4, 2, -2, 4, 2, 10};
  for (int i = 0; i < 8; ++i)
    EXPECT_EQ(l[i], want[i]) << i;
  moert_session_free(s);
}

// moert_prefill_last: a program that honours logits_from is asked for no
// row of the chunks before the last (max batch tokens 4 here) and the last
// row of the last; one that does not writes them all, and the last is read.
TEST_F(Load, PrefillLastComputesTheLastRowOnly) {
  write(weightImage());
  for (bool honour : {true, false}) {
    program.logits_from = honour;
    program.forward = honour ? forwardRows<true> : forwardRows<false>;
    ASSERT_EQ(load(), MOERT_OK) << moert_last_error();
    moert_session *s = nullptr;
    ASSERT_EQ(moert_session_create(model, &s), MOERT_OK) << moert_last_error();
    int32_t tokens[6] = {0, 1, 2, 3, 0, 3};
    gLogitsFrom.clear();
    ASSERT_EQ(moert_prefill_last(s, tokens, 6), MOERT_OK) << moert_last_error();
    EXPECT_EQ(gLogitsFrom, honour ? std::vector<int64_t>({4, 1})
                                  : std::vector<int64_t>({0, 0}));
    int64_t rows = 0;
    const float *l = moert_logits(s, &rows);
    ASSERT_EQ(rows, 1);
    // Token 3's row: embed (-1, 2) against each, times norm[0] = 2.
    const float want[4] = {-2, 4, 2, 10};
    for (int i = 0; i < 4; ++i)
      EXPECT_EQ(l[i], want[i]) << honour << " " << i;
    // A decode after it has its one row, asked for in full.
    gLogitsFrom.clear();
    ASSERT_EQ(moert_decode(s, 2), MOERT_OK) << moert_last_error();
    EXPECT_EQ(gLogitsFrom, std::vector<int64_t>({0}));
    l = moert_logits(s, &rows);
    ASSERT_EQ(rows, 1);
    EXPECT_EQ(l[0], 2);
    EXPECT_EQ(l[3], 2);
    moert_session_free(s);
    moert_model_free(model);
    model = nullptr;
  }
}

// The tokenizer through the C API: a 4-piece Mistral-style BPE.
TEST_F(Load, TokenizesAndDetokenizes) {
  std::string blob = moert_test::mistralBlob(
      {"<s>", "\xe2\x96\x81", "h", "\xe2\x96\x81h"}, {{1, 2, 3}}, 0);
  program.tokenizer = reinterpret_cast<const unsigned char *>(blob.data());
  program.tokenizer_size = int64_t(blob.size());
  write(weightImage());
  ASSERT_EQ(load(), MOERT_OK) << moert_last_error();
  int32_t ids[4] = {};
  int64_t n = -1;
  // Too small: the count needed, nothing written.
  EXPECT_EQ(moert_tokenize(model, "h h", 3, 1, ids, 2, &n),
            MOERT_ERROR_INVALID);
  EXPECT_EQ(n, 3);
  EXPECT_STREQ(moert_last_error(), "moert_tokenize: 3 ids do not fit in 2");
  ASSERT_EQ(moert_tokenize(model, "h h", 3, 1, ids, 4, &n), MOERT_OK)
      << moert_last_error();
  ASSERT_EQ(n, 3);
  EXPECT_EQ(ids[0], 0);
  EXPECT_EQ(ids[1], 3);
  EXPECT_EQ(ids[2], 3);
  ASSERT_EQ(moert_tokenize(model, "h h", 3, 0, ids, 4, &n), MOERT_OK);
  EXPECT_EQ(n, 2);
  EXPECT_EQ(moert_tokenize(model, "\xff", 1, 0, ids, 4, &n),
            MOERT_ERROR_INVALID);
  EXPECT_STREQ(moert_last_error(),
               "moert_tokenize: the text is not valid UTF-8");

  const int32_t text[3] = {0, 3, 3};
  char out[16];
  size_t len = 0;
  EXPECT_EQ(moert_detokenize(model, text, 3, 1, out, 3, &len),
            MOERT_ERROR_INVALID);
  EXPECT_EQ(len, 3u);
  ASSERT_EQ(moert_detokenize(model, text, 3, 1, out, sizeof(out), &len),
            MOERT_OK);
  EXPECT_STREQ(out, "h h");
  ASSERT_EQ(moert_detokenize(model, text, 3, 0, out, sizeof(out), &len),
            MOERT_OK);
  EXPECT_STREQ(out, "<s> h h");
  EXPECT_EQ(moert_token_is_eos(model, 0), 1);
  EXPECT_EQ(moert_token_is_eos(model, 3), 0);

  moert_detokenizer *stream = nullptr;
  ASSERT_EQ(moert_detokenizer_create(model, 1, &stream), MOERT_OK);
  std::string streamed;
  for (int32_t id : text) {
    const char *piece = nullptr;
    size_t pieceLen = 0;
    ASSERT_EQ(moert_detokenizer_push(stream, id, &piece, &pieceLen), MOERT_OK);
    streamed.append(piece, pieceLen);
  }
  const char *rest = nullptr;
  ASSERT_EQ(moert_detokenizer_finish(stream, &rest, &len), MOERT_OK);
  streamed.append(rest, len);
  EXPECT_EQ(streamed, "h h");
  moert_detokenizer_free(stream);
}

TEST_F(Load, TokenizeWithoutATokenizerSaysSo) {
  write(weightImage());
  ASSERT_EQ(load(), MOERT_OK) << moert_last_error();
  int32_t ids[4];
  int64_t n = 0;
  EXPECT_EQ(moert_tokenize(model, "h", 1, 1, ids, 4, &n), MOERT_ERROR_INVALID);
  EXPECT_STREQ(moert_last_error(),
               "moert_tokenize: this model was compiled without a tokenizer");
  moert_detokenizer *stream = nullptr;
  EXPECT_EQ(moert_detokenizer_create(model, 1, &stream), MOERT_ERROR_INVALID);
  EXPECT_EQ(stream, nullptr);
  EXPECT_EQ(moert_token_is_eos(model, 0), 0);
}

TEST_F(Load, NamesTheMappedFileOfAnAddress) {
  write(weightImage());
  ASSERT_EQ(load(), MOERT_OK) << moert_last_error();
  // The address of the first weight lies in the mapping of the file.
  moert_session *s = nullptr;
  ASSERT_EQ(moert_session_create(model, &s), MOERT_OK);
  int32_t token = 0;
  ASSERT_EQ(moert_prefill(s, &token, 1), MOERT_OK);
  const char *in = static_cast<const char *>(gEmbedAt);
  ASSERT_NE(moert_model_file_at(model, in), nullptr);
  EXPECT_EQ(std::string(moert_model_file_at(model, in)), file());
  EXPECT_EQ(std::string(moert_model_file_at(model, in - kData)), file());
  EXPECT_EQ(moert_model_file_at(model, in - kData - 1), nullptr);
  EXPECT_EQ(moert_model_file_at(model, in + 40), nullptr); // past the end
  EXPECT_EQ(moert_model_file_at(model, &token), nullptr);
  EXPECT_EQ(moert_model_file_at(nullptr, in), nullptr);
  moert_session_free(s);
}

TEST_F(Load, RefusesAFileThatChanged) {
  std::string img = weightImage();
  // "norm" declared [1, 2]: same bytes, another shape.
  size_t at = img.find("\"shape\":[2]");
  img.replace(at, 11, "\"shape\":[1,2]");
  img.replace(0, 1, 1, char(img[0] + 2));
  write(img);
  EXPECT_EQ(load(), MOERT_ERROR_IO);
  EXPECT_EQ(model, nullptr);
  EXPECT_EQ(std::string(moert_last_error()),
            file() + ": tensor 'embed' is at bytes [" +
                std::to_string(kData + 2) + ", " + std::to_string(kData + 34) +
                ") in the file, but the model was compiled for [" +
                std::to_string(kData) + ", " + std::to_string(kData + 32) +
                "); the file changed since the model was compiled: restore "
                "it or recompile the model");
}

TEST_F(Load, RefusesAnEmptyFileWithARealMessage) {
  write("");
  EXPECT_EQ(load(), MOERT_ERROR_IO);
  EXPECT_EQ(std::string(moert_last_error()),
            file() + ": file is 0 bytes, too short for the 8-byte header "
                     "length; the file changed since the model was compiled: "
                     "restore it or recompile the model");
}

TEST_F(Load, RefusesFilesThatAreNotRegular) {
  ASSERT_EQ(mkfifo(file().c_str(), 0600), 0);
  EXPECT_EQ(load(), MOERT_ERROR_IO); // and does not wait for a writer
  EXPECT_EQ(std::string(moert_last_error()),
            file() + ": is a FIFO, not a regular file (weight 'embed')");
  ASSERT_EQ(unlink(file().c_str()), 0);
  ASSERT_EQ(symlink("/dev/zero", file().c_str()), 0);
  EXPECT_EQ(load(), MOERT_ERROR_IO);
  EXPECT_EQ(std::string(moert_last_error()),
            file() +
                ": is a character device, not a regular file (weight 'embed')");
}

TEST_F(Load, FollowsSymbolicLinks) {
  std::string blob = dir + "/blob";
  std::ofstream(blob, std::ios::binary) << weightImage();
  ASSERT_EQ(symlink(blob.c_str(), file().c_str()), 0);
  EXPECT_EQ(load(), MOERT_OK) << moert_last_error();
}

//===----------------------------------------------------------------------===//
// Sizes
//===----------------------------------------------------------------------===//

class Sizes : public Load {
protected:
  void SetUp() override {
    Load::SetUp();
    write(weightImage());
  }
  void TearDown() override {
    gCache = {1, 2, 8, 0};
    gPerToken = 16;
    gWorkspace = 4;
    Load::TearDown();
  }
  std::string createError() {
    if (!model && load() != MOERT_OK)
      return std::string("load: ") + moert_last_error();
    moert_session *s = nullptr;
    moert_status st = moert_session_create(model, &s);
    moert_session_free(s);
    return st == MOERT_OK ? "" : moert_last_error();
  }
};

TEST_F(Sizes, KvCacheThatOverflows) {
  // 2 * 1 * 2^62 * 2 floats: more than 2^64.
  gCache = {1, 2, int64_t(1) << 62, 0};
  program.max_positions = int64_t(1) << 62;
  EXPECT_EQ(createError(),
            "the KV cache for 4611686018427387904 positions needs more than "
            "9223372036854775807 bytes (at layer 0: 1 kv heads x "
            "4611686018427387904 slots x 2 floats, for keys and values); "
            "compile the model with a smaller --max-seq");
}

TEST_F(Sizes, KvCacheThatCannotBeAllocated) {
  // 2 * 2^44 * 2 floats * 4 bytes = 2^48 bytes: beyond the address space.
  gCache = {1, 2, int64_t(1) << 44, 0};
  program.max_positions = int64_t(1) << 44;
  EXPECT_EQ(createError(),
            "cannot allocate 281474976710656 bytes of KV cache for "
            "17592186044416 positions; compile the model with a smaller "
            "--max-seq");
}

TEST_F(Sizes, ArenaThatOverflows) {
  gPerToken = int64_t(1) << 61;
  EXPECT_EQ(createError(),
            "the activation arena for 4 tokens per forward pass "
            "(2305843009213693952 floats per token) needs more than "
            "9223372036854775807 bytes; lower the max batch tokens");
}

TEST_F(Sizes, ArenaThatCannotBeAllocated) {
  gPerToken = int64_t(1) << 45;
  EXPECT_EQ(createError(), "cannot allocate 562949953421328 bytes for the "
                           "activation arena (4 tokens per forward pass); "
                           "lower the max batch tokens");
}

TEST_F(Sizes, LogitsThatOverflow) {
  ASSERT_EQ(load(), MOERT_OK);
  program.vocab_size = int64_t(1) << 40;
  program.max_positions = int64_t(1) << 40;
  moert_session *s = nullptr;
  ASSERT_EQ(moert_session_create(model, &s), MOERT_OK);
  std::vector<int32_t> tokens(1 << 22, 0);
  EXPECT_EQ(moert_prefill(s, tokens.data(), int64_t(tokens.size())),
            MOERT_ERROR_MEMORY);
  EXPECT_EQ(std::string(moert_last_error()),
            "the logits of 4194304 tokens (1099511627776 each) need more than "
            "9223372036854775807 bytes");
  moert_session_free(s);
}

TEST_F(Sizes, PositionsBeyondTheMaximum) {
  ASSERT_EQ(load(), MOERT_OK);
  moert_session *s = nullptr;
  ASSERT_EQ(moert_session_create(model, &s), MOERT_OK);
  // Refused from n alone, before any of the (missing) tokens is read.
  int32_t token = 1;
  EXPECT_EQ(moert_prefill(s, &token, INT64_MAX), MOERT_ERROR_INVALID);
  EXPECT_EQ(std::string(moert_last_error()),
            "positions up to 9223372036854775806 exceed the model's maximum "
            "of 7");
  moert_session_free(s);
}

//===----------------------------------------------------------------------===//
// The thread pool when the system will not start threads
//===----------------------------------------------------------------------===//

/// Virtual memory in use, in bytes.
size_t virtualMemory() {
  std::ifstream statm("/proc/self/statm");
  size_t pages = 0;
  statm >> pages;
  return pages * size_t(sysconf(_SC_PAGESIZE));
}

TEST(PoolDeathTest, KeepsTheThreadsThatStarted) {
  // With an address-space limit, thread stacks cannot be mapped past a
  // few: pthread_create fails (std::thread throws std::system_error). The
  // pool must run with the threads it got, never let the exception out.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        struct rlimit limit;
        limit.rlim_cur = limit.rlim_max = virtualMemory() + (64 << 20);
        setrlimit(RLIMIT_AS, &limit);
        moert_pool *pool = moert_pool_create(256);
        if (!pool)
          _exit(2);
        int size = moert_pool_size(pool);
        std::atomic<int64_t> sum{0};
        auto body = [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i)
            sum += i;
        };
        moert_pool_run(
            pool, 1000, 1,
            [](void *ctx, int64_t b, int64_t e) {
              (*static_cast<decltype(body) *>(ctx))(b, e);
            },
            &body);
        moert_pool_free(pool);
        std::fprintf(stderr, "threads %s, sum %lld\n",
                     size >= 1 && size < 256 ? "limited" : "unlimited",
                     (long long)sum.load());
        _exit(0);
      },
      ::testing::ExitedWithCode(0), "threads limited, sum 499500");
}

//===----------------------------------------------------------------------===//
// CPU attention
//===----------------------------------------------------------------------===//

/// moe_test::checkAttention (test/common/AttentionCheck.h) without a pool;
/// returns the allocations the kernel made.
template <int64_t Heads, int64_t KvHeads, int64_t D, int64_t Cap,
          int64_t Window>
long checkAttention(int n, int chunk, int64_t cacheSlots) {
  return moe_test::checkAttention<Heads, KvHeads, D, Cap, Window>(
      n, chunk, cacheSlots, nullptr, 1.0f, &allocations);
}

TEST(Attention, FullCacheMatchesTheReference) {
  // Contexts of up to 300 keys: several blocks of scores.
  EXPECT_EQ((checkAttention<4, 2, 16, 512, 0>(300, 7, 512)), 0);
  EXPECT_EQ((checkAttention<4, 4, 8, 300, 0>(300, 300, 300)), 0);
}

TEST(Attention, SlidingWindowRingMatchesTheReference) {
  // The ring wraps many times; chunks longer than the window.
  EXPECT_EQ((checkAttention<4, 1, 16, 100, 100>(400, 130, 100)), 0);
  EXPECT_EQ((checkAttention<2, 2, 8, 5, 5>(40, 1, 5)), 0);
}

TEST(Attention, CostDoesNotDependOnTheCapacity) {
  // A cache of 2^40 slots (--max-seq 2^40) of which 10 are live: only those
  // are touched, and nothing is allocated for the rest.
  EXPECT_EQ((checkAttention<2, 1, 8, int64_t(1) << 40, 0>(10, 3, 10)), 0);
}

} // namespace
