"""Decode and prefill speed of the CPU target on the `mini` preset, as ratios
measured in one run against this machine's read bandwidth (decode) and the
FMA peak (prefill).

    python3 bench/cpu_mini.py [--dtypes f32,f16] [--opt-levels 0,2,2-noepi]
                              [--threads 2] [--prefill 512] [--decode 64]

`2-noepi` is -O2 with --fuse-epilogues=false (the residual adds and silu_mul
as ops of their own), to measure what moe-fuse-epilogues gains.

Generates mini (cached under build/bench/), compiles it with moe-compile,
measures read bandwidth with bench/membw.cpp, takes the bytes one decode
token reads from moe-estimate-cost, and runs the binary twice (reporting the
second, warm run).
"""

import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))

from moe_ref import generate  # noqa: E402
from benchlib import measure, sh  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--dtypes", default="f32,f16")
    p.add_argument("--opt-levels", default="2",
                   help="e.g. 0,2 to compare -O0 with -O2; 2-noepi: -O2 without moe-fuse-epilogues")
    p.add_argument("--runs", type=int, default=3, help="measured runs per binary (median)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prefill", type=int, default=512)
    p.add_argument("--decode", type=int, default=64)
    args = p.parse_args()
    bin_dir = os.path.join(args.build, "bin")
    work = os.path.join(args.build, "bench")
    os.makedirs(work, exist_ok=True)

    membw = os.path.join(work, "membw")
    sh(["c++", "-O2", "-march=native", "-pthread", os.path.join(ROOT, "bench", "membw.cpp"), "-o", membw])
    bandwidth = float(sh([membw, str(args.threads)]).stdout)
    print(f"read bandwidth ({args.threads} threads): {bandwidth:.1f} GB/s")

    prompt = ",".join(str((i * 7919) % 32000) for i in range(args.prefill))
    for dtype in args.dtypes.split(","):
        model = os.path.join(work, f"mini-{dtype}")
        if not os.path.exists(os.path.join(model, "config.json")):
            print(f"generating mini ({dtype}) in {model} ...", flush=True)
            generate.generate(model, preset="mini", dtype=dtype)
        ir = sh([os.path.join(bin_dir, "moe-translate"), "--import-hf", model]).stdout
        cost = sh([os.path.join(bin_dir, "moe-opt"),
                   "--pass-pipeline=builtin.module(func.func(moe-estimate-cost))"], input=ir).stdout
        bytes_per_token = int(re.search(r"bytes_per_step = (\d+)", cost).group(1))
        flops_per_token = int(re.search(r"flops_per_step = (\d+)", cost).group(1))
        for level in args.opt_levels.split(","):
            binary = f"{model}-O{level}.bin"
            flags = [f"-O{level.split('-')[0]}"]
            if level.endswith("-noepi"):
                flags.append("--fuse-epilogues=false")
            sh([os.path.join(bin_dir, "moe-compile"), model, "-o", binary, "--quiet"] + flags)
            prefill, decode = measure([binary, "--tokens", prompt, "-n", str(args.decode),
                                       "--threads", str(args.threads)], args.runs)
            limit = bandwidth * 1e9 / bytes_per_token
            gflops = prefill * flops_per_token / 1e9
            print(f"mini {dtype} -O{level}: decode {decode:.1f} tok/s = {decode / limit:.0%} of the "
                  f"{limit:.1f} tok/s bandwidth limit ({bytes_per_token / 1e6:.0f} MB/token); "
                  f"prefill {args.prefill}: {prefill:.1f} tok/s = {gflops:.1f} GFLOP/s of weight GEMMs",
                  flush=True)


if __name__ == "__main__":
    main()
