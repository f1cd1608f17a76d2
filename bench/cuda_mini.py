"""Decode and prefill speed of the CUDA target on the `mini` preset (f16), as
ratios measured in one run on GPU 0: decode against the GPU's measured read
bandwidth, the prefill expert GEMMs against cuBLAS's dense GEMM.

    python3 bench/cuda_mini.py [--dtypes f16,bf16] [--prefill 512] [--decode 256]
                               [--cuda-arch sm_90]

Builds bench/cuda_membw.cu and bench/cuda_grouped_gemm.cu with nvcc, generates
mini (cached under build/bench/), compiles it with moe-compile --target cuda,
takes the bytes one decode token reads from moe-estimate-cost, and runs the
binary (median of --runs warm runs), with and without the decode CUDA graph,
and the binary built with --fuse-epilogues=false (the residual adds,
silu_mul and RoPE as launches of their own: 16 launches per decode layer
against 11).
Needs a GPU; scripts/gpu-check.sh runs it. With --bundle DIR (from
scripts/gpu-bundle.sh) it runs the prebuilt mini binary on a dense mini it
generates here, for GPU machines without moe-compile.
"""

import argparse
import os
import re
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "test", "e2e"))

from moe_ref import generate  # noqa: E402
from gpu_e2e import gpu  # noqa: E402
from benchlib import measure, sh  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--nvcc", default=shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc")
    p.add_argument("--cuda-arch")
    p.add_argument("--dtypes", default="f16")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--prefill", type=int, default=512)
    p.add_argument("--decode", type=int, default=256)
    p.add_argument("--bundle", help="prebuilt binaries from scripts/gpu-bundle.sh")
    args = p.parse_args()
    arch, name = gpu()
    if arch is None:
        sys.exit(f"bench/cuda_mini.py needs a CUDA GPU: {name}")
    arch = args.cuda_arch or ("sm_90" if arch >= "sm_90" else arch)
    print(f"GPU: {name} ({arch})")
    bin_dir = os.path.join(args.build, "bin")
    work = os.path.join(args.build, "bench")
    os.makedirs(work, exist_ok=True)

    membw = os.path.join(work, "cuda_membw")
    sh([args.nvcc, "-O3", f"-arch={arch}", os.path.join(ROOT, "bench", "cuda_membw.cu"), "-o", membw])
    bandwidth = float(sh([membw]).stdout)
    print(f"read bandwidth: {bandwidth:.0f} GB/s")
    gemm = os.path.join(work, "cuda_grouped_gemm")
    sh([args.nvcc, "-O3", "-std=c++17", f"-arch={arch}", "-I", os.path.join(ROOT, "runtime", "include"),
        os.path.join(ROOT, "bench", "cuda_grouped_gemm.cu"), "-lcublas", "-o", gemm])
    print(sh([gemm, str(args.prefill)]).stdout, end="", flush=True)

    prompt = ",".join(str((i * 7919) % 32000) for i in range(args.prefill))
    for dtype in (["f16"] if args.bundle else args.dtypes.split(",")):
        model = os.path.join(work, f"mini-{dtype}")
        if not os.path.exists(os.path.join(model, "config.json")):
            print(f"generating mini ({dtype}) in {model} ...", flush=True)
            generate.generate(model, preset="mini", dtype=dtype)
        if args.bundle:
            cost = open(os.path.join(args.bundle, f"mini-{dtype}-cost.mlir")).read()
            binary = os.path.join(args.bundle, f"mini-{dtype}-cuda.bin")
            unfused = os.path.join(args.bundle, f"mini-{dtype}-noepi-cuda.bin")
        else:
            ir = sh([os.path.join(bin_dir, "moe-translate"), "--import-hf", model]).stdout
            cost = sh([os.path.join(bin_dir, "moe-opt"),
                       "--pass-pipeline=builtin.module(func.func(moe-estimate-cost))"],
                      input=ir).stdout
            binary, unfused = f"{model}-cuda.bin", f"{model}-noepi-cuda.bin"
            for path, extra in ((binary, []), (unfused, ["--fuse-epilogues=false"])):
                sh([os.path.join(bin_dir, "moe-compile"), model, "--target", "cuda",
                    "--cuda-arch", arch, "-o", path, "--quiet"] + extra)
        bytes_per_token = int(re.search(r"bytes_per_step = (\d+)", cost).group(1))
        flops_per_token = int(re.search(r"flops_per_step = (\d+)", cost).group(1))
        variants = [("", binary, "1"), (" (no graphs)", binary, "0"),
                    (" (--fuse-epilogues=false)", unfused, "1")]
        for label, exe, graphs in variants:
            env = dict(os.environ, MOERT_CUDA_GRAPHS=graphs)
            prefill, decode = measure([exe, "--tokens", prompt, "-n", str(args.decode),
                                       "--weights", model], args.runs, env)
            limit = bandwidth * 1e9 / bytes_per_token
            print(f"mini {dtype} cuda{label}: decode {decode:.0f} tok/s "
                  f"= {decode * bytes_per_token / 1e9:.0f} GB/s = {decode / limit:.0%} of the "
                  f"{limit:.0f} tok/s bandwidth limit ({bytes_per_token / 1e6:.0f} MB/token); "
                  f"prefill {args.prefill}: {prefill:.0f} tok/s = "
                  f"{prefill * flops_per_token / 1e12:.1f} TFLOP/s of weight GEMMs", flush=True)


if __name__ == "__main__":
    main()
