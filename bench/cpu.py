"""The CPU the benchmarks run on, read from /proc/cpuinfo in this one place.

It imports neither TensorFlow nor Keras, so that bench/torch_peer.py, which runs with
torch alone, reads the machine as the rest of bench/ does. (`models.precision` keeps its
own bfloat16 test: models/ does not import bench/.)
"""

import functools
import os
import platform

# The cores this process may run on (its affinity), which is what the timed code gets.
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@functools.lru_cache(maxsize=None)
def _cpuinfo():
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def model_name():
    """The `model name` line of /proc/cpuinfo (the processor's marketing name)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def flags():
    """The set of words on /proc/cpuinfo's lines (its `flags` among them); empty without it."""
    return frozenset(_cpuinfo().split())


def has_bfloat16():
    """True if the CPU has bfloat16 instructions (AVX512_BF16 or AMX-BF16): elsewhere
    bfloat16 is emulated (the same test as `models.precision.cpu_has_bfloat16`)."""
    return bool(flags() & {"avx512_bf16", "amx_bf16"})
