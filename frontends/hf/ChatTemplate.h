//===- ChatTemplate.h - Hugging Face chat templates -------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// A renderer for the Jinja subset that chat templates (tokenizer_config.json's
// `chat_template`) use, with the semantics of jinja2 as transformers'
// apply_chat_template configures it: an ImmutableSandboxedEnvironment with
// trim_blocks and lstrip_blocks, the loopcontrols extension, the globals
// raise_exception, namespace and range, and transformers' tojson. The subset
// is listed in docs/chat-templates.md; anything outside it is rejected when
// the template is parsed, whether or not a rendering would reach it.
//
// Depends on LLVM Support only (no MLIR), so a fuzzer builds it alone.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_HF_CHATTEMPLATE_H
#define MOE_FRONTENDS_HF_CHATTEMPLATE_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <optional>
#include <string>

namespace mlir::moe::hf {

struct ChatMessage {
  std::string role, content;
};

/// Renders a chat template as transformers' apply_chat_template would, with
/// `messages`, bos_token, eos_token, add_generation_prompt, and tools and
/// documents set to none. Messages name the template as
/// "<file>: chat_template:LINE:COLUMN: ..." (columns count bytes from 1).
llvm::Expected<std::string>
renderChatTemplate(llvm::StringRef file, llvm::StringRef templateText,
                   llvm::ArrayRef<ChatMessage> messages,
                   llvm::StringRef bosToken, llvm::StringRef eosToken,
                   bool addGenerationPrompt);

/// The text around a single user message.
struct ChatFormat {
  std::string prefix, suffix;
};

/// Renders the template with one user message whose content is a sentinel
/// (and add_generation_prompt true) and splits the text around it; the
/// sentinel must occur exactly once.
llvm::Expected<ChatFormat> chatFormat(llvm::StringRef file,
                                      llvm::StringRef templateText,
                                      llvm::StringRef bosToken,
                                      llvm::StringRef eosToken);

/// What tokenizer_config.json says about chat.
struct TokenizerChatConfig {
  std::string chatTemplate;
  /// "" when the key is absent or null.
  std::string bosToken, eosToken;
};

/// Reads tokenizer_config.json's text: `chat_template` (a string, or a list
/// of {"name", "template"} objects, of which "default" is used) and
/// bos_token/eos_token (strings or {"content": ...} objects). std::nullopt
/// when there is no chat_template (absent or null).
llvm::Expected<std::optional<TokenizerChatConfig>>
readTokenizerChatConfig(llvm::StringRef file, llvm::StringRef json);

/// A model's chat template and the file it came from.
struct ModelChatTemplate {
  std::string file;
  TokenizerChatConfig config;
};

/// The chat template of model directory `dir`, found as transformers finds
/// it: chat_template.jinja (what transformers 5 writes) when present, else
/// tokenizer_config.json's chat_template; BOS and EOS text from
/// tokenizer_config.json either way. A non-empty `path` names the template
/// instead: a tokenizer_config.json (a name ending in .json), or a template
/// file. std::nullopt when `path` is empty and the directory has none.
llvm::Expected<std::optional<ModelChatTemplate>>
findChatTemplate(llvm::StringRef dir, llvm::StringRef path);

} // namespace mlir::moe::hf

#endif // MOE_FRONTENDS_HF_CHATTEMPLATE_H
