#!/usr/bin/env bash
#===- scripts/gpu-bundle.sh - build here what gpu-check runs on a GPU ------===#
#
# For a GPU machine without the LLVM/MLIR toolchain (the `device` tool's
# machines have nvcc, CMake and numpy but not libMLIR): builds, on this
# machine, the CUDA binaries of every tiny configuration (with the CPU
# target's logits for comparison), of `mini` for the benchmark, and of the
# expert-parallel check (scripts/gpu-ep.sh), into build/gpu-bundle, packed
# without the tiny models' weights (the GPU machine regenerates them) as
# build/gpu-bundle.tar.xz (about 5 MB; the directory itself is over the
# device tool's 64 MiB). On the GPU machine, from the repository root, with
# build/gpu-bundle.tar.xz carried along:
#     scripts/gpu-check.sh --bundle build/gpu-bundle.tar.xz
#
#   scripts/gpu-bundle.sh [--cuda-arch sm_90]
#
#===------------------------------------------------------------------------===#
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${MOE_BUILD_DIR:-$root/build}
bundle=$build/gpu-bundle
arch=sm_90
if [ "${1:-}" = "--cuda-arch" ]; then arch=$2; fi
python=/usr/bin/python3
export PYTHONPATH="$root/python"

"$root/scripts/setup.sh"
rm -rf "$bundle"
mkdir -p "$bundle"
echo "$arch" > "$bundle/arch"

echo "==> the tiny configurations (CUDA binaries for $arch, CPU logits)"
"$python" "$root/test/e2e/cuda_configs.py" --moe-compile "$build/bin/moe-compile" \
  --work "$bundle/tiny" --jobs 2 --compare-cpu --stage build \
  --target cuda --cuda-arch "$arch"

echo "==> mini (f16) for the benchmark: compiled from the layout alone"
# The generator is deterministic: the dense model the GPU machine generates
# has this sparse one's layout, so the binary's manifest fits it.
"$python" -m moe_ref.generate --preset mini --dtype f16 --sparse --quiet \
  --out "$bundle/mini-f16-layout"
"$build/bin/moe-compile" "$bundle/mini-f16-layout" --target cuda \
  --cuda-arch "$arch" -o "$bundle/mini-f16-cuda.bin" --quiet
"$build/bin/moe-compile" "$bundle/mini-f16-layout" --target cuda \
  --cuda-arch "$arch" -o "$bundle/mini-f16-noepi-cuda.bin" --quiet \
  --fuse-epilogues=false
"$build/bin/moe-translate" --import-hf "$bundle/mini-f16-layout" |
  "$build/bin/moe-opt" \
    --pass-pipeline='builtin.module(func.func(moe-estimate-cost))' \
    > "$bundle/mini-f16-cost.mlir"
rm -rf "$bundle/mini-f16-layout"

echo "==> expert parallelism over NCCL (1 and 2 ranks against one process)"
PYTHON="$python" "$root/scripts/gpu-ep.sh" build "$bundle/ep" \
  "$build/bin/moe-compile" --cuda-arch "$arch"

# What travels must fit the device tool's 64 MiB: the tiny configurations'
# weights stay behind (check_e2e.py's run stage regenerates them, and runs
# the binaries with --weights), and the rest goes as one xz archive.
rm -rf "$bundle"/tiny/*/model
tar -C "$build" -cJf "$build/gpu-bundle.tar.xz" gpu-bundle
du -sh "$bundle" "$build/gpu-bundle.tar.xz"
echo "==> carry build/gpu-bundle.tar.xz and run:" \
  "scripts/gpu-check.sh --bundle build/gpu-bundle.tar.xz"
