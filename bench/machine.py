"""What the figures were measured on: the CPU, its cores, the library versions, the
precision policy `auto` picks, and the float32 matrix-multiply rate the training speed is
compared with.
"""

import os
import platform

import keras
import tensorflow as tf

from bench import timing
from models import precision


def cpu_model():
    """The `model name` line of /proc/cpuinfo (the processor's marketing name)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average():
    """The 1-minute load average: above the core count, other programs share the CPUs."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def describe():
    """A dict describing this machine and software, written next to every result."""
    return {
        "cpu_model": cpu_model(),
        "cores": timing.CORES,
        "cpu_bfloat16": precision.cpu_has_bfloat16(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "precision_auto_resolves_to": precision.resolve("auto"),
    }


def matmul_flops_per_second(n=4096, reps=3):
    """(FLOP/s, CPU share) of a float32 n x n by n x n `tf.matmul` (2 n^3 FLOPs).

    The median of `reps` products after one warm-up.
    """
    a = tf.random.stateless_normal([n, n], seed=[0, 1], dtype=tf.float32)
    b = tf.random.stateless_normal([n, n], seed=[0, 2], dtype=tf.float32)

    @tf.function
    def multiply():
        # A reduction to a scalar forces the product to be computed without copying it out.
        return tf.reduce_sum(tf.matmul(a, b))

    timing.time_call(multiply)
    times = [timing.time_call(multiply) for _ in range(reps)]
    wall = timing.median([wall for wall, _ in times])
    return 2.0 * n ** 3 / wall, timing.cpu_share(sum(cpu for _, cpu in times),
                                                 sum(wall for wall, _ in times))
