"""The generated CUDA compiles for each architecture without register spills.

    check_ptxas.py --nvcc NVCC --include DIR --arch sm_80 --arch sm_90 FILE.cu

Compiles FILE.cu to a cubin per architecture with `-Xptxas -v` and parses
ptxas's report: every kernel ("Compiling entry function") must report
`0 bytes spill stores, 0 bytes spill loads`. Prints one line per
architecture with the kernel count and the largest register count; exits
non-zero (naming the kernel) on a spill or a compile error.
"""

import argparse
import re
import subprocess
import sys
import tempfile


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--nvcc", required=True)
    p.add_argument("--include", required=True)
    p.add_argument("--arch", action="append", required=True)
    p.add_argument("source")
    args = p.parse_args()
    for arch in args.arch:
        with tempfile.NamedTemporaryFile(suffix=".cubin") as out:
            proc = subprocess.run(
                [args.nvcc, "-cubin", "-O3", "-std=c++17", f"-arch={arch}",
                 "-Xptxas", "-v", "-I", args.include, args.source, "-o", out.name],
                capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"nvcc failed for {arch}:\n{proc.stderr[-4000:]}")
        kernels, registers = {}, {}
        current = None
        for line in proc.stderr.splitlines():
            m = re.search(r"Compiling entry function '(\w+)' for '(\w+)'", line)
            if m:
                current = m.group(1)
                continue
            m = re.search(r"Function properties for (\w+)", line)
            if m and m.group(1) != current:
                current = None  # a device function's report, not the kernel's
                continue
            m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
            if m and current and current not in kernels:
                kernels[current] = (int(m.group(1)), int(m.group(2)))
            m = re.search(r"Used (\d+) registers", line)
            if m and current:
                registers[current] = int(m.group(1))
        if not kernels:
            sys.exit(f"no kernel reports in ptxas's output for {arch}")
        for name, (stores, loads) in sorted(kernels.items()):
            if stores or loads:
                sys.exit(f"{arch}: kernel {name} spills registers "
                         f"({stores} bytes stored, {loads} bytes loaded)")
        worst = max(registers.items(), key=lambda kv: kv[1])
        print(f"{arch}: {len(kernels)} kernels, no spills; most registers: "
              f"{worst[1]} ({worst[0]})")


if __name__ == "__main__":
    main()
