"""Weight memory of a model per storage type, as moe-compile lays it out:
the quantised tensors (moe_ref.quant.is_quantized: every rank-2 weight but
the router gates, or the experts alone) at their block sizes, the rest
(norms, router gates, and with `experts` the attention, embedding and
lm_head) in the checkpoint's bf16; and the bytes one decode token reads
(attention, the embedding row, k of E experts per layer, lm_head).

    python3 bench/quant_memory.py [--preset mini,mixtral-8x7b]

Pure arithmetic on the presets' shapes (python/moe_ref/configs.py); no
weights are generated.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

from moe_ref import configs, quant  # noqa: E402


def layout(config, fmt, which):
    """(total bytes, bytes read per decode token) with `fmt` (None: bf16)."""
    E, k = config["num_local_experts"], config["num_experts_per_tok"]
    total = per_token = 0
    for name, shape in configs.tensor_shapes(config):
        if fmt and quant.is_quantized(name, shape, which):
            rows, row_bytes = quant.quantized_shape(shape, fmt, name)
            size = rows * row_bytes
        else:
            size = 2
            for d in shape:
                size *= d
        total += size
        if name == "model.embed_tokens.weight":
            per_token += size // shape[0]  # one row
        elif ".experts." in name:
            per_token += size * k / E
        else:
            per_token += size
    return total, per_token


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="mini,mixtral-8x7b")
    args = p.parse_args()
    print("| model | weights | total | read per decode token |")
    print("|---|---|---|---|")
    for preset in args.preset.split(","):
        config = configs.make_config(preset, "bf16", {})
        for fmt, which in [(None, None)] + [(f, w) for f in quant.FORMATS
                                            for w in quant.SELECTIONS]:
            total, per_token = layout(config, fmt, which)
            label = "bf16" if fmt is None else f"{fmt} ({which})"
            print(f"| {preset} | {label} | {total / 1e9:.2f} GB | {per_token / 1e6:.0f} MB |")


if __name__ == "__main__":
    main()
