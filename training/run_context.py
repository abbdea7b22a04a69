"""`run_context`: a stage, a tuner trial or a notebook call leaves global state as it found it.

On entry it clears the Keras session (fresh layer names, no graphs left from an earlier
run), sets the mixed-precision policy and seeds Python, NumPy, TensorFlow and Keras; on
exit it restores the policy and every random state it changed. The Keras session cannot
be restored, only cleared: models built before the context stay usable, their layer
names may repeat ones made inside.
"""

import contextlib
import random

import keras
import numpy as np
import tensorflow as tf
from keras.src.backend.common import global_state
from tensorflow.python.eager import context as eager_context

from models import precision as precision_lib

_KERAS_SEED = "global_random_seed"
_KERAS_SEED_GENERATOR = "global_seed_generator"


def _random_states():
    """Everything keras.utils.set_random_seed changes, so that it can be put back."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        # TensorFlow keeps its global seed in the eager context (tf.random.set_seed writes it).
        "tensorflow": eager_context.global_seed(),
        "keras_seed": global_state.get_global_attribute(_KERAS_SEED),
        "keras_generator": global_state.get_global_attribute(_KERAS_SEED_GENERATOR),
    }


def _restore(states):
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    tf.random.set_seed(states["tensorflow"])
    global_state.set_global_attribute(_KERAS_SEED, states["keras_seed"])
    global_state.set_global_attribute(_KERAS_SEED_GENERATOR, states["keras_generator"])


def global_state_snapshot():
    """What run_context promises to restore, in a form that compares with ==."""
    states = _random_states()
    numpy_state = states["numpy"]
    return {
        "policy": keras.config.dtype_policy().name,
        "python": states["python"],
        "numpy": (numpy_state[0], numpy_state[1].tobytes(), *numpy_state[2:]),
        "tensorflow": states["tensorflow"],
        "keras_seed": states["keras_seed"],
        "keras_generator": id(states["keras_generator"]),
    }


@contextlib.contextmanager
def run_context(seed, precision="float32", clear_session=True, width=None):
    """Sets the policy (`precision` as in config.train.precision, for a network of `width`,
    config.model.width) and seeds; yields the policy name."""
    previous_policy = keras.config.dtype_policy()
    states = _random_states()
    policy = precision_lib.resolve(precision, width)
    if clear_session:
        keras.backend.clear_session()
    try:
        keras.config.set_dtype_policy(policy)
        keras.utils.set_random_seed(int(seed))
        yield policy
    finally:
        keras.config.set_dtype_policy(previous_policy)
        _restore(states)
