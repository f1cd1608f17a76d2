"""What the mini benchmarks share: timing a compiled model binary."""

import re
import statistics
import subprocess

SPEED = re.compile(r"prefill: \d+ tokens in [\d.]+ s \(([\d.]+) tok/s\); "
                   r"decode: \d+ tokens in [\d.]+ s \(([\d.]+) tok/s\)")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def measure(cmd, runs, env=None):
    """Runs a model binary runs + 1 times (the first warms the page cache)
    and returns the median (prefill, decode) tok/s of the binary's speed
    line over the others."""
    speeds = []
    for i in range(runs + 1):
        m = SPEED.search(sh(cmd, env=env).stderr)
        if i:
            speeds.append((float(m.group(1)), float(m.group(2))))
    return (statistics.median(s[0] for s in speeds),
            statistics.median(s[1] for s in speeds))
