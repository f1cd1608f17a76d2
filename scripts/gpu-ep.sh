#!/usr/bin/env bash
#===- scripts/gpu-ep.sh - expert parallelism over NCCL on GPUs -------------===#
#
# The GPU step of expert parallelism, for scripts/gpu-check.sh (and, built
# ahead, scripts/gpu-bundle.sh):
#
#   scripts/gpu-ep.sh build DIR MOE_COMPILE [--cuda-arch sm_90]
#   scripts/gpu-ep.sh run DIR
#
# `build` generates two models into DIR (tiny f32 with E = 3, split unevenly
# over 2 ranks; tiny f16 with E = 8, whose 40-token prompt takes the
# tensor-core grouped GEMMs) and compiles each three ways for the CUDA
# target: one process, --expert-parallel 1 and --expert-parallel 2 (linked
# with NCCL, the CUDA runtime and MPI). Needs no GPU.
#
# `run` runs them on this machine's GPUs: the single-process binary, then
# `mpirun -np 1` of the 1-rank program (NCCL's bootstrap, the EP kernels and
# the all-gather on one GPU), and with two or more GPUs `mpirun -np 2` of the
# 2-rank one, and requires the same greedy tokens and the logits within the
# test tolerance of the single process (1e-4 for f32 weights, 2e-3 for f16:
# the single-process combine may contract to FMA where the EP path does
# not). Where moe-compile was built without MPI or NCCL (`build` leaves a
# SKIPPED note), mpirun is missing, or the executables' libraries are, it
# says what is missing and skips (exit 0); a mismatch or a failed run fails
# (exit 1).
#
#===------------------------------------------------------------------------===#
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$root/python"
python=${PYTHON:-python3}
prompt40=$(seq -s, 1 40)
# name, generator options, prompt, tolerance
models=("tiny-e3|--set num_local_experts=3|1,17,42,7,99|1e-4"
        "tiny-f16-e8|--dtype f16 --set num_local_experts=8|$prompt40|2e-3")

usage() {
  sed -n '/^#   scripts/s/^#   //p' "${BASH_SOURCE[0]}" >&2
  exit 2
}

build() {
  local dir=$1 compile=$2
  shift 2
  local arch=()
  if [ "${1:-}" = "--cuda-arch" ]; then arch=(--cuda-arch "$2"); fi
  rm -rf "$dir"
  mkdir -p "$dir"
  # A moe-compile built without MPI or NCCL cannot link these: `run` then
  # says so and skips.
  local probe
  if ! probe=$("$compile" "$dir/no-model" --target cuda --expert-parallel 2 \
      -o "$dir/probe.bin" 2>&1) && grep -q "expert-parallel.* needs" <<<"$probe"; then
    grep "expert-parallel.* needs" <<<"$probe" > "$dir/SKIPPED"
    echo "gpu-ep: not built: $(cat "$dir/SKIPPED")"
    return 0
  fi
  for m in "${models[@]}"; do
    IFS='|' read -r name gen _ _ <<<"$m"
    # shellcheck disable=SC2086 # gen is a list of options
    "$python" -m moe_ref.generate --quiet --out "$dir/$name" $gen
    "$compile" "$dir/$name" --target cuda "${arch[@]}" --quiet \
      -o "$dir/$name-single.bin"
    for ranks in 1 2; do
      "$compile" "$dir/$name" --target cuda "${arch[@]}" --quiet \
        --expert-parallel "$ranks" -o "$dir/$name-ep$ranks.bin"
    done
    echo "built $dir/$name: one process, 1 and 2 ranks"
  done
}

run() {
  local dir
  dir=$(cd "$1" && pwd)
  if [ -f "$dir/SKIPPED" ]; then
    echo "gpu-ep: skipped: $(cat "$dir/SKIPPED")"
    return 0
  fi
  local mpirun
  if ! mpirun=$(command -v mpirun); then
    echo "gpu-ep: skipped: no mpirun on this machine (Open MPI)"
    return 0
  fi
  local missing
  missing=$(ldd "$dir/${models[0]%%|*}-ep1.bin" | grep "not found" || true)
  if [ -n "$missing" ]; then
    echo "gpu-ep: skipped: the EP executables' libraries are missing here:"
    echo "$missing"
    return 0
  fi
  # The GPUs the ranks may use: CUDA_VISIBLE_DEVICES's, where it is set.
  local gpus
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c "^GPU " || true)
  if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
    local visible
    IFS=, read -r -a visible <<<"$CUDA_VISIBLE_DEVICES"
    if [ "${#visible[@]}" -lt "$gpus" ]; then gpus=${#visible[@]}; fi
  fi
  if [ "$gpus" -lt 1 ]; then
    echo "gpu-ep: no GPU on this machine" >&2
    return 1
  fi
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  local failed=0
  for m in "${models[@]}"; do
    IFS='|' read -r name _ tokens tol <<<"$m"
    local args=(--weights "$dir/$name" --tokens "$tokens" -n 8)
    rm -f "$dir/$name"-*.npy "$dir/$name"-*.out
    if ! "$dir/$name-single.bin" "${args[@]}" \
        --dump-logits "$dir/$name-single.npy" > "$dir/$name-single.out"; then
      echo "FAIL $name: the single-process run failed"
      failed=1
      continue
    fi
    for ranks in 1 2; do
      if [ "$ranks" -gt "$gpus" ]; then
        echo "skip $name on $ranks ranks: $gpus GPU(s), NCCL takes one a rank"
        continue
      fi
      if ! timeout 300 "$mpirun" --oversubscribe -np "$ranks" \
          "$dir/$name-ep$ranks.bin" "${args[@]}" \
          --dump-logits "$dir/$name-ep$ranks.npy" > "$dir/$name-ep$ranks.out"; then
        echo "FAIL $name on $ranks ranks: the run failed"
        failed=1
        continue
      fi
      if ! "$python" - "$dir/$name" "$ranks" "$tol" <<'EOF'; then
import sys
import numpy as np
base, ranks, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
single = np.load(f"{base}-single.npy")
ep = np.load(f"{base}-ep{ranks}.npy")
# The greedy tokens: stdout (rank 0 writes it under mpirun).
tokens = [open(f"{base}-{w}.out").read().split() for w in ("single", f"ep{ranks}")]
if single.shape != ep.shape:
    sys.exit(f"FAIL logits {ep.shape} on {ranks} rank(s), {single.shape} in one process")
err = float(np.max(np.abs(single - ep) / np.maximum(1.0, np.abs(single))))
name = base.rsplit("/", 1)[1]
where = f"{ranks} rank" + ("s" if ranks != "1" else "")
if tokens[0] != tokens[1] or not err <= tol:
    sys.exit(f"FAIL {name} on {where}: tokens {tokens[1]} vs {tokens[0]}, "
             f"logits {err:.2e} from one process (tolerance {tol:g})")
print(f"ok   {name} on {where}: {len(single)} logits rows {err:.2e} from one "
      f"process, {len(tokens[0])} greedy tokens equal")
EOF
        failed=1
      fi
    done
  done
  return "$failed"
}

case "${1:-}" in
build) [ $# -ge 3 ] || usage; shift; build "$@" ;;
run) [ $# -eq 2 ] || usage; run "$2" ;;
*) usage ;;
esac
