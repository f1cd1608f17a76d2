"""Train a small Mistral-style tokenizer for a generated test model.

    python -m moe_ref.train_tokenizer --out MODEL_DIR [--vocab 512]

Writes MODEL_DIR/tokenizer.json (a BPE with byte fallback, SentencePiece's
"<0xNN>" byte pieces, and Mistral's normaliser Prepend("▁") +
Replace(" ", "▁") and decoder chain) and tokenizer_config.json
(add_bos_token), trained with PyPI's `tokenizers` on a small built-in
English corpus. The model's vocab_size must be at least --vocab (the
generator's --set vocab_size=N). Needs the test suite's Python
(build/pyenv), which has `tokenizers`.
"""

import argparse
import json
import os
import sys

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A mixture of experts routes every token to a few of its experts.",
    "Each expert is a small feed-forward network; the router picks two.",
    "Attention looks back over the tokens that came before.",
    "Compilers turn programs into faster programs.",
    "Once upon a time there was a model that could only say numbers.",
    "Now it reads text, and it writes text back, one piece at a time.",
]


def train(vocab_size):
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    specials = ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([
        decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
        decoders.Strip(" ", 1, 0)])
    # Room for the 256 byte pieces added below.
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 256, special_tokens=specials,
                                  show_progress=False)
    tok.train_from_iterator(CORPUS * 10, trainer)
    data = json.loads(tok.to_str())
    old = sorted(data["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {}
    for piece in specials + [f"<0x{b:02X}>" for b in range(256)] + [p for p, _ in old]:
        vocab.setdefault(piece, len(vocab))
    data["model"]["vocab"] = vocab
    for t in data["added_tokens"]:
        t["id"] = vocab[t["content"]]
    return Tokenizer.from_str(json.dumps(data))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m moe_ref.train_tokenizer",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the model directory")
    p.add_argument("--vocab", type=int, default=512)
    args = p.parse_args(argv)
    tok = train(args.vocab)
    if tok.get_vocab_size() > args.vocab:
        sys.exit(f"the tokenizer has {tok.get_vocab_size()} pieces, more than {args.vocab}")
    tok.save(os.path.join(args.out, "tokenizer.json"))
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump({"add_bos_token": True, "bos_token": "<s>", "eos_token": "</s>"}, f,
                  indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
