#!/usr/bin/env bash
#===- scripts/gpu-check.sh - the CUDA target on a machine with a GPU -------===#
#
# In one run: sets up and builds; runs every tiny configuration of the CPU
# suite on the CUDA target (the gpu-labelled ctest: logits against the numpy
# reference and the CPU target, see test/e2e/cuda_configs.py); expert
# parallelism over NCCL on 1 rank, and on 2 with two GPUs, against one
# process (scripts/gpu-ep.sh; skipped without Open MPI); then the
# benchmark (bench/cuda_mini.py: decode against the GPU's read bandwidth,
# the prefill expert GEMMs against cuBLAS). Fails if there is no GPU.
#
#   scripts/gpu-check.sh [bench options]
#   scripts/gpu-check.sh --bundle DIR|ARCHIVE [bench options]
#
# --bundle runs what scripts/gpu-bundle.sh built on another machine (its
# directory, or the .tar.xz it packs) instead of building here (for GPU
# machines without the LLVM/MLIR toolchain; needs python3 with numpy, nvcc
# and cuBLAS).
#
#===------------------------------------------------------------------------===#
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${MOE_BUILD_DIR:-$root/build}
export PYTHONPATH="$root/python"

if [ "${1:-}" = "--bundle" ]; then
  if [ -f "$2" ]; then
    # The archive gpu-bundle.sh packs (build/gpu-bundle.tar.xz).
    # (Python's tarfile: the machine need not have xz.)
    unpacked=$(mktemp -d)
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
      "$2" "$unpacked"
    bundle=$unpacked/gpu-bundle
  else
    bundle=$(cd "$2" && pwd)
  fi
  shift 2
  arch=$(cat "$bundle/arch")
  echo "==> the CUDA target on every tiny configuration (prebuilt, $arch)"
  python3 "$root/test/e2e/cuda_configs.py" --moe-compile none \
    --work "$bundle/tiny" --jobs 8 --compare-cpu --stage run --target cuda
  echo "==> expert parallelism over NCCL"
  # A failure here still lets the benchmark run (GPU time is short).
  ep=0
  "$root/scripts/gpu-ep.sh" run "$bundle/ep" || ep=1
  echo "==> benchmark"
  python3 "$root/bench/cuda_mini.py" --bundle "$bundle" --cuda-arch "$arch" "$@"
  exit $ep
fi

"$root/scripts/setup.sh"

echo "==> the CUDA target on every tiny configuration"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
(cd "$build" && ctest -L gpu -V) | tee "$log"
if grep -q "SKIPPED" "$log"; then
  echo "gpu-check: no usable GPU on this machine" >&2
  exit 1
fi
grep -q "100% tests passed" "$log" || exit 1

echo "==> expert parallelism over NCCL"
export PYTHON="$build/pyenv/bin/python"
# For this machine's GPU (compute capability 9.0: sm_90).
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1)
"$root/scripts/gpu-ep.sh" build "$build/gpu-ep" "$build/bin/moe-compile" \
  --cuda-arch "sm_${cap/./}"
ep=0
"$root/scripts/gpu-ep.sh" run "$build/gpu-ep" || ep=1

echo "==> benchmark"
/usr/bin/python3 "$root/bench/cuda_mini.py" --build "$build" "$@"
exit $ep
