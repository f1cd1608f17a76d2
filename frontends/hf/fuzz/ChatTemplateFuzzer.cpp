//===- ChatTemplateFuzzer.cpp - fuzzing chat templates ----------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Feeds arbitrary bytes to the chat-template renderer: as a template (first
// byte even) rendered over a few message lists and split by chatFormat, or as
// tokenizer_config.json (first byte odd) whose template is then rendered.
// Beyond "no crash, no sanitizer report, no leak, no stack overflow, no
// hang": every failure names the file, and no rendering exceeds the output
// limit.
//
//===----------------------------------------------------------------------===//

#include "frontends/hf/ChatTemplate.h"

#include <cstdlib>

using namespace mlir::moe;

static void check(bool condition) {
  if (!condition)
    std::abort();
}

static void checkError(llvm::Error error) {
  std::string message = llvm::toString(std::move(error));
  check(llvm::StringRef(message).starts_with("fuzz/tokenizer_config.json: "));
}

static void renderAll(llvm::StringRef text, llvm::StringRef bos,
                      llvm::StringRef eos) {
  static const hf::ChatMessage kOne[] = {{"user", "Hello"}};
  static const hf::ChatMessage kChat[] = {{"system", "Be brief."},
                                          {"user", "Hi"},
                                          {"assistant", " ok "},
                                          {"user", "h\xC3\xA9llo \n"}};
  for (llvm::ArrayRef<hf::ChatMessage> messages :
       {llvm::ArrayRef<hf::ChatMessage>(), llvm::ArrayRef(kOne),
        llvm::ArrayRef(kChat)}) {
    llvm::Expected<std::string> r = hf::renderChatTemplate(
        "fuzz/tokenizer_config.json", text, messages, bos, eos, true);
    if (!r) {
      checkError(r.takeError());
      return; // the other lists would most likely fail the same way
    }
    check(r->size() <= (1u << 20));
  }
  llvm::Expected<hf::ChatFormat> f =
      hf::chatFormat("fuzz/tokenizer_config.json", text, bos, eos);
  if (!f)
    checkError(f.takeError());
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  llvm::StringRef text(reinterpret_cast<const char *>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    renderAll(text, "<s>", "</s>");
    return 0;
  }
  llvm::Expected<std::optional<hf::TokenizerChatConfig>> config =
      hf::readTokenizerChatConfig("fuzz/tokenizer_config.json", text);
  if (!config) {
    checkError(config.takeError());
    return 0;
  }
  if (*config)
    renderAll((*config)->chatTemplate, (*config)->bosToken,
              (*config)->eosToken);
  return 0;
}
