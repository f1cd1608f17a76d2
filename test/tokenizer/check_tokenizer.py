"""Our tokenizers against the reference implementations, token for token.

Trains tokenizers inside the test with PyPI's `tokenizers` (a Mistral-style
BPE with byte fallback, in both of its forms: the legacy Prepend+Replace
normaliser and the Metaspace pre-tokeniser; a Metaspace BPE without byte
fallback, unknown characters as <unk>; a ByteLevel BPE with Llama 3's Split
regex; a GPT-2-style ByteLevel with its own regex) and `sentencepiece`
(a BPE and a unigram .model), writes them beside a generated tiny model,
compiles one binary per tokenizer with moe-compile, and checks:

- `--tokenize TEXT` equals the reference's ids (BOS first, as configured)
  over a corpus of unicode, emoji, CJK, combining marks, runs of spaces,
  tabs and newlines, characters outside the vocabulary (byte fallback),
  special tokens inside the text, the empty string and a ~100 KB input;
- `--detokenize IDS` (decoded through the streaming decoder, piece by
  piece) equals the reference's decode of random id sequences, special
  tokens skipped;
- the text `--prompt` streams equals the reference's decode of the ids that
  `--tokens` generates from the same prompt ids, with sampling;
- generation stops at EOS (config.json's eos_token_id) unless --ignore-eos.

    check_tokenizer.py --work DIR --compiler PATH/moe-compile
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time

import sentencepiece as spm
from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models,
                        normalizers, pre_tokenizers, trainers)

from moe_ref import generate

VOCAB = 1024  # the model's vocabulary: more than any tokenizer here

TRAIN = [
    "The quick brown fox jumps over the lazy dog.",
    "Mixture-of-experts models route each token to a few experts.",
    "Hello world! Hello there, general Kenobi.",
    "def forward(self, x):\n    return self.w2(silu(self.w1(x)) * self.w3(x))\n",
    "Ümlaute und Akzente: café, naïve, façade, Größe.",
    "数字 123 4567 and 89.",
    "tabs\tand  double  spaces   and\n\nnewlines",
] * 20

GPT2_PATTERN = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"
                r"|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def corpus(specials):
    s0, s1 = specials[0], specials[1]
    # ~100 KB (under Linux's 128 KB limit on one argument).
    rng = random.Random(7)
    pieces, size = [], 0
    while size < 100000:
        pieces.append(rng.choice(["hello ", "wörld ", "🙂", "\t", "\n\n", "  ", "数字",
                                  "e\u0301", "Zzz.", s1, "x" * 9, "123 ", "Ω√", " the"]))
        size += len(pieces[-1].encode())
    long_text = "".join(pieces)
    return [
        "",
        " ",
        "hello",
        "Hello world!",
        " leading space",
        "trailing space ",
        "   three leading",
        "a  b   c    d",
        "tabs\tand\t\ttabs",
        "new\nlines\n\n\nand\r\nCRLF",
        " \t \n mixed \n\t ",
        "café naïve Größe",
        "e\u0301 combining a\u0308 marks o\u0302\u0323",
        "emoji 🙂🚀 and 👩‍👩‍👧 family",
        "中文字符 日本語 한국어",
        "Ω≈ç√∫ ∑ outside ⟨the⟩ vocabulary ☃",
        "\u00a0non-breaking\u00a0space",
        f"{s0}",
        f"{s0}hello{s1}",
        f"text {s0} between {s1} specials",
        f"{s0} {s0}{s0}  {s1}",
        f"almost {s0[:-1]} special",
        "def f(x):\n    return x  # comment\n",
        "hello wörld, wörld.wörld",
        "a <mask> b  <mask>\t\tc<mask>",
        "numbers 0 12 345 6789 3.14159 1e-5",
        "it's we're they've I'm you'll he'd",
        "\U0001F600\U0001F601 \U00010348 gothic",
        long_text,
    ]


def with_byte_vocab(tok, specials):
    """A trained BPE's vocabulary with SentencePiece's byte pieces added (ids
    after the specials), as Mistral's tokenizer.json has them."""
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    order = [p for p, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    new = {}
    for p in specials + [f"<0x{b:02X}>" for b in range(256)] + order:
        new.setdefault(p, len(new))
    data["model"]["vocab"] = new
    for t in data["added_tokens"]:
        t["id"] = new[t["content"]]
    return Tokenizer.from_str(json.dumps(data))


def train_hf(kind):
    if kind in ("mistral-legacy", "mistral-metaspace"):
        specials = ["<unk>", "<s>", "</s>"]
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
        if kind == "mistral-legacy":
            tok.normalizer = normalizers.Sequence(
                [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
            tok.decoder = decoders.Sequence([
                decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                decoders.Strip(" ", 1, 0)])
        else:
            tok.pre_tokenizer = pre_tokenizers.Metaspace("▁", prepend_scheme="first",
                                                         split=True)
            tok.decoder = decoders.Sequence([
                decoders.ByteFallback(), decoders.Metaspace("▁", prepend_scheme="first")])
        trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=specials,
                                      limit_alphabet=60, show_progress=False)
        tok.train_from_iterator(TRAIN, trainer)
        tok = with_byte_vocab(tok, specials)
        # Added tokens beyond the specials: one matched in the normalised
        # text (its content normalised too), one that takes the whitespace
        # beside it.
        tok.add_tokens([AddedToken("wörld", normalized=True)])
        tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True)])
        return tok, specials, {"bos": 1, "eos": 2}
    if kind == "unk-metaspace":
        # No byte fallback: characters outside the vocabulary are <unk>,
        # one per character (fuse_unk off).
        specials = ["<unk>", "<s>", "</s>"]
        tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=False))
        tok.pre_tokenizer = pre_tokenizers.Metaspace("▁", prepend_scheme="always",
                                                     split=False)
        tok.decoder = decoders.Metaspace("▁", prepend_scheme="always")
        trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                      limit_alphabet=50, show_progress=False)
        tok.train_from_iterator(TRAIN, trainer)
        return tok, specials, {"bos": 1, "eos": 2}
    specials = ["<|begin|>", "<|end|>", "<|pad|>"]
    tok = Tokenizer(models.BPE(ignore_merges=(kind == "bytelevel-split")))
    if kind == "bytelevel-split":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(TRAIN, trainer)
    return tok, specials, {"bos": 0, "eos": 1}


class HF:
    def __init__(self, tok):
        self.tok = tok

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids):
        return self.tok.decode(ids, skip_special_tokens=True)

    def size(self):
        return self.tok.get_vocab_size(with_added_tokens=True)


class SP:
    def __init__(self, proto):
        self.sp = spm.SentencePieceProcessor(model_proto=proto)

    def encode(self, text):
        return self.sp.encode(text)

    def decode(self, ids):
        # Ids past the model's pieces (the network's vocabulary is larger)
        # decode to nothing, as in tokenizers.
        return self.sp.decode([i for i in ids if i < self.sp.get_piece_size()])

    def size(self):
        return self.sp.get_piece_size()


def train_spm(kind):
    import io
    out = io.BytesIO()
    # "llama": as Llama's and Mistral's models are trained (no normalisation,
    # whitespace kept), for a GGUF file's tokenizer metadata.
    extra = dict(normalization_rule_name="identity", remove_extra_whitespaces=False) \
        if kind == "llama" else dict(user_defined_symbols=["<sep>"])
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAIN), model_writer=out,
        vocab_size=340 if kind == "unigram" else 400,
        model_type="bpe" if kind == "llama" else kind, byte_fallback=True,
        character_coverage=0.98, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2,
        **extra)
    return out.getvalue()


class Checker:
    def __init__(self, args):
        self.args = args
        self.failures = 0
        self.checks = 0

    def run(self, cmd, **kw):
        return subprocess.run(cmd, capture_output=True, check=False, **kw)

    def expect(self, what, ours, ref):
        self.checks += 1
        if ours != ref:
            self.failures += 1
            print(f"FAIL {what}:\n  ours {ours!r:.600}\n  ref  {ref!r:.600}")

    def compile(self, model, binary, tokenizer=None):
        cmd = [self.args.compiler, model, "-o", binary, "--max-seq", "256", "--quiet"]
        if tokenizer:
            cmd.append("--tokenizer=" + tokenizer)
        r = self.run(cmd)
        if r.returncode:
            sys.exit(f"moe-compile failed: {r.stderr.decode()}")

    def tokenize(self, binary, text):
        r = self.run([binary, "--tokenize", text])
        if r.returncode:
            return "error: " + r.stderr.decode()
        return [int(t) for t in r.stdout.split()]

    def check(self, name, binary, ref, specials, bos):
        for i, text in enumerate(corpus(specials)):
            self.expect(f"{name} tokenize #{i} {text[:40]!r}", self.tokenize(binary, text),
                        [bos] + ref.encode(text))
        # Random ids (specials, byte pieces, anything) decoded piece by piece.
        rng = random.Random(name)
        for trial in range(40):
            ids = [rng.randrange(ref.size()) for _ in range(rng.randrange(0, 120))]
            r = self.run([binary, "--detokenize", ",".join(map(str, ids))] if ids else
                         [binary, "--detokenize", ""])
            ours = r.stdout.decode("utf-8", "surrogateescape") if not r.returncode \
                else "error: " + r.stderr.decode()
            self.expect(f"{name} detokenize {ids}", ours, ref.decode(ids))
        # The round trip of the corpus through both.
        for i, text in enumerate(corpus(specials)[:-1]):
            ids = ref.encode(text)
            r = self.run([binary, "--detokenize", ",".join(map(str, ids))])
            self.expect(f"{name} round trip #{i}", r.stdout.decode("utf-8", "surrogateescape"),
                        ref.decode(ids))

    def streamed(self, name, binary, ref, bos):
        """--prompt's streamed text against the reference's decode of the ids
        --tokens generates from the same prompt ids (sampled, so that the ids
        are varied: byte pieces, specials, anything)."""
        prompt = "Hello world"
        ids = [bos] + ref.encode(prompt)
        for seed in range(3):
            # (200: the streaming decoder's window moves several times.)
            n = "200" if seed == 2 else "40"
            common = ["-n", n, "--temperature", "5", "--seed", str(seed), "--threads", "1"]
            gen = self.run([binary, "--tokens", ",".join(map(str, ids))] + common)
            text = self.run([binary, "--prompt", prompt, "--ignore-eos"] + common)
            if gen.returncode or text.returncode:
                self.expect(f"{name} generation seed {seed}", (gen.stderr, text.stderr), "")
                continue
            generated = [int(t) for t in gen.stdout.split()]
            self.expect(f"{name} streamed text seed {seed}",
                        text.stdout.decode("utf-8", "surrogateescape"),
                        ref.decode(generated) + "\n")


def write_hf(model, tok, name, extra):
    path = os.path.join(model, name)
    tok.save(path)
    return path


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--work", required=True)
    p.add_argument("--compiler", required=True)
    args = p.parse_args()
    start = time.time()
    c = Checker(args)
    model = os.path.abspath(os.path.join(args.work, "model"))
    generate.generate(model, "tiny", seed=3, overrides={"vocab_size": VOCAB})
    with open(os.path.join(model, "tokenizer_config.json"), "w") as f:
        json.dump({"add_bos_token": True}, f)

    cases = []
    for kind in ("mistral-legacy", "mistral-metaspace", "unk-metaspace", "bytelevel-split",
                 "bytelevel-gpt2"):
        tok, specials, ids = train_hf(kind)
        assert tok.get_vocab_size() <= VOCAB
        path = os.path.join(args.work, kind + ".json")
        tok.save(path)
        cases.append((kind, path, HF(tok), specials, ids["bos"]))
    for kind in ("bpe", "unigram"):
        proto = train_spm(kind)
        path = os.path.join(args.work, f"spm-{kind}.model")
        with open(path, "wb") as f:
            f.write(proto)
        cases.append(("spm-" + kind, path, SP(proto), ["<sep>", "<s>"], 1))

    # The first through the model directory (--tokenizer=auto), the others
    # through --tokenizer=PATH. config.json's bos_token_id is 1: the
    # byte-level ones use their own BOS id 0 through a copy of the config.
    for i, (kind, path, ref, specials, bos) in enumerate(cases):
        binary = os.path.join(args.work, kind + ".bin")
        if i == 0:
            shutil.copy(path, os.path.join(model, "tokenizer.json"))
            c.compile(model, binary)
        else:
            with open(os.path.join(model, "config.json")) as f:
                config = json.load(f)
            config["bos_token_id"] = bos
            config["eos_token_id"] = 2 if bos == 1 else 1
            d = os.path.join(args.work, "cfg-" + kind)
            os.makedirs(d, exist_ok=True)
            for f in ("model.safetensors", "tokenizer_config.json"):
                if not os.path.exists(os.path.join(d, f)):
                    os.symlink(os.path.join(model, f), os.path.join(d, f))
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(config, f)
            c.compile(d, binary, path)
        c.check(kind, binary, ref, specials, bos)
        c.streamed(kind, binary, ref, bos)

    # A GGUF file's "llama" tokenizer (pieces, scores, types from a
    # SentencePiece BPE), converted by moe-compile to BPE merges ranked by
    # score, against libsentencepiece on the model it came from: the ids,
    # and the text of the ids of a text. (Special
    # tokens in text are left out: the binary matches them as tokenizer.json
    # does, SentencePiece does not.)
    try:
        from moe_ref import gguf_writer
    except ImportError:
        gguf_writer = None
    if gguf_writer is not None:
        proto = train_spm("llama")
        spm_path = os.path.join(args.work, "llama.model")
        with open(spm_path, "wb") as f:
            f.write(proto)
        gguf_path = os.path.join(model, "model.gguf")
        gguf_writer.write_gguf(model, gguf_path, "f32", tokenizer=spm_path)
        binary = os.path.join(args.work, "gguf.bin")
        c.compile(gguf_path, binary)
        ref = SP(proto)
        for i, text in enumerate(corpus(["<s>", "</s>"])):
            if "<s>" in text or "</s>" in text:
                continue
            ids = ref.encode(text)
            c.expect(f"gguf tokenize #{i} {text[:40]!r}", c.tokenize(binary, text), [1] + ids)
            r = c.run([binary, "--detokenize", ",".join(map(str, ids))])
            c.expect(f"gguf round trip #{i}", r.stdout.decode("utf-8", "surrogateescape"),
                     ref.decode(ids))
        # (Not streamed(): decoding follows transformers' conversion, whose
        # text for stray byte pieces and <unk> is not SentencePiece's.)
        os.remove(gguf_path)

    # EOS: config.json's eos_token_id set to the id greedy decoding produces
    # at step 3; --prompt stops before it, --ignore-eos goes on.
    kind, _, ref, _, bos = cases[0]
    binary = os.path.join(args.work, kind + ".bin")
    prompt_ids = [bos] + ref.encode("Hello world")
    greedy = [int(t) for t in c.run([binary, "--tokens", ",".join(map(str, prompt_ids)),
                                     "-n", "12", "--threads", "1"]).stdout.split()]
    k = next(i for i in range(1, len(greedy)) if greedy[i] not in greedy[:i])
    eos_dir = os.path.join(args.work, "eos")
    os.makedirs(eos_dir, exist_ok=True)
    with open(os.path.join(model, "config.json")) as f:
        config = json.load(f)
    config["eos_token_id"] = [999, greedy[k]]
    with open(os.path.join(eos_dir, "config.json"), "w") as f:
        json.dump(config, f)
    for f in ("model.safetensors", "tokenizer_config.json", "tokenizer.json"):
        os.symlink(os.path.join(model, f), os.path.join(eos_dir, f))
    eos_bin = os.path.join(args.work, "eos.bin")
    c.compile(eos_dir, eos_bin)
    stop = c.run([eos_bin, "--prompt", "Hello world", "-n", "12", "--threads", "1"])
    c.expect("EOS stop", stop.stdout.decode(), ref.decode(greedy[:k]) + "\n")
    c.expect("EOS stop reported", b"decode: %d tokens" % k in stop.stderr, True)
    full = c.run([eos_bin, "--prompt", "Hello world", "-n", "12", "--threads", "1",
                  "--ignore-eos"])
    c.expect("--ignore-eos", full.stdout.decode(), ref.decode(greedy) + "\n")

    print(f"{c.checks} checks, {c.failures} failed ({time.time() - start:.1f} s)")
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
