"""A GGUF file, as llama.cpp's converter writes Mixtral, from one of our
generated Hugging Face models: the test suite's GGUF inputs (issue 14) and
the benchmarks' llama.cpp inputs.

Needs PyPI's `gguf` (llama.cpp's own Python format code; scripts/setup.sh
installs it into the build's venv). The file follows convert_hf_to_gguf.py
for Mixtral:

* general.architecture = llama, llama.expert_count / expert_used_count;
* the experts of each layer stacked as blk.N.ffn_{gate,up,down}_exps
  ([E, I, H] / [E, H, I] row-major), or with `expert_layout="split"` as the
  older files have them, blk.N.ffn_{gate,up,down}.E.weight;
* the router blk.N.ffn_gate_inp and every rank-1 norm in F32;
* q_proj / k_proj rows permuted so that llama.cpp's RoPE (adjacent pairs)
  computes HF's rotate-half (permute_for_llama_rope).

Storage (`wtype`) of the rank-2 weights that `quantize_only` selects
(moe_ref.quant.is_quantized: "all" = every rank-2 weight but the router
gates, "experts"): f32, f16, bf16, q8_0, q4_0, q4_1 (blocks from
gguf.quants), q4_k, q5_k, q6_k (blocks from moe_ref.quant: gguf.quants
cannot make them, only read them), or q4_k_m, llama.cpp's Q4_K_M mix as
llama_tensor_get_type makes it for Mixtral (n_expert == 8): attn_k and
attn_v in Q8_0, attn_output in Q5_K, ffn_down and output in Q6_K, every
other selected weight (token_embd, attn_q, ffn_gate, ffn_up) in Q4_K.
(llama.cpp gives Q6_K to only some layers' ffn_down, use_more_bits; here
all of them, so that every layer exercises it.) Weights not
selected, or whose rows are not whole blocks, keep the model's dtype (F32,
F16 or BF16). The tokenizer is a stand-in SPM vocabulary (<unk>, <s>, </s>,
then "t3", "t4", ...), enough for llama.cpp to load the model and for the
importer to keep the tokenizer metadata.
"""

import json
import os

import numpy as np

from . import configs, quant, safetensors

TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q4_k", "q5_k", "q6_k", "q4_k_m")
LAYOUTS = ("stacked", "split")
# Block elements and bytes of the GGUF types written here.
_BLOCKS = {"q8_0": (32, 34), "q4_0": (32, 18), "q4_1": (32, 20), "q4_k": (256, 144),
           "q5_k": (256, 176), "q6_k": (256, 210)}


def permute_for_llama_rope(w, heads):
    """HF's rotate-half q/k rows -> llama.cpp's interleaved pairs, per head:
    row i of the first half and row i of the second half become rows 2i and
    2i + 1 (convert_hf_to_gguf.py's LlamaModel.permute)."""
    return (w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _header_dtypes(model_dir):
    out = {}
    for fname in safetensors.model_files(model_dir):
        header, _ = safetensors.read_header(os.path.join(model_dir, fname))
        out.update({n: info["dtype"] for n, info in header.items()})
    return out


def _kquant(arrays, fmt):
    """q4_k / q5_k / q6_k blocks of a float32 array (rows of whole blocks),
    from moe_ref.quant."""
    name = {"q4_k": "q4_K", "q5_k": "q5_K", "q6_k": "q6_K"}[fmt]
    rows = arrays.reshape(-1, arrays.shape[-1]).astype(np.float32)
    blocks = quant.quantize(rows, name)
    return np.ascontiguousarray(blocks).reshape(*arrays.shape[:-1], -1)


def tensor_type(gname, wtype):
    """The quantised type a selected weight gets under `wtype` (None: float)."""
    if wtype == "q4_k_m":
        if "attn_k." in gname or "attn_v." in gname:
            return "q8_0"
        if "attn_output." in gname:
            return "q5_k"
        if "ffn_down" in gname or gname == "output.weight":
            return "q6_k"
        return "q4_k"
    return wtype if wtype in _BLOCKS else None


def write_gguf(model_dir, out, wtype="f32", quantize_only="all", expert_layout="stacked",
               version=3, progress=None, tokenizer=None):
    """Writes MODEL_DIR as a llama.cpp GGUF at `out` (see the module doc).
    tokenizer: a SentencePiece .model whose pieces, scores and types go into
    the file's "llama" tokenizer metadata, as convert_hf_to_gguf.py writes
    them (default: placeholder tokens t3, t4, ...)."""
    import gguf

    if wtype not in TYPES:
        raise ValueError(f"unknown GGUF weight type {wtype!r}; one of {', '.join(TYPES)}")
    if expert_layout not in LAYOUTS:
        raise ValueError(f"unknown expert layout {expert_layout!r}")
    Q = gguf.GGMLQuantizationType
    qtypes = {"q8_0": Q.Q8_0, "q4_0": Q.Q4_0, "q4_1": Q.Q4_1, "q4_k": Q.Q4_K, "q5_k": Q.Q5_K,
              "q6_k": Q.Q6_K}
    file_types = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                  "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                  "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0, "q4_1": gguf.LlamaFileType.MOSTLY_Q4_1,
                  "q4_k": gguf.LlamaFileType.MOSTLY_Q4_K_S, "q5_k": gguf.LlamaFileType.MOSTLY_Q5_K_S,
                  "q6_k": gguf.LlamaFileType.MOSTLY_Q6_K,
                  "q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M}
    with open(os.path.join(model_dir, "config.json")) as f:
        c = json.load(f)
    H, nH, nKV = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    d, E, L, V = configs.head_dim(c), c["num_local_experts"], c["num_hidden_layers"], c["vocab_size"]
    w = safetensors.load_model_dir(model_dir)
    src_dtypes = _header_dtypes(model_dir)

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
    from .reference import rope_parameters
    rope = rope_parameters(c)
    wr.add_rope_freq_base(float(rope["rope_theta"]))
    if rope["rope_type"] == "linear":
        # llama.cpp's linear scaling (freq_scale = 1 / factor) is transformers'.
        wr.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        wr.add_rope_scaling_factor(float(rope["factor"]))
    elif rope["rope_type"] != "default":
        raise ValueError(f"{model_dir}: rope_type '{rope['rope_type']}' has no GGUF "
                         "mapping here (default and linear do)")
    wr.add_layer_norm_rms_eps(float(c["rms_norm_eps"]))
    wr.add_expert_count(E)
    wr.add_expert_used_count(c["num_experts_per_tok"])
    if c.get("sliding_window") is not None:
        # Not read by llama.cpp's llama architecture (full attention there);
        # moe-compile's importer honours it.
        wr.add_sliding_window(int(c["sliding_window"]))
    wr.add_vocab_size(V)
    wr.add_file_type(file_types[wtype])
    wr.add_tokenizer_model("llama")
    if tokenizer:
        import sentencepiece
        sp = sentencepiece.SentencePieceProcessor(model_file=tokenizer)
        T = gguf.TokenType
        n = sp.get_piece_size()
        if n > V:
            raise ValueError(f"{tokenizer} has {n} pieces, more than vocab_size {V}")
        wr.add_token_list([sp.id_to_piece(i) for i in range(n)])
        wr.add_token_scores([sp.get_score(i) for i in range(n)])
        wr.add_token_types([T.UNKNOWN if sp.is_unknown(i) else T.CONTROL if sp.is_control(i)
                            else T.BYTE if sp.is_byte(i) else T.UNUSED if sp.is_unused(i)
                            else T.NORMAL for i in range(n)])
        wr.add_unk_token_id(sp.unk_id())
        wr.add_bos_token_id(sp.bos_id())
        wr.add_eos_token_id(sp.eos_id())
        wr.add_add_bos_token(True)
        wr.add_add_space_prefix(True)
    else:
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
        qt = tensor_type(gname, wtype) if selected and arrays.ndim >= 2 and not force_f32 else None
        if qt is not None and arrays.shape[-1] % _BLOCKS[qt][0] != 0:
            qt = None  # rows that are not whole blocks keep the model's dtype
        own = src_dtypes[hf_names[0]]
        if qt in ("q4_k", "q5_k", "q6_k"):
            wr.add_tensor(gname, _kquant(arrays, qt), raw_dtype=qtypes[qt])
        elif qt is not None:
            wr.add_tensor(gname, gguf.quants.quantize(arrays.astype(np.float32), qtypes[qt]),
                          raw_dtype=qtypes[qt])
        elif arrays.ndim == 1 or force_f32:
            wr.add_tensor(gname, arrays.astype(np.float32))
        elif wtype == "f16" or (wtype != "f32" and wtype != "bf16" and own == "F16"):
            wr.add_tensor(gname, arrays.astype(np.float16))
        elif wtype == "bf16" or (wtype != "f32" and own == "BF16"):
            wr.add_tensor(gname, gguf.quants.quantize(arrays.astype(np.float32), Q.BF16),
                          raw_dtype=Q.BF16)
        else:
            wr.add_tensor(gname, arrays.astype(np.float32))

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
        for gname, hf in (("ffn_gate", "w1"), ("ffn_down", "w2"), ("ffn_up", "w3")):
            names = [p + f"block_sparse_moe.experts.{e}.{hf}.weight" for e in range(E)]
            if expert_layout == "stacked":
                add(f"blk.{l}.{gname}_exps.weight", np.stack([w[n] for n in names]), names)
            else:
                for e, n in enumerate(names):
                    add(f"blk.{l}.{gname}.{e}.weight", w[n], [n])
    add("output_norm.weight", w["model.norm.weight"], ["model.norm.weight"])
    if not c.get("tie_word_embeddings", False):
        add("output.weight", w["lm_head.weight"], ["lm_head.weight"])
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    if version != 3:
        if version != 2:
            raise ValueError(f"GGUF version {version}: only 2 and 3 are written")
        # v2 and v3 differ only in v3 allowing big-endian files: the bytes of
        # a little-endian file are the same but for the version field.
        with open(out, "r+b") as f:
            f.seek(4)
            f.write((2).to_bytes(4, "little"))


def unpermute_llama_rope(w, heads):
    """The inverse of permute_for_llama_rope."""
    return (w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def read_hf_weights(path, config):
    """The weights of a Mixtral GGUF file under their Hugging Face names, as
    float32 numpy arrays dequantised by gguf.quants (llama.cpp's own format
    code, independent of moe-compile): q and k rows un-permuted, stacked
    experts split. Returns (weights, names stored in a block format)."""
    import gguf

    nH, nKV, E = (config["num_attention_heads"], config["num_key_value_heads"],
                  config["num_local_experts"])
    Q = gguf.GGMLQuantizationType
    floats = (Q.F32, Q.F16, Q.BF16)
    top = {"token_embd.weight": "model.embed_tokens.weight",
           "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}
    per_layer = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj",
                 "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                 "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
                 "ffn_gate_inp": "block_sparse_moe.gate"}
    experts = {"ffn_gate": "w1", "ffn_down": "w2", "ffn_up": "w3"}
    weights, quantized = {}, set()
    for t in gguf.GGUFReader(path).tensors:
        shape = [int(d) for d in reversed(t.shape)]
        w = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
        w = np.asarray(w, dtype=np.float32).reshape(shape)
        blocks = t.tensor_type not in floats
        parts = t.name.split(".")
        names = []
        if t.name in top:
            names = [(top[t.name], w)]
        elif parts[0] == "blk":
            layer, kind = parts[1], parts[2]
            p = f"model.layers.{layer}."
            if kind in per_layer:
                if kind == "attn_q":
                    w = unpermute_llama_rope(w, nH)
                elif kind == "attn_k":
                    w = unpermute_llama_rope(w, nKV)
                names = [(p + per_layer[kind] + ".weight", w)]
            elif kind.endswith("_exps") and kind[:-5] in experts:
                names = [(p + f"block_sparse_moe.experts.{e}.{experts[kind[:-5]]}.weight", w[e])
                         for e in range(E)]
            elif kind in experts:
                names = [(p + f"block_sparse_moe.experts.{parts[3]}.{experts[kind]}.weight", w)]
        if not names:
            raise ValueError(f"{path}: unexpected tensor {t.name!r}")
        for n, a in names:
            weights[n] = a
            if blocks:
                quantized.add(n)
    return weights, quantized
