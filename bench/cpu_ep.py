"""Tokens/s of expert parallelism on CPU ranks (moe-compile --expert-parallel
N under mpirun) against one process, and the bytes each rank sends.

    python3 bench/cpu_ep.py [--ranks 1,2,4] [--prefill 64] [--decode 32]
                            [--threads-per-rank 1] [--runs 3]

Generates a model between tiny and mini (hidden 512, intermediate 1024, 4
layers, E = 8, k = 2, vocab 2048; cached under build/bench/), compiles it
once per N (N = 1: the single-process binary, with a thread per core),
runs each --runs times and reports
the medians of rank 0's prefill and decode speeds and each rank's
`ep:` bytes per step. On a machine with fewer cores than ranks × threads
the ranks are oversubscribed (mpirun --oversubscribe), and say so.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))

from moe_ref import generate  # noqa: E402

SPEED = re.compile(r"prefill: \d+ tokens in [\d.]+ s \(([\d.]+) tok/s\); "
                   r"decode: \d+ tokens in [\d.]+ s \(([\d.]+) tok/s\)")
EP = re.compile(r"ep: rank (\d+) of \d+ \(mpi\): weights (\d+) of (\d+) bytes; "
                r"peak resident (\d+) KiB; .* \((\d+) bytes per step\)")

# The model (tiny's generator, these sizes), cached under build/bench/ep/;
# bench/cpu_capacity.py runs the same one.
MODEL = {"hidden_size": 512, "intermediate_size": 1024, "num_hidden_layers": 4,
         "num_local_experts": 8, "vocab_size": 2048, "num_attention_heads": 8,
         "num_key_value_heads": 2}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--ranks", default="1,2,4")
    p.add_argument("--prefill", type=int, default=64)
    p.add_argument("--decode", type=int, default=32)
    p.add_argument("--threads-per-rank", type=int, default=1)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    work = os.path.join(args.build, "bench", "ep")
    model = os.path.join(work, "model")
    overrides = MODEL
    if not os.path.exists(os.path.join(model, "config.json")):
        generate.generate(model, "tiny", 0, "f32", 1, overrides)
    compile_ = os.path.join(args.build, "bin", "moe-compile")
    tokens = ",".join(str(1 + (i * 37) % 2000) for i in range(args.prefill))
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    ranks = [int(r) for r in args.ranks.split(",")]
    print(f"cores: {os.cpu_count()}; model: {overrides}; prompt {args.prefill}, "
          f"decode {args.decode}; {args.threads_per_rank} thread(s) a rank")
    print("| ranks | prefill tok/s | decode tok/s | weight bytes a rank | peak RSS a rank (MiB) "
          "| bytes sent per step, each rank |")
    print("|---|---|---|---|---|---|")
    for n in ranks:
        binary = os.path.join(work, f"ep{n}.bin")
        flags = ["--expert-parallel", str(n)] if n > 1 else []
        subprocess.run([compile_, model, "--quiet", "-o", binary] + flags, check=True)
        if n > 1:
            cmd = ["mpirun", "--oversubscribe", "-np", str(n), binary,
                   "--threads", str(args.threads_per_rank)]
        else:
            cmd = [binary, "--threads", str(os.cpu_count())]
        cmd += ["--tokens", tokens, "-n", str(args.decode)]
        prefill, decode, stats = [], [], {}
        for _ in range(args.runs):
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            m = SPEED.search(out.stderr)
            prefill.append(float(m.group(1)))
            decode.append(float(m.group(2)))
            for e in EP.finditer(out.stderr):
                stats[int(e.group(1))] = e.groups()
        ranks_stats = [stats[r] for r in sorted(stats)]
        weights = ", ".join(s[1] for s in ranks_stats) or "all"
        rss = ", ".join(f"{int(s[3]) / 1024:.0f}" for s in ranks_stats) or "-"
        sent = ", ".join(s[4] for s in ranks_stats) or "0"
        print(f"| {n} | {statistics.median(prefill):.1f} | {statistics.median(decode):.1f} "
              f"| {weights} | {rss} | {sent} |")


if __name__ == "__main__":
    main()
