#!/usr/bin/env bash
#===- scripts/test.sh - set up, build and run every test -------------------===#
#
# Installs what is missing, builds, then runs the lit suite (dialect, passes)
# and the ctest suite (GoogleTest units, docs-up-to-date). Prints one summary
# line at the end: `N passed, N failed[, N skipped]`. Exits non-zero when
# anything failed.
#
#===------------------------------------------------------------------------===#
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${MOE_BUILD_DIR:-$root/build}
lit=/usr/lib/llvm-22/bin/lit

"$root/scripts/setup.sh" || { echo "0 passed, 1 failed"; exit 1; }

log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

echo "==> lit"
"$lit" -sv "$build/test" 2>&1 | tee "$log/lit.txt"
lit_rc=${PIPESTATUS[0]}

echo "==> ctest"
(cd "$build" && ctest --output-on-failure 2>&1) | tee "$log/ctest.txt"
ctest_rc=${PIPESTATUS[0]}
# Why each skipped test (the GPU-labelled ones without a GPU) was skipped.
if grep -qE "\*\*\*Skipped" "$log/ctest.txt"; then
  (cd "$build" && ctest -L gpu -V 2>&1) | grep -E "SKIPPED:" | sed 's/^[0-9]*: /  /' || true
fi

# lit: "  Passed: N", "  Failed: N", "  Unsupported: N", ...
count() { grep -E "^  $1 *: *[0-9]+" "$log/lit.txt" | grep -oE '[0-9]+' | head -n1; }
lit_pass=$(( $(count Passed || true) + 0 ))
lit_xfail=$(( $(count "Expectedly Failed" || true) + 0 ))
lit_fail=$(( $(count Failed || true) + $(count "Unexpectedly Passed" || true) + 0 ))
lit_skip=$(( $(count Unsupported || true) + $(count Skipped || true) + 0 ))

# ctest: "N% tests passed, F tests failed out of T"
summary=$(grep -E "tests passed, [0-9]+ tests? failed out of [0-9]+" "$log/ctest.txt" | tail -n1)
ct_fail=$(echo "$summary" | sed -E 's/.* ([0-9]+) tests? failed out of.*/\1/')
ct_total=$(echo "$summary" | sed -E 's/.*out of ([0-9]+).*/\1/')
ct_skip=$(grep -cE "\*\*\*Skipped|Not Run" "$log/ctest.txt" || true)
[ -n "$ct_total" ] || { ct_total=0; ct_fail=1; }
ct_pass=$((ct_total - ct_fail - ct_skip))

passed=$((lit_pass + lit_xfail + ct_pass))
failed=$((lit_fail + ct_fail))
skipped=$((lit_skip + ct_skip))
# A runner that crashed without a summary counts as a failure.
if [ "$lit_rc" -ne 0 ] && [ "$lit_fail" -eq 0 ]; then failed=$((failed + 1)); fi
if [ "$ctest_rc" -ne 0 ] && [ "$ct_fail" -eq 0 ]; then failed=$((failed + 1)); fi

echo
echo "lit: $lit_pass passed, $lit_fail failed; ctest: $ct_pass passed, $ct_fail failed"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
