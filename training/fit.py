"""The fit seam: the one place a training run happens, with the callbacks every run needs.

`fit` runs `training.distributed_loop` (Keras's `Model.fit` fails under several workers)
under the strategy the model was built in, one device or many; the stages, the tuner and
the bench do not notice the difference. Every run gets:

- resume: `BackupAndRestore` keeps the model and optimiser of the last finished epoch in
  OUT/backup (two copies); rerunning the same command continues from there;
- the divergence stop: training ends at the first non-finite loss with `Diverged`, whose
  message names the stage, epoch and step, and OUT/backup (the last good epoch) is kept;
  the run writes OUT/diverged.json for the rerun to find;
- CSV (OUT/history.csv) and TensorBoard (OUT/logs) logs, each epoch's wall seconds among
  them, and the images per second (`Throughput`; `epoch_seconds(OUT)` reads the seconds back);
- with weight averaging (`config.train.ema_momentum`, models/optimizer.py): Keras's
  `SwapEMAWeights` puts the average into the model at the end of every epoch, after the
  backup has kept the raw weights (from which a resumed run carries on) and before robust
  validation, so validation, the kept epochs and the final model are all the average.

Under several workers only the chief writes into OUT; the others restore from OUT/backup
but write their checkpoints and logs into temporary folders (`training.distribute`), and
a worker that stops answering ends the run on the others with `WorkerLost`.
"""

import csv
import json
import math
import os
import sys
import time

import keras

from common import atomic_files
from common.errors import Diverged
from common.errors import UserError
from common.errors import WorkerLost
from training import distribute
from training import distributed_loop

BACKUP = "backup"
DIVERGED_RECORD = "diverged.json"


class Throughput(keras.callbacks.Callback):
    """Records images per second over the epochs after the first (which includes tracing),
    and logs each epoch's wall seconds as `epoch_seconds`, its validation counted (robust
    validation runs before this callback), so history.csv carries them across resumed runs
    and machines. Time the process was suspended counts in both (a median over epochs
    ignores it)."""

    KEY = "epoch_seconds"

    def __init__(self, images_per_step):
        super().__init__()
        self.images_per_step = images_per_step
        self.steps, self.seconds, self.epoch_start, self.epoch_steps = 0, 0.0, 0.0, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()
        self.epoch_steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.epoch_steps += 1

    def on_epoch_end(self, epoch, logs=None):
        elapsed = time.perf_counter() - self.epoch_start
        if logs is not None:
            logs[self.KEY] = elapsed
        if epoch > self.params.get("initial_epoch", 0) or self.params.get("epochs", 1) == 1:
            self.seconds += elapsed
            self.steps += self.epoch_steps

    @property
    def images_per_second(self):
        return self.steps * self.images_per_step / self.seconds if self.seconds else None


class StopOnDivergence(keras.callbacks.Callback):
    """Raises `Diverged` at the first step whose logged losses are not finite.

    Raising (rather than setting `stop_training`, as `TerminateOnNaN` does) skips
    `on_train_end`, where `BackupAndRestore` would delete its backup: the last good epoch
    survives. Placed after BackupAndRestore, it sees the epoch a resumed run starts at.
    """

    def __init__(self, stage, backup_dir, learning_rate_flag):
        super().__init__()
        self.stage = stage
        self.backup_dir = backup_dir
        self.learning_rate_flag = learning_rate_flag
        self.epoch = 0
        self.last_good_epoch = None

    def on_train_begin(self, logs=None):
        start = getattr(self.model, "_initial_epoch", None) or 0
        self.last_good_epoch = start - 1 if start else None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self.last_good_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        for name, value in (logs or {}).items():
            if name.endswith("loss") and not math.isfinite(float(value)):
                self.raise_diverged(batch, name, float(value))

    def raise_diverged(self, step, name, value):
        where = f"{self.stage}: {name} became {value} at epoch {self.epoch + 1}, step {step + 1}"
        if self.last_good_epoch is None:
            kept = ("no epoch had finished, so there is no checkpoint; rerun with a lower "
                    f"{self.learning_rate_flag} to start afresh")
        else:
            kept = (f"the last good checkpoint (end of epoch {self.last_good_epoch + 1}) is kept in "
                    f"{self.backup_dir}; rerun with a lower {self.learning_rate_flag} to resume from it")
        error = Diverged(f"{where}; {kept}.")
        error.record = {"stage": self.stage, "epoch": self.epoch + 1, "step": step + 1,
                        "term": name, "value": str(value),
                        "last_good_epoch": None if self.last_good_epoch is None else self.last_good_epoch + 1}
        raise error


def fit(model, inputs, epochs, out, stage, learning_rate_flag="--config.train.learning_rate",
        callbacks=(), verbose=None, robust_validation=None):
    """Trains `model` (compiled) on `inputs` (`builders.Inputs`) for `epochs`, logging into `out`.

    `callbacks` are added after the standard ones (the tuner passes its own).
    `robust_validation` (a `training.robust_validation.RobustValidation`) runs before the
    logs are written, so history.csv and TensorBoard record its accuracies. Returns
    (history dict {metric: [value per epoch]}, images per second or None).
    """
    os.makedirs(out, exist_ok=True)
    backup = os.path.join(out, BACKUP)
    strategy = model.distribute_strategy
    throughput = Throughput(inputs.images_per_step)
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    with distribute.writable_dir(strategy, out) as own:
        standard = [distribute.backup_callback(strategy, backup, os.path.join(own, BACKUP),
                                               double_checkpoint=True),
                    StopOnDivergence(stage, backup, learning_rate_flag),
                    *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if averages(model) else []),
                    *([robust_validation] if robust_validation is not None else []),
                    throughput,  # Before the logs, which then record each epoch's seconds.
                    keras.callbacks.CSVLogger(os.path.join(own, "history.csv"), append=True),
                    keras.callbacks.TensorBoard(os.path.join(own, "logs"))]
        try:
            history = distributed_loop.fit(model, inputs.train, epochs, inputs.steps_per_epoch,
                                           inputs.validation, standard + list(callbacks), verbose)
        except Diverged as error:
            if distribute.is_chief(strategy):
                atomic_files.write_json(os.path.join(out, DIVERGED_RECORD), error.record)
            raise
        except WorkerLost as error:
            raise WorkerLost(f"{stage}: {error}; rerun every worker with the same command to "
                             f"resume from the last finished epoch's checkpoint in {backup}.") from None
        except ValueError as error:
            # Keras finds a checkpoint's layers by their classes' names, so one written by a
            # version with other layer classes (before models.fused_batchnorm, Keras's
            # BatchNormalization) does not restore; Keras says which objects it could not load.
            if "could not be loaded" not in str(error) or not os.path.isdir(backup):
                raise
            raise UserError(f"{stage}: the checkpoint in {backup} was written by a version of "
                            "the project with other layers and cannot be restored; finish that "
                            f"run with the version that started it, or delete {backup} to train "
                            "the stage from the start.") from None
    if distribute.worker(strategy):
        # Every worker prints it: equal digests show the workers ended in step.
        print(f"{stage}: {distribute.describe(strategy)} ends with weights sha256 "
              f"{distribute.weights_digest(model)}", flush=True)
    return history.history, throughput.images_per_second


def averages(model):
    """Whether `model`'s optimiser keeps a moving average of the weights."""
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    return bool(getattr(optimizer, "use_ema", False))


def history(out):
    """{epoch (1-based): {column: value}} of OUT/history.csv over every run that trained the
    stage (a resumed run appends; an epoch trained again keeps its last row); {} without it."""
    try:
        with open(os.path.join(out, "history.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return {}
    return {int(row["epoch"]) + 1: row for row in rows}


def epoch_seconds(out):
    """{epoch (1-based): wall seconds} of the epochs in OUT/history.csv (`Throughput`'s
    column); {} where there are none."""
    return {epoch: float(row[Throughput.KEY]) for epoch, row in history(out).items()
            if row.get(Throughput.KEY) not in (None, "")}


def divergence_record(out):
    """The record a diverged run left in `out`, or None."""
    try:
        with open(os.path.join(out, DIVERGED_RECORD)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
