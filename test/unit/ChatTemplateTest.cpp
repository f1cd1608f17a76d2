//===- ChatTemplateTest.cpp - the chat-template renderer --------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// frontends/hf/ChatTemplate.h: the evaluator's pieces, the whitespace rules,
// tokenizer_config.json, the limits, and every diagnostic's exact text. The
// differential test against jinja2 is test/Frontends/hf/chat-template-jinja2.
//
//===----------------------------------------------------------------------===//

#include "frontends/hf/ChatTemplate.h"

#include "gtest/gtest.h"

#include <string>

using namespace mlir::moe::hf;

namespace {

const ChatMessage kUser[] = {{"user", "Hello"}};
const ChatMessage kChat[] = {{"system", "Be brief."},
                             {"user", "Hi"},
                             {"assistant", "Hello!"},
                             {"user", "Bye"}};

/// The rendering, or "error: " and the message.
std::string render(llvm::StringRef text,
                   llvm::ArrayRef<ChatMessage> messages = kUser,
                   bool addGenerationPrompt = false) {
  llvm::Expected<std::string> r = renderChatTemplate(
      "t.json", text, messages, "<s>", "</s>", addGenerationPrompt);
  if (!r)
    return "error: " + llvm::toString(r.takeError());
  return *r;
}

// mistralai's templates, as shipped (test/Frontends/hf/Inputs has more).
const char kMixtralOriginal[] =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == "
    "'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation "
    "roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% "
    "if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' "
    "[/INST]' }}{% elif message['role'] == 'assistant' %}{{ "
    "message['content'] + eos_token}}{% else %}{{ raise_exception('Only user "
    "and assistant roles are supported!') }}{% endif %}{% endfor %}";

const char kMistralV1System[] =
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, "
    "conversation roles must alternate user/assistant/user/assistant/...') "
    "}}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + "
    "message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n"
    "            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are "
    "supported, with the exception of an initial optional system message!') "
    "}}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n";

TEST(ChatTemplate, MixtralOriginal) {
  EXPECT_EQ(render(kMixtralOriginal), "<s>[INST] Hello [/INST]");
  const ChatMessage chat[] = {
      {"user", "Hi"}, {"assistant", "Yo"}, {"user", "Bye"}};
  EXPECT_EQ(render(kMixtralOriginal, chat),
            "<s>[INST] Hi [/INST]Yo</s>[INST] Bye [/INST]");
  EXPECT_EQ(render(kMixtralOriginal, kChat),
            "error: t.json: chat_template:1:110: the template raised an "
            "exception: Conversation roles must alternate "
            "user/assistant/user/assistant/...");
  const ChatMessage system[] = {{"system", "x"}};
  EXPECT_EQ(render(kMixtralOriginal, system),
            "error: t.json: chat_template:1:110: the template raised an "
            "exception: Conversation roles must alternate "
            "user/assistant/user/assistant/...");
}

TEST(ChatTemplate, MistralV1System) {
  EXPECT_EQ(render(kMistralV1System, kChat),
            "<s> [INST] Be brief.\n\nHi [/INST] Hello!</s> [INST] Bye [/INST]");
  const ChatMessage twoUsers[] = {{"user", "a"}, {"user", "b"}};
  EXPECT_EQ(render(kMistralV1System, twoUsers),
            "error: t.json: chat_template:11:13: the template raised an "
            "exception: After the optional system message, conversation roles "
            "must alternate user/assistant/user/assistant/...");
  EXPECT_EQ(render(kMistralV1System, {}),
            "error: t.json: chat_template:1:19: the item at an out-of-range "
            "index is undefined");
}

TEST(ChatTemplate, ChatFormat) {
  llvm::Expected<ChatFormat> f =
      chatFormat("t.json", kMistralV1System, "<s>", "</s>");
  ASSERT_TRUE(bool(f)) << llvm::toString(f.takeError());
  EXPECT_EQ(f->prefix, "<s> [INST] ");
  EXPECT_EQ(f->suffix, " [/INST]");

  f = chatFormat("t.json", "{{ messages[0].content * 2 }}", "<s>", "</s>");
  ASSERT_FALSE(bool(f));
  EXPECT_EQ(llvm::toString(f.takeError()),
            "t.json: chat_template: the template must show a single user "
            "message's content exactly once, but shows it more than once");
  f = chatFormat("t.json", "{{ bos_token }}", "<s>", "</s>");
  ASSERT_FALSE(bool(f));
  EXPECT_EQ(llvm::toString(f.takeError()),
            "t.json: chat_template: the template must show a single user "
            "message's content exactly once, but shows it nowhere");
  f = chatFormat("t.json",
                 "{% if add_generation_prompt %}{{ "
                 "messages[0].content }}<gen>{% endif %}",
                 "", "");
  ASSERT_TRUE(bool(f));
  EXPECT_EQ(f->suffix, "<gen>");

  // A template that looks at the text cannot be a fixed prefix and suffix:
  // `--chat "  hi  "` would not be trimmed, and the length test would
  // decide by the probe's length.
  const std::string depends =
      "t.json: chat_template: the text around a user message depends on the "
      "message (the template tests or transforms it, e.g. with trim or "
      "length), which --chat's fixed prefix and suffix cannot reproduce";
  for (const char *t :
       {"[INST] {{ messages[0].content | trim }} [/INST]",
        "{% if messages[0].content | length > 10 %}LONG{% endif %}[INST] {{ "
        "messages[0].content }}",
        "{% if messages[0].content %}{{ messages[0].content }}{% else "
        "%}empty{% endif %}",
        "{{ messages[0].content }}{% if messages[0].content.startswith(' ') "
        "%}!{% endif %}",
        "{% if not messages[0].content %}{{ raise_exception('empty') }}{% "
        "endif %}{{ messages[0].content }}"}) {
    f = chatFormat("t.json", t, "<s>", "</s>");
    ASSERT_FALSE(bool(f)) << t;
    EXPECT_EQ(llvm::toString(f.takeError()), depends) << t;
  }
}

TEST(ChatTemplate, Whitespace) {
  // trim_blocks drops the newline after a block tag; lstrip_blocks the
  // indentation before one; `-` all whitespace; `+` neither.
  EXPECT_EQ(render("{% if 1 %}\nx\n{% endif %}\ny"), "x\ny");
  EXPECT_EQ(render("  {% if 1 %}\n  x\n  {% endif %}  \ny"), "  x\n  \ny");
  EXPECT_EQ(render("a  {%- if 1 -%}  \n b{% endif %}"), "ab");
  EXPECT_EQ(render("a\n  {%+ if 1 +%}\nb{% endif %}"), "a\n  \nb");
  EXPECT_EQ(render("a {{- ' b ' -}} \n c"), "a b c");
  EXPECT_EQ(render("x {# c #}\n y"), "x  y");
  // One trailing newline goes; \r\n and \r become \n.
  EXPECT_EQ(render("a\n\n"), "a\n");
  EXPECT_EQ(render("a\r\nb\rc"), "a\nb\nc");
}

TEST(ChatTemplate, Values) {
  EXPECT_EQ(render("{{ none }} {{ true }} {{ 7 / 2 }} {{ 1e16 }} {{ 1e15 }} "
                   "{{ 1e-5 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }}"),
            "None True 3.5 1e+16 1000000000000000.0 1e-05 -4 2 1024");
  EXPECT_EQ(render("{{ [1, 'a', none, (2,), {'k': \"it's\"}] }}"),
            "[1, 'a', None, (2,), {'k': \"it's\"}]");
  EXPECT_EQ(render("{{ 'x' ~ nothing ~ 1 }}|{{ nothing }}|{{ 'héllo'|length "
                   "}}|{{ 'héllo'[1:3] }}|{{ [1,2,3][::-1] }}"),
            "x1||5|él|[3, 2, 1]");
  EXPECT_EQ(render("{{ '\\u00e9\\x41\\101\\n' }}"), "\xC3\xA9"
                                                    "AA\n");
  EXPECT_EQ(render("{{ {'a': 'é\"\\n'}|tojson }}"),
            "{\"a\": \"\xC3\xA9\\\"\\n\"}");
}

TEST(ChatTemplate, LoopsAndScopes) {
  EXPECT_EQ(render("{% for m in messages %}{{ loop.index }}{{ loop.first }}{{ "
                   "loop.last }}/{{ loop.length }};{% endfor %}",
                   kChat),
            "1TrueFalse/4;2FalseFalse/4;3FalseFalse/4;4FalseTrue/4;");
  EXPECT_EQ(render("{% set x = 0 %}{% for i in [1,2] %}{% set x = x + i %}{{ "
                   "x }}{% endfor %}{{ x }}"),
            "120");
  EXPECT_EQ(render("{% set ns = namespace(n=0) %}{% for i in range(5) %}{% if "
                   "i == 3 %}{% break %}{% endif %}{% set ns.n = ns.n + i "
                   "%}{% endfor %}{{ ns.n }}"),
            "3");
  EXPECT_EQ(render("{% for m in messages if m.role == 'user' %}{{ m.content "
                   "}}{% else %}-{% endfor %}",
                   kChat),
            "HiBye");
  // jinja2 runs a for loop's else block unless an iteration reached the end
  // of the body.
  EXPECT_EQ(render("{% for i in [1, 2] %}{% break %}{% else %}E{% endfor %}|{% "
                   "for i in [1, 2] %}{% continue %}{% else %}E{% endfor %}|{% "
                   "for i in [1, 2] %}{% if i == 2 %}{% continue %}{% endif "
                   "%}{% else %}E{% endfor %}"),
            "E|E|");
  EXPECT_EQ(render("{% for k, v in {'a': 1}.items() %}{{ k }}={{ v }}{% "
                   "endfor %}"),
            "a=1");
}

TEST(ChatTemplate, SyntaxErrors) {
  EXPECT_EQ(render("x\n  {% if true %}never closed"),
            "error: t.json: chat_template:2:3: missing '{% endif %}' for '{% "
            "if %}'");
  EXPECT_EQ(render("{{ 'open }}"),
            "error: t.json: chat_template:1:4: unterminated string literal");
  EXPECT_EQ(render("{% endfor %}"),
            "error: t.json: chat_template:1:1: unexpected '{% endfor %}'");
  EXPECT_EQ(render("{{ 1 + }}"), "error: t.json: chat_template:1:8: expected "
                                 "an expression, found the end of the tag");
  EXPECT_EQ(render("{{ x"), "error: t.json: chat_template:1:1: missing end of "
                            "variable tag '}}'");
  EXPECT_EQ(render("{# x"), "error: t.json: chat_template:1:1: missing end of "
                            "comment tag '#}'");
  EXPECT_EQ(render("{{ (1 ]}}"),
            "error: t.json: chat_template:1:7: unexpected ']'");
  EXPECT_EQ(render("{{ a $ b }}"),
            "error: t.json: chat_template:1:6: unexpected character '$'");
  EXPECT_EQ(render("{% continue %}"),
            "error: t.json: chat_template:1:1: '{% continue %}' outside a for "
            "loop");
  EXPECT_EQ(render("{% frobnicate %}"),
            "error: t.json: chat_template:1:1: unknown tag 'frobnicate'");
  EXPECT_EQ(render("{{ 1_000 }}"),
            "error: t.json: chat_template:1:4: number literals with '_' or a "
            "base prefix (0x, 0o, 0b) are not supported");
  EXPECT_EQ(render("{{ 0x1F }}"),
            "error: t.json: chat_template:1:4: number literals with '_' or a "
            "base prefix (0x, 0o, 0b) are not supported");
  EXPECT_EQ(render("{{ a, b }}"), "error: t.json: chat_template:1:5: tuples "
                                  "without parentheses are not supported");
  EXPECT_EQ(render("{{ messages[0]() }}"),
            "error: t.json: chat_template:1:12: only functions and methods "
            "can be called");
  EXPECT_EQ(render("{{ 99999999999999999999 }}"),
            "error: t.json: chat_template:1:4: integers beyond 64 bits are not "
            "supported");
  EXPECT_EQ(render("{{ '\\ud800' }}"),
            "error: t.json: chat_template:1:4: escapes for surrogate code "
            "points are not supported");
}

TEST(ChatTemplate, Unsupported) {
  // Rejected when parsed, whether or not a rendering reaches them.
  EXPECT_EQ(render("{% if false %}{% macro m() %}{% endmacro %}{% endif %}"),
            "error: t.json: chat_template:1:15: '{% macro %}' is not "
            "supported in chat templates (supported tags: if, for, set, "
            "break, continue, generation)");
  EXPECT_EQ(render("{% if false %}{{ x|map('upper') }}{% endif %}"),
            "error: t.json: chat_template:1:20: unsupported filter 'map'");
  EXPECT_EQ(render("{{ x is sameas 1 }}"),
            "error: t.json: chat_template:1:9: unsupported test 'sameas'");
  EXPECT_EQ(render("{{ strftime_now('%Y') }}"),
            "error: t.json: chat_template:1:4: unsupported function "
            "'strftime_now' (supported: raise_exception, namespace, range)");
  EXPECT_EQ(render("{{ 'a,b'.split(',') }}"),
            "error: t.json: chat_template:1:9: unsupported method 'split'");
  EXPECT_EQ(render("{{ x|trim(1, 2) }}"),
            "error: t.json: chat_template:1:6: filter 'trim' takes 0 to 1 "
            "arguments, not 2");
  EXPECT_EQ(render("{{ f(*x) }}"), "error: t.json: chat_template:1:6: '*args' "
                                   "and '**kwargs' are not supported");
  EXPECT_EQ(render("{% set a, b = 1, 2 %}"),
            "error: t.json: chat_template:1:9: '{% set %}' with several "
            "targets is not supported");
  EXPECT_EQ(render("{{ 'ü'|upper }}"),
            "error: t.json: chat_template:1:9: upper of non-ASCII text is not "
            "supported");
  EXPECT_EQ(render("{{ 2 ** 64 }}"),
            "error: t.json: chat_template:1:6: integers beyond 64 bits are not "
            "supported");
}

TEST(ChatTemplate, RuntimeErrors) {
  EXPECT_EQ(render("\n{{ raise_exception('bad ' ~ messages|length) }}"),
            "error: t.json: chat_template:2:4: the template raised an "
            "exception: bad 1");
  EXPECT_EQ(render("{{ nothing.role }}"),
            "error: t.json: chat_template:1:11: 'nothing' is undefined");
  EXPECT_EQ(render("{{ 'a' + 1 }}"),
            "error: t.json: chat_template:1:8: unsupported operand types for "
            "+: string and int");
  EXPECT_EQ(render("{{ 1 // 0 }}"), "error: t.json: chat_template:1:6: "
                                    "integer division or modulo by zero");
  EXPECT_EQ(render("{% set x = 1 %}{% set x.a = 2 %}"),
            "error: t.json: chat_template:1:16: cannot assign attribute on "
            "non-namespace object 'x'");
  EXPECT_EQ(render("{{ messages|selectattr('role') }}"),
            "error: t.json: chat_template:1:13: cannot render a generator "
            "(apply '|list' first)");
}

TEST(ChatTemplate, Limits) {
  EXPECT_EQ(render("{% for i in range(100000) %}{% for j in range(100000) "
                   "%}{% endfor %}{% endfor %}"),
            "error: t.json: chat_template:1:41: the template runs too long "
            "(more than 10000000 steps)");
  // Copying and scanning big strings counts against the budget too.
  EXPECT_EQ(render("{% set s = 'x' * 1000000 %}{% for i in range(100000) %}{% "
                   "set t = s %}{% endfor %}"),
            "error: t.json: chat_template:1:67: the template runs too long "
            "(more than 10000000 steps)");
  EXPECT_EQ(render("{% set s = 'a' * 1000000 %}{% for i in range(100) %}{{ "
                   "(s ~ 'b') in s }}{% endfor %}"),
            "error: t.json: chat_template:1:69: the template runs too long "
            "(more than 10000000 steps)");
  EXPECT_EQ(render("{{ range(100001) }}"),
            "error: t.json: chat_template:1:4: range too big, maximum size for "
            "range is 100000");
  EXPECT_EQ(render("{{ 'x' * 2000000 }}"),
            "error: t.json: chat_template:1:8: a string longer than 1048576 "
            "bytes");
  EXPECT_EQ(render("{% for i in range(5000) %}{{ 'x' * 1000 }}{% endfor %}"),
            "error: t.json: chat_template:1:27: the output exceeds 1048576 "
            "bytes");
  EXPECT_EQ(render("{{ " + std::string(5000, '(') + " }}"),
            "error: t.json: chat_template:1:5005: unexpected '}'");
  std::string deep =
      "{{ " + std::string(200, '(') + "1" + std::string(200, ')') + " }}";
  EXPECT_EQ(render(deep), "error: t.json: chat_template:1:53: the template "
                          "nests more than 100 deep");
  // Long chains deepen the tree as nesting does.
  std::string sum = "{{ 1";
  for (int i = 0; i < 1000; ++i)
    sum += " + 1";
  EXPECT_EQ(render(sum + " }}"), "error: t.json: chat_template:1:396: the "
                                 "template nests more than 100 deep");
  std::string attrs = "{{ x";
  for (int i = 0; i < 1000; ++i)
    attrs += ".a[0]";
  EXPECT_EQ(render(attrs + " }}"), "error: t.json: chat_template:1:243: the "
                                   "template nests more than 100 deep");
  std::string ifs;
  for (int i = 0; i < 200; ++i)
    ifs += "{% if 1 %}";
  EXPECT_EQ(render(ifs), "error: t.json: chat_template:1:987: the template "
                         "nests more than 100 deep");
  EXPECT_EQ(render("{% set ns = namespace(x=[]) %}{% for i in range(100) %}{% "
                   "set ns.x = [ns.x] %}{% endfor %}"),
            "error: t.json: chat_template:1:70: values nested more than 64 "
            "deep");
  EXPECT_EQ(render("{% for i in range(65) %}{% set ns = namespace() %}{% "
                   "endfor %}"),
            "error: t.json: chat_template:1:37: more than 64 namespace() "
            "calls");
}

TEST(ChatTemplate, TokenizerConfig) {
  auto read = [](llvm::StringRef json) -> std::string {
    llvm::Expected<std::optional<TokenizerChatConfig>> c =
        readTokenizerChatConfig("tc.json", json);
    if (!c)
      return "error: " + llvm::toString(c.takeError());
    if (!*c)
      return "none";
    return (*c)->chatTemplate + "|" + (*c)->bosToken + "|" + (*c)->eosToken;
  };
  EXPECT_EQ(read(R"({"chat_template": "T", "bos_token": "<s>",
                     "eos_token": {"content": "</s>", "lstrip": false}})"),
            "T|<s>|</s>");
  EXPECT_EQ(read(R"({"chat_template": [{"name": "tool_use", "template": "A"},
                     {"name": "default", "template": "B"}],
                     "bos_token": null})"),
            "B||");
  EXPECT_EQ(read(R"({"bos_token": "<s>"})"), "none");
  EXPECT_EQ(read(R"({"chat_template": null})"), "none");
  EXPECT_EQ(read(R"({"chat_template": 3})"),
            "error: tc.json: chat_template: expected a string or a list of "
            "named templates");
  EXPECT_EQ(read(R"({"chat_template": [{"name": "x"}]})"),
            "error: tc.json: chat_template: expected a list of {\"name\": "
            "string, \"template\": string} objects");
  EXPECT_EQ(read(R"({"chat_template": [{"name": "x", "template": "A"}]})"),
            "error: tc.json: chat_template: none of the named templates is "
            "\"default\"");
  EXPECT_EQ(read(R"({"chat_template": "T", "eos_token": {"x": 1}})"),
            "error: tc.json: eos_token: expected a string or an object with a "
            "string \"content\"");
  EXPECT_EQ(read("[1]"), "error: tc.json: expected a JSON object");
  EXPECT_EQ(read("{"),
            "error: tc.json: invalid JSON: [1:1, byte=1]: Expected object key");
  EXPECT_EQ(read(std::string(100000, '[')),
            "error: tc.json: JSON nests deeper than 64 levels (at byte 64)");
  EXPECT_EQ(read(R"({"chat_template": "a", "chat_template": "b"})"),
            "error: tc.json: key \"chat_template\" appears twice in one "
            "object (at byte 23)");
}

} // namespace
