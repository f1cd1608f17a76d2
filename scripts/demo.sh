#!/usr/bin/env bash
#===- scripts/demo.sh - set up, build and run the main job ----------------===#
#
# The main job on the built-in default:
#   1. generate the `tiny` test model (Hugging Face directory, seed 0, f32,
#      a vocabulary of 512) and train a small Mistral-style tokenizer.json
#      for it (PyPI tokenizers, in the build's Python environment);
#   2. compile it with moe-compile for the CPU target into one executable,
#      the tokenizer embedded;
#   3. run it on a text prompt: its token ids, the generated token ids and
#      text (streamed as it is generated; the model's weights are random, so
#      the text is too), and the prefill and decode speed;
#   4. check the tokens against the numpy reference forward pass, and the
#      text against the tokenizers library's decode of those tokens.
#
#===------------------------------------------------------------------------===#
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${MOE_BUILD_DIR:-$root/build}
python=/usr/bin/python3
pyenv="$build/pyenv/bin/python"
work="$build/demo"
text="Once upon a time, a compiler"
n=32

"$root/scripts/setup.sh"
export PYTHONPATH="$root/python"
mkdir -p "$work"

echo "==> generating the tiny model and its tokenizer in $work/tiny"
"$python" -m moe_ref.generate --out "$work/tiny" --preset tiny --seed 0 --quiet \
  --set vocab_size=512
"$pyenv" -m moe_ref.train_tokenizer --out "$work/tiny" --vocab 512

echo "==> moe-compile $work/tiny -o $work/tiny.bin"
"$build/bin/moe-compile" "$work/tiny" -o "$work/tiny.bin"
"$work/tiny.bin" --print-plan

echo "==> $work/tiny.bin --tokenize \"$text\""
prompt=$("$work/tiny.bin" --tokenize "$text" | tr ' ' ',')
echo "$prompt"

echo "==> $work/tiny.bin --prompt \"$text\" -n $n --ignore-eos"
"$work/tiny.bin" --prompt "$text" -n "$n" --ignore-eos | tee "$work/text.txt"

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
# The streamed text is the tokenizers library's decode of those tokens.
if "$pyenv" -c '
import sys
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
ids = [int(t) for t in open(sys.argv[2]).read().split()]
want = tok.decode(ids, skip_special_tokens=True) + "\n"
sys.exit(0 if open(sys.argv[3], encoding="utf-8", newline="").read() == want else 1)
' "$work/tiny/tokenizer.json" "$work/tokens.txt" "$work/text.txt"; then
  echo "==> the streamed text is the reference tokenizer's decode of those tokens"
else
  echo "==> MISMATCH between the streamed text and the reference decode" >&2
  exit 1
fi
