"""Building a CUDA-target program against the CPU emulator (test/cuda-emu),
for check_e2e.py and check_ep.py: the kernels (.cu) compile as C++ against
cuda_emu.h, and the host plan links with the runtime and the emulator's fake
libcuda, which MOERT_CUDA_DRIVER names when the binary runs."""

import argparse
import os


def add_arguments(p):
    """The emulator's options (lit's %cuda_emu substitution passes them)."""
    p.add_argument("--cxx", default="c++")
    p.add_argument("--emu-driver", help="the emulator's fake libcuda (cuda-emu)")
    p.add_argument("--emu-include", help="directory of cuda_emu.h (cuda-emu)")
    p.add_argument("--runtime-include", help="runtime/include (cuda-emu)")
    p.add_argument("--runtime-lib", action="append", default=[],
                   help="libmoert_main.a, libmoert.a (cuda-emu)")
    p.add_argument("--ep-lib", action="append", default=[],
                   help="with expert parallelism: libmoert_mpi.a and MPI's libraries "
                        "(the emulator's device memory is host memory, so the MPI "
                        "communicator stands in for NCCL)")


def build(args, compile_cmd, binary, run):
    """compile_cmd: moe-compile SOURCE [flags]; run(cmd) runs or exits."""
    cu, plan, obj = binary + ".cu", binary + ".plan.cpp", binary + ".kernels.o"
    run(compile_cmd + ["--target", "cuda", "--emit=cu", "-o", cu])
    run(compile_cmd + ["--target", "cuda", "--emit=cpp", "-o", plan])
    # -fsanitize=alignment: a misaligned vector load or store (the
    # emulator's float4/uint4/... have CUDA's alignment) stops the run,
    # as it would fault on the GPU.
    common = [args.cxx, "-std=c++17", "-O2", "-w", "-I", args.runtime_include,
              "-fsanitize=alignment", "-fno-sanitize-recover=alignment"]
    # CUDA code type-puns vector loads (uint4 -> __half2), which nvcc
    # allows; g++ needs -fno-strict-aliasing for the same meaning.
    run(common + ["-fno-strict-aliasing", "-DMOERT_CUDA_EMULATOR", "-I",
                  args.emu_include, "-include",
                  "cuda_emu.h", "-x", "c++", "-c", cu, "-o", obj])
    # The communicator whole: main.cpp refers to it weakly.
    ep = []
    if args.ep_lib:
        ep = ["-Wl,--whole-archive", args.ep_lib[0], "-Wl,--no-whole-archive"]
    run(common + [plan, obj] + ep + args.runtime_lib + args.ep_lib[1:] +
        [args.emu_driver, "-Wl,-rpath," + os.path.dirname(os.path.abspath(args.emu_driver)),
         "-ldl", "-lpthread", "-o", binary])


def env(args, base):
    e = dict(base)
    e["MOERT_CUDA_DRIVER"] = args.emu_driver
    return e


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__).parse_args()
