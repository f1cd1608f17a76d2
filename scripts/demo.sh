#!/usr/bin/env bash
#===- scripts/demo.sh - set up, build and run the main job ----------------===#
#
# The main job on the built-in default:
#   1. generate the `tiny` test model (Hugging Face directory, seed 0, f32);
#   2. compile it with moe-compile for the CPU target into one executable;
#   3. run it on a prompt: the generated token ids and the prefill and decode
#      speed;
#   4. check the tokens against the numpy reference forward pass.
#
#===------------------------------------------------------------------------===#
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${MOE_BUILD_DIR:-$root/build}
python=/usr/bin/python3
work="$build/demo"
prompt=1,17,42,7,99,3,250,12
n=32

"$root/scripts/setup.sh"
export PYTHONPATH="$root/python"
mkdir -p "$work"

echo "==> generating the tiny model in $work/tiny"
"$python" -m moe_ref.generate --out "$work/tiny" --preset tiny --seed 0 --quiet

echo "==> moe-compile $work/tiny -o $work/tiny.bin"
"$build/bin/moe-compile" "$work/tiny" -o "$work/tiny.bin"
"$work/tiny.bin" --print-plan

echo "==> $work/tiny.bin --tokens $prompt -n $n"
"$work/tiny.bin" --tokens "$prompt" -n "$n" | tee "$work/tokens.txt"

echo "==> numpy reference (float64), same prompt"
"$python" -m moe_ref.reference "$work/tiny" --tokens "$prompt" -n "$n" | tee "$work/reference.txt"
if diff -q "$work/tokens.txt" "$work/reference.txt" > /dev/null; then
  echo "==> the compiled binary's $n greedy tokens match the reference"
else
  echo "==> MISMATCH between the compiled binary and the reference" >&2
  exit 1
fi
