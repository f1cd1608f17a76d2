"""extract_tokenizer_blob.py PROGRAM.cpp OUT: writes the tokenizer blob that
a program moe-compile generated (--emit=cpp) embeds, for the fuzzer's seed
corpus (tokenizer-corpus/)."""
import ast
import re
import sys

text = open(sys.argv[1], encoding="ascii").read()
m = re.search(r"const unsigned char kTokenizer\[(\d+)\] =\n((?:    \".*\"\n)+)    ;", text)
if not m:
    sys.exit(f"{sys.argv[1]}: no kTokenizer")
blob = b"".join(ast.literal_eval("b" + line.strip().replace("\\?", "?"))
                for line in m.group(2).splitlines())
assert len(blob) + 1 == int(m.group(1))
open(sys.argv[2], "wb").write(blob)
