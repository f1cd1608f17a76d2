"""End-to-end check of expert parallelism (moe-compile --expert-parallel N).

    check_ep.py --moe-compile BIN --mpirun MPIRUN --work DIR --ranks 2,4
        [--tokens 1,17,42,7,99] [-n 8] [--max-batch-tokens N] [--tol 1e-4]
        [--capacity-factor C] [--gguf TYPE [--gguf-experts stacked|split]]
        [--onnx FUSION [--onnx-qmoe FMT]]
        [generator options: --preset --dtype --seed --set K=V]
    check_ep.py ... --ranks 2 --kill RANK:STEP --timeout S

Generates the model and compiles it twice: one process, and for each N in
--ranks with --expert-parallel N. Runs the single-process binary and each
EP binary under `mpirun -np N`, each with --dump-logits, and checks:
  * every logits row of each EP run against the single-process binary's
    and against the numpy reference fed the same tokens:
    max |diff| <= tol * max |logit| per row; the greedy tokens equal both;
  * each rank's `ep:` line: N lines, ranks 0..N-1; each rank reads fewer
    weight bytes than the whole model (N > 1), and the ranks' bytes sum to
    the model's plus the replicated weights N - 1 more times (so every
    expert weight is held by exactly one rank);
  * the bytes each rank sent are > 0 when N > 1.
With --kill RANK:STEP the EP run's rank RANK kills itself (SIGKILL) before
decode step STEP: the run must fail (non-zero) within --timeout seconds,
never hang, and mpirun must say which rank died. With --hang RANK:STEP that
rank stops forever instead (it does not die, so mpirun sees nothing): the
other ranks must give up after MOERT_EP_TIMEOUT (--timeout / 6 s) with our
own error, and the run must fail within --timeout. Prints one summary
line.
"""

import argparse
import os
import re
import subprocess
import sys
import time

import numpy as np

from moe_ref import generate
from moe_ref.reference import Reference

import emu_build


def run(cmd, env=None, timeout=300):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    return proc


def mpi_env():
    env = dict(os.environ)
    # CI runs as root; Open MPI refuses root without these.
    env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    return env


def mpirun(args, n):
    # --oversubscribe: 4 ranks on a 2-core machine.
    return [args.mpirun, "--oversubscribe", "-np", str(n)]


CAPACITY_LINE = re.compile(r"^capacity: factor \S+: (\d+) of (\d+) routed \(token, expert\) "
                           r"pairs dropped", re.M)


def rows_close(name, got, want, tol):
    if got.shape != want.shape:
        sys.exit(f"{name}: logits have shape {got.shape}, expected {want.shape}")
    worst = 0.0
    for i, (row, ref) in enumerate(zip(got, want)):
        err = float(np.max(np.abs(row - ref)))
        scale = float(np.max(np.abs(ref)))
        worst = max(worst, err / scale)
        if err > tol * scale:
            sys.exit(f"{name}: row {i}: max |diff| {err:.3e} > {tol} * max |logit| {scale:.3e}")
    return worst


EP_LINE = re.compile(r"^ep: rank (\d+) of (\d+) \(mpi\): weights (\d+) of (\d+) bytes; "
                     r"peak resident (\d+) KiB; sent (\d+) bytes in (\d+) collectives "
                     r"over (\d+) steps \((\d+) bytes per step\)$", re.M)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--moe-compile", required=True)
    p.add_argument("--mpirun", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--ranks", default="2")
    p.add_argument("--tokens", default="1,17,42,7,99")
    p.add_argument("-n", type=int, default=8)
    p.add_argument("--max-batch-tokens", type=int, default=0)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--quantize", default=None,
                   help="compile both with --quantize=FMT; the EP run is then held "
                        "against the single-process binary only (check_e2e.py holds "
                        "that one against the quantising reference)")
    p.add_argument("--gguf", metavar="TYPE", default=None,
                   help="compile both from a GGUF file of the model written with this "
                        "tensor type (f32, f16, q8_0, ...); the EP run is then held "
                        "against the single-process binary only (cpu-gguf.test holds "
                        "that one against the reference)")
    p.add_argument("--gguf-experts", choices=["stacked", "split"], default="stacked")
    p.add_argument("--onnx", metavar="FUSION", default=None,
                   help="compile both from an ONNX export of the model (concat, fc3, "
                        "interleaved); held against the single-process binary only")
    p.add_argument("--onnx-qmoe", choices=["q8_0", "q4_0"], default=None,
                   help="with --onnx: the experts as a QMoE node with this format")
    p.add_argument("--capacity-factor", type=float, default=0.0,
                   help="compile both with --capacity-factor C: the reference drops the "
                        "same pairs (fed the binary's calls), and the EP run's "
                        "`capacity:` line must report the reference's drop count")
    p.add_argument("--target", choices=["cpu", "cuda-emu"], default="cpu",
                   help="cuda-emu: the EP binaries are the CUDA target's, built against "
                        "the CPU emulator (emu_build.py) with the MPI communicator, "
                        "and held against the CUDA target's single-process binary "
                        "on the emulator")
    emu_build.add_arguments(p)
    p.add_argument("--kill", default=None)
    p.add_argument("--hang", default=None)
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--dtype", default="f32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   type=generate.parse_override)
    args = p.parse_args()

    os.makedirs(args.work, exist_ok=True)
    model = os.path.join(args.work, "model")
    generate.generate(model, args.preset, args.seed, args.dtype, 1, dict(args.overrides))
    source = model
    if args.gguf:
        from moe_ref import gguf_writer
        source = os.path.join(args.work, f"model-{args.gguf}.gguf")
        gguf_writer.write_gguf(model, source, args.gguf, "all", args.gguf_experts)
    elif args.onnx:
        from moe_ref import onnx_writer
        source = os.path.join(args.work, f"model-{args.onnx}.onnx")
        onnx_writer.write_onnx(model, source, args.onnx, qmoe=args.onnx_qmoe)
    single = os.path.join(args.work, "single.bin")
    quant = [f"--quantize={args.quantize}"] if args.quantize else []
    if args.capacity_factor:
        quant.append(f"--capacity-factor={args.capacity_factor}")
    single_compile = [args.moe_compile, source, "--quiet"] + quant
    single_env = None
    if args.target == "cuda-emu":
        # The same target's single process: its kernels, not the CPU's.
        emu_build.build(args, single_compile, single, run)
        single_env = emu_build.env(args, os.environ)
    else:
        run(single_compile + ["-o", single])
    chunk = ["--max-batch-tokens", str(args.max_batch_tokens)] if args.max_batch_tokens else []
    base = ["--tokens", args.tokens, "-n", str(args.n)] + chunk
    npy = os.path.join(args.work, "single.npy")
    tokens = run([single] + base + ["--dump-logits", npy], env=single_env).stdout.split()
    single_logits = np.load(npy)
    prompt = [int(t) for t in args.tokens.split(",")]
    generated = [int(t) for t in tokens]
    expected = None
    if not (args.quantize or args.gguf or args.onnx):
        ref = Reference(model, capacity_factor=args.capacity_factor)
        # A capacity depends on each call's length: the binary's calls.
        chunk = args.max_batch_tokens or 512  # the binary's default
        expected = ref.forward_calls(prompt, generated, chunk)
        drops = (ref.dropped, ref.routed)
        greedy, _ = ref.generate(prompt, args.n, chunk)
        if generated != greedy:
            sys.exit(f"single-process tokens {generated} differ from the reference's {greedy}")

    lines = []
    for n in [int(r) for r in args.ranks.split(",")]:
        binary = os.path.join(args.work, f"ep{n}.bin")
        ep_compile = ([args.moe_compile, source, "--quiet", "--expert-parallel", str(n)] +
                      quant)
        if args.target == "cuda-emu":
            emu_build.build(args, ep_compile, binary, run)
        else:
            run(ep_compile + ["-o", binary])
        ep_npy = os.path.join(args.work, f"ep{n}.npy")
        cmd = mpirun(args, n) + [binary] + base + ["--dump-logits", ep_npy]
        if args.kill or args.hang:
            env = mpi_env()
            if args.target == "cuda-emu":
                env = emu_build.env(args, env)
            hook = args.kill or args.hang
            env["MOERT_EP_TEST_KILL" if args.kill else "MOERT_EP_TEST_HANG"] = hook
            deadline = max(1, int(args.timeout / 6))
            env["MOERT_EP_TIMEOUT"] = str(deadline)
            start = time.monotonic()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                      timeout=args.timeout)
            except subprocess.TimeoutExpired:
                sys.exit(f"a rank was killed and the others hung for {args.timeout} s")
            took = time.monotonic() - start
            if proc.returncode == 0:
                sys.exit(f"a rank was killed, but mpirun exited 0:\n{proc.stderr}")
            rank = hook.split(":")[0]
            fired = f"rank {rank}: " + ("killing itself" if args.kill else "hanging")
            if fired not in proc.stderr:
                sys.exit(f"the test hook did not fire:\n{proc.stderr}")
            if args.kill:
                said = re.search(rf"process rank {rank} .*exited on signal 9", proc.stderr)
            else:
                said = re.search(rf"error: rank \d+: no answer from the other ranks for "
                                 rf"{deadline} s while [a-z' ]+: a rank died or hangs", proc.stderr)
            if not said:
                sys.exit(f"no message says what happened:\n{proc.stderr}")
            if os.path.exists(ep_npy):
                sys.exit("a failed run left a --dump-logits file")
            print(f"ep {'kill' if args.kill else 'hang'} OK: rank {rank} "
                  f"{'killed' if args.kill else 'hung'}; mpirun exited {proc.returncode} "
                  f"after {took:.1f} s (limit {args.timeout} s): {said.group(0)}")
            return
        env = mpi_env()
        if args.target == "cuda-emu":
            env = emu_build.env(args, env)
        proc = run(cmd, env=env)
        ep_tokens = [int(t) for t in proc.stdout.split()]
        if ep_tokens != generated:
            sys.exit(f"{n} ranks: tokens {ep_tokens} differ from one process's {generated}")
        logits = np.load(ep_npy)
        vs_single = rows_close(f"{n} ranks vs one process", logits, single_logits, args.tol)
        vs_ref = (rows_close(f"{n} ranks vs reference", logits, expected, args.tol)
                  if expected is not None else None)
        stats = sorted((int(m[0]), m) for m in EP_LINE.findall(proc.stderr))
        if [r for r, _ in stats] != list(range(n)) or any(int(m[1]) != n for _, m in stats):
            sys.exit(f"{n} ranks: expected one `ep:` line per rank:\n{proc.stderr}")
        mine = [int(m[2]) for _, m in stats]
        total = int(stats[0][1][3])
        # Expert weights: total - replicated; each rank holds replicated +
        # its experts, so sum(mine) = total + (n - 1) * replicated.
        if n > 1:
            if any(b >= total for b in mine):
                sys.exit(f"{n} ranks: a rank reads all the weights: {mine} of {total}")
            replicated = (sum(mine) - total) / (n - 1)
            if replicated != int(replicated) or not 0 < replicated < min(mine):
                sys.exit(f"{n} ranks: weight bytes {mine} of {total} do not split the "
                         f"experts exactly once")
            sent = [int(m[5]) for _, m in stats]
            if any(s == 0 for s in sent):
                sys.exit(f"{n} ranks: a rank sent nothing: {sent}")
        capacity = ""
        if args.capacity_factor:
            m = CAPACITY_LINE.findall(proc.stderr)
            if len(m) != 1:
                sys.exit(f"{n} ranks: expected one `capacity:` line (rank 0's):\n{proc.stderr}")
            got = (int(m[0][0]), int(m[0][1]))
            if expected is not None and got != drops:
                sys.exit(f"{n} ranks: dropped {got[0]} of {got[1]} pairs, the reference "
                         f"{drops[0]} of {drops[1]}")
            capacity = f", {got[0]} of {got[1]} pairs dropped"
        per_step = [int(m[8]) for _, m in stats]
        held = args.quantize or (args.gguf and "gguf " + args.gguf) or "onnx"
        ref_text = f"{vs_ref:.2e}" if vs_ref is not None else f"not held ({held})"
        lines.append(f"{n} ranks: vs one process {vs_single:.2e}, vs reference {ref_text}, "
                     f"weight bytes per rank {mine} of {total}, bytes sent per step {per_step}"
                     f"{capacity}")
    print(f"ep OK: {len(single_logits)} rows, {args.n} greedy tokens equal; " + "; ".join(lines))


if __name__ == "__main__":
    main()
