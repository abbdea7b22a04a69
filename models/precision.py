"""Chooses the mixed-precision policy: `auto`, `float32`, `mixed_float16` or `mixed_bfloat16`.

`auto` picks mixed_float16 on a GPU (with loss scaling, which Keras adds when the model
is compiled under that policy); on a CPU with bfloat16 instructions (AVX512_BF16 or AMX)
mixed_bfloat16 for a network at least BFLOAT16_MIN_WIDTH wide, float32 below that and on
every other CPU. mixed_float16 on a CPU is emulated and about 5x slower: allowed, with a
warning.

Why a width threshold: on an AVX-512 machine with AVX512_BF16, mixed_bfloat16 trained the
full-width ResNet-18 1.2-1.6x faster than float32, but the width-1/4 one slower (998
against 1,062 images/s): its narrow convolutions gain little from bfloat16 arithmetic
and still pay the casts. So bfloat16 is chosen only from the smallest width at which it
was measured to pay (1.0); widths in between, unmeasured, stay float32, which is never
slower than float32. Where this is re-measured (`make bench` on such a CPU reports
mixed_bfloat16 / float32 at widths 1/4 and 1, and whether `auto` chose the faster), move
the threshold with the figures.
"""

import functools

import keras
import tensorflow as tf
from absl import logging

from pipeline.errors import UserError

POLICIES = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
# The smallest config.model.width at which `auto` picks mixed_bfloat16 on a bfloat16 CPU.
BFLOAT16_MIN_WIDTH = 1.0


@functools.lru_cache(maxsize=None)
def cpu_has_bfloat16():
    """True if /proc/cpuinfo lists AVX512_BF16 or AMX-BF16."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def onednn_enabled():
    """Whether this TensorFlow process runs its oneDNN kernels (None if it cannot tell).

    `stages.startup` turns them on before TensorFlow is imported unless the environment
    says otherwise (TF_ENABLE_ONEDNN_OPTS); TensorFlow's own default is on with AVX-512 only.
    """
    try:
        from tensorflow.python.util import _pywrap_util_port
        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def resolve(precision, width=None):
    """The concrete policy name for `precision` on this machine, for a network of `width`
    (config.model.width; None means 1.0, the base config's full width)."""
    if precision not in POLICIES:
        raise UserError(f"--precision={precision}: choose one of {', '.join(POLICIES)}.")
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    if precision == "auto":
        if has_gpu:
            return "mixed_float16"
        width = 1.0 if width is None else float(width)
        return ("mixed_bfloat16" if cpu_has_bfloat16() and width >= BFLOAT16_MIN_WIDTH
                else "float32")
    if precision == "mixed_float16" and not has_gpu:
        logging.warning("mixed_float16 on a CPU is emulated and about 5x slower than float32; "
                        "use --precision=auto.")
    return precision


def set_policy(precision, width=None):
    """Sets the global Keras dtype policy; returns the policy name chosen."""
    policy = resolve(precision, width)
    keras.config.set_dtype_policy(policy)
    return policy
