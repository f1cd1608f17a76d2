"""Every tiny configuration of the CPU end-to-end suite, run on the CUDA target.

    cuda_configs.py --moe-compile BIN --work DIR [--jobs N] [--only NAME]
        [check_e2e.py target options: --target cuda|cuda-emu ...]
        [--compare-cpu]

Runs check_e2e.py once per configuration below (the CPU suite's sixteen, in
test/e2e/cpu-tiny-*.test, plus prompts long enough for the prefill kernels,
and shapes off the kernels' fast paths: head dims, widths, expert counts)
with the given target options, and prints one line per configuration and a
summary `N/N configurations OK`. Exits non-zero if any failed.

Tolerances (max |diff| <= tol * max |logit| per row, against the float64
reference): 1e-4 for f32 weights, as on the CPU. With f16 or bf16 weights the
prefill matmuls run on tensor cores, which take their activations rounded to
the weight type (10 or 7 mantissa bits) and accumulate in f32: 2e-3 for f16,
1e-2 for bf16 (measured worst on the emulator: 6.4e-4 and 6.9e-3). Decode
steps keep f32 activations.
"""

import argparse
import concurrent.futures
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

PROMPT40 = ",".join(str((i * 37 + 11) % 256) for i in range(40))
PROMPT280 = ",".join(str((i * 53 + 5) % 256) for i in range(280))

# (name, check_e2e.py arguments)
CONFIGS = [
    ("default", ["-n", "32"]),
    ("window", ["--set", "sliding_window=4", "--tokens", "1,2,3,4,5,6,7,8,9",
                "-n", "12", "--compare-chunked", "3"]),
    ("window6", ["--set", "sliding_window=4", "--tokens", "1,2,3,4,5,6,7,8,9",
                 "-n", "4", "--max-batch-tokens", "6"]),
    ("hd8", ["--set", "head_dim=8"]),
    ("hd32", ["--set", "head_dim=32", "--set", "rope_theta=1e6"]),
    # The largest head_dim: 8-key tiles in the prefill attention.
    ("hd256", ["--set", "head_dim=256", "--dtype", "f16", "--tokens", PROMPT40,
               "-n", "4"]),
    ("chunked", ["--tokens", "5,4,3,2,1,200,100,50,25,12,6", "-n", "4",
                 "--compare-chunked", "2"]),
    ("k1", ["--set", "num_experts_per_tok=1"]),
    ("kE", ["--set", "num_experts_per_tok=4"]),
    ("nonorm", ["--set", "norm_topk_prob=false", "--set", "num_local_experts=3"]),
    ("mqa", ["--set", "num_key_value_heads=1"]),
    ("mha", ["--set", "num_key_value_heads=4"]),
    ("sharded", ["--shards", "3"]),
    ("tied", ["--set", "tie_word_embeddings=true"]),
    ("f16", ["--dtype", "f16"]),
    ("bf16", ["--dtype", "bf16", "--seed", "3"]),
    ("mixed", ["--dtype", "bf16", "--tensor-dtype", "norm.weight=f32",
               "--tensor-dtype", "w2.weight=f16"]),
    # Prompts past the decode variants' 8 tokens: the prefill attention and,
    # with 16-bit weights, the tensor-core matmuls.
    ("prefill-f32", ["--tokens", PROMPT40, "-n", "4", "--compare-chunked", "5"]),
    ("prefill-f16", ["--dtype", "f16", "--tokens", PROMPT40, "-n", "4"]),
    ("prefill-bf16-8e-k3", ["--dtype", "bf16", "--set", "num_local_experts=8",
                            "--set", "num_experts_per_tok=3", "--tokens", PROMPT40,
                            "-n", "4"]),
    ("prefill-window", ["--dtype", "f16", "--set", "sliding_window=8",
                        "--tokens", PROMPT40, "-n", "6", "--max-batch-tokens", "16",
                        "--compare-chunked", "24"]),
    # Chunks of 8 tokens through the decode attention: its 2 key splits (512
    # slots) go from one busy and one empty to two of 140 keys (two tiles).
    ("long-decode", ["--dtype", "f16", "--tokens", PROMPT280, "-n", "4",
                     "--max-batch-tokens", "8"]),
    # 8 key splits (2048 slots) of one tile each, most of them empty.
    ("split8", ["--tokens", PROMPT40, "-n", "8", "--compile-arg=--max-seq",
                "--compile-arg=2048",
                "--max-batch-tokens", "4"]),
    ("prefill-mixed", ["--dtype", "f16", "--tensor-dtype", "w2.weight=bf16",
                       "--tensor-dtype", "lm_head.weight=f32", "--tokens", PROMPT40,
                       "-n", "4"]),
    # Head dims other than 8, 16, 32, 64, 128 and 256, decode and prefill:
    # 24 (5 key groups of 24 threads in the decode attention, 8 threads
    # idle), 6 (pairs of floats, not float4; output dims past D idle in the
    # prefill), 80 and 160 (a partial share of the decode threads' dims), 264
    # (past the tiled kernels: attendRows, two key splits).
    ("hd24", ["--set", "head_dim=24"]),
    ("prefill-hd24", ["--set", "head_dim=24", "--tokens", PROMPT40, "-n", "4",
                      "--compare-chunked", "5"]),
    ("hd6-window", ["--set", "head_dim=6", "--set", "sliding_window=8",
                    "--tokens", PROMPT40, "-n", "6", "--max-batch-tokens", "16",
                    "--compare-chunked", "3"]),
    ("prefill-hd80-bf16", ["--dtype", "bf16", "--set", "head_dim=80",
                           "--tokens", PROMPT40, "-n", "4"]),
    ("prefill-hd160-f16", ["--dtype", "f16", "--set", "head_dim=160",
                           "--tokens", PROMPT40, "-n", "4", "--compare-chunked", "6"]),
    ("hd264", ["--set", "head_dim=264", "--tokens", PROMPT40, "-n", "4",
               "--compare-chunked", "5"]),
    # Widths that are not multiples of 8 (the gemv and router read one
    # element per lane): hidden 60 in f32; hidden 30, intermediate 50 and
    # head_dim 10 in f16 (rows of 16-bit weights not 16-byte aligned).
    ("hidden60", ["--set", "hidden_size=60", "--set", "head_dim=16",
                  "--tokens", PROMPT40, "-n", "4", "--compare-chunked", "5"]),
    ("odd-widths-f16", ["--dtype", "f16", "--set", "hidden_size=30",
                        "--set", "intermediate_size=50", "--set", "head_dim=10",
                        "--tokens", PROMPT40, "-n", "6", "--compare-chunked", "4"]),
    # A capacity factor (moe.expert_capacity): drops in the decode graph's
    # replays (none: one token) and the prompt; with f16 tensor cores, E = 8
    # and chunks of 16 (each its own capacity). The drop counts must equal
    # the reference's, copied back from the device counters.
    ("capacity", ["--capacity-factor", "0.5", "-n", "8"]),
    ("capacity-prefill-f16", ["--dtype", "f16", "--capacity-factor", "1.0",
                              "--set", "num_local_experts=8", "--tokens", PROMPT40,
                              "-n", "4", "--max-batch-tokens", "16"]),
    # The most experts a config may have: expert_permute's 1024 threads own
    # one expert each, and offsets[E] is thread 0's second.
    ("experts1024", ["--set", "num_local_experts=1024",
                     "--set", "num_experts_per_tok=3", "--set", "intermediate_size=16",
                     "--tokens", PROMPT40, "-n", "4"]),
]


def tolerance(args):
    dtype = args[args.index("--dtype") + 1] if "--dtype" in args else "f32"
    mixed = [a.split("=")[1] for a in args if a.endswith(("=f16", "=bf16"))]
    if dtype == "bf16" or "bf16" in mixed:
        return "1e-2"
    if dtype == "f16" or "f16" in mixed:
        return "2e-3"
    return "1e-4"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--moe-compile", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--only", action="append", default=[],
                   help="run only these configurations")
    p.add_argument("--compare-cpu", action="store_true",
                   help="also compare the logits with the CPU target's")
    args, target = p.parse_known_args()

    configs = [c for c in CONFIGS if not args.only or c[0] in args.only]

    def run(config):
        name, extra = config
        cmd = [sys.executable, os.path.join(HERE, "check_e2e.py"),
               "--moe-compile", args.moe_compile,
               "--work", os.path.join(args.work, name),
               "--tol", tolerance(extra)] + target + extra
        if args.compare_cpu:
            cmd.append("--compare-cpu")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        return name, proc.returncode == 0, lines[-1] if lines else ""

    failed = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for name, ok, last in pool.map(run, configs):
            failed += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {name}: {last}", flush=True)
    print(f"{len(configs) - failed}/{len(configs)} configurations OK")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
