"""Writes a tiny model directory with one defect, for the importer's error
tests:  bad_model.py CASE OUTDIR"""

import json
import os
import shutil
import struct
import sys

from moe_ref import generate

ST = "model.safetensors"


def read_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    return header, data


def write_header(path, header, data):
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def edit_header(out, fn, file=ST):
    path = os.path.join(out, file)
    header, data = read_header(path)
    fn(header)
    write_header(path, header, data)


def edit_config(out, fn):
    path = os.path.join(out, "config.json")
    with open(path) as f:
        config = json.load(f)
    fn(config)
    with open(path, "w") as f:
        json.dump(config, f)


def write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


NORM0 = "model.layers.0.input_layernorm.weight"
NORM0B = "model.layers.0.post_attention_layernorm.weight"
Q0 = "model.layers.0.self_attn.q_proj.weight"
W2 = "model.layers.1.block_sparse_moe.experts.3.w2.weight"


def main(case, out):
    shutil.rmtree(out, ignore_errors=True)
    generate.generate(out, shards=2 if case.startswith("index") else 1)
    st = os.path.join(out, ST)
    if case == "truncated":
        os.truncate(st, os.path.getsize(st) // 2)
    elif case == "truncated-in-header":
        os.truncate(st, 100)
    elif case == "too-short":
        os.truncate(st, 4)
    elif case == "header-length":
        with open(st, "r+b") as f:
            f.write(struct.pack("<Q", 1 << 40))
    elif case == "header-json":
        body = b'{"a": [1, 2'
        write_bytes(st, struct.pack("<Q", len(body)) + body)
    elif case == "offsets-range":
        edit_header(out, lambda h: h[NORM0].update(data_offsets=[h[NORM0]["data_offsets"][0], 1 << 30]))
    elif case == "offsets-reversed":
        edit_header(out, lambda h: h[NORM0].update(data_offsets=list(reversed(h[NORM0]["data_offsets"]))))
    elif case == "offsets-overlap":
        edit_header(out, lambda h: h[NORM0B].update(data_offsets=h[NORM0]["data_offsets"]))
    elif case == "dtype-size":
        edit_header(out, lambda h: h["model.norm.weight"].update(dtype="F16"))
    elif case == "dtype-unsupported":
        edit_header(out, lambda h: h["model.norm.weight"].update(dtype="I32"))
    elif case == "shape":
        edit_header(out, lambda h: h[Q0].update(shape=[32, 128]))
    elif case == "missing-tensor":
        edit_header(out, lambda h: h.pop(W2))
    elif case == "unexpected-tensor":
        edit_header(out, lambda h: h.update({"model.layers.0.self_attn.rotary_emb.inv_freq":
                                             {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}))
    elif case == "config-json":
        write_bytes(os.path.join(out, "config.json"), b'{"model_type": "mixtral",\n "hidden_size": 64,\n')
    elif case == "config-type":
        edit_config(out, lambda c: c.update(hidden_size="64"))
    elif case == "config-type-eps":
        edit_config(out, lambda c: c.update(rms_norm_eps=[1e-5]))
    elif case == "config-missing-key":
        edit_config(out, lambda c: c.pop("num_local_experts"))
    elif case == "config-k-above-e":
        edit_config(out, lambda c: c.update(num_experts_per_tok=5))
    elif case == "config-gqa":
        edit_config(out, lambda c: c.update(num_key_value_heads=3))
    elif case == "config-model-type":
        edit_config(out, lambda c: c.update(model_type="llama"))
    elif case == "config-rope-scaling":
        edit_config(out, lambda c: c.update(rope_scaling={"type": "su", "factor": 2.0}))
    elif case == "config-act":
        edit_config(out, lambda c: c.update(hidden_act="gelu"))
    elif case == "index-missing-shard":
        os.remove(os.path.join(out, "model-00002-of-00002.safetensors"))
    elif case == "index-path":
        path = os.path.join(out, "model.safetensors.index.json")
        with open(path) as f:
            index = json.load(f)
        index["weight_map"]["model.norm.weight"] = "../model-00002-of-00002.safetensors"
        with open(path, "w") as f:
            json.dump(index, f)
    elif case == "index-json":
        write_bytes(os.path.join(out, "model.safetensors.index.json"), b'{"weight_map": ')
    elif case == "no-weights":
        os.remove(st)
    elif case == "deep-metadata":
        # 50,000 levels of nesting in __metadata__ (json.dumps would recurse).
        header, data = read_header(st)
        header.pop("__metadata__", None)
        text = json.dumps(header)[:-1] + ', "__metadata__": ' + '{"a": ' * 50000 + '"x"' + "}" * 50000 + "}"
        text = text.encode() + b" " * (-len(text) % 8)
        write_bytes(st, struct.pack("<Q", len(text)) + text + data)
    elif case == "unaligned":
        # A valid file whose header length leaves the data at an offset that
        # is not a multiple of 4: every f32 tensor is misaligned.
        header, data = read_header(st)
        text = json.dumps(header).encode()
        if (8 + len(text)) % 4 == 0:
            text += b" "
        write_bytes(st, struct.pack("<Q", len(text)) + text + data)
    elif case == "duplicate-tensor":
        # A second entry for model.norm.weight, with another shape: which
        # one a reader keeps is up to it, so the header is refused.
        header, data = read_header(st)
        entry = dict(header["model.norm.weight"], shape=[16, 4])
        text = json.dumps(header)[:-1] + ', "model.norm.weight": ' + json.dumps(entry) + "}"
        text = text.encode() + b" " * (-len(text) % 8)
        write_bytes(st, struct.pack("<Q", len(text)) + text + data)
    elif case == "duplicate-config-key":
        path = os.path.join(out, "config.json")
        with open(path) as f:
            text = f.read().rstrip()
        write_bytes(path, (text[:-1] + ', "vocab_size": 128}').encode())
    elif case.startswith("config:"):
        # config:KEY=JSON,KEY=JSON overrides config.json keys of the tiny model.
        pairs = [kv.split("=", 1) for kv in case[len("config:"):].split(",")]
        edit_config(out, lambda c: c.update({k: json.loads(v) for k, v in pairs}))
    else:
        sys.exit(f"unknown case {case}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
