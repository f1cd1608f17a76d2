"""Starts a command, waits until it has created a file in a directory (or
for --after seconds), sends it a signal, and prints how it ended and what
it left in the directory:

    interrupt.py --wait-for DIR [--signal TERM] [--after S] -- COMMAND...
"""

import argparse
import os
import signal
import subprocess
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--wait-for", required=True,
                   help="directory: signal once anything appears in it")
    p.add_argument("--signal", default="TERM")
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args()
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    deadline = time.monotonic() + a.timeout
    while not os.listdir(a.wait_for) and child.poll() is None:
        if time.monotonic() > deadline:
            child.kill()
            sys.exit("interrupt.py: nothing appeared in " + a.wait_for)
        time.sleep(0.01)
    if child.poll() is not None:
        sys.exit(f"interrupt.py: the command ended first ({child.returncode}): "
                 f"{child.stderr.read().decode(errors='replace')}")
    time.sleep(0.2)
    child.send_signal(getattr(signal, "SIG" + a.signal))
    _, err = child.communicate(timeout=a.timeout)
    rc = child.returncode
    print(f"exit: signal {-rc}" if rc < 0 else f"exit: {rc}")
    print(f"left: {sorted(os.listdir(a.wait_for))}", flush=True)
    sys.stderr.write(err.decode(errors="replace"))


if __name__ == "__main__":
    main()
