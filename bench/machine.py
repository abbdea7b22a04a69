"""What the figures were measured on: the CPU, its cores, the library versions, the
precision policy `auto` picks, and the float32 matrix-multiply rate the training speed is
compared with.
"""

import os
import platform
import re

import keras
import tensorflow as tf

from common import cpu
from bench import timing
from models import precision

# The instruction sets the figures depend on: AVX-512 (oneDNN's fast float32 kernels) and the
# bfloat16 instructions that make mixed_bfloat16 worth having on a CPU.
FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags():
    """The /proc/cpuinfo flags of FLAGS_OF_INTEREST this CPU has."""
    flags = cpu.flags()
    return [flag for flag in FLAGS_OF_INTEREST if flag in flags]


def slug(model=None, cores=None):
    """A short name for result files: the CPU model's words and the core count, e.g. amd-epyc-2c.

    Trademarks, clock speeds and words such as "Processor" or "96-Core" are left out, and
    at most four words are kept: "Intel(R) Xeon(R) Platinum 8480+ @ 2.0GHz" on 16 cores
    gives intel-xeon-platinum-8480-16c.
    """
    model = cpu.model_name() if model is None else model
    cores = cpu.CORES if cores is None else cores
    text = re.sub(r"\((r|tm)\)|\b\d+-core\b|@.*$", " ", model.lower())
    words = [word for word in re.split(r"[^a-z0-9]+", text)
             if word and word not in ("cpu", "processor", "core")]
    return "-".join(words[:4] + [f"{cores}c"])


def load_average():
    """The 1-minute load average: above the core count, other programs share the CPUs."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def describe():
    """A dict describing this machine and software, written next to every result."""
    return {
        "cpu_model": cpu.model_name(),
        "cores": cpu.CORES,
        # What `--precision=auto` goes by (common.cpu.has_bfloat16: the flags and oneDNN's cap).
        "cpu_bfloat16": precision.cpu_has_bfloat16(),
        "cpu_flags": cpu_flags(),
        # An instruction-set cap (make bench BENCH_ISA=AVX2) names the file apart: emulated.
        "slug": slug() + (f"-as-{cpu.isa_cap().lower()}" if cpu.isa_cap() else ""),
        "onednn_max_cpu_isa": cpu.isa_cap() or None,
        "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY"),
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        # run.py's default (common/startup.py): oneDNN on unless TF_ENABLE_ONEDNN_OPTS=0.
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "onednn": precision.onednn_enabled(),
        "precision_auto_resolves_to": precision.resolve("auto"),
        "precision_auto_by_width": {str(width): precision.resolve("auto", width)
                                    for width in (0.25, 0.5, 1.0)},
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

    timed = timing.alternate({"matmul": multiply}, reps, warmup=1)
    return 2.0 * n ** 3 / timed.seconds("matmul"), timed.cpu_share()
