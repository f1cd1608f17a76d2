"""Prefill speed and drop rate against the capacity factor (moe-compile
--capacity-factor C), and the bytes expert-parallel ranks send with it.

    python3 bench/cpu_capacity.py [--factors 0,2,1.25,1,0.75,0.5]
                                  [--prefill 496] [--decode 16] [--runs 3]
                                  [--ranks 2]

Uses bench/cpu_ep.py's model (hidden 512, intermediate 1024, 4 layers,
E = 8, k = 2, vocab 2048, 512 positions: prompt + decode at most 512;
cached under build/bench/ep/), compiles it once
per factor (0: no capacity, exact) and runs each --runs times after a warm-up
run, with a thread per core. Reports the median prefill and decode tok/s,
the binary's `capacity:` drop rate, and the prefill speed against the exact
binary's in the same run. With --ranks N > 1, also compiles each factor with
--expert-parallel N and reports the bytes per step the ranks send (the
dropped pairs are never dispatched). Weights are random, so the router
spreads tokens evenly and the drop rates are those of a balanced router;
a trained router's are higher at the same factor.
"""

import argparse
import os
import re
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import SPEED, sh  # noqa: E402
from cpu_ep import MODEL  # noqa: E402
from moe_ref import generate  # noqa: E402

DROPS = re.compile(r"capacity: factor \S+: (\d+) of (\d+) routed")
EP = re.compile(r"ep: rank (\d+) of \d+ \(mpi\): .* \((\d+) bytes per step\)")


def run(cmd, runs, env):
    """Median (prefill, decode) tok/s over `runs` runs after a warm-up, and
    the last run's stderr."""
    speeds, err = [], ""
    for i in range(runs + 1):
        err = sh(cmd, env=env).stderr
        m = SPEED.search(err)
        if i:
            speeds.append((float(m.group(1)), float(m.group(2))))
    return (statistics.median(s[0] for s in speeds),
            statistics.median(s[1] for s in speeds), err)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--factors", default="0,2,1.25,1,0.75,0.5")
    p.add_argument("--prefill", type=int, default=496)
    p.add_argument("--decode", type=int, default=16)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--ranks", type=int, default=2)
    args = p.parse_args()
    work = os.path.join(args.build, "bench", "ep")
    model = os.path.join(work, "model")
    if not os.path.exists(os.path.join(model, "config.json")):
        generate.generate(model, "tiny", 0, "f32", 1, MODEL)
    compile_ = os.path.join(args.build, "bin", "moe-compile")
    tokens = ",".join(str(1 + (i * 37) % 2000) for i in range(args.prefill))
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    print(f"cores: {os.cpu_count()}; model: {MODEL}; prompt {args.prefill} tokens "
          f"(one call), decode {args.decode}; median of {args.runs}")
    head = "| factor | prefill tok/s | vs exact | decode tok/s | pairs dropped |"
    if args.ranks > 1:
        head += f" bytes sent per step, {args.ranks} ranks |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    exact = None
    for factor in [float(f) for f in args.factors.split(",")]:
        flags = ["--capacity-factor", str(factor)] if factor > 0 else []
        binary = os.path.join(work, f"capacity-{factor:g}.bin")
        sh([compile_, model, "--quiet", "-o", binary] + flags)
        prefill, decode, err = run([binary, "--threads", str(os.cpu_count()),
                                    "--tokens", tokens, "-n", str(args.decode)],
                                   args.runs, env)
        exact = exact or prefill
        m = DROPS.search(err)
        dropped = (f"{int(m.group(1))} of {int(m.group(2))} "
                   f"({100 * int(m.group(1)) / int(m.group(2)):.1f}%)") if m else "- (exact)"
        row = (f"| {factor:g} | {prefill:.1f} | {prefill / exact:.2f} | {decode:.1f} "
               f"| {dropped} |")
        if args.ranks > 1:
            ep = os.path.join(work, f"capacity-{factor:g}-ep{args.ranks}.bin")
            sh([compile_, model, "--quiet", "-o", ep, "--expert-parallel",
                str(args.ranks)] + flags)
            out = sh(["mpirun", "--oversubscribe", "-np", str(args.ranks), ep,
                      "--threads", "1", "--tokens", tokens, "-n", str(args.decode)],
                     env=env).stderr
            sent = sorted((int(r), b) for r, b in EP.findall(out))
            row += " " + ", ".join(b for _, b in sent) + " |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
