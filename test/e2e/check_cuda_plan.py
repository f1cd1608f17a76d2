"""The CUDA host plan places every buffer where the launch plan says.

    check_cuda_plan.py MODEL.mlir HOST_PLAN.cpp

MODEL.mlir is `moe-compile --target cuda --emit=moert` (the launch plan),
HOST_PLAN.cpp is `moe-compile --target cuda --emit=cpp` for the same model.
Every arena view (moert.view, in op order, at moe-plan-memory's offsets)
must be declared in the plan as `arena + n_max * OFFSET`, in the same order, and every launch must
pass only declared buffers, weights and constants. The decode attention's
workspace, where there is one, must lie past the arena and be what
scratchFloats adds to it. Prints a summary line.
"""

import re
import sys


def planned_offsets(mlir):
    offsets = []
    for line in open(mlir):
        m = re.search(r"moert\.view offset (\d+) ", line)
        if m:
            offsets.append(int(m.group(1)))
    return offsets


def main():
    mlir, plan = sys.argv[1], sys.argv[2]
    want = planned_offsets(mlir)
    text = open(plan).read()
    body = text[text.index("void forward("):]
    scratch = re.search(r"scratchFloats\(int64_t n_max\) \{ return n_max \* (\d+)(?: \+ (\d+))?;", text)
    arena, workspace = int(scratch.group(1)), int(scratch.group(2) or 0)
    ws = re.search(r"float \*const workspace = arena \+ n_max \* (\d+);", body)
    if bool(ws) != bool(workspace):
        sys.exit(f"scratchFloats adds {workspace} floats of workspace, the plan "
                 f"{'declares' if ws else 'does not declare'} one")
    if ws and int(ws.group(1)) != arena:
        sys.exit(f"the workspace starts at {ws.group(1)} floats per token, the arena ends at {arena}")
    if ws:
        body = body.replace(ws.group(0), "")
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
    if any(o >= arena for o in got):
        sys.exit(f"a buffer starts past the arena's {arena} floats per token")
    print(f"host plan matches the memory plan: {len(got)} buffers, {len(launches)} launches")


if __name__ == "__main__":
    main()
