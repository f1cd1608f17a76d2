"""The CUDA target on a real GPU: every tiny configuration, against the
reference and the CPU target (cuda_configs.py --target cuda --compare-cpu).

    gpu_e2e.py --moe-compile BIN --work DIR [--cuda-arch sm_XY]

Exits 77 (ctest's SKIP_RETURN_CODE for this test) after saying why when this
machine has no usable GPU: no libcuda.so.1, cuInit failing, or no device.
"""

import argparse
import ctypes
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def gpu():
    """(compute capability 'sm_XY', name), or (None, why not)."""
    try:
        cuda = ctypes.CDLL(os.environ.get("MOERT_CUDA_DRIVER") or "libcuda.so.1")
    except OSError as e:
        return None, f"no CUDA driver ({e})"
    if cuda.cuInit(0) != 0:
        return None, "cuInit failed"
    count = ctypes.c_int(0)
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return None, "no CUDA device"
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, 0)
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, 0)
    name = ctypes.create_string_buffer(256)
    cuda.cuDeviceGetName(name, 255, 0)
    return f"sm_{major.value}{minor.value}", name.value.decode()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--moe-compile", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--cuda-arch")
    args = p.parse_args()
    arch, name = gpu()
    if arch is None:
        print(f"SKIPPED: the GPU tests need a CUDA GPU: {name}")
        sys.exit(77)
    arch = args.cuda_arch or ("sm_90" if arch >= "sm_90" else arch)
    print(f"running on {name} ({arch})", flush=True)
    sys.exit(subprocess.call(
        [sys.executable, os.path.join(HERE, "cuda_configs.py"),
         "--moe-compile", args.moe_compile, "--work", args.work, "--jobs", "4",
         "--compare-cpu", "--target", "cuda", "--cuda-arch", arch]))


if __name__ == "__main__":
    main()
