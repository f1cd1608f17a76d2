"""Checks of quantised weights (moe-compile --quantize).

    check_quant.py weights MODEL_DIR BIN [--quantize FMT] [--quantize-only all|experts]
    check_quant.py fidelity MODEL_DIR (--binary BIN [--binary BIN2 ..] |
                                       --reference-only --quantize FMT[,FMT..])
        [--quantize-only all|experts|all,experts] [--prompt 1,17,42] [--steps 256]
        [--min-top1 F] [--max-rel-err F] [--max-median-rel-err F] [--threads N]

`weights` (bit-exact): BIN.weights.safetensors, written by
`moe-compile MODEL_DIR -o BIN --quantize=FMT [--quantize-only=WHICH]`, must
hold __metadata__ {"producer": "moe-compile", "quantization": FMT}, and
exactly the weights of MODEL_DIR that WHICH selects (moe_ref.quant.
is_quantized), in MODEL_DIR's tensor order (file by file, each in header
order), each of dtype U8 and shape [rows, cols / 32 * block bytes], its bytes
equal to moe_ref.quant.quantize of the source weight, the data section
entirely indexed with no holes or overlaps, in the same order.

`fidelity`: the float32 reference (moe_ref.reference, unquantised weights)
generates STEPS greedy tokens after the prompt; then the quantised model
is fed prompt + those tokens in one prefill -- the binary (--binary, run
with -n 1 --dump-logits) or the reference computing with the dequantised
weights (--reference-only: the format's own error, no kernels involved) --
and at each of the STEPS positions its logits are compared with the
reference's: top-1 agreement (its argmax equals the token the reference
chose) and the relative logit error max|q - r| / max|r| of the row (the
worst row and the median are reported). --min-top1 / --max-rel-err /
--max-median-rel-err make the check fail (exit 1) below / above a
threshold. With --reference-only, comma lists of formats and selections, or
several --binary, are each measured against one f32 run.

Each mode prints one summary line; a failed check exits non-zero with a
message naming the file and tensor or row.
"""

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

from moe_ref import quant, safetensors  # noqa: E402
from moe_ref.reference import Reference  # noqa: E402

PRODUCER = "moe-compile"


def fail(msg):
    sys.exit(f"check_quant: {msg}")


def weights_path(binary):
    return binary + ".weights.safetensors"


def read_header_with_metadata(path):
    """-> (metadata or None, [(name, info)] in header order, data offset, file size)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                fail(f"{path}: shorter than a safetensors header")
            (n,) = struct.unpack("<Q", raw)
            if n > size - 8:
                fail(f"{path}: header length {n} runs past the end of the file ({size} bytes)")
            header = json.loads(f.read(n))
    except OSError as e:
        fail(f"{path}: {e.strerror}")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        fail(f"{path}: header is not JSON: {e}")
    if not isinstance(header, dict):
        fail(f"{path}: header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    return metadata, list(header.items()), 8 + n, size


def model_tensors_in_order(model_dir):
    """[(name, shape)] of MODEL_DIR's tensors, file by file (model_files
    order), each file in its header's order."""
    out = []
    for fname in safetensors.model_files(model_dir):
        path = os.path.join(model_dir, fname)
        _, entries, _, _ = read_header_with_metadata(path)
        out += [(name, tuple(info["shape"])) for name, info in entries]
    return out


def check_weights(args):
    path = weights_path(args.binary)
    if not os.path.exists(path):
        fail(f"{path}: no such file (was {args.binary} built with --quantize?)")
    metadata, entries, base, size = read_header_with_metadata(path)
    if not isinstance(metadata, dict):
        fail(f"{path}: no __metadata__")
    if metadata.get("producer") != PRODUCER:
        fail(f"{path}: __metadata__ producer is {metadata.get('producer')!r}, expected {PRODUCER!r}")
    fmt = metadata.get("quantization")
    if fmt not in quant.FORMATS:
        fail(f"{path}: __metadata__ quantization is {fmt!r}, not one of {', '.join(quant.FORMATS)}")
    if args.quantize and fmt != args.quantize:
        fail(f"{path}: __metadata__ quantization is {fmt!r}, expected {args.quantize!r}")
    extra = {k: v for k, v in metadata.items() if k not in ("producer", "quantization")}

    source_order = model_tensors_in_order(args.model_dir)
    expected = [(n, s) for n, s in source_order if quant.is_quantized(n, s, args.quantize_only)]
    names = [n for n, _ in entries]
    known = {n for n, _ in source_order}
    strangers = [n for n in names if n not in {e for e, _ in expected}]
    if strangers:
        why = ("not a weight of " + args.model_dir if strangers[0] not in known
               else f"not selected by --quantize-only {args.quantize_only}")
        fail(f"{path}: holds {len(strangers)} tensor(s) it should not, first {strangers[0]!r} ({why})")
    missing = [n for n, _ in expected if n not in names]
    if missing:
        fail(f"{path}: lacks {len(missing)} quantised weight(s), first {missing[0]!r}")
    if names != [n for n, _ in expected]:
        first = next(i for i, (a, (b, _)) in enumerate(zip(names, expected)) if a != b)
        fail(f"{path}: tensor {first} is {names[first]!r}, but {args.model_dir}'s order "
             f"puts {expected[first][0]!r} there")

    # Data section: entirely indexed, no holes or overlaps, in header order.
    offset = 0
    for name, info in entries:
        begin, end = info["data_offsets"]
        if begin != offset:
            fail(f"{path}: {name} starts at data offset {begin}, expected {offset} "
                 "(tensors must follow each other in order, without holes)")
        offset = end
    if base + offset != size:
        fail(f"{path}: the tensors end at byte {base + offset}, the file at {size}")

    source = {}
    for fname in safetensors.model_files(args.model_dir):
        source.update(safetensors.load(os.path.join(args.model_dir, fname)))
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    total = 0
    for (name, info), (_, shape) in zip(entries, expected):
        want_shape = quant.quantized_shape(shape, fmt, name)
        if info["dtype"] != "U8":
            fail(f"{path}: {name} has dtype {info['dtype']}, expected U8")
        if tuple(info["shape"]) != want_shape:
            fail(f"{path}: {name} has shape {info['shape']}, expected {list(want_shape)} "
                 f"({fmt} blocks of a {list(shape)} weight)")
        begin, end = info["data_offsets"]
        got = np.asarray(mm[base + begin: base + end]).reshape(want_shape)
        want = quant.quantize(source.pop(name), fmt, f"{args.model_dir}: {name}")
        if not np.array_equal(got, want):
            row, col = np.argwhere(got != want)[0]
            block = col // quant.BLOCK_BYTES[fmt]
            fail(f"{path}: {name} differs from moe_ref.quant.quantize at row {row}, block "
                 f"{block} (byte {col % quant.BLOCK_BYTES[fmt]} of the block): "
                 f"{got[row, col]} != {want[row, col]}")
        total += end - begin
    note = f"; other metadata {json.dumps(extra)}" if extra else ""
    print(f"quantised weights OK: {os.path.basename(path)} holds {len(entries)} {fmt} tensors "
          f"({args.quantize_only}, {total / 1e6:.1f} MB), bit-exact with moe_ref.quant{note}")


def run_binary(binary, tokens, threads):
    """Prefill of `tokens` with the binary; -> logits [len(tokens) + 1, vocab]."""
    with tempfile.TemporaryDirectory() as tmp:
        dump = os.path.join(tmp, "logits.npy")
        if not os.path.isfile(binary):
            fail(f"{binary}: no such file")
        cmd = [os.path.abspath(binary), "--tokens", ",".join(map(str, tokens)), "-n", "1", "--dump-logits", dump]
        if threads is not None:
            cmd += ["--threads", str(threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            fail(f"{binary} failed ({proc.returncode}): {proc.stderr.strip()}")
        logits = np.load(dump)
    if logits.shape[0] != len(tokens) + 1:
        fail(f"{binary}: --dump-logits wrote {logits.shape[0]} rows, expected {len(tokens) + 1}")
    return logits


def binary_format(binary):
    metadata, _, _, _ = read_header_with_metadata(weights_path(binary))
    return (metadata or {}).get("quantization", "?")


def f32_generation(model_dir, prompt, steps):
    """The float32 reference's greedy run: -> (generated ids, logits
    [len(prompt) + steps, vocab])."""
    return Reference(model_dir, np.float32).generate(prompt, steps)


def fidelity(model_dir, prompt, generation, quantize=None, quantize_only="all", binary=None,
             threads=None):
    """Compares the quantised model fed prompt + generated (in one prefill)
    with the f32 reference's `generation` = (generated, logits) at each of
    the len(generated) positions. The quantised logits come from `binary`,
    else from the reference with dequantised weights (`quantize`,
    `quantize_only`). -> dict: top1 (fraction), agree, steps, worst_rel,
    worst_row, median_rel, seconds."""
    generated, ref_logits = generation
    steps = len(generated)
    t0 = time.time()
    tokens = prompt + generated
    if binary is not None:
        q_logits = run_binary(binary, tokens, threads)
    else:
        ref = Reference(model_dir, np.float32, quantize=quantize, quantize_only=quantize_only)
        q_logits = ref.forward(tokens, ref.new_cache())
    if q_logits.shape[1] != ref_logits.shape[1]:
        fail(f"quantised logits have {q_logits.shape[1]} columns, the reference's {ref_logits.shape[1]}")
    rows = slice(len(prompt) - 1, len(prompt) - 1 + steps)
    q, r = q_logits[rows].astype(np.float64), ref_logits[rows].astype(np.float64)
    agree = np.argmax(q, axis=1) == np.asarray(generated)
    rel = np.max(np.abs(q - r), axis=1) / np.max(np.abs(r), axis=1)
    return {"top1": float(np.mean(agree)), "agree": int(np.sum(agree)), "steps": steps,
            "worst_rel": float(np.max(rel)), "worst_row": int(np.argmax(rel)),
            "median_rel": float(np.median(rel)), "seconds": time.time() - t0}


def check_fidelity(args):
    prompt = [int(t) for t in args.prompt.split(",")]
    t0 = time.time()
    generation = f32_generation(args.model_dir, prompt, args.steps)
    if not args.quiet:
        print(f"f32 reference: {args.steps} greedy tokens in {time.time() - t0:.1f} s",
              file=sys.stderr, flush=True)
    if args.binary:
        runs = [(f"{os.path.basename(b)} ({binary_format(b)})", dict(binary=b, threads=args.threads))
                for b in args.binary]
    else:
        runs = [(f"reference, {fmt} ({which})", dict(quantize=fmt, quantize_only=which))
                for fmt in args.quantize.split(",") for which in args.quantize_only.split(",")]
    failures = []
    for source, kw in runs:
        res = fidelity(args.model_dir, prompt, generation, **kw)
        print(f"fidelity of {source} against the f32 reference over {res['steps']} positions: "
              f"top-1 {res['agree']}/{res['steps']} = {res['top1']:.1%}, max rel logit err "
              f"{res['worst_rel']:.3e} (step {res['worst_row']}), median {res['median_rel']:.3e} "
              f"[{res['seconds']:.0f} s]", flush=True)
        if args.min_top1 is not None and res["top1"] < args.min_top1:
            failures.append(f"{source}: top-1 agreement {res['top1']:.4f} < --min-top1 {args.min_top1}")
        if args.max_rel_err is not None and res["worst_rel"] > args.max_rel_err:
            failures.append(f"{source}: max relative logit error {res['worst_rel']:.4e} (step "
                            f"{res['worst_row']}) > --max-rel-err {args.max_rel_err}")
        if args.max_median_rel_err is not None and res["median_rel"] > args.max_median_rel_err:
            failures.append(f"{source}: median relative logit error {res['median_rel']:.4e} > "
                            f"--max-median-rel-err {args.max_median_rel_err}")
    if failures:
        fail("; ".join(failures))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)

    w = sub.add_parser("weights", help="BIN.weights.safetensors is bit-exact with moe_ref.quant")
    w.add_argument("model_dir", help="the model directory BIN was compiled from")
    w.add_argument("binary", metavar="BIN", help="the binary; BIN.weights.safetensors is read")
    w.add_argument("--quantize", choices=quant.FORMATS,
                   help="require this format in the metadata (default: take the metadata's)")
    w.add_argument("--quantize-only", choices=quant.SELECTIONS, default="all",
                   help="the --quantize-only BIN was built with (default all)")

    f = sub.add_parser("fidelity", help="top-1 agreement and logit error against the f32 reference")
    f.add_argument("model_dir")
    src = f.add_mutually_exclusive_group(required=True)
    src.add_argument("--binary", metavar="BIN", action="append",
                     help="a binary built with --quantize (repeat it to measure several "
                          "against one f32 run)")
    src.add_argument("--reference-only", action="store_true",
                     help="use the reference with dequantised weights instead of a binary")
    f.add_argument("--quantize", metavar="FMT[,FMT...]",
                   help="with --reference-only (required there): the format(s), of "
                        f"{', '.join(quant.FORMATS)}; each is measured against one f32 run")
    f.add_argument("--quantize-only", metavar="WHICH[,WHICH...]", default="all",
                   help="with --reference-only: which weights are quantised, all or "
                        "experts, or both as all,experts (default all)")
    f.add_argument("--prompt", default="1,17,42,7,99", help="prompt token ids")
    f.add_argument("--steps", type=int, default=256, help="greedy steps compared (default 256)")
    f.add_argument("--min-top1", type=float, help="fail below this top-1 agreement (0..1)")
    f.add_argument("--max-rel-err", type=float,
                   help="fail above this max relative logit error (worst row)")
    f.add_argument("--max-median-rel-err", type=float,
                   help="fail above this median relative logit error (the worst row of a "
                        "random-weight model is a router flipping a near-tie; the median is "
                        "the format's typical error)")
    f.add_argument("--threads", type=int, help="--threads for the binary")
    f.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = p.parse_args(argv)

    if args.mode == "weights":
        check_weights(args)
    else:
        if args.reference_only and not args.quantize:
            p.error("--reference-only needs --quantize")
        if args.binary and (args.quantize or args.quantize_only != "all"):
            p.error("--quantize and --quantize-only go with --reference-only; a binary's "
                    "weights are what it was built with")
        for fmt in (args.quantize or "").split(",") if args.quantize else []:
            if fmt not in quant.FORMATS:
                p.error(f"--quantize: unknown format '{fmt}' (have: {', '.join(quant.FORMATS)})")
        for which in args.quantize_only.split(","):
            if which not in quant.SELECTIONS:
                p.error(f"--quantize-only: unknown selection '{which}' "
                        f"(have: {', '.join(quant.SELECTIONS)})")
        if args.steps < 1:
            p.error("--steps must be >= 1")
        check_fidelity(args)


if __name__ == "__main__":
    main()
