"""edit_json.py IN OUT CODE: runs CODE (Python) on the JSON of IN as `d`,
then writes `d` to OUT (the bad-input tests' way to break one thing)."""
import json
import sys

with open(sys.argv[1], encoding="utf-8") as f:
    d = json.load(f)
exec(sys.argv[3])
with open(sys.argv[2], "w", encoding="utf-8") as f:
    json.dump(d, f, ensure_ascii=False)
