//===- ChatTemplateDriver.cpp - the chat-template renderer ------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// A test-only driver for frontends/hf/ChatTemplate.h.
//
//   moe-chat-template --config tokenizer_config.json [--messages M.json]
//                     [--add-generation-prompt | --format]
//   moe-chat-template --template T.jinja [--bos S] [--eos S] ...
//     prints the rendering (or with --format, "prefix\n---\nsuffix" as JSON
//     strings); an error goes to stderr with exit code 1. M.json is a list
//     of {"role", "content"} objects.
//   moe-chat-template --batch CASES.json
//     CASES.json is a list of {"template", "messages", "bos_token",
//     "eos_token", "add_generation_prompt"}; prints a JSON list of
//     {"ok": rendering} or {"error": message}, one per case.
//
//===----------------------------------------------------------------------===//

#include "frontends/hf/ChatTemplate.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

using namespace llvm;
using namespace mlir::moe;

static cl::opt<std::string> configPath("config",
                                       cl::desc("tokenizer_config.json"));
static cl::opt<std::string> templatePath("template",
                                         cl::desc("a template file"));
static cl::opt<std::string> messagesPath("messages",
                                         cl::desc("a JSON list of messages"));
static cl::opt<std::string> bos("bos", cl::desc("bos_token"), cl::init(""));
static cl::opt<std::string> eos("eos", cl::desc("eos_token"), cl::init(""));
static cl::opt<bool> addGenerationPrompt("add-generation-prompt",
                                         cl::desc("add_generation_prompt"));
static cl::opt<bool> formatFlag("format", cl::desc("print chatFormat()"));
static cl::opt<std::string> batchPath("batch",
                                      cl::desc("a JSON list of cases"));

static std::string readFile(StringRef path) {
  ErrorOr<std::unique_ptr<MemoryBuffer>> buffer = MemoryBuffer::getFile(path);
  if (!buffer) {
    errs() << path << ": " << buffer.getError().message() << "\n";
    std::exit(2);
  }
  return (*buffer)->getBuffer().str();
}

static bool readMessages(const json::Value &v,
                         std::vector<hf::ChatMessage> &out) {
  const json::Array *list = v.getAsArray();
  if (!list)
    return false;
  for (const json::Value &m : *list) {
    const json::Object *o = m.getAsObject();
    std::optional<StringRef> role = o ? o->getString("role") : std::nullopt;
    std::optional<StringRef> content =
        o ? o->getString("content") : std::nullopt;
    if (!role || !content)
      return false;
    out.push_back({role->str(), content->str()});
  }
  return true;
}

static int batch() {
  std::string text = readFile(batchPath);
  Expected<json::Value> cases = json::parse(text);
  if (!cases || !cases->getAsArray()) {
    errs() << batchPath << ": expected a JSON list of cases\n";
    return 2;
  }
  json::Array results;
  for (const json::Value &c : *cases->getAsArray()) {
    const json::Object *o = c.getAsObject();
    std::vector<hf::ChatMessage> messages;
    if (!o || !o->getString("template") || !o->get("messages") ||
        !readMessages(*o->get("messages"), messages)) {
      errs() << batchPath << ": a malformed case\n";
      return 2;
    }
    Expected<std::string> r = hf::renderChatTemplate(
        "case.json", *o->getString("template"), messages,
        o->getString("bos_token").value_or(""),
        o->getString("eos_token").value_or(""),
        o->getBoolean("add_generation_prompt").value_or(false));
    if (r)
      results.push_back(json::Object{{"ok", *r}});
    else
      results.push_back(json::Object{{"error", toString(r.takeError())}});
  }
  outs() << json::Value(std::move(results)) << "\n";
  return 0;
}

int main(int argc, char **argv) {
  cl::ParseCommandLineOptions(argc, argv, "chat-template renderer\n");
  if (!batchPath.empty())
    return batch();
  std::string file, templateText, bosToken = bos, eosToken = eos;
  if (!configPath.empty()) {
    file = configPath;
    Expected<std::optional<hf::TokenizerChatConfig>> config =
        hf::readTokenizerChatConfig(configPath, readFile(configPath));
    if (!config) {
      errs() << "error: " << toString(config.takeError()) << "\n";
      return 1;
    }
    if (!*config) {
      errs() << "error: " << configPath << ": no chat_template\n";
      return 1;
    }
    templateText = (*config)->chatTemplate;
    bosToken = (*config)->bosToken;
    eosToken = (*config)->eosToken;
  } else if (!templatePath.empty()) {
    file = templatePath;
    templateText = readFile(templatePath);
  } else {
    errs() << "error: give --config, --template or --batch\n";
    return 2;
  }
  if (formatFlag) {
    Expected<hf::ChatFormat> f =
        hf::chatFormat(file, templateText, bosToken, eosToken);
    if (!f) {
      errs() << "error: " << toString(f.takeError()) << "\n";
      return 1;
    }
    outs() << json::Value(f->prefix) << "\n" << json::Value(f->suffix) << "\n";
    return 0;
  }
  std::vector<hf::ChatMessage> messages;
  if (!messagesPath.empty()) {
    Expected<json::Value> v = json::parse(readFile(messagesPath));
    if (!v || !readMessages(*v, messages)) {
      errs() << messagesPath << ": expected a JSON list of messages\n";
      return 2;
    }
  }
  Expected<std::string> r = hf::renderChatTemplate(
      file, templateText, messages, bosToken, eosToken, addGenerationPrompt);
  if (!r) {
    errs() << "error: " << toString(r.takeError()) << "\n";
    return 1;
  }
  outs() << *r;
  return 0;
}
