"""Deterministic Hugging Face-style Mixtral model directories.

    python3 -m moe_ref.generate --preset tiny --seed 0 --dtype f32 --out DIR
        [--shards N] [--set key=value ...] [--sparse]

Writes DIR/config.json (MixtralForCausalLM keys) and the weights as
DIR/model.safetensors, or as N shards plus model.safetensors.index.json, the
way Mixtral is shipped. Every tensor is drawn from its own generator seeded
by (seed, tensor name), so values do not depend on sharding or order.
`--sparse` writes real headers over sparse, all-zero data: the shape of a
model without its bytes, for importers that must never read tensor data.
"""

import argparse
import json
import os
import sys
import zlib

import numpy as np

from . import configs, safetensors


def init_tensor(name, shape, seed):
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if name.endswith("norm.weight"):
        return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    if name == "model.embed_tokens.weight":
        return rng.standard_normal(shape, dtype=np.float32)
    fan_in = shape[-1]
    scale = 1.0 / np.sqrt(fan_in)
    if "block_sparse_moe.gate" in name:
        scale *= 4.0  # a router with clear preferences, few near-ties
    return (scale * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)


def shard_plan(entries, shards):
    """Splits (name, shape, nbytes) entries, in order, into `shards` groups of
    roughly equal bytes; no group is empty."""
    total = sum(e[2] for e in entries)
    groups, current, acc = [], [], 0
    for i, entry in enumerate(entries):
        left_entries = len(entries) - i
        left_groups = shards - len(groups)
        if current and (acc >= total * (len(groups) + 1) / shards
                        or left_entries < left_groups):
            groups.append(current)
            current = []
        current.append(entry)
        acc += entry[2]
    groups.append(current)
    if len(groups) != shards:
        raise ValueError(f"cannot split {len(entries)} tensors into {shards} shards")
    return groups


def generate(out, preset="tiny", seed=0, dtype="f32", shards=1, overrides=None,
             sparse=False, progress=None, tensor_dtypes=None, rope_form="v4",
             rope_scaling=None):
    """tensor_dtypes: {name suffix: dtype} for tensors stored unlike the rest
    (e.g. {"norm.weight": "f32"}, as some checkpoints keep norms in f32).
    rope_form, rope_scaling: configs.make_config's."""
    config = configs.make_config(preset, dtype, overrides, rope_form, rope_scaling)

    def st_dtype_of(name):
        for suffix, d in (tensor_dtypes or {}).items():
            if name.endswith(suffix):
                return safetensors.NAME_OF_DTYPE[d]
        return safetensors.NAME_OF_DTYPE[dtype]

    shapes = configs.tensor_shapes(config)
    entries = [(n, s, int(np.prod(s)) * safetensors.DTYPES[st_dtype_of(n)][1])
               for n, s in shapes]
    os.makedirs(out, exist_ok=True)
    for stale in os.listdir(out):
        if stale.endswith(".safetensors") or stale == "model.safetensors.index.json":
            os.remove(os.path.join(out, stale))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")

    groups = shard_plan(entries, shards) if shards > 1 else [entries]
    names = (["model.safetensors"] if shards == 1 else
             [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)])
    for fname, group in zip(names, groups):
        path = os.path.join(out, fname)
        if progress:
            progress(f"writing {fname} ({len(group)} tensors)")
        if sparse:
            safetensors.write_sparse(path, [(n, st_dtype_of(n), s, b) for n, s, b in group])
        else:
            safetensors.write(path, [(n, st_dtype_of(n),
                                      safetensors.encode(init_tensor(n, s, seed), st_dtype_of(n)))
                                     for n, s, _ in group])
    if shards > 1:
        index = {"metadata": {"total_size": sum(e[2] for e in entries)},
                 "weight_map": {n: fname for fname, group in zip(names, groups)
                                for n, _, _ in group}}
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)
            f.write("\n")
    return config


def parse_override(text):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got '{text}'")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def parse_rope_scaling(text):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected a JSON object: {e}")
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def add_rope_arguments(p):
    p.add_argument("--rope-form", default="v4", choices=configs.ROPE_FORMS,
                   help="v4: top-level rope_theta (+ rope_scaling), as transformers 4 "
                        "writes config.json; v5: rope_parameters {rope_theta, rope_type, "
                        "...}, as transformers >= 5 does")
    p.add_argument("--rope-scaling", type=parse_rope_scaling, default=None, metavar="JSON",
                   help='RoPE scaling parameters, e.g. \'{"rope_type": "yarn", "factor": 4}\' '
                        "(in rope_scaling for v4, merged into rope_parameters for v5)")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m moe_ref.generate",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--preset", default="tiny", choices=sorted(configs.PRESETS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"])
    p.add_argument("--shards", type=int, default=1,
                   help="number of safetensors shards (>1 adds model.safetensors.index.json)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   type=parse_override, metavar="KEY=VALUE",
                   help="override a config.json key; VALUE is JSON (e.g. null, 16, 1e6)")
    p.add_argument("--tensor-dtype", action="append", default=[], metavar="SUFFIX=DTYPE",
                   type=parse_override,
                   help="store tensors whose name ends with SUFFIX as DTYPE (f32, f16, bf16)")
    p.add_argument("--sparse", action="store_true",
                   help="write headers over sparse zero data (no tensor values)")
    p.add_argument("--gguf", action="append", default=[], metavar="TYPE[:FILE]",
                   help="also write the same weights as a GGUF (llama.cpp's layout, "
                        "moe_ref.gguf_writer; needs PyPI's gguf) with rank-2 weights as "
                        "TYPE (f32, f16, bf16, q8_0, q4_0, q4_1, q4_k, q5_k, q6_k, q4_k_m), to "
                        "FILE (default OUT/model-TYPE.gguf); repeatable")
    p.add_argument("--gguf-experts", default="stacked", choices=["stacked", "split"],
                   help="experts stacked per layer (ffn_*_exps, default) or one tensor each "
                        "(ffn_*.E, older files)")
    p.add_argument("--gguf-version", type=int, default=3, choices=[2, 3])
    p.add_argument("--gguf-quantize-only", default="all", choices=["all", "experts"],
                   help="which rank-2 weights --gguf's TYPE applies to (default all)")
    add_rope_arguments(p)
    p.add_argument("--gguf-tokenizer", metavar="SPM.model",
                   help="the SentencePiece model whose pieces, scores and types --gguf "
                        "writes as the file's tokenizer (default: placeholder tokens; "
                        "needs PyPI's sentencepiece)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.shards < 1:
        p.error("--shards must be >= 1")
    progress = None if args.quiet else (lambda m: print(m, file=sys.stderr))
    try:
        generate(args.out, args.preset, args.seed, args.dtype, args.shards,
                 dict(args.overrides), args.sparse, progress, dict(args.tensor_dtype),
                 args.rope_form, args.rope_scaling)
        for spec in args.gguf:
            from . import gguf_writer
            wtype, _, path = spec.partition(":")
            path = path or os.path.join(args.out, f"model-{wtype}.gguf")
            if progress:
                progress(f"writing {path}")
            gguf_writer.write_gguf(args.out, path, wtype, args.gguf_quantize_only,
                                   args.gguf_experts, args.gguf_version,
                                   tokenizer=args.gguf_tokenizer)
    except ValueError as e:
        p.error(str(e))


if __name__ == "__main__":
    main()
