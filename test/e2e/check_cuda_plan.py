"""The CUDA launch plan and host plan place every buffer where
moe-plan-memory said.

    check_cuda_plan.py PLANNED.mlir LAUNCH_PLAN.mlir HOST_PLAN.cpp

PLANNED.mlir is `moe-compile --target cuda --emit=mlir` (the planned moe
IR: a #moe.placement per op), LAUNCH_PLAN.mlir `--emit=moert` (what the
lowering made of it), HOST_PLAN.cpp `--emit=cpp`, all for the same model.
The placements' offsets, in op order, must be the launch plan's views (the
CUDA kernels need no scratch, so there is one view per planned result), and
each must be declared in the host plan as `arena + n_max * OFFSET`, in the
same order, and every launch must
pass only declared buffers, weights and constants. The decode attention's
workspace, where there is one, must lie past the arena and be what
scratchFloats adds to it. Prints a summary line.
"""

import re
import sys


def planned_offsets(mlir):
    offsets = []
    for line in open(mlir):
        m = re.search(r"moe\.placement = #moe\.placement<results = \[([\d, ]*)\]", line)
        if m and m.group(1):
            offsets += [int(v) for v in m.group(1).split(",")]
    return offsets


def view_offsets(mlir):
    return [int(m) for m in re.findall(r"moert\.view offset (\d+) ", open(mlir).read())]


def main():
    planned, launch, plan = sys.argv[1], sys.argv[2], sys.argv[3]
    want = planned_offsets(planned)
    views = view_offsets(launch)
    if views != want:
        for i, (v, w) in enumerate(zip(views, want)):
            if v != w:
                sys.exit(f"buffer {i}: the launch plan views offset {v}, the memory plan says {w}")
        sys.exit(f"the launch plan has {len(views)} views, the memory plan {len(want)} buffers")
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
