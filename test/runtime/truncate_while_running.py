#===- test/runtime/truncate_while_running.py - SIGBUS under the binary --===#
#
# Part of moe-compile.
#
#===----------------------------------------------------------------------===#
"""Runs a compiled model's binary, waits until it has mapped FILE (so the
load-time checks are behind it and it is running), truncates FILE to
SIZE bytes, and reports how the binary ended:

  truncate_while_running.py FILE SIZE -- BINARY ARGS...

Prints `exit N` (or `signal N`), then the binary's stderr. The binary must
be given enough work to still be running when FILE shrinks; if it is still
running 60 s later it is killed and the report says so.
"""

import os
import subprocess
import sys
import time


def mapped(pid, path):
    try:
        with open(f"/proc/{pid}/maps") as f:
            return any(line.rstrip("\n").endswith(" " + path) for line in f)
    except OSError:
        return False


def main(argv):
    sep = argv.index("--")
    path, size = os.path.realpath(argv[1]), int(argv[2])
    proc = subprocess.Popen(argv[sep + 1:], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not mapped(proc.pid, path):
        if proc.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.001)
    if proc.poll() is None:
        os.truncate(path, size)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        print("still running 60 s after the truncation: killed")
    rc = proc.returncode
    print(f"signal {-rc}" if rc < 0 else f"exit {rc}")
    sys.stdout.write(err.decode(errors="replace"))


if __name__ == "__main__":
    main(sys.argv)
