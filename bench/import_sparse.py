"""Measures `moe-translate --import-hf` on the real Mixtral 8x7B layout
(config.json + 19 bf16 shards, ~93 GB of declared data) written as sparse
files: true headers over holes, so only metadata can be read cheaply.

    python3 bench/import_sparse.py [--build build] [--runs 5]

Reports the median wall time and the peak RSS of the importer, to compare
with the budget of issue 3 (< 5 s, < 300 MB).
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))

from moe_ref import generate  # noqa: E402


def run_once(tool, model, out):
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.Popen([tool, "--import-hf", model, "-o", out])
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        sys.exit(f"{tool} failed with status {status}")
    return elapsed, usage.ru_maxrss * 1024  # ru_maxrss is in KiB on Linux


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    tool = os.path.join(args.build, "bin", "moe-translate")
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "mixtral-8x7b")
        generate.generate(model, preset="mixtral-8x7b", dtype="bf16", shards=19, sparse=True)
        files = [f for f in os.listdir(model) if f.endswith(".safetensors")]
        declared = sum(os.path.getsize(os.path.join(model, f)) for f in files)
        on_disk = sum(os.stat(os.path.join(model, f)).st_blocks * 512 for f in files)
        out = os.path.join(tmp, "m.mlir")
        results = [run_once(tool, model, out) for _ in range(args.runs)]
        ir_bytes = os.path.getsize(out)
    times = [t for t, _ in results]
    rss = max(r for _, r in results)
    print(f"shards: {len(files)}, declared size: {declared / 1e9:.1f} GB, "
          f"on disk: {on_disk / 1e6:.1f} MB, IR written: {ir_bytes / 1e6:.2f} MB")
    print(f"import time: median {statistics.median(times):.3f} s, "
          f"min {min(times):.3f} s, max {max(times):.3f} s over {len(times)} runs")
    print(f"peak RSS: {rss / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
