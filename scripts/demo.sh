#!/usr/bin/env bash
#===- scripts/demo.sh - set up, build and run the main job ----------------===#
#
# The main job on the built-in default. Until the frontends and code
# generation land, it builds moe-compile and shows the built-in example (one
# tiny Mixtral decoder layer plus lm_head, test/Dialect/MoE/mixtral-layer.mlir)
# parsed, verified, canonicalized and annotated by moe-estimate-cost with the
# bytes and FLOPs one decode token costs.
#
#===------------------------------------------------------------------------===#
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${MOE_BUILD_DIR:-$root/build}
example="$root/test/Dialect/MoE/mixtral-layer.mlir"

"$root/scripts/setup.sh"

echo "==> moe-opt $(basename "$example") --canonicalize --moe-estimate-cost"
"$build/bin/moe-opt" "$example" \
  --pass-pipeline='builtin.module(func.func(canonicalize,moe-estimate-cost))' \
  --mlir-print-debuginfo=false | tee "$build/demo.mlir"

# The cost the pass recorded, in words.
cost=$(grep -oE 'moe.cost = \{[^}]*\}' "$build/demo.mlir")
field() { echo "$cost" | grep -oE "$1 = [0-9]+" | grep -oE '[0-9]+$'; }
echo
echo "==> verified; per decode token the model reads $(field bytes_per_step) of" \
     "$(field weight_bytes) weight bytes and does $(field flops_per_step) weight FLOPs"
