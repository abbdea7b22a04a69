"""Chooses the mixed-precision policy: `auto`, `float32`, `mixed_float16` or `mixed_bfloat16`.

`auto` picks mixed_float16 on a GPU (with loss scaling, which Keras adds when the model
is compiled under that policy); on a CPU with bfloat16 instructions (AVX512_BF16 or AMX)
mixed_bfloat16 for a network at least BFLOAT16_MIN_WIDTH wide, float32 below that and on
every other CPU. mixed_float16 on a CPU is emulated and about 5x slower: allowed, with a
warning.

Why a width threshold: mixed_bfloat16 pays only where the convolutions are wide enough for
bfloat16 arithmetic to outweigh the casts. On the AMD EPYC with AVX512_BF16 (2 cores,
`make bench`, 2026-12-06, three runs, the two policies' steps in alternation) it trained
the baseline 1.36-1.54x faster than float32 at full width (69 vs 47, 81 vs 52, 74 vs 54
images/s) and 1.17-1.24x at width 1/4 (742 vs 593, 676 vs 561, 646 vs 558 images/s), so
`auto` picks it from width 1/4, the smallest width measured (with the fused BatchNorm,
2026-12-07, one run each: 1.50x and 1.43x at width 1/4, 1.64x and 1.70x at full width);
narrower networks,
unmeasured, stay float32, which is never slower than float32. An earlier measurement on
an AVX-512 machine had width 1/4 slower in bfloat16 (998 against 1,062 images/s) and set
the threshold at full width; `make bench` reports the ratio at widths 1/4 and 1 and
whether `auto` chose the faster on every bfloat16 CPU it runs on: move the threshold
with its figures.
"""

import keras
import tensorflow as tf
from absl import logging

from common import cpu
from common.errors import UserError

POLICIES = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
# The smallest config.model.width at which `auto` picks mixed_bfloat16 on a bfloat16 CPU.
BFLOAT16_MIN_WIDTH = 0.25


def cpu_has_bfloat16():
    """True if the CPU has AVX512_BF16 or AMX-BF16 and oneDNN may use them (`common.cpu`)."""
    return cpu.has_bfloat16()


def onednn_enabled():
    """Whether this TensorFlow process runs its oneDNN kernels (None if it cannot tell).

    `common.startup` turns them on before TensorFlow is imported unless the environment
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
    if precision == "mixed_bfloat16" and not has_gpu and cpu.bfloat16_ops_fail():
        raise UserError(f"--precision=mixed_bfloat16 cannot run with ONEDNN_MAX_CPU_ISA={cpu.isa_cap()} "
                        "on this AVX-512 CPU (TensorFlow hands bfloat16 ops to oneDNN, which the "
                        "cap leaves without them): unset the cap or use --precision=auto.")
    if precision == "mixed_float16" and not has_gpu:
        logging.warning("mixed_float16 on a CPU is emulated and about 5x slower than float32; "
                        "use --precision=auto.")
    return precision


def set_policy(precision, width=None):
    """Sets the global Keras dtype policy; returns the policy name chosen."""
    policy = resolve(precision, width)
    keras.config.set_dtype_policy(policy)
    return policy


def jit_compile(value, on_cpu=False):
    """A config's jit_compile ("auto", True, False) as a bool. auto: XLA on a GPU, and on a
    CPU only if `on_cpu`. (Keras's own "auto" turns XLA on for any device, and on the 2-core
    build machine's CPU XLA made training slower.)"""
    if str(value).lower() == "auto":
        return bool(tf.config.list_physical_devices("GPU")) or on_cpu
    return str(value).lower() == "true"


def float32_copy(model):
    """The same functional model and weights with every layer in float32 and Keras's own
    BatchNormalization (for saving, and for attacks, which need float32 gradients).

    Why Keras's layer rather than `models.fused_batchnorm`'s: a saved model.keras then loads
    with Keras alone, like every model saved before that layer. It computes the same; the
    fused layer's speed matters in training and barely in the attacks: on the 2-core AMD EPYC
    (width 1/4, 256 images, float32, inference mode, 2026-12) the fused layer made the clean
    forward pass 1.20x and FGSM (the gradient that PGD repeats) 1.09x faster without XLA,
    and nothing (0.99x) with XLA, which `attack.jit_compile=auto` uses on a GPU.
    """
    def to_float32(node):
        if isinstance(node, dict):
            if node.get("class_name") == "FusedBatchNormalization":
                # Synchronisation only matters while training, and Keras's synchronised form
                # is the less accurate one (models.sync_batchnorm): it stays off.
                config = {key: value for key, value in node["config"].items() if key != "fused"}
                node = {**node, "module": "keras.layers", "class_name": "BatchNormalization",
                        "registered_name": None, "config": {**config, "synchronized": False}}
            if node.get("class_name") == "DTypePolicy":
                return {**node, "config": {**node["config"], "name": "float32"}}
            return {key: to_float32(value) for key, value in node.items()}
        if isinstance(node, list):
            return [to_float32(value) for value in node]
        return node

    # Layers without a dtype of their own (inputs, the nested models) take the global policy.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        copy = keras.Model.from_config(to_float32(model.get_config()))
    finally:
        keras.config.set_dtype_policy(previous)
    copy.set_weights(model.get_weights())
    return copy
