"""Decode and prefill speed of the CPU target with quantised weights on the
`mini` preset, against llama.cpp on the same weights, interleaved in one run.

With --from-gguf, ours is compiled from the very GGUF file llama.cpp runs
(moe-compile's GGUF frontend; types f16, q8_0, q4_0, q4_1, q4_k, q6_k and
q4_k_m, llama.cpp's Q4_K/Q6_K mix), and the bytes per decode token are
counted from that file's tensors.

    /work/bench-venv/bin/python bench/cpu_quant.py [--types f16,q8_0,q4_0,q4_1]
        [--threads 2] [--prefill 512] [--decode 64] [--rounds 2]
        [--build BUILD] [--work DIR] [--source f16|f32]

Bench only, never in CI: llama.cpp comes from llama-cpp-python (and the GGUF
writer from PyPI's gguf), installed by hand into a venv outside the repo
(`python3 -m venv /work/bench-venv && /work/bench-venv/bin/pip install gguf
numpy llama-cpp-python`); run this script with that venv's python. Without
llama_cpp it measures ours alone; without a moe-compile that knows
--quantize it measures llama.cpp alone for the quantised types.

Generates mini (cached in --work, default BUILD/bench) with --source dtype;
for each type: f16 compiles the f16 model as it is, q8_0/q4_0/q4_1 compile it
with `moe-compile --quantize=TYPE` (every rank-2 weight but the router gates,
moe-compile's default); writes the same weights as a GGUF for llama.cpp with
bench/gguf_mini.py (cached). Then, warm (one unmeasured run of each first),
it runs ours and llama.cpp in turn, A B A B, `--rounds` times: ours is the
binary's own speed line (prefill of the --prefill prompt tokens, then
--decode greedy tokens); llama.cpp gets the same prompt tokens in one
llama_eval (n_batch 512, logits of the last row only) and then --decode
single-token evals feeding its argmax, timed with perf_counter. Both use
--threads threads. It prints each pair and the ratio ours / llama.cpp, and
our decode as a fraction of the read-bandwidth limit: bandwidth
(bench/membw.cpp, probed at the start and again before each round, whose
line shows it) / bytes one decode token reads, counted from the tensor
sizes in the stored format: attention, num_experts_per_tok of the experts
and the router of every layer, the norms, lm_head and one embedding row.
"""

import argparse
import json
import os
import re
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "bench"))

from moe_ref import configs, generate, quant  # noqa: E402
from benchlib import SPEED, sh  # noqa: E402

TYPES = ("f32", "f16", "q8_0", "q4_0", "q4_1")
# With --from-gguf: any type the GGUF writer makes (moe_ref.gguf_writer).
GGUF_TYPES = ("f16", "q8_0", "q4_0", "q4_1", "q4_k", "q6_k", "q4_k_m")


def evict(paths):
    """Drops the page-cache pages of each existing file (none is mapped)."""
    for path in paths:
        if os.path.exists(path):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def decode_bytes(config, wtype, source_bytes):
    """Bytes one decode token reads with every rank-2 weight but the router
    gates stored as `wtype` (f16 stores everything as f16), the rest at
    `source_bytes` per element."""
    k = config["num_experts_per_tok"]

    def size(name, shape):
        n = int(np.prod(shape))
        if wtype in quant.FORMATS and quant.is_quantized(name, shape, "all"):
            return n // quant.BLOCK * quant.BLOCK_BYTES[wtype]
        return n * {"f16": 2, "f32": 4}.get(wtype, source_bytes)

    total = 0
    for name, shape in configs.tensor_shapes(config):
        if name == "model.embed_tokens.weight":
            total += size(name, shape) // shape[0]  # one row
            if config.get("tie_word_embeddings", False):
                total += size(name, shape)  # the head reads all of it
        elif ".experts." in name:
            # k of the E experts, all of one size: count experts 0 .. k-1.
            if int(re.search(r"\.experts\.(\d+)\.", name).group(1)) < k:
                total += size(name, shape)
        else:
            total += size(name, shape)
    return total


def gguf_decode_bytes(path, config):
    """Bytes one decode token reads from a GGUF file as its tensors are
    stored: all of them but one embedding row and, of the experts, k of E."""
    import gguf
    share = config["num_experts_per_tok"] / config["num_local_experts"]
    total = 0
    for t in gguf.GGUFReader(path).tensors:
        n = int(t.n_bytes)
        if t.name == "token_embd.weight":
            n //= int(t.shape[-1])  # one row (shape is ne: [H, V])
            if config.get("tie_word_embeddings", False):
                n += int(t.n_bytes)
        elif "_exps." in t.name or re.match(r"blk\.\d+\.ffn_(gate|up|down)\.\d+\.", t.name):
            n = int(n * share)
        total += n
    return total


def moe_compile_has_quantize(moe_compile):
    try:
        return "--quantize" in sh([moe_compile, "--help"]).stdout
    except Exception:
        return False


def ours_once(binary, prompt, decode, threads):
    out = sh([binary, "--tokens", prompt, "-n", str(decode), "--threads", str(threads)]).stderr
    m = SPEED.search(out)
    if not m:
        sys.exit(f"cpu_quant: no speed line from {binary}:\n{out}")
    return float(m.group(1)), float(m.group(2))


class LlamaRunner:
    def __init__(self, gguf_path, threads, n_ctx):
        from llama_cpp import Llama
        self.llm = Llama(model_path=gguf_path, n_ctx=n_ctx, n_batch=512, n_ubatch=512,
                         n_threads=threads, n_threads_batch=threads, logits_all=False,
                         verbose=False)
        self.n_vocab = self.llm.n_vocab()

    def last_argmax(self):
        """Argmax of the last evaluated row's logits (with logits_all off,
        llama-cpp-python keeps none: read llama_get_logits directly)."""
        row = np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.n_vocab,))
        return int(np.argmax(row))

    def once(self, tokens, decode):
        llm = self.llm
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(tokens)
        t1 = time.perf_counter()
        tok = self.last_argmax()
        for _ in range(decode):
            llm.eval([tok])
            tok = self.last_argmax()
        t2 = time.perf_counter()
        return len(tokens) / (t1 - t0), decode / (t2 - t1)

    def close(self):
        self.llm.close() if hasattr(self.llm, "close") else None
        del self.llm


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(ROOT, "build"),
                   help="build directory whose bin/ holds moe-compile (default ROOT/build)")
    p.add_argument("--work", help="where models, GGUFs and binaries are cached (default BUILD/bench)")
    p.add_argument("--types", default="f16,q8_0,q4_0,q4_1")
    p.add_argument("--source", choices=["f16", "f32"], default="f16",
                   help="dtype of the generated mini that every type is made from (default f16)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prefill", type=int, default=512)
    p.add_argument("--decode", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2, help="measured A B rounds per type")
    p.add_argument("--no-llama", action="store_true", help="measure ours only")
    p.add_argument("--no-ours", action="store_true", help="measure llama.cpp only")
    p.add_argument("--from-gguf", action="store_true",
                   help="compile ours from the very GGUF file llama.cpp runs (the GGUF "
                        "frontend) rather than from the HF model with --quantize; allows "
                        "the k-quant types q4_k, q6_k and q4_k_m")
    p.add_argument("--runtime-include", action="append", default=[], metavar="[LABEL=]DIR",
                   help="build ours against this runtime/include instead of the one "
                        "moe-compile was built with (emits C++ and compiles it with the "
                        "libraries of BUILD/runtime); repeat to compare several, "
                        "interleaved")
    args = p.parse_args()
    types = args.types.split(",")
    allowed = GGUF_TYPES if args.from_gguf else TYPES
    for t in types:
        if t not in allowed:
            p.error(f"--types: unknown type '{t}' (have: {', '.join(allowed)})")
    work = args.work or os.path.join(args.build, "bench")
    os.makedirs(work, exist_ok=True)
    moe_compile = os.path.join(args.build, "bin", "moe-compile")

    llama_ok = not args.no_llama
    if llama_ok:
        try:
            import llama_cpp  # noqa: F401
            import gguf  # noqa: F401
        except ImportError as e:
            print(f"llama.cpp side skipped: {e} (run with /work/bench-venv/bin/python)")
            llama_ok = False
    ours_ok = not args.no_ours and os.access(moe_compile, os.X_OK)
    if not args.no_ours and not ours_ok:
        print(f"our side skipped: no {moe_compile}")
    quant_ok = ours_ok and moe_compile_has_quantize(moe_compile)
    if ours_ok and not quant_ok:
        print(f"{moe_compile} has no --quantize: ours is measured for f16 only")

    membw = os.path.join(work, "membw")
    sh(["c++", "-O2", "-march=native", "-pthread", os.path.join(ROOT, "bench", "membw.cpp"), "-o", membw])
    bandwidth = float(sh([membw, str(args.threads)]).stdout)
    print(f"read bandwidth ({args.threads} threads): {bandwidth:.1f} GB/s", flush=True)

    model = os.path.join(work, f"mini-{args.source}")
    if not os.path.exists(os.path.join(model, "config.json")):
        print(f"generating mini ({args.source}) in {model} ...", flush=True)
        generate.generate(model, preset="mini", dtype=args.source)
    with open(os.path.join(model, "config.json")) as f:
        config = json.load(f)
    source_bytes = 2 if args.source == "f16" else 4
    prompt_ids = [(i * 7919) % config["vocab_size"] for i in range(args.prefill)]
    prompt = ",".join(map(str, prompt_ids))

    for wtype in types:
        if wtype in ("f16", "f32") and args.source != wtype:
            print(f"{wtype}: skipped (the {wtype} row needs --source {wtype})")
            continue
        gguf_path = os.path.join(work, f"mini-{args.source}-{wtype}.gguf")
        if (llama_ok or args.from_gguf) and not os.path.exists(gguf_path):
            import gguf_mini
            print(f"writing {gguf_path} ...", flush=True)
            gguf_mini.write_gguf(model, gguf_path + ".tmp", wtype)
            os.replace(gguf_path + ".tmp", gguf_path)
        nbytes = (gguf_decode_bytes(gguf_path, config) if args.from_gguf
                  else decode_bytes(config, wtype, source_bytes))
        limit = bandwidth * 1e9 / nbytes
        binaries = []  # (label, path)
        if ours_ok and args.from_gguf:
            binary = os.path.join(work, f"mini-{args.source}-{wtype}-gguf.bin")
            sh([moe_compile, gguf_path, "-o", binary, "--quiet"])
            binaries.append(("ours", binary))
        elif ours_ok and (wtype in ("f16", "f32") or quant_ok):
            flags = [] if wtype in ("f16", "f32") else [f"--quantize={wtype}"]
            if not args.runtime_include:
                binary = os.path.join(work, f"mini-{args.source}-{wtype}.bin")
                sh([moe_compile, model, "-o", binary, "--quiet"] + flags)
                binaries.append(("ours", binary))
            else:
                # One emitted program (and weights file, found by name beside
                # the executable) for every variant.
                cpp = os.path.join(work, f"mini-{args.source}-{wtype}.cpp")
                sh([moe_compile, model, "--emit=cpp", "-o", cpp, "--quiet"] + flags)
                lib = os.path.join(args.build, "runtime")
                for i, spec in enumerate(args.runtime_include):
                    label, _, inc = spec.rpartition("=")
                    label = label or f"ours{i}"
                    binary = os.path.join(work, f"mini-{args.source}-{wtype}-{label}.bin")
                    sh(["c++", "-std=c++17", "-O2", "-march=native", "-w", "-I" + inc, cpp,
                        os.path.join(lib, "libmoert_main.a"), os.path.join(lib, "libmoert.a"),
                        "-l:libpcre2-8.a",
                        "-lpthread", "-ldl", "-o", binary])
                    binaries.append((label, binary))
        llama = None
        if llama_ok:
            llama = LlamaRunner(gguf_path, args.threads, args.prefill + args.decode + 8)
        if not binaries and llama is None:
            print(f"{wtype}: nothing to measure")
            continue
        # Our weights files out of the page cache first, so that the warm-up
        # run reads them in 2 MiB folios (the runtime's mappings ask for
        # them) as a model's first load does: pages another reader brought
        # in (the GGUF writer, the reference) sit in small folios, which the
        # runtime can then map with 4 KiB pages only (on 2026-12-01 30% of
        # the f16 file was, and decode fell to about half the bandwidth).
        evict([os.path.join(model, f) for f in os.listdir(model) if f.endswith(".safetensors")]
              + [binary + ".weights.safetensors" for _, binary in binaries])
        for _, binary in binaries:
            ours_once(binary, prompt, args.decode, args.threads)
        if llama:
            llama.once(prompt_ids, args.decode)
        # pairs[label] = [(ours, llama.cpp or None) per round]
        pairs = {label: [] for label, _ in binaries}
        lpairs = []
        for r in range(args.rounds):
            # The read bandwidth of this machine swings by 2x within minutes
            # (bench/RESULTS.md): probed again before each round, so a
            # round's ratio can be read against the bandwidth of its moment.
            now = float(sh([membw, str(args.threads)]).stdout)
            line = [f"bandwidth {now:.1f} GB/s"]
            got = {}
            for label, binary in binaries:
                a = ours_once(binary, prompt, args.decode, args.threads)
                got[label] = a
                line.append(f"{label} decode {a[1]:.1f} tok/s, prefill-{args.prefill} "
                            f"{a[0]:.1f} tok/s")
            b = llama.once(prompt_ids, args.decode) if llama else None
            lpairs.append(b)
            if b:
                line.append(f"llama.cpp decode {b[1]:.1f} tok/s, prefill-{args.prefill} "
                            f"{b[0]:.1f} tok/s")
            for label, a in got.items():
                pairs[label].append((a, b))
                if b:
                    line.append(f"ratio {label} decode {a[1] / b[1]:.2f}x, "
                                f"prefill {a[0] / b[0]:.2f}x")
            print(f"mini {wtype} round {r + 1}: " + "; ".join(line), flush=True)
        head = (f"mini {wtype} ({nbytes / 1e6:.0f} MB/decode token, limit {limit:.1f} tok/s at "
                f"{bandwidth:.1f} GB/s), best of {args.rounds}: ")
        summary = []
        for label, ps in pairs.items():
            dec = max(a[1] for a, _ in ps)
            pre = max(a[0] for a, _ in ps)
            summary.append(f"{label} decode {dec:.1f} tok/s = {dec / limit:.0%} of the limit, "
                           f"prefill {pre:.1f}")
        if llama:
            dec_l = max(b[1] for b in lpairs)
            pre_l = max(b[0] for b in lpairs)
            summary.append(f"llama.cpp decode {dec_l:.1f} tok/s = {dec_l / limit:.0%}, prefill {pre_l:.1f}")
            for label, ps in pairs.items():
                summary.append(f"ratio {label} (median of pairs) decode "
                               f"{statistics.median(a[1] / b[1] for a, b in ps):.2f}x, prefill "
                               f"{statistics.median(a[0] / b[0] for a, b in ps):.2f}x")
        print(head + "; ".join(summary), flush=True)
        if llama:
            llama.close()


if __name__ == "__main__":
    main()
