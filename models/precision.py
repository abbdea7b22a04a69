"""Chooses the mixed-precision policy: `auto`, `float32`, `mixed_float16` or `mixed_bfloat16`.

`auto` picks mixed_float16 on a GPU (with loss scaling, which Keras adds when the model
is compiled under that policy), mixed_bfloat16 on a CPU with bfloat16 instructions
(AVX512_BF16 or AMX; 1.2-1.6x faster than float32 on the build machine), float32
otherwise. mixed_float16 on a CPU is emulated and about 5x slower: allowed, with a warning.
"""

import functools

import keras
import tensorflow as tf
from absl import logging

from pipeline.errors import UserError

POLICIES = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


@functools.lru_cache(maxsize=None)
def cpu_has_bfloat16():
    """True if /proc/cpuinfo lists AVX512_BF16 or AMX-BF16."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve(precision):
    """The concrete policy name for `precision` on this machine."""
    if precision not in POLICIES:
        raise UserError(f"--precision={precision}: choose one of {', '.join(POLICIES)}.")
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    if precision == "auto":
        if has_gpu:
            return "mixed_float16"
        return "mixed_bfloat16" if cpu_has_bfloat16() else "float32"
    if precision == "mixed_float16" and not has_gpu:
        logging.warning("mixed_float16 on a CPU is emulated and about 5x slower than float32; "
                        "use --precision=auto.")
    return precision


def set_policy(precision):
    """Sets the global Keras dtype policy; returns the policy name chosen."""
    policy = resolve(precision)
    keras.config.set_dtype_policy(policy)
    return policy
