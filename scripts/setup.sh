#!/usr/bin/env bash
#===- scripts/setup.sh - install dependencies, configure, build ------------===#
#
# Idempotent: installs only the Debian packages that are missing, then
# configures (once) and builds moe-compile with Ninja into $MOE_BUILD_DIR
# (default: build/).
#
#===------------------------------------------------------------------------===#
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${MOE_BUILD_DIR:-$root/build}

packages=(
  cmake ninja-build g++ python3 python3-numpy python3-venv clang-22 libclang-rt-22-dev
  llvm-22-dev libmlir-22-dev mlir-22-tools llvm-22-tools
  libgtest-dev libsentencepiece-dev libpcre2-dev
  openmpi-bin libopenmpi-dev
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$p")
done
if ((${#missing[@]})); then
  echo "==> installing missing packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

# The test suite's Python references from PyPI (python/requirements-test.txt)
# in a venv that also sees Debian's numpy; the tests run with its python.
pyenv=$build/pyenv
req=$root/python/requirements-test.txt
if ! cmp -s "$req" "$pyenv/requirements-test.txt" 2>/dev/null; then
  echo "==> installing the test suite's Python packages into $pyenv"
  mkdir -p "$build"
  /usr/bin/python3 -m venv --system-site-packages "$pyenv"
  "$pyenv/bin/pip" install -q --disable-pip-version-check -r "$req"
  cp "$req" "$pyenv/requirements-test.txt"
fi

if [ ! -f "$build/build.ninja" ]; then
  echo "==> configuring in $build"
  cmake -G Ninja -S "$root" -B "$build" \
    -DCMAKE_BUILD_TYPE="${MOE_BUILD_TYPE:-Release}" \
    -DMLIR_DIR=/usr/lib/llvm-22/lib/cmake/mlir \
    -DMOE_PYTHON="$pyenv/bin/python"
elif ! grep -qx "MOE_PYTHON:FILEPATH=$pyenv/bin/python" "$build/CMakeCache.txt"; then
  cmake "$build" -DMOE_PYTHON="$pyenv/bin/python"
fi

echo "==> building"
cmake --build "$build"
