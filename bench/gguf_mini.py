"""A GGUF for llama.cpp from one of our generated Hugging Face Mixtral models
(bench only: needs PyPI's `gguf`, and `llama_cpp` for --verify; neither is a
project dependency -- run it with /work/bench-venv/bin/python).

    gguf_mini.py MODEL_DIR OUT.gguf [--type f32|f16|bf16|q8_0|q4_0|q4_1|q4_k|q6_k|q4_k_m]
                 [--quantize-only all|experts]
    gguf_mini.py MODEL_DIR --verify [--tokens 1,17,42,7,99] [--threads 2]

The writer is moe_ref.gguf_writer (the test suite's too; its doc says what
the file holds): llama.cpp's converter's layout for Mixtral, q and k rows
permuted for llama.cpp's RoPE, a stand-in SPM vocabulary.

--verify writes the F32 GGUF of MODEL_DIR to a temporary directory, runs the
prompt through llama.cpp (llama-cpp-python) and compares every row of its
logits with the numpy reference (float64): it prints the max relative
difference max|llama - ref| / max|ref| over the rows, the proof that the
conversion (names, stacking, permutation, hyper-parameters) is right; once
with an f32 KV cache (the figure --max-rel-diff checks) and once with
llama.cpp's default f16 cache.
"""

import argparse
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))

from moe_ref import quant  # noqa: E402
from moe_ref.gguf_writer import TYPES, write_gguf  # noqa: E402


def llama_logits(path, tokens, threads=2, f32_cache=True):
    """llama.cpp's logits for every row of one prefill of `tokens`; with
    f32_cache its KV cache holds float32 (llama.cpp's default is f16, which
    alone moves the logits by ~1e-4 relative)."""
    from llama_cpp import Llama
    kv = {"type_k": 0, "type_v": 0} if f32_cache else {}  # 0: GGML_TYPE_F32
    llm = Llama(model_path=path, n_ctx=max(512, len(tokens) + 8), n_batch=512,
                n_threads=threads, n_threads_batch=threads, logits_all=True,
                verbose=False, **kv)
    llm.eval(tokens)
    return np.array(llm.scores[:len(tokens)], dtype=np.float64)


def verify(model_dir, tokens, threads):
    from moe_ref.reference import Reference

    want = Reference(model_dir, np.float64).prefill(tokens)[0]
    worst = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "f32.gguf")
        write_gguf(model_dir, path, "f32")
        for f32_cache in (True, False):
            got = llama_logits(path, tokens, threads, f32_cache)
            rel = np.max(np.abs(got - want), axis=1) / np.max(np.abs(want), axis=1)
            same_top1 = int(np.sum(np.argmax(got, axis=1) == np.argmax(want, axis=1)))
            cache = "f32" if f32_cache else "f16 (llama.cpp's default)"
            print(f"llama.cpp F32 GGUF ({cache} KV cache) vs numpy reference on {model_dir}, "
                  f"{len(tokens)} tokens: max rel logit diff {rel.max():.2e} (rows: "
                  f"{' '.join(f'{r:.1e}' for r in rel)}); argmax equal on {same_top1}/{len(tokens)}")
            worst[f32_cache] = float(rel.max())
    return worst[True]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir")
    p.add_argument("out", nargs="?", help="the GGUF to write (not with --verify)")
    p.add_argument("--type", choices=TYPES, default="f32",
                   help="storage of the selected rank-2 weights (default f32)")
    p.add_argument("--quantize-only", choices=quant.SELECTIONS, default="all",
                   help="which rank-2 weights --type applies to (default all)")
    p.add_argument("--verify", action="store_true",
                   help="compare llama.cpp's logits on the F32 GGUF with the numpy reference")
    p.add_argument("--tokens", default="1,17,42,7,99,3,250,8", help="prompt for --verify")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-rel-diff", type=float, default=1e-3,
                   help="--verify fails above this (default 1e-3)")
    args = p.parse_args()
    if args.verify:
        rel = verify(args.model_dir, [int(t) for t in args.tokens.split(",")], args.threads)
        if rel > args.max_rel_diff:
            sys.exit(f"gguf_mini: llama.cpp and the reference differ by {rel:.2e} > {args.max_rel_diff}")
        return
    if not args.out:
        p.error("give OUT.gguf (or --verify)")
    write_gguf(args.model_dir, args.out, args.type, args.quantize_only,
               progress=lambda m: print(m, file=sys.stderr, flush=True))


if __name__ == "__main__":
    main()
