//===- Tokenizer.h - a model's tokenizer, converted for moert ---*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Reads a model directory's tokenizer (tokenizer.json, else
// tokenizer.model) with its BOS/EOS settings (config.json's bos_token_id and
// eos_token_id, tokenizer_config.json's add_bos_token), checks every part of
// it, and converts it to the blob the runtime embeds (format:
// runtime/src/tokenizer.h, docs/tokenizers.md). Components the runtime does
// not implement are refused with the file and the JSON path that names
// them, never approximated.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_HF_TOKENIZER_H
#define MOE_FRONTENDS_HF_TOKENIZER_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <string>

namespace mlir::moe::hf {

struct TokenizerBlob {
  /// The file converted ("" when the directory has no tokenizer).
  std::string source;
  /// The blob ("" when none).
  std::string data;
  /// Pieces in the tokenizer, for messages.
  int64_t pieces = 0;
  /// A SentencePiece model (the executable links libsentencepiece).
  bool sentencePiece = false;
};

struct TokenizerExtras {
  /// The text around one user message that --chat wraps it in (a rendering
  /// of the model's chat template); empty: the model has none.
  std::string chatPrefix, chatSuffix;
  /// BOS and EOS ids where config.json names none (a GGUF file's own);
  /// -1: none.
  int64_t fallbackBos = -1, fallbackEos = -1;
};

/// The tokenizer of model directory `dir`: tokenizer.json when present
/// (what transformers' fast tokenizer uses), else tokenizer.model, else
/// none (an empty blob). Every id must be below `vocabSize`.
llvm::Expected<TokenizerBlob> findTokenizer(llvm::StringRef dir,
                                            int64_t vocabSize,
                                            const TokenizerExtras &extras = {});

/// Converts `path` (a tokenizer.json, or a SentencePiece model: any other
/// name), with the BOS/EOS settings of the model directory `configDir`.
llvm::Expected<TokenizerBlob>
convertTokenizer(llvm::StringRef path, llvm::StringRef configDir,
                 int64_t vocabSize, const TokenizerExtras &extras = {});

/// The tokenizer in the metadata of GGUF file `path` (tokenizer.ggml.*):
/// the "llama" kind (SentencePiece pieces with scores), converted as
/// transformers converts a SentencePiece BPE to tokenizer.json: the pieces,
/// merges ranked by the score of the piece they make, byte fallback, and
/// the Prepend/Replace normaliser. Every id must be below `vocabSize`.
llvm::Expected<TokenizerBlob>
convertGGUFTokenizer(llvm::StringRef path, int64_t vocabSize,
                     const TokenizerExtras &extras = {});

/// Largest tokenizer file read.
constexpr uint64_t kMaxTokenizerBytes = uint64_t(256) << 20;

} // namespace mlir::moe::hf

#endif // MOE_FRONTENDS_HF_TOKENIZER_H
