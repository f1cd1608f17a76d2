# -*- Python -*-
# lit configuration for moe-compile.

import os
import shlex

import lit.formats
from lit.llvm import llvm_config
from lit.llvm.subst import ToolSubst

config.name = "MOE"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.excludes = ["CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py", "unit", "Inputs"]

config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.moe_obj_root, "test")

config.substitutions.append(("%PATH%", config.environment["PATH"]))
llvm_config.with_system_environment(["HOME", "TMP", "TEMP"])
llvm_config.use_default_substitutions()

# Our tools first, then FileCheck & co. from LLVM.
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)
tool_dirs = [config.moe_tools_dir, config.llvm_tools_dir]
tools = [ToolSubst("moe-opt", unresolved="fatal"),
         ToolSubst("moe-translate", unresolved="fatal"),
         ToolSubst("moe-compile", unresolved="fatal"),
         ToolSubst("moe-chat-template", unresolved="fatal")]
llvm_config.add_tool_substitutions(tools, tool_dirs)

# Python (with numpy) and the project's own Python package: the test-model
# generator and the numpy reference forward pass.
config.environment["PYTHONPATH"] = os.path.join(config.moe_src_root, "python")
# Ours, not lit's default %python (the interpreter running lit), which
# use_default_substitutions() added first and would win.
config.substitutions = [(k, v) for k, v in config.substitutions if k != "%python"]
python = shlex.quote(config.python_executable)
config.substitutions.append(("%python", python))
# Rewrites a GGUF file with one change (the GGUF frontend's bad-input tests).
config.substitutions.append(
    ("%edit_gguf", python + " " +
     os.path.join(config.test_source_root, "Frontends", "gguf", "edit_gguf.py")))
# Writes an ONNX model with one change (the ONNX frontend's bad-input tests).
config.substitutions.append(
    ("%edit_onnx", python + " " +
     os.path.join(config.test_source_root, "Frontends", "onnx", "edit_onnx.py")))
config.substitutions.append(
    ("%gen", python + " -m moe_ref.generate --quiet"))
config.substitutions.append(
    ("%check_e2e", python + " " +
     os.path.join(config.test_source_root, "e2e", "check_e2e.py")))
# Expert parallelism: mpirun (Open MPI; scripts/setup.sh installs it) and a
# moe-compile built with libmoert_mpi. The tests run as root in CI, which
# Open MPI refuses unless told.
import shutil
mpirun = shutil.which("mpirun")
if mpirun and getattr(config, "moe_mpi", "0") == "1":
    config.available_features.add("mpi")
    config.environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    config.environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    config.substitutions.append(("%mpirun", shlex.quote(mpirun) + " --oversubscribe"))
    config.substitutions.append(
        ("%mpi_cflags", " ".join("-I " + shlex.quote(d) for d in
                                  config.moe_mpi_include_dirs.split(";") if d)))
    # NCCL from the CUDA toolkit (libmoert_nccl built): the NCCL backend's
    # build checks.
    cuda_home = os.path.dirname(os.path.dirname(config.moe_nvcc))
    if getattr(config, "moe_nccl", "0") == "1":
        config.available_features.add("nccl")
        config.substitutions.append(("%cuda_home", shlex.quote(cuda_home)))
        # Where libnccl and libcudart were found (the run path to expect).
        nccl_lib, cudart_lib = config.moe_nccl_libs.split(";")[:2]
        config.substitutions.append(("%nccl_lib_dir", os.path.dirname(nccl_lib)))
        config.substitutions.append(("%cudart_lib_dir", os.path.dirname(cudart_lib)))
    config.substitutions.append(
        ("%check_ep", python + " " +
         os.path.join(config.test_source_root, "e2e", "check_ep.py") +
         " --mpirun " + shlex.quote(mpirun)))
config.substitutions.append(("%inputs", os.path.join(config.test_source_root, "Frontends", "hf", "Inputs")))

# PyPI's gguf (python/requirements-test.txt; scripts/setup.sh installs it
# into the python the tests run): the GGUF frontend's test inputs.
import subprocess
if subprocess.run([config.python_executable, "-c", "import gguf"],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
    config.available_features.add("gguf")
# PyPI's onnx and onnxruntime (python/requirements-test.txt): the ONNX
# frontend's test inputs (moe_ref.onnx_writer) and the second reference.
if subprocess.run([config.python_executable, "-c", "import onnx, onnxruntime"],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
    config.available_features.add("onnx")
# PyPI's jinja2 (python/requirements-test.txt): the reference renderer for
# the chat-template tests.
if subprocess.run([config.python_executable, "-c", "import jinja2"],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
    config.available_features.add("jinja2")

# PyPI's tokenizers and sentencepiece (the same requirements): the references
# test/tokenizer checks our tokenizers against.
if subprocess.run([config.python_executable, "-c", "import tokenizers, sentencepiece"],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
    config.available_features.add("tokenizers")

# The CUDA target. nvcc compiles the generated kernels (no GPU needed); the
# CPU emulator (test/cuda-emu) runs them; tests that need a real GPU are in
# scripts/gpu-check.sh and the gpu-labelled ctest.
# A GPU on this machine (nvidia-smi lists one): the few RUN lines that
# expect none are skipped there.
nvidia_smi = shutil.which("nvidia-smi")
if nvidia_smi and "GPU " in subprocess.run(
        [nvidia_smi, "-L"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True).stdout:
    config.available_features.add("cuda-gpu")
if os.access(config.moe_nvcc, os.X_OK):
    config.available_features.add("nvcc")
    config.substitutions.append(("%nvcc", config.moe_nvcc))
config.substitutions.append(("%cxx", config.moe_cxx))
config.substitutions.append(("%runtime_include", os.path.join(config.moe_src_root, "runtime", "include")))
if config.moe_cuda_emu_lib:
    config.available_features.add("cuda-emu")
    config.substitutions.append(("%cuda_emu_lib", config.moe_cuda_emu_lib))
    emu_args = (["--target", "cuda-emu", "--cxx", config.moe_cxx,
                 "--emu-driver", config.moe_cuda_emu_lib,
                 "--emu-include", os.path.join(config.moe_src_root, "test", "cuda-emu"),
                 "--runtime-include", os.path.join(config.moe_src_root, "runtime", "include")]
                + [f"--runtime-lib={lib}" for lib in config.moe_runtime_libs])
    config.substitutions.append(("%cuda_emu", " ".join(emu_args)))
    # Expert parallelism on the emulator: the MPI communicator over its
    # device memory, which is host memory (NCCL needs GPUs).
    if "mpi" in config.available_features and config.moe_mpi_runtime_lib:
        config.available_features.add("cuda-emu-mpi")
        ep_libs = [config.moe_mpi_runtime_lib] + config.moe_mpi_libs.split(";")
        config.substitutions.append(
            ("%ep_cuda_emu", " ".join(
                emu_args + [f"--ep-lib={lib}" for lib in ep_libs if lib])))
