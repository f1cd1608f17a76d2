"""A GGUF for llama.cpp from one of our generated Hugging Face Mixtral models
(bench only: needs PyPI's `gguf`, and `llama_cpp` for --verify; neither is a
project dependency -- run it with /work/bench-venv/bin/python).

    gguf_mini.py MODEL_DIR OUT.gguf [--type f32|f16|q8_0|q4_0|q4_1]
                 [--quantize-only all|experts]
    gguf_mini.py MODEL_DIR --verify [--tokens 1,17,42,7,99] [--threads 2]

The file follows llama.cpp's own converter (convert_hf_to_gguf.py) for
Mixtral: general.architecture = llama, llama.expert_count /
expert_used_count, the experts of each layer stacked as
blk.N.ffn_{gate,up,down}_exps ([E, I, H] / [E, H, I]), the router
blk.N.ffn_gate_inp and every rank-1 norm in F32, and q_proj / k_proj rows
permuted so that llama.cpp's RoPE (adjacent pairs) computes HF's rotate-half.
The tokenizer is a stand-in SPM vocabulary of vocab_size pieces (<unk>,
<s>, </s>, then "t3", "t4", ...): enough for llama.cpp to load the model
and run token ids, which is all the benchmarks do.

--type picks the storage of the rank-2 weights that --quantize-only selects
(the selection of moe_ref.quant.is_quantized, as moe-compile --quantize
uses: "all" = every rank-2 weight but the router gates; "experts"); the
others keep the model's own dtype (F32 or F16; bf16 becomes F32). Quantised
blocks come from gguf.quants (llama.cpp's Python format code), independent
of moe_ref.quant.

--verify writes the F32 GGUF of MODEL_DIR to a temporary directory, runs the
prompt through llama.cpp (llama-cpp-python) and compares every row of its
logits with the numpy reference (float64): it prints the max relative
difference max|llama - ref| / max|ref| over the rows, the proof that the
conversion (names, stacking, permutation, hyper-parameters) is right; once
with an f32 KV cache (the figure --max-rel-diff checks) and once with
llama.cpp's default f16 cache.
"""

import argparse
import json
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))

from moe_ref import configs, quant, safetensors  # noqa: E402

TYPES = ("f32", "f16", "q8_0", "q4_0", "q4_1")


def permute_for_llama_rope(w, heads):
    """HF's rotate-half q/k rows -> llama.cpp's interleaved pairs, per head:
    row i of the first half and row i of the second half become rows 2i and
    2i + 1 (convert_hf_to_gguf.py's LlamaModel.permute)."""
    return (w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def read_header_dtypes(model_dir):
    out = {}
    for fname in safetensors.model_files(model_dir):
        header, _ = safetensors.read_header(os.path.join(model_dir, fname))
        out.update({n: info["dtype"] for n, info in header.items()})
    return out


def write_gguf(model_dir, out, wtype="f32", quantize_only="all", progress=None):
    """Writes MODEL_DIR as a llama.cpp GGUF at `out` (see the module doc)."""
    import gguf

    Q = gguf.GGMLQuantizationType
    qtypes = {"q8_0": Q.Q8_0, "q4_0": Q.Q4_0, "q4_1": Q.Q4_1}
    file_types = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                  "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
                  "q4_1": gguf.LlamaFileType.MOSTLY_Q4_1}
    with open(os.path.join(model_dir, "config.json")) as f:
        c = json.load(f)
    H, nH, nKV = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    d, E, L, V = configs.head_dim(c), c["num_local_experts"], c["num_hidden_layers"], c["vocab_size"]
    if c.get("sliding_window") is not None:
        raise ValueError(f"{model_dir}: sliding_window {c['sliding_window']} is not written "
                         "(llama.cpp's llama architecture has full attention)")
    w = safetensors.load_model_dir(model_dir)
    src_dtypes = read_header_dtypes(model_dir)

    wr = gguf.GGUFWriter(out, "llama")
    wr.add_name(os.path.basename(os.path.normpath(model_dir)))
    wr.add_context_length(c["max_position_embeddings"])
    wr.add_embedding_length(H)
    wr.add_block_count(L)
    wr.add_feed_forward_length(c["intermediate_size"])
    wr.add_head_count(nH)
    wr.add_head_count_kv(nKV)
    wr.add_key_length(d)
    wr.add_value_length(d)
    wr.add_rope_dimension_count(d)
    wr.add_rope_freq_base(float(c["rope_theta"]))
    wr.add_layer_norm_rms_eps(float(c["rms_norm_eps"]))
    wr.add_expert_count(E)
    wr.add_expert_used_count(c["num_experts_per_tok"])
    wr.add_vocab_size(V)
    wr.add_file_type(file_types[wtype])
    wr.add_tokenizer_model("llama")
    tokens = ["<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(3, V)]
    wr.add_token_list(tokens[:V])
    wr.add_token_scores([0.0] * V)
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    wr.add_token_types((types + [gguf.TokenType.NORMAL] * V)[:V])
    wr.add_bos_token_id(c.get("bos_token_id", 1))
    wr.add_eos_token_id(c.get("eos_token_id", 2))
    wr.add_add_bos_token(False)

    def add(gname, arrays, hf_names, force_f32=False):
        """arrays: the float32 weight (stacked for experts); hf_names: the HF
        tensors it is made of, which decide quantisation and own dtype."""
        selected = all(quant.is_quantized(n, w[n].shape, quantize_only) for n in hf_names)
        if arrays.ndim == 1 or force_f32:
            data, raw = arrays.astype(np.float32), None
        elif wtype in qtypes and selected:
            data, raw = gguf.quants.quantize(arrays.astype(np.float32), qtypes[wtype]), qtypes[wtype]
        elif wtype == "f16" or (wtype in qtypes and src_dtypes[hf_names[0]] == "F16"):
            data, raw = arrays.astype(np.float16), None
        else:
            data, raw = arrays.astype(np.float32), None
        if raw is None:
            wr.add_tensor(gname, data)
        else:
            wr.add_tensor(gname, data, raw_dtype=raw)

    add("token_embd.weight", w["model.embed_tokens.weight"], ["model.embed_tokens.weight"])
    for l in range(L):
        if progress:
            progress(f"layer {l}")
        p = f"model.layers.{l}."
        a = p + "self_attn."
        add(f"blk.{l}.attn_norm.weight", w[p + "input_layernorm.weight"], [p + "input_layernorm.weight"])
        add(f"blk.{l}.attn_q.weight", permute_for_llama_rope(w[a + "q_proj.weight"], nH), [a + "q_proj.weight"])
        add(f"blk.{l}.attn_k.weight", permute_for_llama_rope(w[a + "k_proj.weight"], nKV), [a + "k_proj.weight"])
        add(f"blk.{l}.attn_v.weight", w[a + "v_proj.weight"], [a + "v_proj.weight"])
        add(f"blk.{l}.attn_output.weight", w[a + "o_proj.weight"], [a + "o_proj.weight"])
        add(f"blk.{l}.ffn_norm.weight", w[p + "post_attention_layernorm.weight"],
            [p + "post_attention_layernorm.weight"])
        gate = p + "block_sparse_moe.gate.weight"
        add(f"blk.{l}.ffn_gate_inp.weight", w[gate], [gate], force_f32=True)
        for gname, hf in (("ffn_gate_exps", "w1"), ("ffn_down_exps", "w2"), ("ffn_up_exps", "w3")):
            names = [p + f"block_sparse_moe.experts.{e}.{hf}.weight" for e in range(E)]
            add(f"blk.{l}.{gname}.weight", np.stack([w[n] for n in names]), names)
    add("output_norm.weight", w["model.norm.weight"], ["model.norm.weight"])
    head = "model.embed_tokens.weight" if c.get("tie_word_embeddings", False) else "lm_head.weight"
    if head == "lm_head.weight":
        add("output.weight", w[head], [head])
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


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
