"""Presets and config.json for MixtralForCausalLM (DESIGN.md section 6)."""

import copy

# Keys and defaults of transformers' MixtralConfig.
BASE = {
    "architectures": ["MixtralForCausalLM"],
    "model_type": "mixtral",
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "max_position_embeddings": 4096,
    "output_router_logits": False,
    "rms_norm_eps": 1e-05,
    "rope_theta": 1000000.0,
    "router_aux_loss_coef": 0.02,
    "router_jitter_noise": 0.0,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "use_cache": True,
    "transformers_version": "4.46.0",
}

PRESETS = {
    "tiny": {
        "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_local_experts": 4,
        "num_experts_per_tok": 2, "max_position_embeddings": 512,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-05,
    },
    "mini": {
        "vocab_size": 32000, "hidden_size": 1024, "intermediate_size": 3584,
        "num_hidden_layers": 8, "num_attention_heads": 16,
        "num_key_value_heads": 4, "num_local_experts": 8,
        "num_experts_per_tok": 2, "max_position_embeddings": 32768,
        "rope_theta": 1e6, "rms_norm_eps": 1e-05,
    },
    # The shapes of the real Mixtral 8x7B (for header-only sparse imports).
    "mixtral-8x7b": {
        "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "num_local_experts": 8,
        "num_experts_per_tok": 2, "max_position_embeddings": 32768,
        "rope_theta": 1e6, "rms_norm_eps": 1e-05,
    },
}

TORCH_DTYPE = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


ROPE_FORMS = ("v4", "v5")


def make_config(preset, dtype="f32", overrides=None, rope_form="v4", rope_scaling=None):
    """rope_form "v4": top-level rope_theta, and rope_scaling (a dict such as
    {"rope_type": "yarn", "factor": 4.0}) as transformers 4 writes it;
    "v5": rope_theta and the scaling under rope_parameters, as
    transformers >= 5 writes them (no top-level rope_theta). Overrides
    apply last."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}' (have: {', '.join(PRESETS)})")
    if rope_form not in ROPE_FORMS:
        raise ValueError(f"unknown rope form '{rope_form}' (have: {', '.join(ROPE_FORMS)})")
    config = copy.deepcopy(BASE)
    config.update(PRESETS[preset])
    config["torch_dtype"] = TORCH_DTYPE[dtype]
    if rope_form == "v5":
        params = {"rope_theta": config.pop("rope_theta"), "rope_type": "default"}
        params.update(rope_scaling or {})
        config["rope_parameters"] = params
        config["transformers_version"] = "5.0.0"
    elif rope_scaling:
        config["rope_scaling"] = dict(rope_scaling)
    for key, value in (overrides or {}).items():
        config[key] = value
    return config


def head_dim(config):
    d = config.get("head_dim")
    return d if d is not None else config["hidden_size"] // config["num_attention_heads"]


def tensor_shapes(config):
    """Every tensor of MixtralForCausalLM, in the order HF saves them:
    list of (name, shape)."""
    H, I, V = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    nH, nKV, d = config["num_attention_heads"], config["num_key_value_heads"], head_dim(config)
    E = config["num_local_experts"]
    out = [("model.embed_tokens.weight", (V, H))]
    for l in range(config["num_hidden_layers"]):
        p = f"model.layers.{l}."
        out += [
            (p + "self_attn.q_proj.weight", (nH * d, H)),
            (p + "self_attn.k_proj.weight", (nKV * d, H)),
            (p + "self_attn.v_proj.weight", (nKV * d, H)),
            (p + "self_attn.o_proj.weight", (H, nH * d)),
            (p + "block_sparse_moe.gate.weight", (E, H)),
        ]
        for e in range(E):
            q = p + f"block_sparse_moe.experts.{e}."
            out += [(q + "w1.weight", (I, H)), (q + "w2.weight", (H, I)),
                    (q + "w3.weight", (I, H))]
        out += [(p + "input_layernorm.weight", (H,)),
                (p + "post_attention_layernorm.weight", (H,))]
    out.append(("model.norm.weight", (H,)))
    if not config.get("tie_word_embeddings", False):
        out.append(("lm_head.weight", (V, H)))
    return out
