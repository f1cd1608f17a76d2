#!/usr/bin/env bash
#===- scripts/demo.sh - set up, build and run the main job ----------------===#
#
# The main job on the built-in default, as far as the compiler goes today:
#   1. generate the `tiny` test model (HF directory, seed 0, f32);
#   2. import it with `moe-translate --import-hf` and verify the IR;
#   3. canonicalize and cost it with moe-opt (bytes and FLOPs per token);
#   4. run the numpy reference forward pass on a prompt: the tokens the
#      compiled binary will have to reproduce once code generation lands.
#
#===------------------------------------------------------------------------===#
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${MOE_BUILD_DIR:-$root/build}
python=/usr/bin/python3
model="$build/demo/tiny"
prompt=1,17,42

"$root/scripts/setup.sh"
export PYTHONPATH="$root/python"

echo "==> generating the tiny model in $model"
"$python" -m moe_ref.generate --out "$model" --preset tiny --seed 0 --quiet

echo "==> moe-translate --import-hf $model | moe-opt --canonicalize --moe-estimate-cost"
"$build/bin/moe-translate" --import-hf "$model" -o "$build/demo/tiny.mlir"
"$build/bin/moe-opt" "$build/demo/tiny.mlir" \
  --pass-pipeline='builtin.module(func.func(canonicalize,moe-estimate-cost))' \
  -o "$build/demo/tiny.opt.mlir"
# The function and its layer 0, the part worth reading; the whole module is
# in $build/demo/tiny.opt.mlir.
sed -n '/func.func @forward/,/moe.weight "model.layers.1.input_layernorm.weight"/p' \
  "$build/demo/tiny.opt.mlir" | sed '$d'
echo "    ... (layer 1, final norm and lm_head: see $build/demo/tiny.opt.mlir)"

cost=$(grep -oE 'moe.cost = \{[^}]*\}' "$build/demo/tiny.opt.mlir")
field() { echo "$cost" | grep -oE "$1 = [0-9]+" | grep -oE '[0-9]+$'; }
echo
echo "==> verified: $(grep -c moe.weight_source "$build/demo/tiny.mlir") weights;" \
     "one decode token reads $(field bytes_per_step) of $(field weight_bytes)" \
     "weight bytes and does $(field flops_per_step) weight FLOPs"

echo "==> reference forward pass (numpy, f64): prompt $prompt, 16 greedy tokens"
start=$(date +%s.%N)
tokens=$("$python" -m moe_ref.reference "$model" --tokens "$prompt" -n 16)
end=$(date +%s.%N)
echo "$tokens"
echo "    reference: $(echo "$start $end" | awk '{printf "%.2f", 19 / ($2 - $1)}') positions/s" \
     "(numpy oracle; compiled binaries arrive with the CPU target)"
