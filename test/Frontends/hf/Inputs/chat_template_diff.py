"""Differential test of moe-compile's chat-template renderer against jinja2.

Renders every template of the corpus below over several message lists, with
and without add_generation_prompt, through jinja2 configured as transformers'
apply_chat_template configures it and through the renderer's test driver
(`moe-chat-template --batch`), and compares the results byte for byte:

  * jinja2 renders  -> ours renders the same bytes;
  * raise_exception -> ours fails with "the template raised an exception: "
                       and the same message;
  * jinja2 fails otherwise -> ours fails too.

The UNSUPPORTED templates must fail in ours with exactly the given message
(whatever jinja2 does with them).

The real templates are quoted from the tokenizer_config.json files mistralai
shipped (as data; see docs/chat-templates.md for the list).
"""

import argparse
import json
import os
import subprocess
import sys

import warnings

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


class Generation(Extension):
    """transformers' {% generation %} tag (AssistantTracker: a call block),
    without the mask tracking."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_generation_support"), [], [],
                               body).set_lineno(lineno)

    def _generation_support(self, caller):
        return caller()


# jinja2 compiles `(1)[1:]` to Python that warns "not subscriptable".
warnings.filterwarnings("ignore", category=SyntaxWarning)


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                          separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


class Raised(Exception):
    pass


def render_jinja(env, template, messages, bos, eos, add_generation_prompt):
    try:
        t = env.from_string(template)
        return ("ok", t.render(messages=messages, tools=None, documents=None,
                               bos_token=bos, eos_token=eos,
                               add_generation_prompt=add_generation_prompt))
    except jinja2.exceptions.TemplateSyntaxError as e:
        return ("error", "syntax: " + str(e))
    except jinja2.exceptions.TemplateError as e:
        if type(e) is jinja2.exceptions.TemplateError:
            return ("raised", str(e))
        return ("error", type(e).__name__ + ": " + str(e))
    except Exception as e:  # TypeError, ZeroDivisionError, ...
        return ("error", type(e).__name__ + ": " + str(e))


# --- The real templates -----------------------------------------------------

# mistralai/Mixtral-8x7B-Instruct-v0.1 (first release)
MIXTRAL_8X7B_V01_ORIGINAL = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"

# mistralai/Mistral-7B-Instruct-v0.1 (first release)
MISTRAL_7B_V01_ORIGINAL = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"

# mistralai 'v1' template with a system message folded into the first user
# turn: Mistral-7B-Instruct-v0.1 and v0.2, Mixtral-8x7B-Instruct-v0.1 (later
# revisions).
MISTRAL_V1_SYSTEM = "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n    {%- endif %}\n    {%- if message['role'] == 'user' %}\n        {%- if loop.first and system_message is defined %}\n            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n        {%- else %}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n        {%- endif %}\n    {%- elif message['role'] == 'assistant' %}\n        {{- ' ' + message['content'] + eos_token}}\n    {%- else %}\n        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n    {%- endif %}\n{%- endfor %}\n"

# mistralai 'v3' template (Mistral-7B-Instruct-v0.3): tool calling, and the
# system message folded into the last user turn.
MISTRAL_V3_TOOLS = "{%- if messages[0][\"role\"] == \"system\" %}\n    {%- set system_message = messages[0][\"content\"] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n{%- set user_messages = loop_messages | selectattr(\"role\", \"equalto\", \"user\") | list %}\n\n{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}\n{%- set ns = namespace() %}\n{%- set ns.index = 0 %}\n{%- for message in loop_messages %}\n    {%- if not (message.role == \"tool\" or message.role == \"tool_results\" or (message.tool_calls is defined and message.tool_calls is not none)) %}\n        {%- if (message[\"role\"] == \"user\") != (ns.index % 2 == 0) %}\n            {{- raise_exception(\"After the optional system message, conversation roles must alternate user/assistant/user/assistant/...\") }}\n        {%- endif %}\n        {%- set ns.index = ns.index + 1 %}\n    {%- endif %}\n{%- endfor %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if message[\"role\"] == \"user\" %}\n        {%- if tools is not none and (message == user_messages[-1]) %}\n            {{- \"[AVAILABLE_TOOLS] [\" }}\n            {%- for tool in tools %}\n                {%- set tool = tool.function %}\n                {{- '{\"type\": \"function\", \"function\": {' }}\n                {%- for key, val in tool.items() if key != \"return\" %}\n                    {%- if val is string %}\n                        {{- '\"' + key + '\": \"' + val + '\"' }}\n                    {%- else %}\n                        {{- '\"' + key + '\": ' + val|tojson }}\n                    {%- endif %}\n                    {%- if not loop.last %}\n                        {{- \", \" }}\n                    {%- endif %}\n                {%- endfor %}\n                {{- \"}}\" }}\n                {%- if not loop.last %}\n                    {{- \", \" }}\n                {%- else %}\n                    {{- \"]\" }}\n                {%- endif %}\n            {%- endfor %}\n            {{- \"[/AVAILABLE_TOOLS]\" }}\n            {%- endif %}\n        {%- if loop.last and system_message is defined %}\n            {{- \"[INST] \" + system_message + \"\\n\\n\" + message[\"content\"] + \"[/INST]\" }}\n        {%- else %}\n            {{- \"[INST] \" + message[\"content\"] + \"[/INST]\" }}\n        {%- endif %}\n    {%- elif message.tool_calls is defined and message.tool_calls is not none %}\n        {{- \"[TOOL_CALLS] [\" }}\n        {%- for tool_call in message.tool_calls %}\n            {%- set out = tool_call.function|tojson %}\n            {{- out[:-1] }}\n            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}\n                {{- raise_exception(\"Tool call IDs should be alphanumeric strings with length 9!\") }}\n            {%- endif %}\n            {{- ', \"id\": \"' + tool_call.id + '\"}' }}\n            {%- if not loop.last %}\n                {{- \", \" }}\n            {%- else %}\n                {{- \"]\" + eos_token }}\n            {%- endif %}\n        {%- endfor %}\n    {%- elif message[\"role\"] == \"assistant\" %}\n        {{- \" \" + message[\"content\"]|trim + eos_token}}\n    {%- elif message[\"role\"] == \"tool_results\" or message[\"role\"] == \"tool\" %}\n        {%- if message.content is defined and message.content.content is defined %}\n            {%- set content = message.content.content %}\n        {%- else %}\n            {%- set content = message.content %}\n        {%- endif %}\n        {{- '[TOOL_RESULTS] {\"content\": ' + content|string + \", \" }}\n        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}\n            {{- raise_exception(\"Tool call IDs should be alphanumeric strings with length 9!\") }}\n        {%- endif %}\n        {{- '\"call_id\": \"' + message.tool_call_id + '\"}[/TOOL_RESULTS]' }}\n    {%- else %}\n        {{- raise_exception(\"Only user and assistant roles are supported, with the exception of an initial optional system message!\") }}\n    {%- endif %}\n{%- endfor %}\n"

# mistralai 'v3-tekken' template (Mistral-Nemo-Instruct-2407).
MISTRAL_V3_TEKKEN = MISTRAL_V3_TOOLS.replace("[AVAILABLE_TOOLS] [", "[AVAILABLE_TOOLS][").replace("[TOOL_CALLS] [", "[TOOL_CALLS][").replace("\"[INST] \"", "\"[INST]\"").replace("{{- \" \" + message[\"content\"]|trim + eos_token}}", "{{- message[\"content\"] + eos_token}}").replace("[TOOL_RESULTS] {", "[TOOL_RESULTS]{")

# mistralai 'v7' template (Mistral-Large-Instruct-2411).
MISTRAL_V7 = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + '[/INST]' }}{% elif message['role'] == 'system' %}{{ '[SYSTEM_PROMPT] ' + message['content'] + '[/SYSTEM_PROMPT]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}{% else %}{{ raise_exception('Only user, system and assistant roles are supported!') }}{% endif %}{% endfor %}"

# mistralai/Mixtral-8x22B-Instruct-v0.1: a list of named templates.
MIXTRAL_8X22B_DEFAULT = "{{bos_token}}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ ' [INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + ' ' + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
MIXTRAL_8X22B_TOOL_USE = "{{bos_token}}{% set user_messages = messages | selectattr('role', 'equalto', 'user') | list %}{% for message in messages %}{% if message['role'] == 'user' %}{% if message == user_messages[-1] %}{% if tools %}{{'[AVAILABLE_TOOLS]'+ tools|string + '[/AVAILABLE_TOOLS]'}}{% endif %}{{ '[INST]' + message['content'] + '[/INST]' }}{% else %}{{ '[INST]' + message['content'] + '[/INST]' }}{% endif %}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + ' ' + eos_token}}{% elif message['role'] == 'tool_results' %}{{'[TOOL_RESULTS]' + message['content']|string + '[/TOOL_RESULTS]'}}{% elif message['role'] == 'tool_calls' %}{{'[TOOL_CALLS]' + message['content']|string + eos_token}}{% endif %}{% endfor %}"

REAL = {
    "mixtral-8x22b-instruct-v0.1 default": MIXTRAL_8X22B_DEFAULT,
    "mixtral-8x22b-instruct-v0.1 tool_use": MIXTRAL_8X22B_TOOL_USE,
    "mixtral-8x7b-instruct-v0.1-original": MIXTRAL_8X7B_V01_ORIGINAL,
    "mistral-7b-instruct-v0.1-original": MISTRAL_7B_V01_ORIGINAL,
    "mistral-v1-system (Mistral-7B-Instruct-v0.1/v0.2, Mixtral-8x7B-Instruct-v0.1)": MISTRAL_V1_SYSTEM,
    "mistral-v3-tools (Mistral-7B-Instruct-v0.3)": MISTRAL_V3_TOOLS,
    "mistral-v3-tekken (Mistral-Nemo-Instruct-2407)": MISTRAL_V3_TEKKEN,
    "mistral-v7 (Mistral-Large-Instruct-2411)": MISTRAL_V7,
}

# --- Synthetic templates, one or a few constructs each --------------------

SYNTHETIC = {
    "text-only": "plain text\n",
    "trailing-newlines": "a\n\n",
    "crlf": "a\r\n{% if true %}\r\nb\r\n{% endif %}\r\nc\rd",
    "lstrip-trim": "  {% if 1 %}\n  x\n  {% endif %}  \n{# c #}  y\n",
    "lstrip-after-text": "a {% if 1 %}b{% endif %}\n\t {% for m in messages %}{{ m.role }}\n{% endfor %}",
    "plus-minus": "a  {%+ if 1 +%}\nb  {%- if 1 -%}  \n c {{- 'd' -}} \n e {{+ 'f' }}{% endif %}{% endif %}",
    "comment-ws": "x  {#- c -#}  y\n  {# c #}\nz {#+ c +#}\nw",
    "multiline-tag": "{%\n if messages|length > 0\n%}\nyes\n{% endif %}",
    "output-none-bool": "{{ none }} {{ true }} {{ False }} {{ undefined_name }}|",
    "ints-floats": "{{ 1E3 }} {{ 2.5e-3 }} {{ 00 }} {{ 007.5 }} {{ 1 + 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 2 ** 3 ** 2 }} {{ 1.5 * 2 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1e-5 }} {{ 10 / 4 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ 1 == 1.0 }} {{ true + 1 }}",
    "strings": "{{ 'a' + \"b\" ~ 1 ~ none }} {{ 'it\\'s' }} {{ \"tab\\there\\nnl\" }} {{ '\\x41\\u00e9\\101' }} {{ 'ab' * 3 }} {{ 'a' 'b' }} {{ '\\d' }}",
    "compare": "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'a' < 'b' }} {{ [1, 2] == [1, 2] }} {{ {'a': 1} == {'a': 1} }} {{ 1 != 2 }} {{ 2 >= 2 }} {{ none == none }}",
    "logic": "{{ 0 or 'x' }} {{ 1 and 'y' }} {{ not 0 }} {{ '' or [] }} {{ none and 1 }} {{ not (1 and 0) }}",
    "in": "{{ 'a' in 'cat' }} {{ 'z' not in 'cat' }} {{ 2 in [1, 2] }} {{ 'role' in messages[0] }} {{ 'x' in undefined_thing }}",
    "tests": "{{ messages is defined }} {{ nothing is undefined }} {{ none is none }} {{ 'a' is string }} {{ 1 is number }} {{ 1 is integer }} {{ 1.0 is float }} {{ true is boolean }} {{ 4 is even }} {{ 3 is odd }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(2) }} {{ {} is mapping }} {{ [] is sequence }} {{ 'a' is iterable }} {{ 1 is not none }} {{ 2 is eq 2 }} {{ true is true }} {{ messages[0] is mapping }}",
    "subscripts": "{{ messages[0]['role'] }} {{ messages[0].content }} {{ messages[-1].role }} {{ messages[99] }} {{ 'héllo'[1] }} {{ 'héllo'[1:3] }} {{ [1,2,3,4][::2] }} {{ [1,2,3][::-1] }} {{ 'abc'[-2:] }} {{ [1,2,3][5:] }} {{ (1, 2) }} {{ (1,) }} {{ () }} {{ messages[0].nope }}|",
    "slices": "{% for m in messages[1:] %}{{ m.role }},{% endfor %}|{% for m in messages[:-1] %}{{ loop.index }}{% endfor %}|{{ messages[::-1]|length }}",
    "filters": "{{ '  pad  '|trim }}|{{ 'xxaxx'|trim('x') }}|{{ messages|length }}|{{ 'héllo'|length }}|{{ 'abc'|upper }}|{{ 'ABC'|lower }}|{{ 12|string + '!' }}|{{ 'abc'|list }}|{{ [3,4]|first }}|{{ [3,4]|last }}|{{ ['a','b']|join(', ') }}|{{ nothing|default('dflt') }}|{{ ''|default('e', true) }}|{{ [1,'a',none]|tojson }}|{{ {'a': 'é\"\\n'}|tojson }}|{{ 'a-b-c'|replace('-', '+') }}|{{ 'aaa'|replace('a', 'b', 2) }}|{{ nothing|length }}|{{ nothing|trim }}",
    "methods": "{{ '  x  '.strip() }}|{{ '  x  '.lstrip() }}|{{ '  x  '.rstrip() }}|{{ 'xyx'.strip('x') }}|{{ 'ab'.upper() }}|{{ 'AB'.lower() }}|{{ 'abc'.startswith('ab') }}|{{ 'abc'.endswith('bc') }}|{{ 'abca'.replace('a', 'z') }}|{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}|{{ {'a': 1}.keys()|list }}|{{ {'a': 1}.get('a') }}|{{ {'a': 1}.get('b', 5) }}|{{ {'a': 1}.get('b') }}",
    "for-loop": "{% for m in messages %}{{ loop.index0 }}/{{ loop.index }}/{{ loop.length }}/{{ loop.first }}/{{ loop.last }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.previtem.role }}/{{ loop.nextitem.role }};{% endfor %}",
    "for-else-filter": "{% for m in messages if m.role == 'user' %}{{ loop.index }}:{{ m.content }};{% else %}none{% endfor %}|{% for x in [] %}x{% else %}empty{% endfor %}|{% for c in 'ab' %}{{ c }}{% endfor %}|{% for k in {'x': 1, 'y': 2} %}{{ k }}{% endfor %}",
    "break-continue": "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}|{% for i in range(1, 10, 3) %}{{ i }}{% endfor %}|{% for i in range(5, 0, -2) %}{{ i }}{% endfor %}",
    "scoping": "{% set x = 0 %}{% for i in [1,2] %}{{ x }}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}|{% for i in [1,2] %}{{ y }}{% set y = i %}{{ y }}{% endfor %}{{ y }}|{% if true %}{% set z = 1 %}{% endif %}{{ z }}|{% for i in [1,2] %}{% if i == 1 %}{% set w = 5 %}{% endif %}{{ w }}{% endfor %}|{% for a in [1] %}{% for b in [2] %}{{ loop.index }}{{ a }}{{ b }}{% endfor %}{{ loop.index }}{% endfor %}",
    "namespace": "{% set ns = namespace(count=0, found=false) %}{% for m in messages %}{% if m.role == 'user' %}{% set ns.count = ns.count + 1 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.count }} {{ ns.found }} {{ ns.missing }}|{{ ns }}",
    "cond-expr": "{{ 'yes' if messages else 'no' }} {{ 'a' if false }}| {{ 1 if false else 2 if true else 3 }}",
    "literals": "{{ [1, 'a', [2, none], {'k': true}] }} {{ {'b': 1, 'a': 2} }} {{ [] }} {{ {} }} {{ [1,] }} {{ \"it's\" }} {{ ['it\\'s', \"q\\\"\", 'b\\\\'] }}",
    "unicode": "{{ '日本' ~ messages[0].content }} {{ 'ü'|length }} {{ ['é', '\\x85', '\\u200b', '\\x01'] }}",
    "selectattr": "{{ messages|selectattr('role', 'equalto', 'user')|list|length }} {{ messages|rejectattr('role', 'equalto', 'user')|list|length }} {{ messages|selectattr('content')|list|length }} {% for m in messages|selectattr('role', 'eq', 'assistant') %}{{ m.content }};{% endfor %}",
    "generator-once": "{% set g = messages|selectattr('role', 'equalto', 'user') %}{{ g|first }}{% for m in g %}{{ m.role }}{% endfor %}|{% for m in g %}again{% endfor %}",
    "items-filter": "{% for k, v in messages[0]|items %}{{ k }}:{{ v }};{% endfor %}",
    "generation-scope": "{% set x = 1 %}{% generation %}{{ x }}{% set x = 2 %}{{ x }}{% endgeneration %}{{ x }}{% for m in messages %}{% generation %}{{ loop.index }}{{ m.role }}{% endgeneration %}{% endfor %}",
    "errors-syntax-12": "{% for m in messages %}{% generation %}{% break %}{% endgeneration %}{% endfor %}",
    "generation": "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}{% else %}[{{ m.content }}]{% endif %}{% endfor %}",
    "system-fold": "{%- if messages[0]['role'] == 'system' -%}\n  {%- set sys = messages[0]['content'] | trim -%}\n  {%- set msgs = messages[1:] -%}\n{%- else -%}\n  {%- set msgs = messages -%}\n{%- endif -%}\n{{- bos_token -}}\n{%- for m in msgs -%}\n  {%- if m.role == 'user' and loop.last and sys is defined -%}\n    {{- '[INST] ' ~ sys ~ '\\n\\n' ~ m.content ~ ' [/INST]' -}}\n  {%- elif m.role == 'user' -%}\n    {{- '[INST] ' ~ m.content ~ ' [/INST]' -}}\n  {%- else -%}\n    {{- ' ' ~ m.content.strip() ~ eos_token -}}\n  {%- endif -%}\n{%- endfor -%}\n{%- if add_generation_prompt %} {% endif -%}\n",
    "errors-runtime-1": "{{ messages[0].role + 1 }}",
    "errors-runtime-2": "{{ nothing.attr }}",
    "errors-runtime-3": "{{ 1 / 0 }}",
    "errors-runtime-4": "{{ 5 % 0 }}",
    "errors-runtime-5": "{{ nothing + 'a' }}",
    "errors-runtime-6": "{{ 1 in 'abc' }}",
    "errors-runtime-7": "{{ range(100001)|length }}",
    "errors-runtime-8": "{{ 5|length }}",
    "errors-runtime-9": "{% set x = 1 %}{% set x.y = 2 %}",
    "errors-runtime-10": "{{ 'a' < 1 }}",
    "raise-in-loop": "{% for m in messages %}{% if loop.index > 2 %}{{ raise_exception('too many: ' ~ loop.index) }}{% endif %}{% endfor %}ok",
    "errors-syntax-1": "{% if true %}never closed",
    "errors-syntax-2": "{{ 'unterminated }}",
    "errors-syntax-3": "{% endif %}",
    "errors-syntax-4": "{% for x in y %}{% endif %}",
    "errors-syntax-5": "{{ 1 + }}",
    "errors-syntax-6": "{# never closed",
    "errors-syntax-7": "{% break %}",
    "errors-syntax-8": "{{ (1 }}",
    "errors-syntax-9": "{{ 007 }}",
    "errors-syntax-10": "{% set true = 1 %}",
    "errors-syntax-11": "{% for none in messages %}{% endfor %}",
    "set-keyword-names": "{% set in = 1 %}{% set loop = 2 %}{{ loop }}{% for if in [1] %}{{ if }}{% endfor %}",
}

# Outside the subset: ours must fail with exactly this message.
UNSUPPORTED = {
    "macro": ("{% macro f(x) %}{{ x }}{% endmacro %}{{ f(1) }}",
              "case.json: chat_template:1:1: '{% macro %}' is not supported in chat templates (supported tags: if, for, set, break, continue, generation)"),
    "unknown-filter": ("{{ messages|map(attribute='role')|join }}",
                       "case.json: chat_template:1:13: unsupported filter 'map'"),
    "unknown-test": ("line one\n{% if x is sameas none %}{% endif %}",
                     "case.json: chat_template:2:12: unsupported test 'sameas'"),
    "strftime_now": ("{{- bos_token }}\n  {%- set today = strftime_now('%Y-%m-%d') %}",
                     "case.json: chat_template:2:19: unsupported function 'strftime_now' (supported: raise_exception, namespace, range)"),
    "unknown-method-in-untaken-branch": ("{% if false %}{{ 'a'.split(',') }}{% endif %}ok",
                                         "case.json: chat_template:1:21: unsupported method 'split'"),
    "tojson-args": ("{{ messages|tojson(indent=2) }}",
                    "case.json: chat_template:1:13: filter 'tojson' does not take keyword arguments here"),
    "block-set": ("{% set x %}text{% endset %}",
                  "case.json: chat_template:1:1: block assignments ('{% set x %}...{% endset %}') are not supported"),
    "raw": ("{% raw %}{{ x }}{% endraw %}",
            "case.json: chat_template:1:1: '{% raw %}' is not supported in chat templates (supported tags: if, for, set, break, continue, generation)"),
    "string-percent": ("{{ '%s' % 'a' }}",
                       "case.json: chat_template:1:9: string formatting with '%' is not supported"),
    "upper-non-ascii": ("{{ messages[0].content|upper }}",
                        "case.json: chat_template:1:24: upper of non-ASCII text is not supported"),
    "recursive-for": ("{% for m in messages recursive %}{% endfor %}",
                      "case.json: chat_template:1:22: recursive for loops are not supported"),
}

MESSAGES = {
    "one-user": [{"role": "user", "content": "Hello"}],
    "user-assistant-user": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "  Hello there!  "},
        {"role": "user", "content": "How are you?"},
    ],
    "system-user": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
    ],
    "system-user-assistant-user": [
        {"role": "system", "content": "You are helpful.\n"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
    ],
    "empty-content": [{"role": "user", "content": ""}],
    "unicode": [
        {"role": "user", "content": "héllo 世界 🙂 \t\n"},
        {"role": "assistant", "content": "ÄÖÜ \u2028 x"},
        {"role": "user", "content": "{{ not a template }} {% if %}"},
    ],
    "bad-alternation": [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
    ],
    "unknown-role": [{"role": "tool_x", "content": "a"}],
    "no-messages": [],
}

# The messages with which ours declines what jinja2 renders (random
# expressions and literals only): see docs/chat-templates.md.
DECLINED = ["not supported", "cannot render a generator",
            "cannot render the function"]

UPPER_INPUT = [{"role": "user", "content": "ünïcode"}]


def random_whitespace_templates(count, seed):
    """Templates of random text, tags and whitespace control (fixed seed):
    trim_blocks, lstrip_blocks, '-' and '+' against jinja2's lexer."""
    import random
    rng = random.Random(seed)
    texts = ["", " ", "  ", "\t", "\n", " \n", "\n  ", "\n\t \n", "x", " x ",
             "x\n", "\n x", "\r\n", "\u3000", "\n\n "]
    def tag(kind, body):
        left = rng.choice(["", "", "-", "+"])
        right = rng.choice(["", "", "-", "+"]) if kind != "{" else rng.choice(["", "-"])
        if kind == "{":
            return "{{" + left + " " + body + " " + right + "}}"
        if kind == "#":
            return "{#" + left + " " + body + " " + right + "#}"
        return "{%" + left + " " + body + " " + right + "%}"
    out = []
    for _ in range(count):
        parts = []
        depth = 0
        for _ in range(rng.randint(1, 8)):
            parts.append(rng.choice(texts))
            r = rng.random()
            if r < 0.2:
                parts.append(tag("{", rng.choice(["'v'", "messages|length", "bos_token"])))
            elif r < 0.3:
                parts.append(tag("#", "comment"))
            elif r < 0.5:
                parts.append(tag("%", "if messages"))
                depth += 1
            elif r < 0.6:
                parts.append(tag("%", "for m in messages"))
                parts.append(rng.choice(texts))
                parts.append(tag("{", "m.role"))
                parts.append(rng.choice(texts))
                parts.append(tag("%", "endfor"))
            elif r < 0.75 and depth:
                parts.append(tag("%", "endif"))
                depth -= 1
            elif r < 0.85:
                parts.append(tag("%", "set v = 1"))
        while depth:
            parts.append(rng.choice(texts))
            parts.append(tag("%", "endif"))
            depth -= 1
        parts.append(rng.choice(texts))
        out.append("".join(parts))
    return out


def random_expression_templates(count, seed):
    """Random expressions of the subset (fixed seed), printed and tested:
    Python's semantics (operators, truthiness, str() and repr(), undefined
    values, filters, tests, subscripts) against jinja2's."""
    import random
    rng = random.Random(seed)
    atoms = ["0", "1", "2", "-3", "7", "1.5", "-0.25", "1e3", "true", "false",
             "none", "''", "'a'", "'héllo'", "'Ab c '", "' x '", "[]", "[1, 2]",
             "['a', 'b']", "(1, 'x')", "{}", "{'a': 1, 'b': [2]}", "nothing",
             "messages", "messages[0]", "messages[0].content", "bos_token",
             "add_generation_prompt", "tools", "loop", "'3'", "[1, [2, 'é']]"]
    binops = ["+", "-", "*", "/", "//", "%", "**", "~", "==", "!=", "<", "<=",
              ">", ">=", "in", "not in", "and", "or"]
    filters = ["trim", "length", "count", "upper", "lower", "string", "list",
               "first", "last", "join", "join(', ')", "default('d')",
               "default('d', true)", "tojson", "items|list",
               "selectattr('role')|list", "rejectattr('role', 'equalto', 'user')|list",
               "replace('a', 'z')", "trim('x')", "d"]
    tests = ["defined", "undefined", "none", "string", "number", "integer",
             "float", "boolean", "true", "false", "mapping", "sequence",
             "iterable", "even", "odd", "divisibleby 3", "divisibleby(2)",
             "equalto 1", "eq('a')", "ne 2", "lt 3", "ge 1", "in [1, 'a']",
             "not none", "not defined"]
    def expr(depth):
        r = rng.random()
        if depth <= 0 or r < 0.3:
            return rng.choice(atoms)
        if r < 0.55:
            return "(" + expr(depth - 1) + " " + rng.choice(binops) + " " + expr(depth - 1) + ")"
        if r < 0.65:
            return "(" + expr(depth - 1) + ")|" + rng.choice(filters)
        if r < 0.72:
            return "(" + expr(depth - 1) + " is " + rng.choice(tests) + ")"
        if r < 0.8:
            return "(" + expr(depth - 1) + ")" + rng.choice(
                ["[0]", "[-1]", "[1:]", "[::-1]", "[:2]", "['a']", ".a", ".content", "[true]"])
        if r < 0.85:
            return "(not " + expr(depth - 1) + ")"
        if r < 0.9:
            return "(-" + expr(depth - 1) + ")"
        if r < 0.95:
            return "(" + expr(depth - 1) + " if " + expr(depth - 1) + " else " + expr(depth - 1) + ")"
        return "(" + expr(depth - 1) + ")." + rng.choice(
            ["strip()", "upper()", "startswith('a')", "get('a')", "replace('a', 'b')"])
    out = []
    for _ in range(count):
        e = expr(3)
        out.append("{{ " + e + " }}|{% if " + e + " %}T{% else %}F{% endif %}")
    return out


def random_statement_templates(count, seed):
    """Random nests of for/if/set/break/continue and namespaces (fixed
    seed): jinja2's scoping (a for body's per-iteration scope, if's none,
    loop variables, namespaces) and loop controls."""
    import random
    rng = random.Random(seed)
    names = ["a", "b", "x", "y", "ns.n", "loop.index", "loop.last", "nothing"]

    def value():
        return rng.choice(["1", "a", "b", "x", "y", "ns.n", "a ~ b", "x ~ 'z'",
                           "loop.index0", "(a or 0) + 1", "messages|length"])

    def body(depth, in_loop):
        out = []
        for _ in range(rng.randint(1, 4)):
            r = rng.random()
            if r < 0.25:
                out.append("{{ " + rng.choice(names) + " }},")
            elif r < 0.45:
                out.append("{% set " + rng.choice(["a", "b", "x"]) + " = " + value() + " %}")
            elif r < 0.55:
                out.append("{% set ns.n = " + value() + " %}")
            elif r < 0.7 and depth:
                var = rng.choice(["x", "y", "m"])
                seq = rng.choice(["[1, 2, 3]", "messages", "range(3)", "'ab'", "[]"])
                cond = rng.choice(["", "", " if " + var + " != 2"])
                tail = ("{% else %}E" if rng.random() < 0.3 else "")
                out.append("{% for " + var + " in " + seq + cond + " %}" +
                           body(depth - 1, True) + tail + "{% endfor %}")
            elif r < 0.85 and depth:
                cond = rng.choice(["a", "b == 1", "loop.first", "x", "ns.n", "not y"])
                els = ("{% else %}" + body(depth - 1, in_loop)) if rng.random() < 0.5 else ""
                out.append("{% if " + cond + " %}" + body(depth - 1, in_loop) + els + "{% endif %}")
            elif in_loop:
                out.append(rng.choice(["{% break %}", "{% continue %}"]))
            else:
                out.append("|")
        return "".join(out)

    return ["{% set ns = namespace(n=0) %}" + body(3, False) + "{{ a }};{{ b }};{{ x }};{{ ns.n }}"
            for _ in range(count)]


def random_literal_templates(count, seed):
    """Random string and number literals (fixed seed): escapes, quotes,
    Unicode, exponents, against jinja2's lexer."""
    import random
    rng = random.Random(seed)
    pieces = ["a", " ", "\\n", "\\t", "\\\\", "\\'", '\\"', "\\x41", "\\x4", "\\u00e9",
              "\\u12", "\\U0001F600", "\\101", "\\8", "\\0", "\\q", "\\\n", "é", "日",
              "}}", "%}", "{{", "\\a", "\\b", "\\f", "\\v", "\\ud800", "\\U00110000", "'", '"']
    numbers = ["0", "00", "1", "10", "1.5", "1e3", "1E3", "1.5e-3", "2e+2", "1.", ".5",
               "1_0", "0x1", "1e", "12345678901234567890", "9223372036854775807", "1.0e400"]
    out = []
    for _ in range(count):
        if rng.random() < 0.7:
            quote = rng.choice(["'", '"'])
            body = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
            out.append("{{ " + quote + body + quote + " }}|{{ (" + quote + body + quote + ")|length }}")
        else:
            n = rng.choice(numbers)
            out.append("{{ " + n + " }}|{{ -" + n + " }}|{{ " + n + " * 2 }}")
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--driver", required=True)
    parser.add_argument("--work", required=True)
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)

    env = make_env()
    cases, expected, names = [], [], []
    for group in (REAL, SYNTHETIC):
        for tname, template in group.items():
            for mname, messages in MESSAGES.items():
                for gen in (False, True):
                    cases.append({"template": template, "messages": messages,
                                  "bos_token": "<s>", "eos_token": "</s>",
                                  "add_generation_prompt": gen})
                    expected.append(render_jinja(env, template, messages, "<s>", "</s>", gen))
                    names.append(f"{tname} / {mname} / add_generation_prompt={gen}")
    for k, template in enumerate(random_whitespace_templates(1000, 16)):
        messages = MESSAGES["user-assistant-user"]
        cases.append({"template": template, "messages": messages,
                      "bos_token": "<s>", "eos_token": "</s>",
                      "add_generation_prompt": False})
        expected.append(render_jinja(env, template, messages, "<s>", "</s>", False))
        names.append(f"whitespace {k}: {template!r}")
    for k, template in enumerate(random_expression_templates(3000, 5)):
        messages = MESSAGES["user-assistant-user"]
        cases.append({"template": template, "messages": messages,
                      "bos_token": "<s>", "eos_token": "</s>",
                      "add_generation_prompt": True})
        expected.append(render_jinja(env, template, messages, "<s>", "</s>", True))
        names.append(f"expression {k}: {template!r}")
    for k, template in enumerate(random_statement_templates(1000, 7)):
        messages = MESSAGES["user-assistant-user"]
        cases.append({"template": template, "messages": messages,
                      "bos_token": "<s>", "eos_token": "</s>",
                      "add_generation_prompt": False})
        expected.append(render_jinja(env, template, messages, "<s>", "</s>", False))
        names.append(f"statements {k}: {template!r}")
    for k, template in enumerate(random_literal_templates(1000, 3)):
        messages = MESSAGES["one-user"]
        cases.append({"template": template, "messages": messages,
                      "bos_token": "<s>", "eos_token": "</s>",
                      "add_generation_prompt": False})
        expected.append(render_jinja(env, template, messages, "<s>", "</s>", False))
        names.append(f"literal {k}: {template!r}")
    for tname, (template, message) in UNSUPPORTED.items():
        cases.append({"template": template, "messages": UPPER_INPUT,
                      "bos_token": "<s>", "eos_token": "</s>",
                      "add_generation_prompt": False})
        expected.append(("unsupported", message))
        names.append(f"unsupported {tname}")

    path = os.path.join(args.work, "cases.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False)
    out = subprocess.run([args.driver, "--batch", path], check=True,
                         stdout=subprocess.PIPE).stdout
    results = json.loads(out.decode("utf-8"))
    assert len(results) == len(cases)

    failures = 0
    counts = {"ok": 0, "raised": 0, "error": 0, "unsupported": 0}
    declined = 0
    for name, (kind, want), got in zip(names, expected, results):
        counts[kind] += 1
        good = False
        if kind == "ok":
            good = got.get("ok") == want
        elif kind == "raised":
            good = "error" in got and got["error"].endswith(
                "the template raised an exception: " + want)
        elif kind == "error":
            good = "error" in got
        else:
            good = got.get("error") == want
        if (not good and name.startswith(("expression ", "literal "))
                and any(d in got.get("error", "") for d in DECLINED)):
            declined += 1  # outside the subset, said so: counted, not failed
            print(f"declined {name}: {got['error']}")
            continue
        if not good:
            failures += 1
            print(f"MISMATCH {name}:\n  jinja2: {kind} {want!r}\n  ours:   {got!r}")
    print(f"{len(cases)} cases: {counts['ok']} renderings, {counts['raised']} "
          f"raise_exception, {counts['error']} other errors, "
          f"{counts['unsupported']} unsupported; {declined} random expressions "
          f"and literals declined as unsupported; {failures} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
