"""End-to-end check of a compiled model against the numpy reference.

    check_e2e.py --moe-compile BIN --work DIR [--tokens 1,17,42] [-n 8]
        [--tol 1e-4] [--max-batch-tokens N] [--compare-chunked N]
        [--target cpu|cuda|cuda-emu ...] [--compare-cpu] [--stage all|build|run]
        [--quantize q8_0|q4_0|q4_1 [--quantize-only all|experts]]
        [--onnx concat|fc3|interleaved [--onnx-rotary gqa|separate]
         [--onnx-layout in-out|out-in] [--onnx-qmoe q8_0|q4_0] [--ort]]
        [--onnx-torch GRAPH.onnx [--ort]]
        [generator options: --preset --dtype --seed --shards --set K=V
         --rope-form v4|v5 --rope-scaling JSON ...] [--require-rope-effect]

Generates the model, compiles it with moe-compile, runs the binary with
--dump-logits, and checks every logits row (prefill rows, then one per decode
step) against the reference forward pass fed the same tokens (float64):
max |diff| <= tol * max |logit| for each row. Also checks the binary's greedy
tokens equal the reference's own greedy generation. Prints one summary line.

With dynamic RoPE scaling the reference is fed the binary's calls (the
prompt in chunks of --max-batch-tokens, then one call per generated token),
since the frequencies depend on each call's length; --require-rope-effect
also requires the logits to differ from the default RoPE's, so that a test
fails if the scaling were ignored.

--target cuda builds with moe-compile --target cuda (needs a GPU to run);
--target cuda-emu builds the CUDA target's kernels and host plan with the
C++ compiler against the CPU emulator of test/cuda-emu and runs them with it
as the CUDA driver.

--quantize FMT builds with moe-compile --quantize=FMT (and --quantize-only)
and checks against the reference computing with the same weights quantised
and dequantised (moe_ref.quant), so the tolerance measures the kernels, not
the format. The CPU kernels (not the CUDA ones, which dequantise; for those
the reference keeps f32 activations and the binary runs in its default
chunks) round a call's activations to int8 per block of
32 when it has fewer than 4 rows (decode), and from 4 rows on (prefill)
do so too where the CPU has AVX-512 VNNI and keep f32 elsewhere, so: the binary runs with --max-batch-tokens 1 (unless given),
every call then has one row, and the reference rounds its activations the
same way (int8_activations) -- checked at --tol, greedy tokens equal (the
rows agree to ~1e-6, but an activation whose x / d lands on a half in one
and a hair off it in the other rounds one int8 step apart: 1.4e-3 relative
in one row of tiny q4_1 experts, hence the default --tol 5e-3); then
a second run at the default chunk size checks the prompt's rows (the
prefill path) against the reference without that rounding, at
--quant-prefill-tol, loose enough for either prefill path (the experts'
calls of fewer than 4 rows round theirs in any case, which on tiny moves
the logits by up to ~2%; the unit tests check each path exactly).

--onnx-torch GRAPH.onnx compiles a graph torch.onnx.export wrote for the
generated model (moe_ref.torch_export, run outside CI): the graph is copied
and its data file rebuilt from the generated weights and the sidecar
GRAPH.json (moe_ref.torch_weights); --ort also runs onnxruntime on that
graph itself and checks the prompt's rows against the binary's and the
reference's.

--stage build stops after compiling (and running the CPU binary for
--compare-cpu); --stage run checks what it left, so a machine with the
compiler can build for one with the GPU.
"""

import argparse
import json
import os
import re
import subprocess
import sys

import numpy as np

from moe_ref import generate, quant
from moe_ref.reference import Reference

import emu_build


def run(cmd, env=None, stderr=None):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    if stderr is not None:
        stderr.append(proc.stderr)
    return proc.stdout


CAPACITY_LINE = re.compile(r"^capacity: factor (\S+): (\d+) of (\d+) routed \(token, expert\) "
                           r"pairs dropped \((\d+\.\d\d)%\)$", re.M)


def ref_config(model):
    with open(os.path.join(model, "config.json")) as f:
        return json.load(f)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--moe-compile", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--tokens", default="1,17,42,7,99")
    p.add_argument("-n", type=int, default=8)
    p.add_argument("--tol", type=float, default=None,
                   help="max |diff| <= tol * max |logit| per row (default 1e-4; with "
                        "--quantize 5e-3, see above)")
    p.add_argument("--max-batch-tokens", type=int, default=None,
                   help="run the binary with this chunk size (with --quantize: default 1)")
    p.add_argument("--compare-chunked", type=int, default=0,
                   help="also run with this chunk size and require the same logits")
    p.add_argument("--compile-arg", action="append", default=[])
    p.add_argument("--differential", action="store_true",
                   help="also build with -O0 and require the same logits as -O2 (f32 tolerance)")
    p.add_argument("--target", choices=["cpu", "cuda", "cuda-emu"], default="cpu")
    p.add_argument("--cuda-arch", default="", help="--cuda-arch for --target cuda")
    p.add_argument("--stage", choices=["all", "build", "run"], default="all",
                   help="build: generate and compile only (and with --compare-cpu run "
                        "the CPU binary); run: check what an earlier build stage left in "
                        "--work (to build where the compiler is and run where the GPU is)")
    p.add_argument("--compare-cpu", action="store_true",
                   help="also build the CPU target and require its logits within tol")
    emu_build.add_arguments(p)
    p.add_argument("--quantize", choices=quant.FORMATS,
                   help="build with moe-compile --quantize=FMT; the reference computes "
                        "with the same weights quantised and dequantised")
    p.add_argument("--quantize-only", choices=quant.SELECTIONS,
                   help="passed to moe-compile --quantize-only and to the reference "
                        "(default: moe-compile's, all)")
    p.add_argument("--gguf", metavar="TYPE",
                   help="also write the model as a GGUF with rank-2 weights as TYPE "
                        "(moe_ref.gguf_writer: f32, f16, bf16, q8_0, q4_0, q4_1, q4_k, q5_k, "
                        "q6_k, q4_k_m) and compile that file instead of the directory; "
                        "the reference computes with the file's weights dequantised by "
                        "PyPI's gguf (llama.cpp's format code)")
    p.add_argument("--gguf-experts", choices=["stacked", "split"], default="stacked")
    p.add_argument("--onnx", metavar="FUSION", choices=["concat", "fc3", "interleaved"],
                   help="also write the model as ONNX Runtime GenAI's graph "
                        "(moe_ref.onnx_writer; com.microsoft.MoE with fc1 = gate then up "
                        "rows, swiglu_fusion 2, fc1/fc3, swiglu_fusion 0, or gate and up "
                        "rows interleaved, swiglu_fusion 1; weights in external data) and "
                        "compile that file instead of the directory")
    p.add_argument("--onnx-layout", choices=["in-out", "out-in"], default="in-out",
                   help="with --onnx: linear weights stored [in, out] (MatMul(x, W), "
                        "re-laid out into the artifact's weights file) or [out, in] "
                        "(MatMul(x, Transpose(W)), mapped in place)")
    p.add_argument("--onnx-rotary", choices=["gqa", "separate"], default="gqa",
                   help="with --onnx: RoPE inside GroupQueryAttention or in separate "
                        "com.microsoft.RotaryEmbedding nodes")
    p.add_argument("--onnx-torch", metavar="GRAPH",
                   help="compile GRAPH (a torch.onnx.export graph of the generated "
                        "model, its data rebuilt from the sidecar GRAPH.json)")
    p.add_argument("--onnx-qmoe", choices=["q8_0", "q4_0"],
                   help="with --onnx: the experts as com.microsoft.QMoE (8 or 4 bits, "
                        "block_size 32), which moe-compile converts to q8_0 / q4_0 blocks "
                        "exactly; the reference computes with the experts quantised and "
                        "dequantised by moe_ref.quant, as with --quantize-only experts")
    p.add_argument("--ort", action="store_true",
                   help="with --onnx: also run onnxruntime's CPU provider on the "
                        "graph with fc1's gate and up rows interleaved (swiglu_fusion 1, "
                        "the only form its CPU MoE kernel runs: the compiled file itself "
                        "with --onnx interleaved, else its interleaved twin) and check the "
                        "binary's prompt rows against it")
    p.add_argument("--gguf-version", type=int, choices=[2, 3], default=3)
    p.add_argument("--quant-prefill-tol", type=float, default=5e-2,
                   help="with --quantize: tolerance of the default-chunk run's prompt rows "
                        "against the reference with f32 activations (default 5e-2)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--dtype", default="f32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   type=generate.parse_override)
    p.add_argument("--tensor-dtype", action="append", default=[],
                   type=generate.parse_override)
    generate.add_rope_arguments(p)
    p.add_argument("--no-renormalize", action="store_true",
                   help="compile the model's IR (moe-translate --import-hf, beside "
                        "--moe-compile) with `renormalize` taken off every moe.router, and "
                        "check against the reference without renormalisation: the router "
                        "kernels' path for families that honour norm_topk_prob = false "
                        "(Mixtral always renormalises)")
    p.add_argument("--capacity-factor", type=float, default=0.0, metavar="C",
                   help="compile with moe-compile --capacity-factor C and check against "
                        "the reference dropping the same pairs (fed the binary's calls, "
                        "since a call's length sets the capacity); the binary's "
                        "`capacity:` line must report the reference's drop count, and "
                        "with drops the logits must differ from the exact reference's "
                        "by more than 100 * tol")
    p.add_argument("--require-rope-effect", action="store_true",
                   help="also require the binary's logits to differ from the reference "
                        "with the default RoPE (same theta) by more than 100 * tol in "
                        "some row: the config's RoPE scaling must matter")
    args = p.parse_args()
    if args.quantize_only and not args.quantize:
        p.error("--quantize-only needs --quantize")
    if args.gguf and args.quantize:
        p.error("--gguf and --quantize: give one")
    if (args.onnx or args.onnx_torch) and (args.gguf or args.quantize):
        p.error("--onnx takes neither --gguf nor --quantize")
    if args.onnx and args.onnx_torch:
        p.error("--onnx and --onnx-torch exclude each other")
    if args.ort and not (args.onnx or args.onnx_torch):
        p.error("--ort needs --onnx or --onnx-torch")
    if args.onnx_qmoe and not args.onnx:
        p.error("--onnx-qmoe needs --onnx")
    # What the reference quantises: --quantize's weights, or QMoE's experts.
    ref_quant = args.quantize or args.onnx_qmoe
    ref_only = "experts" if args.onnx_qmoe else (args.quantize_only or "all")
    # Block formats in the GGUF file (a float type keeps every weight float).
    gguf_blocks = args.gguf not in (None, "f32", "f16", "bf16")
    # The CPU kernels' int8 activations (see above); the CUDA ones dequantise.
    cpu_int8 = (ref_quant is not None or gguf_blocks) and args.target == "cpu"
    if args.max_batch_tokens is None:
        args.max_batch_tokens = 1 if cpu_int8 else 0
    if args.tol is None:
        args.tol = 5e-3 if ref_quant or gguf_blocks else 1e-4

    os.makedirs(args.work, exist_ok=True)
    model = os.path.join(args.work, "model")
    binary = os.path.join(args.work, "model.bin")
    cpu_npy = os.path.join(args.work, "cpu.npy")
    gguf_path = os.path.join(args.work, f"model-{args.gguf}.gguf") if args.gguf else None
    onnx_path = os.path.join(args.work, f"model-{args.onnx}.onnx") if args.onnx else None
    if args.onnx_torch:
        onnx_path = os.path.join(args.work, os.path.basename(args.onnx_torch))
    # The run stage regenerates the weights when they did not travel with
    # the binaries (scripts/gpu-bundle.sh leaves them out: the generator is
    # deterministic).
    if args.stage != "run" or not os.path.exists(os.path.join(model, "config.json")):
        generate.generate(model, args.preset, args.seed, args.dtype, args.shards,
                          dict(args.overrides), tensor_dtypes=dict(args.tensor_dtype),
                          rope_form=args.rope_form, rope_scaling=args.rope_scaling)
        if gguf_path:
            from moe_ref import gguf_writer
            gguf_writer.write_gguf(model, gguf_path, args.gguf, "all", args.gguf_experts,
                                   args.gguf_version)
        if args.onnx_torch:
            import shutil
            from moe_ref import torch_weights
            shutil.copyfile(args.onnx_torch, onnx_path)
            torch_weights.write(os.path.splitext(args.onnx_torch)[0] + ".json", model,
                                onnx_path + ".data")
        elif onnx_path:
            from moe_ref import onnx_writer
            onnx_writer.write_onnx(model, onnx_path, args.onnx,
                                   wtype="f16" if args.dtype == "f16" else "f32",
                                   rotary=args.onnx_rotary, layout=args.onnx_layout,
                                   qmoe=args.onnx_qmoe)
    quant_flags = []
    if args.quantize:
        quant_flags.append(f"--quantize={args.quantize}")
        if args.quantize_only:
            quant_flags.append(f"--quantize-only={args.quantize_only}")
    source = gguf_path or onnx_path or model
    if args.no_renormalize:
        if gguf_path or onnx_path:
            p.error("--no-renormalize takes the HF directory, not --gguf")
        translate = os.path.join(os.path.dirname(args.moe_compile), "moe-translate")
        if not os.path.dirname(args.moe_compile):
            translate = "moe-translate"
        source = os.path.join(args.work, "model-no-renormalize.mlir")
        if args.stage != "run":
            ir = run([translate, "--import-hf", model])
            plain = ir.replace(" softmax renormalize :", " softmax :")
            if plain == ir:
                sys.exit("--no-renormalize: no `softmax renormalize` router in the IR")
            with open(source, "w") as f:
                f.write(plain)
    if args.capacity_factor:
        quant_flags.append(f"--capacity-factor={args.capacity_factor}")
    compile_cmd = ([args.moe_compile, source, "--quiet"] + args.compile_arg +
                   quant_flags)
    if args.stage == "run":
        pass
    elif args.target == "cpu":
        run(compile_cmd + ["-o", binary])
    elif args.target == "cuda":
        arch = ["--cuda-arch", args.cuda_arch] if args.cuda_arch else []
        run(compile_cmd + ["--target", "cuda", "-o", binary] + arch)
    else:
        emu_build.build(args, compile_cmd, binary, run)
    env = dict(os.environ)
    if args.target == "cuda-emu":
        env = emu_build.env(args, env)

    def run_binary(chunk, dump, exe=binary, stderr=None):
        cmd = [exe, "--tokens", args.tokens, "-n", str(args.n)]
        if args.stage == "run":
            # Built elsewhere: the weights are here, not where it was built.
            cmd += ["--weights", os.path.dirname(gguf_path or onnx_path or model + "/")]
        if dump:
            cmd += ["--dump-logits", dump]
        if chunk:
            cmd += ["--max-batch-tokens", str(chunk)]
        out = run(cmd, env, stderr).split()
        return [int(t) for t in out], np.load(dump) if dump else None

    def cpu_logits():
        cpu = os.path.join(args.work, "model-cpu.bin")
        run(compile_cmd + ["-o", cpu])
        tokens, logits = run_binary(args.max_batch_tokens, cpu_npy, cpu)
        os.remove(cpu)
        return tokens, logits

    if args.stage == "build":
        if args.compare_cpu and args.target != "cpu":
            cpu_logits()
        print(f"built {binary}")
        return

    binary_stderr = []
    generated, logits = run_binary(args.max_batch_tokens, os.path.join(args.work, "logits.npy"),
                                   stderr=binary_stderr)
    # Without --dump-logits the binary asks for the prompt's last row only
    # (moert_prefill_last: the CPU plans skip the head for the other rows):
    # the same tokens.
    last_only, _ = run_binary(args.max_batch_tokens, None)
    if last_only != generated:
        sys.exit(f"greedy tokens differ without --dump-logits (the prompt's last row only):\n"
                 f"  last row only {last_only}\n  all rows      {generated}")
    prompt = [int(t) for t in args.tokens.split(",")]
    if logits.shape != (len(prompt) + args.n, logits.shape[1]):
        sys.exit(f"logits have shape {logits.shape}, expected ({len(prompt) + args.n}, vocab)")

    gguf_weights, blocks = None, ()
    if gguf_path:
        from moe_ref import gguf_writer
        gguf_weights, blocks = gguf_writer.read_hf_weights(gguf_path, ref_config(model))
    ref = Reference(model, quantize=ref_quant, quantize_only=ref_only,
                    int8_activations=cpu_int8 and args.max_batch_tokens == 1,
                    weights=gguf_weights, blocks=blocks,
                    capacity_factor=args.capacity_factor)
    if args.no_renormalize:
        ref.renormalize = False
    # Teacher-forced: the reference sees exactly the tokens the binary fed;
    # with dynamic RoPE or a capacity factor in the binary's calls too (the
    # prompt in chunks of --max-batch-tokens, then one call per token),
    # since a call's length sets its frequencies and its capacity.
    dynamic = (ref.rope_params["rope_type"] == "dynamic" or
               args.capacity_factor > 0)
    # The binary's calls: --max-batch-tokens, else its default of 512.
    chunk = args.max_batch_tokens or 512
    if dynamic:
        expected = ref.forward_calls(prompt, generated, chunk)
    else:
        expected = ref.forward(prompt + generated, ref.new_cache())
    capacity_line = ""
    if args.capacity_factor:
        m = CAPACITY_LINE.search(binary_stderr[0])
        if not m:
            sys.exit(f"no `capacity:` line from the binary:\n{binary_stderr[0]}")
        got = (int(m.group(2)), int(m.group(3)))
        if got != (ref.dropped, ref.routed):
            sys.exit(f"the binary dropped {got[0]} of {got[1]} routed pairs, the reference "
                     f"{ref.dropped} of {ref.routed}")
        capacity_line = f"; capacity {args.capacity_factor:g}: {ref.dropped} of {ref.routed} pairs dropped"
        if ref.dropped:
            exact_ref = Reference(model, quantize=ref_quant, quantize_only=ref_only,
                                  int8_activations=ref.int8_activations,
                                  weights=gguf_weights, blocks=blocks)
            exact_ref.renormalize = ref.renormalize
            exact = exact_ref.forward_calls(prompt, generated, chunk)
            effect = max(float(np.max(np.abs(row - want)) / np.max(np.abs(want)))
                         for row, want in zip(logits, exact))
            if effect <= 100 * args.tol:
                sys.exit(f"dropping {ref.dropped} pairs changes the logits by only "
                         f"{effect:.2e} (relative) against the exact reference")
            capacity_line += f", logits differ from the exact ones by {effect:.2e}"
    worst = 0.0
    for i, (row, want) in enumerate(zip(logits, expected)):
        err = float(np.max(np.abs(row - want)))
        scale = float(np.max(np.abs(want)))
        worst = max(worst, err / scale)
        if err > args.tol * scale:
            sys.exit(f"row {i}: max |diff| {err:.3e} > {args.tol} * max |logit| {scale:.3e}")
    rope_effect = ""
    if args.require_rope_effect:
        scaled = dict(ref.rope_params)
        ref.rope_params = {"rope_type": "default", "rope_theta": scaled["rope_theta"]}
        plain = ref.forward(prompt + generated, ref.new_cache())
        ref.rope_params = scaled
        effect = max(float(np.max(np.abs(row - want)) / np.max(np.abs(want)))
                     for row, want in zip(logits, plain))
        if effect <= 100 * args.tol:
            sys.exit(f"the {scaled['rope_type']} RoPE scaling changes the logits by only "
                     f"{effect:.2e} (relative) against the default RoPE")
        rope_effect = f"; {scaled['rope_type']} RoPE differs from the default by {effect:.2e}"
    greedy, _ = ref.generate(prompt, args.n, chunk if dynamic else 0)
    if generated != greedy:
        sys.exit(f"greedy tokens differ:\n  binary    {generated}\n  reference {greedy}")

    if cpu_int8:
        _, full = run_binary(0, os.path.join(args.work, "prefill.npy"))
        plain = Reference(model, quantize=ref_quant, quantize_only=ref_only,
                          weights=gguf_weights, blocks=blocks).prefill(prompt)[0]
        for i, (row, want) in enumerate(zip(full, plain)):
            err, scale = float(np.max(np.abs(row - want))), float(np.max(np.abs(want)))
            if err > args.quant_prefill_tol * scale:
                sys.exit(f"prefill row {i} (default chunks): max |diff| {err:.3e} > "
                         f"{args.quant_prefill_tol} * max |logit| {scale:.3e}")
        worst_prefill = max(float(np.max(np.abs(r - w)) / np.max(np.abs(w)))
                            for r, w in zip(full, plain))
        print(f"prefill rows (default chunks) against unrounded activations: worst max|diff|/max|logit| = "
              f"{worst_prefill:.2e} (tol {args.quant_prefill_tol})")

    if args.compare_chunked:
        _, chunked = run_binary(args.compare_chunked, os.path.join(args.work, "chunked.npy"))
        diff = float(np.max(np.abs(chunked - logits)))
        if diff > args.tol * float(np.max(np.abs(logits))):
            sys.exit(f"chunked prefill ({args.compare_chunked}) differs from single-shot by {diff:.3e}")
        print(f"chunked prefill ({args.compare_chunked} tokens/chunk) matches single-shot: max |diff| {diff:.2e}")

    if args.compare_cpu and args.target != "cpu":
        if args.stage == "run":
            cpu = np.load(cpu_npy)  # left by the build stage
        else:
            _, cpu = cpu_logits()
        if cpu.shape != logits.shape:
            sys.exit(f"CPU logits have shape {cpu.shape}, {args.target} {logits.shape}")
        diff = float(np.max(np.abs(cpu - logits)))
        if diff > args.tol * float(np.max(np.abs(cpu))):
            sys.exit(f"{args.target} and CPU logits differ by {diff:.3e}")
        print(f"{args.target} and CPU targets agree: max |diff| {diff:.2e}")

    if args.differential and args.target != "cpu":
        sys.exit("--differential compares -O0 with -O2, which only the CPU target builds")
    if args.differential:
        o0 = os.path.join(args.work, "model-O0.bin")
        run([args.moe_compile, source, "-o", o0, "--quiet", "-O0"] + args.compile_arg +
            quant_flags)
        o0_tokens, o0_logits = run_binary(args.max_batch_tokens, os.path.join(args.work, "O0.npy"), o0)
        diff = float(np.max(np.abs(o0_logits - logits)))
        if o0_tokens != generated or diff > 1e-5 * float(np.max(np.abs(logits))):
            sys.exit(f"-O0 and -O2 differ: max |diff| {diff:.3e}, tokens {o0_tokens} vs {generated}")
        print(f"-O0 and -O2 agree: max |diff| {diff:.2e}")

    ort_line = ""
    if args.ort and args.onnx_torch:
        import onnxruntime
        sess = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        ort = sess.run(None, {"input_ids": np.array([prompt], np.int64)})[0][0]
        vs_bin = float(np.max(np.abs(ort - logits[:len(prompt)])) / np.max(np.abs(ort)))
        vs_ref = float(np.max(np.abs(ort - expected[:len(prompt)])) / np.max(np.abs(expected[:len(prompt)])))
        if vs_bin > args.tol or vs_ref > args.tol:
            sys.exit(f"onnxruntime's prompt rows differ: from the binary's by {vs_bin:.3e}, "
                     f"from the reference's by {vs_ref:.3e} (relative)")
        ort_line = (f"; onnxruntime {onnxruntime.__version__} on the same graph vs binary "
                    f"{vs_bin:.2e}, vs reference {vs_ref:.2e}")
    elif args.ort:
        from moe_ref import onnx_writer
        if args.onnx == "interleaved":
            twin = onnx_path  # the very file compiled
        else:
            twin = os.path.join(args.work, "model-interleaved-twin.onnx")
            onnx_writer.write_onnx(model, twin, "interleaved", rotary=args.onnx_rotary)
        ort = onnx_writer.run_ort(twin, prompt)
        # With QMoE, onnxruntime computes with float activations: it is held
        # against the reference without the int8 rounding (the same
        # weights, so the float tolerance), and the binary's default-chunk
        # prompt rows against it at the prefill tolerance.
        bin_rows = full[:len(prompt)] if args.onnx_qmoe else logits[:len(prompt)]
        ref_rows = plain if args.onnx_qmoe else expected[:len(prompt)]
        vs_bin = float(np.max(np.abs(ort - bin_rows)) / np.max(np.abs(ort)))
        vs_ref = float(np.max(np.abs(ort - ref_rows)) / np.max(np.abs(ref_rows)))
        if vs_bin > (args.quant_prefill_tol if args.onnx_qmoe else args.tol) or \
                vs_ref > (1e-4 if args.onnx_qmoe else args.tol):
            sys.exit(f"onnxruntime's prompt rows differ: from the binary's by {vs_bin:.3e}, "
                     f"from the reference's by {vs_ref:.3e} (relative)")
        what = "same file" if twin == onnx_path else "interleaved twin"
        ort_line = (f"; onnxruntime ({what}) vs binary {vs_bin:.2e}, "
                    f"vs reference {vs_ref:.2e}")
    weights = f" with {args.quantize} weights ({args.quantize_only or 'all'})" if args.quantize else ""
    if args.onnx_torch:
        weights = (f" from a torch.onnx.export graph ({os.path.basename(args.onnx_torch)})")
    elif onnx_path:
        weights = (f" from an ONNX graph ({args.onnx}, {args.onnx_layout}, "
                   f"{'QMoE ' + args.onnx_qmoe + ', ' if args.onnx_qmoe else ''}"
                   f"{'f16' if args.dtype == 'f16' else 'f32'}"
                   f"{', RotaryEmbedding' if args.onnx_rotary == 'separate' else ''})")
    if gguf_path:
        weights = f" from a {args.gguf} GGUF ({args.gguf_experts} experts, v{args.gguf_version})"
    print(f"e2e OK{weights}: {len(expected)} rows, worst max|diff|/max|logit| = {worst:.2e} "
          f"(tol {args.tol}); {args.n} greedy tokens match the reference{rope_effect}{capacity_line}{ort_line}")


if __name__ == "__main__":
    main()
