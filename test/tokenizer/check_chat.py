#!/usr/bin/env python3
"""`--chat` end to end, against transformers' way of applying a chat template.

A tiny model with a Mistral-style tokenizer trained here (check_tokenizer's)
gets real Mixtral/Mistral tokenizer_config.json files. For each, the
reference renders the template with jinja2 configured as transformers'
apply_chat_template configures it (a sandboxed environment with trim_blocks
and lstrip_blocks, one user message, add_generation_prompt), tokenises the
rendering with PyPI's tokenizers without adding specials (as transformers
does: the template writes the BOS), and decodes the ids `--tokens` generates
from those ids. The binary's `--chat MESSAGE` must stream exactly that text.
Also: chat_template.jinja wins over tokenizer_config.json (transformers 5),
--chat-template=PATH, a template our subset refuses (a warning, --chat off),
and --chat-template=PATH refusing the same template (an error).
"""
import argparse
import json
import os
import subprocess
import sys

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_tokenizer as ct  # noqa: E402
from moe_ref import generate  # noqa: E402

MESSAGES = ["Hello world", "Größe? 数字 👋\n\ttabs  and\nnewlines", ""]


def render(template, message, bos="<s>", eos="</s>"):
    def raise_exception(text):
        raise jinja2.exceptions.TemplateError(text)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=[{"role": "user", "content": message}], bos_token=bos, eos_token=eos,
        add_generation_prompt=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--work", required=True)
    p.add_argument("--compiler", required=True)
    p.add_argument("--inputs", required=True, help="test/Frontends/hf/Inputs/chat")
    args = p.parse_args()
    c = ct.Checker(args)
    model = os.path.abspath(os.path.join(args.work, "model"))
    generate.generate(model, "tiny", seed=3, overrides={"vocab_size": ct.VOCAB})
    tok, _, ids = ct.train_hf("mistral-legacy")
    tok.save(os.path.join(model, "tokenizer.json"))
    ref = ct.HF(tok)

    def model_dir(name, config=None, jinja=None):
        d = os.path.join(args.work, name)
        os.makedirs(d, exist_ok=True)
        for f in ("model.safetensors", "config.json", "tokenizer.json"):
            os.symlink(os.path.join(model, f), os.path.join(d, f))
        if config:
            with open(os.path.join(args.inputs, config)) as f:
                tc = json.load(f)
            with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
                json.dump(tc, f)
        if jinja:
            with open(os.path.join(d, "chat_template.jinja"), "w") as f:
                f.write(jinja)
        return d

    def compile(d, *extra):
        binary = d + ".bin"
        r = c.run([args.compiler, d, "-o", binary, "--max-seq", "256", "--quiet", *extra])
        return binary, r

    def check_chat(name, binary, template):
        for i, message in enumerate(MESSAGES):
            prompt = ref.encode(render(template, message))
            common = ["-n", "12", "--threads", "1", "--temperature", "3", "--seed", str(i)]
            gen = c.run([binary, "--tokens", ",".join(map(str, prompt))] + common)
            chat = c.run([binary, "--chat", message, "--ignore-eos"] + common)
            if gen.returncode or chat.returncode:
                c.expect(f"{name} chat #{i} runs", (gen.stderr, chat.stderr), "")
                continue
            generated = [int(t) for t in gen.stdout.split()]
            c.expect(f"{name} chat #{i}", chat.stdout.decode("utf-8", "surrogateescape"),
                     ref.decode(generated) + "\n")

    templates = {}
    for config in ("mixtral-tokenizer_config.json", "mixtral-original-tokenizer_config.json",
                   "mistral-v0.3-tokenizer_config.json"):
        with open(os.path.join(args.inputs, config)) as f:
            templates[config] = json.load(f)["chat_template"]
        d = model_dir(config.replace("-tokenizer_config.json", ""), config=config)
        binary, r = compile(d)
        c.expect(f"{config} compiles", (r.returncode, r.stderr.decode()), (0, ""))
        check_chat(config, binary, templates[config])

    # transformers 5's chat_template.jinja is used before tokenizer_config.json.
    v3 = templates["mistral-v0.3-tokenizer_config.json"]
    d = model_dir("jinja-first", config="mixtral-tokenizer_config.json", jinja=v3)
    binary, r = compile(d)
    c.expect("chat_template.jinja compiles", r.returncode, 0)
    check_chat("chat_template.jinja", binary, v3)

    # --chat-template=PATH (a template file) over the directory's own.
    path = os.path.join(args.work, "v3.jinja")
    with open(path, "w") as f:
        f.write(v3)
    d = model_dir("given", config="mixtral-tokenizer_config.json")
    binary, r = compile(d, "--chat-template=" + path)
    c.expect("--chat-template=PATH compiles", r.returncode, 0)
    check_chat("--chat-template=PATH", binary, v3)

    # A template outside the subset: a warning naming it, and --chat off.
    d = model_dir("macro", config="macro.json")
    binary, r = compile(d)
    print("macro warning:", r.stderr.decode().strip())
    c.expect("unsupported template still compiles", r.returncode, 0)
    chat = c.run([binary, "--chat", "hi"])
    print("macro --chat:", chat.returncode, chat.stderr.decode().strip())
    # ... and an error when it is asked for by name.
    binary, r = compile(d, "--chat-template=" + os.path.join(d, "tokenizer_config.json"))
    print("macro given:", r.returncode, r.stderr.decode().strip())
    # --chat-template=none: no template even where there is one.
    d = model_dir("none", config="mixtral-tokenizer_config.json")
    binary, r = compile(d, "--chat-template=none")
    chat = c.run([binary, "--chat", "hi"])
    print("none --chat:", chat.returncode, chat.stderr.decode().strip())

    print(f"{c.checks} checks, {c.failures} failed")
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
