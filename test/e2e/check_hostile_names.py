"""Hostile names never become code (docs/hardening.md).

    check_hostile_names.py --moe-compile BIN --cxx CXX --include DIR
        --work DIR [--nvcc NVCC]

Generates `tiny` in a directory whose name holds a newline followed by C++
statements, with a second shard whose name holds a carriage return, quotes,
a trigraph and a terminal escape, and a .mlir file named like the directory.
Then, for each: the CPU binary builds, runs and gives the same tokens as the
same model under a plain name, and never runs the injected statement; the
emitted C++ (CPU, and the CUDA host plan) and CUDA (.cu) hold no raw control
character and compile (g++ -fsyntax-only; nvcc for the .cu and the whole
CUDA executable when --nvcc is given). Prints one line per check.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

from moe_ref import generate

EVIL_DIR = 'evil\nint pwned = puts("PWNED");\n//'
EVIL_SHARD = 'model-00002\r"; int y = puts("PWNED"); ??=\x1b[31m\\.safetensors'
# A shard name may not hold '/', and the index parser refuses '\\' too.
EVIL_SHARD = EVIL_SHARD.replace("\\", "")


def run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, **kw)
    if proc.returncode != 0:
        sys.exit(f"FAIL: {cmd!r} exited {proc.returncode}:\n"
                 f"{proc.stderr.decode(errors='replace')[-3000:]}")
    return proc.stdout.decode(errors="replace")


def no_control_chars(text, what):
    bad = [c for c in text if (ord(c) < 0x20 and c not in "\n") or ord(c) == 0x7f]
    if bad:
        sys.exit(f"FAIL: {what} holds raw control characters {sorted(set(bad))!r}")
    # The injected text may appear in a comment, or escaped in a literal.
    for line in text.splitlines():
        if ("PWNED" in line and not line.lstrip().startswith("//")
                and '\\"PWNED\\"' not in line):
            sys.exit(f"FAIL: {what} holds the injected text unquoted: {line!r}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--moe-compile", required=True)
    p.add_argument("--cxx", required=True)
    p.add_argument("--include", required=True)
    p.add_argument("--nvcc", default="")
    p.add_argument("--work", required=True)
    a = p.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    mc = a.moe_compile

    plain = os.path.join(a.work, "plain")
    evil = os.path.join(a.work, EVIL_DIR)
    generate.generate(plain, shards=2)
    generate.generate(evil, shards=2)
    # The second shard gets the hostile name, in the file system and index.
    old = "model-00002-of-00002.safetensors"
    os.rename(os.path.join(evil, old), os.path.join(evil, EVIL_SHARD))
    index_path = os.path.join(evil, "model.safetensors.index.json")
    with open(index_path) as f:
        index = json.load(f)
    index["weight_map"] = {k: EVIL_SHARD if v == old else v
                           for k, v in index["weight_map"].items()}
    with open(index_path, "w") as f:
        json.dump(index, f)
    mlir = os.path.join(a.work, EVIL_DIR + ".mlir")
    run(["moe-translate" if os.sep not in mc else
         os.path.join(os.path.dirname(mc), "moe-translate"),
         "--import-hf", evil, "-o", mlir])

    tokens = ["--tokens", "1,17,42", "-n", "6"]
    run([mc, plain, "-o", os.path.join(a.work, "plain.bin"), "--quiet"])
    want = run([os.path.join(a.work, "plain.bin")] + tokens)
    for name, source in (("directory", evil), ("mlir file", mlir)):
        binary = os.path.join(a.work, f"evil-{name[0]}.bin")
        run([mc, source, "-o", binary, "--quiet"])
        proc = subprocess.run([binary] + tokens, capture_output=True)
        out = proc.stdout.decode(errors="replace")
        if proc.returncode != 0 or "PWNED" in out or out != want:
            sys.exit(f"FAIL: cpu binary from the hostile {name}: rc "
                     f"{proc.returncode}, stdout {out!r}, want {want!r}")
        print(f"cpu binary from the hostile {name}: same tokens as the plain model, nothing injected")

        for target, emit, suffix in (("cpu", "cpp", "cpp"), ("cuda", "cpp", "cpp"),
                                     ("cuda", "cu", "cu")):
            path = os.path.join(a.work, f"{target}-{name[0]}.{suffix}")
            run([mc, source, "--target", target, f"--emit={emit}", "-o", path, "--quiet"])
            with open(path, encoding="utf-8", errors="strict") as f:
                text = f.read()
            no_control_chars(text, f"--target {target} --emit={emit}")
            if suffix == "cpp":
                run([a.cxx, "-std=c++17", "-fsyntax-only", "-I", a.include, path])
            elif a.nvcc:
                run([a.nvcc, "-std=c++17", "-I", a.include, "-c", path,
                     "-o", path + ".o", "-gencode=arch=compute_90,code=sm_90"])
            print(f"--target {target} --emit={emit} from the hostile {name}: "
                  f"escaped, compiles")

        if a.nvcc:
            binary = os.path.join(a.work, f"evil-{name[0]}-cuda.bin")
            run([mc, source, "--target", "cuda", "-o", binary, "--quiet"])
            plan = run([binary, "--print-plan"])
            if "PWNED" not in plan or "\r" in plan or "\x1b" in plan:
                sys.exit(f"FAIL: the CUDA binary's plan: {plan!r}")
            print(f"--target cuda binary from the hostile {name}: builds, "
                  f"prints its plan with control characters as '?'")


if __name__ == "__main__":
    main()
