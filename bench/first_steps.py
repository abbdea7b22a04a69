"""`python run.py FLAGS` in this process, ended at the end of its Nth training step.

    python bench/first_steps.py STEPS OUT.json FLAGS...

`bench/process_bench.py` starts this in a fresh process. It runs `run.py` exactly as the
command line does (absl's `app.run` with `run.py`'s flag parser: flags and config
checked, TensorFlow imported quietly, the stage run through `stages/`), with one
addition: the fit seam (`training.fit.fit`) gets one more callback, which at the end of
training step STEPS (its loss fetched, so the step has really finished) writes OUT.json
and ends the process. Nothing after that step (the rest of the epoch, validation,
saving) is measured.

OUT.json holds `seconds_since_process_start` (the kernel's start time of this process,
from /proc, to the end of the step: interpreter start, imports, flag and config checks,
reading the data, building and tracing the model, and the steps), `seconds_per_step` of
each step, `max_rss_bytes` (the process's peak resident memory: VmHWM of /proc/self/status,
the high-water mark of this program's own memory; `ru_maxrss` where /proc is missing, which
on Linux also counts the memory of the parent this process was forked from, folded in at
its exec: `make bench` once reported 2.77 GB for a run that peaked at 1.84 GB), and
`phases`: the seconds since the process start at which TensorFlow was imported, `fit`
started (the data read and the model built) and the first step ended (its tracing
included).
"""

import json
import os
import resource
import sys
import time


def seconds_since_process_start():
    """Wall seconds since the kernel started this process (10 ms resolution)."""
    with open("/proc/self/stat") as f:
        # Field 22 (starttime, in clock ticks after boot) follows the ")" closing the name.
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def peak_resident_bytes():
    """This program's peak resident memory since its exec (see the module docstring)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def install(steps, out):
    """Makes the fit seam end the process after `steps` training steps, writing `out`."""
    from common import startup

    import_tensorflow = startup.import_tensorflow

    phases = {}

    def import_and_hook():
        module = import_tensorflow()
        import keras

        phases["tensorflow_imported"] = seconds_since_process_start()

        from training import fit as fit_lib

        class EndAfterSteps(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.ends = []

            def on_train_begin(self, logs=None):
                phases["fit_started"] = seconds_since_process_start()

            def on_train_batch_end(self, batch, logs=None):
                # Fetching the loss waits for the step to finish.
                loss = float(logs["loss"]) if logs and "loss" in logs else None
                self.ends.append(time.perf_counter())
                if "first_step_ended" not in phases:
                    phases["first_step_ended"] = seconds_since_process_start()
                if len(self.ends) < steps:
                    return
                record = {"seconds_since_process_start": seconds_since_process_start(),
                          "phases": phases,
                          "steps": steps,
                          "seconds_per_step": [b - a for a, b in zip(self.ends, self.ends[1:])],
                          "max_rss_bytes": peak_resident_bytes(),
                          "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                          "last_loss": loss}
                with open(out, "w") as f:
                    json.dump(record, f)
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)

        seam = fit_lib.fit

        def fit(*args, callbacks=(), **kwargs):
            return seam(*args, callbacks=list(callbacks) + [EndAfterSteps()], **kwargs)

        fit_lib.fit = fit
        return module

    startup.import_tensorflow = import_and_hook


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    steps, out = int(sys.argv[1]), sys.argv[2]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, repo)
    # run.py reads its flags from sys.argv when it is imported (ml_collections' overrides).
    sys.argv = [os.path.join(repo, "run.py")] + sys.argv[3:]
    install(steps, out)
    import run

    run.entry_point()
    sys.exit(f"{out}: training ended before step {steps}.")


if __name__ == "__main__":
    main()
