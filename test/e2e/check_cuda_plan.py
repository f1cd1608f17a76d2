"""The CUDA host plan places every buffer where moe-plan-memory said.

    check_cuda_plan.py MODEL.mlir HOST_PLAN.cpp

MODEL.mlir is `moe-compile --emit=mlir` (the planned IR), HOST_PLAN.cpp is
`moe-compile --target cuda --emit=cpp` for the same model. Every result with
a planned offset (moe.arena_offsets, in op order) must be declared in the
plan as `arena + n_max * OFFSET`, in the same order, and every launch must
pass only declared buffers, weights and constants. Prints a summary line.
"""

import re
import sys


def planned_offsets(mlir):
    offsets = []
    for line in open(mlir):
        m = re.search(r"moe\.arena_offsets = array<i64: ([-\d, ]+)>", line)
        if m:
            offsets += [int(v) for v in m.group(1).split(",") if int(v) >= 0]
    return offsets


def main():
    mlir, plan = sys.argv[1], sys.argv[2]
    want = planned_offsets(mlir)
    text = open(plan).read()
    body = text[text.index("void forward("):]
    got = [int(v) for v in re.findall(r"arena \+ n_max \* (\d+)", body)]
    if got != want:
        for i, (g, w) in enumerate(zip(got, want)):
            if g != w:
                sys.exit(f"buffer {i}: the host plan uses offset {g}, the memory plan says {w}")
        sys.exit(f"the host plan declares {len(got)} buffers, the memory plan has {len(want)}")
    declared = set(re.findall(r"(?:float|int32_t) \*(b\d+) = ", body))
    launches = re.findall(r"void \*args\[\] = \{([^}]*)\};", body)
    for args in launches:
        for a in re.findall(r"&(\w+)", args):
            if a.startswith("b") and a not in declared:
                sys.exit(f"a launch passes undeclared buffer {a}")
    print(f"host plan matches the memory plan: {len(got)} buffers, {len(launches)} launches")


if __name__ == "__main__":
    main()
