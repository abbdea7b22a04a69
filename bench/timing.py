"""Clocks shared by the benchmarks: a per-step timer for `fit`, a timer of single calls,
and the share of the machine's CPUs this process got while being timed.

Every figure is taken after a warm-up (tracing a `tf.function` costs seconds) and is a
median of several measurements, so one slow moment does not decide it. The CPU share
(this process's CPU seconds / (wall seconds x cores)) tells when other programs were
competing for the cores: near 1 the wall-clock figures are this machine's; well below
1 they understate it.
"""

import os
import statistics
import time

import keras

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class StepTimer(keras.callbacks.Callback):
    """Seconds per training step within one `fit` call, from the end of its first step to its last.

    Leaving out the first step leaves out `fit`'s own start-up (iterator, callbacks), so
    what remains is the training step alone. Like `stages.train.Throughput`, it makes
    Keras run the callbacks in step with training, as a real run does. With
    `max_seconds`, training stops once that much has been measured.
    """

    def __init__(self, max_seconds=None, min_steps=2):
        super().__init__()
        self.max_seconds = max_seconds
        self.min_steps = min_steps

    def on_train_begin(self, logs=None):
        self.ends, self.cpu_ends = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())
        if (self.max_seconds is not None and len(self.ends) > self.min_steps
                and self.ends[-1] - self.ends[0] >= self.max_seconds):
            self.model.stop_training = True

    @property
    def steps(self):
        return len(self.ends) - 1

    @property
    def seconds_per_step(self):
        if self.steps < 1:
            raise ValueError("StepTimer needs a fit of at least 2 steps.")
        return (self.ends[-1] - self.ends[0]) / self.steps

    @property
    def cpu_share(self):
        return cpu_share(self.cpu_ends[-1] - self.cpu_ends[0], self.ends[-1] - self.ends[0])


def fit_seconds_per_step(model, dataset, steps, max_seconds=None):
    """(seconds per step, CPU share) of `model.fit` over up to `steps` timed steps (and one untimed)."""
    timer = StepTimer(max_seconds)
    model.fit(dataset, epochs=1, steps_per_epoch=steps + 1, verbose=0, shuffle=False,
              callbacks=[timer])
    return timer.seconds_per_step, timer.cpu_share


def time_call(function):
    """(wall seconds, CPU seconds) of one call of `function()`; a tensor result is fetched to make sure."""
    start, cpu_start = time.perf_counter(), time.process_time()
    result = function()
    if hasattr(result, "numpy"):
        result.numpy()
    return time.perf_counter() - start, time.process_time() - cpu_start


def cpu_share(cpu_seconds, wall_seconds):
    """This process's CPU seconds over what all the cores could have given it in `wall_seconds`."""
    return cpu_seconds / (wall_seconds * CORES) if wall_seconds > 0 else float("nan")


def median(values):
    return statistics.median(values)
