"""Checks `moe-compile --print-memory-plan` against formulas computed here
from config.json:  check_memory_plan.py MODEL_DIR PLAN.json [MAX_SEQ]

  KV bytes = layers x 2 x kv_heads x head_dim x min(W, max_seq) x 4 (f32 cache)
  lower bound <= arena <= 1.15 x lower bound (at -O2); arena <= naive
"""

import json
import sys

from moe_ref import configs


def main(model_dir, plan_path, max_seq=None):
    with open(f"{model_dir}/config.json") as f:
        c = json.load(f)
    with open(plan_path) as f:
        plan = json.load(f)
    seq = int(max_seq) if max_seq else c["max_position_embeddings"]
    window = c.get("sliding_window")
    slots = min(window, seq) if window else seq
    kv = c["num_hidden_layers"] * 2 * c["num_key_value_heads"] * configs.head_dim(c) * slots * 4
    if plan["kv_cache_bytes"] != kv:
        sys.exit(f"kv_cache_bytes {plan['kv_cache_bytes']} != formula {kv}")
    per_layer = kv // c["num_hidden_layers"]
    for layer in plan["layers"]:
        if layer["kv_cache_bytes"] != per_layer or layer["capacity"] != slots:
            sys.exit(f"layer {layer} != {per_layer} bytes, {slots} slots")
    arena, lb, naive = plan["arena_bytes"], plan["lower_bound_bytes"], plan["naive_bytes"]
    if not lb <= arena <= naive:
        sys.exit(f"expected lower bound {lb} <= arena {arena} <= naive {naive}")
    if plan["opt_level"] == 2 and arena > 1.15 * lb:
        sys.exit(f"arena {arena} > 1.15 x lower bound {lb}")
    print(f"plan OK: kv {kv} bytes ({slots} slots/layer), arena {arena} = "
          f"{arena / lb:.3f} x lower bound, {arena / naive:.3f} x naive")


if __name__ == "__main__":
    main(*sys.argv[1:])
