"""Clocks shared by the benchmarks: functions timed in alternation, a stopwatch for a block
of code, and the share of the machine's CPUs this process got while being timed.

Every figure is taken after a warm-up (tracing a `tf.function` costs seconds) and is a
median of several measurements, so one slow moment does not decide it. The CPU share
(CPU seconds / (wall seconds x cores)) tells when other programs were competing for the
cores: near 1 the wall-clock figures are this machine's; well below 1 they understate it.

This module imports neither TensorFlow nor Keras: bench/torch_peer.py, which runs with
torch alone, times its settings with it too.
"""

import resource
import statistics
import time

from common import cpu


def cpu_share(cpu_seconds, wall_seconds):
    """CPU seconds over what all the cores could have given in `wall_seconds`."""
    return cpu_seconds / (wall_seconds * cpu.CORES) if wall_seconds > 0 else float("nan")


def alternate(functions, rounds, warmup=0):
    """Times the functions of `functions` ({name: callable}) in alternation; an `Alternation`.

    The method: `warmup` untimed rounds, then `rounds` timed ones. In each round every
    function is called once, and the order rotates by one place a round (timed round r
    starts with the function r places along in `functions`; with two, A B in even rounds
    and B A in odd ones), so no function always runs first, or always after the same
    other one (over a multiple of len(functions) rounds, each is in each place once). Each call
    is timed in wall and CPU seconds (this process's); a result with a `numpy` method (a
    tensor) is fetched first, so work still running asynchronously is counted.

    The figures are medians over the rounds, so a slow moment of a shared machine does
    not decide them, and a ratio of two functions is the median of the per-round ratios:
    the two calls of one round are neighbours in time and see nearly the same contention,
    which cancels slow drifts.
    """
    names = list(functions)
    result = Alternation(names)
    for index in range(-warmup, rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            start, cpu_start = time.perf_counter(), time.process_time()
            value = functions[name]()
            if hasattr(value, "numpy"):
                value.numpy()
            wall, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
            result.last[name] = value
            if index >= 0:
                result.wall[name].append(wall)
                result.cpu[name].append(cpu_seconds)
    return result


class Alternation:
    """What `alternate` measured: per function, its wall and CPU seconds in each timed round
    (`wall`, `cpu`: {name: [seconds]}) and what its last call returned (`last`)."""

    def __init__(self, names):
        self.wall = {name: [] for name in names}
        self.cpu = {name: [] for name in names}
        self.last = {}

    def seconds(self, name):
        """The median wall seconds of a call of `name`."""
        return statistics.median(self.wall[name])

    def cpu_seconds(self, name):
        """The median CPU seconds of a call of `name`."""
        return statistics.median(self.cpu[name])

    def ratios(self, numerator, denominator):
        """Per round: wall seconds of `numerator` / wall seconds of `denominator`."""
        return [a / b for a, b in zip(self.wall[numerator], self.wall[denominator])]

    def ratio(self, numerator, denominator):
        """The median of the per-round ratios of wall seconds, `numerator` / `denominator`."""
        return statistics.median(self.ratios(numerator, denominator))

    def cpu_ratio(self, numerator, denominator):
        """Median CPU seconds of `numerator` / those of `denominator` (steadier when shared)."""
        return self.cpu_seconds(numerator) / self.cpu_seconds(denominator)

    def cpu_share(self, *names):
        """The CPU share over the timed calls of `names` (all functions if none are named)."""
        names = names or tuple(self.wall)
        return cpu_share(sum(sum(self.cpu[name]) for name in names),
                         sum(sum(self.wall[name]) for name in names))


class Stopwatch:
    """Wall and CPU seconds from its making to the last `read()` (or to the end of a `with`
    block): `wall`, `cpu` and `share`.

    The CPU seconds are this process's (`own`) and, with `children`, those of its child
    processes that ended meanwhile (`subprocess.run` waits for them).
    """

    def __init__(self, own=True, children=False):
        self.own, self.children = own, children
        self._start, self._cpu_start = time.perf_counter(), self._cpu()

    def _cpu(self):
        seconds = time.process_time() if self.own else 0.0
        if self.children:
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            seconds += usage.ru_utime + usage.ru_stime
        return seconds

    def read(self):
        """Sets `wall` and `cpu` to the seconds since the stopwatch was made; returns it."""
        self.wall = time.perf_counter() - self._start
        self.cpu = self._cpu() - self._cpu_start
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        self.read()

    @property
    def share(self):
        return cpu_share(self.cpu, self.wall)
