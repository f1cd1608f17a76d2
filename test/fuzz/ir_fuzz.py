"""A bounded IR fuzz run: mutated lit inputs through moe-opt's pipelines.

    ir_fuzz.py --moe-opt BIN --inputs DIR [DIR...] [--seconds 60]
        [--seed 1] [--crashes DIR] [--jobs 2]
        [--moe-compile BIN --work DIR]

Splits every .mlir file under the input directories into its `// -----`
cases, mutates them at random (integers to boundary values, element types,
swapped SSA uses, deleted or duplicated lines, `?` dimensions, op names,
bytes), and runs each mutant through the default pipeline at -O2 and -O0,
each pass alone and the cost estimate. With --moe-compile, the tiny
model's imported IR and its -O2 IR (whose manifest names real weight
files) are mutated too and compiled with --emit=cpp for both targets, so
the verifiers and the emitters' own checks see hostile IR that reaches
them. Errors are expected; a crash (a
signal, "LLVM ERROR", a stack dump) or a hang (no exit within 20 s) is not:
the input is written to --crashes and the run fails. Deterministic for a
seed and a machine speed; prints one summary line.

Inputs with `array<index: ...>` are skipped: the upstream MLIR 22 parser
crashes on that attribute (docs/hardening.md); we do not work around it.
"""

import argparse
import concurrent.futures
import os
import random
import re
import subprocess
import sys
import threading
import time

PIPELINES = [
    ["--moe-default-pipeline"],
    ["--moe-default-pipeline=opt-level=0 max-seq=64"],
    ["--pass-pipeline=builtin.module(func.func(moe-fuse-router,moe-fuse-expert-gemms,"
     "moe-fuse-projections,moe-fuse-epilogues))"],
    ["--pass-pipeline=builtin.module(func.func(moe-plan-kv-cache{max-seq=64},"
     "moe-plan-memory{max-batch-tokens=7}))"],
    ["--pass-pipeline=builtin.module(func.func(moe-estimate-cost{step-tokens=3}))"],
    ["--canonicalize", "--cse"],
]
INTS = ["0", "1", "-1", "2", "3", "7", "64", "2147483647", "2147483648",
        "4294967296", "4611686018427387904", "9223372036854775807",
        "-9223372036854775808", "16777217"]
TYPES = ["f32", "f16", "bf16", "i32", "i64", "i8", "f64"]
OPS = ["linear", "fused_linear", "rms_norm", "rope", "attention", "add", "router",
       "fused_router", "experts", "expert_permute", "grouped_matmul", "silu_mul",
       "expert_combine", "embedding", "weight"]
CRASH = re.compile(r"LLVM ERROR|Stack dump|PLEASE submit a bug report|"
                   r"AddressSanitizer|runtime error:")
KNOWN_UPSTREAM = re.compile(r"array<index\b")


def cases(dirs):
    out = []
    for d in dirs:
        for root, _, files in os.walk(d):
            for f in sorted(files):
                if f.endswith(".mlir"):
                    with open(os.path.join(root, f)) as fh:
                        out += [c for c in fh.read().split("// -----") if c.strip()]
    return out


def mutate(text, rng):
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(8)
        if kind == 0:
            nums = list(re.finditer(r"(?<![\w%#])-?\d+(?![\w.])", text))
            if nums:
                m = rng.choice(nums)
                text = text[:m.start()] + rng.choice(INTS) + text[m.end():]
        elif kind == 1:
            ts = list(re.finditer(r"\b(f32|f16|bf16|i32|i64)\b", text))
            if ts:
                m = rng.choice(ts)
                text = text[:m.start()] + rng.choice(TYPES) + text[m.end():]
        elif kind == 2:
            uses = list(re.finditer(r"%[\w#]+", text))
            if len(uses) > 1:
                a, b = rng.sample(uses, 2)
                if a.start() > b.start():
                    a, b = b, a
                text = (text[:a.start()] + b.group() + text[a.end():b.start()] +
                        a.group() + text[b.end():])
        elif kind in (3, 4):
            lines = text.split("\n")
            i = rng.randrange(len(lines))
            if kind == 3:
                del lines[i]
            else:
                lines.insert(i, lines[i])
            text = "\n".join(lines)
        elif kind == 5:
            dims = list(re.finditer(r"(?<=[<x])(\?|\d+)(?=x)", text))
            if dims:
                m = rng.choice(dims)
                new = rng.choice(["?", "0", "1", "3", "16777217", "9223372036854775807"])
                text = text[:m.start()] + new + text[m.end():]
        elif kind == 6:
            ops = list(re.finditer(r"moe\.(\w+)", text))
            if ops:
                m = rng.choice(ops)
                text = text[:m.start(1)] + rng.choice(OPS) + text[m.end(1):]
        else:
            if text:
                i = rng.randrange(len(text))
                text = text[:i] + chr(rng.randrange(32, 127)) + text[i + 1:]
    return text


COMPILE_TARGETS = [
    ["--emit=cpp"],
    ["--emit=cpp", "-O0"],
    ["--target", "cuda", "--emit=cpp"],
    ["--target", "cuda", "--emit=cu", "--max-seq", "100"],
]


def run_one(tool, text, args, work=None):
    """Runs moe-opt on `text` from stdin, or moe-compile (with `work`, a
    scratch directory) on it as a file."""
    if work is None:
        cmd, stdin = [tool, "-", "-o", "/dev/null"] + args, text.encode()
    else:
        path = os.path.join(work, f"mutant-{threading.get_ident()}.mlir")
        with open(path, "w") as f:
            f.write(text)
        cmd, stdin = [tool, path, "-o", "/dev/null", "--quiet"] + args, None
    try:
        p = subprocess.run(cmd, input=stdin, capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "hang (no exit within 20 s)"
    err = p.stderr.decode(errors="replace")
    if p.returncode == 0:
        return "ok"
    if p.returncode < 0:
        return f"signal {-p.returncode}: {err[-2000:]}"
    if p.returncode not in (0, 1) or CRASH.search(err):
        return f"exit {p.returncode}: {err[-2000:]}"
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moe-opt", required=True)
    ap.add_argument("--inputs", nargs="+", required=True)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--crashes", default="ir-fuzz-crashes")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--moe-compile", default="")
    ap.add_argument("--work", default="")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    corpus = cases(a.inputs)
    if not corpus:
        sys.exit("no .mlir inputs found")
    models = []
    if a.moe_compile:
        from moe_ref import generate
        os.makedirs(a.work, exist_ok=True)
        tiny = os.path.join(a.work, "tiny")
        generate.generate(tiny, shards=2)
        for level in ("-O0", "-O2"):
            out = subprocess.run([a.moe_compile, tiny, "--emit=mlir", level, "--quiet"],
                                 capture_output=True, text=True, check=True).stdout
            models.append(out)
    deadline = time.monotonic() + a.seconds
    runs = skipped = accepted = compiled = 0
    failures = []
    with concurrent.futures.ThreadPoolExecutor(a.jobs) as pool:
        while time.monotonic() < deadline and not failures:
            batch = []
            for _ in range(4 * a.jobs):
                compile_ = models and rng.random() < 0.5
                text = mutate(rng.choice(models if compile_ else corpus), rng)
                if KNOWN_UPSTREAM.search(text):
                    skipped += 1
                    continue
                if compile_:
                    batch.append((a.moe_compile, text, rng.choice(COMPILE_TARGETS),
                                  a.work))
                else:
                    batch.append((a.moe_opt, text, rng.choice(PIPELINES), None))
            results = pool.map(lambda job: run_one(*job), batch)
            for (tool, text, pipeline, _), result in zip(batch, results):
                runs += 1
                if result == "ok":
                    accepted += 1
                    compiled += tool == a.moe_compile
                elif result:
                    failures.append((tool, text, pipeline, result))
    for i, (tool, text, pipeline, result) in enumerate(failures):
        os.makedirs(a.crashes, exist_ok=True)
        path = os.path.join(a.crashes, f"crash-{a.seed}-{i}.mlir")
        with open(path, "w") as f:
            f.write(text)
        print(f"CRASH: {tool} {path} {' '.join(pipeline)}\n{result}")
    print(f"ir fuzz: {runs} mutants of {len(corpus)} cases ({accepted} "
          f"verified and ran the pipeline, {compiled} of them through "
          f"moe-compile), {len(failures)} crashes, {skipped} skipped "
          f"(upstream array<index>)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
