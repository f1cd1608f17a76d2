"""Memory plans of tiny and mini (sparse: no weights needed): the arena
against the naive sum of buffers and the lower bound (largest live set), and
the KV cache at a 32k context with a 4096 sliding window against full
attention.

    python3 bench/memory_plan.py [--build build]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))

from moe_ref import generate  # noqa: E402


def plan(tool, model, *args):
    out = subprocess.run([tool, model, "--print-memory-plan", "--quiet", *args],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    args = p.parse_args()
    tool = os.path.join(args.build, "bin", "moe-compile")
    mb = 1 << 20
    with tempfile.TemporaryDirectory() as tmp:
        for preset in ("tiny", "mini"):
            model = os.path.join(tmp, preset)
            generate.generate(model, preset=preset, sparse=True)
            for level in ("-O0", "-O2"):
                r = plan(tool, model, level)
                print(f"{preset} {level} (512 tokens): arena {r['arena_bytes'] / mb:.2f} MiB, "
                      f"naive {r['naive_bytes'] / mb:.2f} MiB, lower bound {r['lower_bound_bytes'] / mb:.2f} MiB "
                      f"-> arena = {r['arena_bytes'] / r['lower_bound_bytes']:.3f} x lower bound, "
                      f"{r['arena_bytes'] / r['naive_bytes']:.3f} x naive")
        windowed = os.path.join(tmp, "mini-w")
        generate.generate(windowed, preset="mini", sparse=True, overrides={"sliding_window": 4096})
        full = plan(tool, os.path.join(tmp, "mini"), "--max-seq", "32768")
        window = plan(tool, windowed, "--max-seq", "32768")
        print(f"mini KV cache at 32k context: full attention {full['kv_cache_bytes'] / mb:.0f} MiB, "
              f"window 4096 {window['kv_cache_bytes'] / mb:.0f} MiB "
              f"({window['kv_cache_bytes'] / full['kv_cache_bytes']:.3f} x)")


if __name__ == "__main__":
    main()
