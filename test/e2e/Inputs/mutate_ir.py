"""Rewrites moe IR text with one defect, for hostile-mlir.test:
    mutate_ir.py CASE IN OUT"""

import re
import sys

CASES = {
    # moe.model says 128 tokens of vocabulary; the logits are 256 wide.
    "vocab": (r"vocab_size = 256,", "vocab_size = 128,"),
    # moe.model says 3 layers; @forward has 2 caches.
    "layers": (r"num_layers = 2,", "num_layers = 3,"),
    # moe.model says hidden 32; the embedding table is 64 wide.
    "hidden": (r"hidden_size = 64,", "hidden_size = 32,"),
    # The embedding looks up the positions instead of the token ids.
    "embedding-positions": (r"(moe\.embedding %\w+)\[%arg0\]", r"\1[%arg1]"),
    # The combine reads rows through the token ids instead of a permutation.
    "combine-perm": (r"(moe\.expert_combine %\w+)\[%perm\]", r"\1[%arg0]"),
    # The gathering GEMM gathers through the positions.
    "gather-perm": (r"(moe\.grouped_matmul %\w+)\[%perm\] gather", r"\1[%arg1] gather"),
    # The manifest points into a system directory, at a system binary.
    "weight-dir-bin": (r'moe\.weight_dir = "[^"]*"', 'moe.weight_dir = "/bin"'),
    "weight-file-sh": (r'(moe\.weight_source "model\.norm\.weight" in )"[^"]*"', r'\1"sh"'),
    # A relative weight directory.
    "weight-dir-relative": (r'moe\.weight_dir = "[^"]*"', 'moe.weight_dir = "bin"'),
    # The last weight of the file moved by half an element.
    "offset-misaligned": (r'(moe\.weight_source "lm_head\.weight" in "[^"]*" at )(\d+)',
                          lambda m: m.group(1) + str(int(m.group(2)) + 2)),
    # Another tensor's bytes (an overlap with the embedding).
    "offset-overlap": (r'(moe\.weight_source "model\.norm\.weight" in "[^"]*" at )(\d+)',
                       lambda m: m.group(1) + "4584"),
}


NORMS = r'(moe\.weight_source "model\.layers\.0\.{}_layernorm\.weight" in "[^"]*" at )(\d+)'


def swap_norms(text):
    """Layer 0's two norm weights swap places: aligned, no overlap, but not
    where the file has them."""
    a = re.search(NORMS.format("input"), text)
    b = re.search(NORMS.format("post_attention"), text)
    text = re.sub(NORMS.format("input"), lambda m: m.group(1) + b.group(2), text)
    return re.sub(NORMS.format("post_attention"), lambda m: m.group(1) + a.group(2), text)


def logits_rows(text):
    """Returns the first expert down projection (k rows a token, 64 wide) as
    the logits, with a vocabulary of 64 and the layer-0 q_proj (64 x 64) as
    the embedding table, so that every type and count agrees."""
    down = re.search(r"(%\w+) = moe\.grouped_matmul [^\n]* parts 1 ", text).group(1)
    text = text.replace("vocab_size = 256,", "vocab_size = 64,")
    text = re.sub(r'moe\.weight "model\.embed_tokens\.weight" : tensor<256x64xf32>',
                  'moe.weight "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xf32>', text)
    text = re.sub(r"(moe\.embedding [^\n]*: )tensor<256x64xf32>", r"\1tensor<64x64xf32>", text)
    text = text.replace("-> (tensor<?x256xf32>,", "-> (tensor<?x64xf32>,")
    return re.sub(r"return %\w+, ([^\n]*): tensor<\?x256xf32>",
                  lambda m: f"return {down}, {m.group(1)}: tensor<?x64xf32>", text)


def main(case, src, dst):
    with open(src) as f:
        text = f.read()
    if case in ("offset-swap", "logits-rows"):
        with open(dst, "w") as f:
            f.write(swap_norms(text) if case == "offset-swap" else logits_rows(text))
        return
    pattern, repl = CASES[case]
    text, n = re.subn(pattern, repl, text, count=1)
    if n != 1:
        sys.exit(f"{case}: pattern not found")
    with open(dst, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main(*sys.argv[1:])
