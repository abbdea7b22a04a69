"""The HyperModel of stage `tune`: one trial is pretrain's model with the trial's loss.

`build(hp)` copies the config, applies the trial's values (`tuning.space`) and calls the
core's builders; `fit(hp, model, data, trial_dir, callbacks)` trains it through the fit
seam for the trial's epochs, with the tuner's callbacks (its checkpoint of the model,
TensorBoard HParams) beside the standard ones, and then measures its robustness on the
VALIDATION split, never on test. It returns the trial's metrics: `score` (the objective),
`clean_accuracy`, `robust_accuracy`, `qualified`, `seconds`, `rss_mb` (resident
memory at the end) and `validation_images`.

The objective: accuracy under `config.tune.attack` (PGD by default) at
`config.tune.epsilon`, if the clean accuracy reaches `config.tune.min_clean_accuracy`.
Clean accuracy alone picks the wrong margin, and FGSM alone rewards gradient masking. A
trial below the floor does not qualify; it scores `clean_accuracy - 1`, below every
qualifying trial (whose score is >= 0), and closer to qualifying the nearer its clean
accuracy is to the floor, which keeps the Bayesian oracle's picture of the space smooth.
"""

import dataclasses
import os
import time

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

from attacks.evaluate import AttackSettings
from common.errors import UserError
from models import precision
from pipeline import datasets
from training import builders
from training import fit as fit_lib
from training import robust_validation
from training import specs
from tuning import space

OBJECTIVE = "score"
SEARCH_KEY = "search"
SPEC = specs.PRETRAIN


@dataclasses.dataclass
class SearchData:
    """What every trial of a process trains and is scored on, loaded once per process."""

    info: builders.DataInfo
    train: object  # datasets.Split
    images: np.ndarray  # float32 [N, H, W, C] in [0, 1]: the validation images attacked
    labels: np.ndarray  # [N]


def load_search_data(config):
    """The training and validation splits, and the (seeded) validation images to attack."""
    data, train_split, validation_split = datasets.training_splits(config)
    if validation_split is None or not len(validation_split):
        raise UserError("--config.data.validation_fraction=0: the search scores trials on the "
                        "validation split (never on test); set it above 0, e.g. 0.1.")
    images, labels = robust_validation.held_out(validation_split, config.tune.validation_examples,
                                                config.seed)
    return SearchData(builders.DataInfo.from_split(train_split, data.num_classes), train_split,
                      images, labels)


def score(clean_accuracy, robust_accuracy, floor):
    """The objective (see the module docstring) and whether the trial qualifies."""
    qualified = clean_accuracy >= floor
    return (robust_accuracy if qualified else clean_accuracy - 1.0), qualified


def resident_megabytes():
    """This process's resident memory now (Linux), or None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError):
        return None


def robustness(model, images, labels, config):
    """(clean accuracy, accuracy under config.tune.attack at config.tune.epsilon) of `model`.

    The one robust measurement of `training.robust_validation` (float32, inference mode,
    the attack stage's settings), with XLA as config.tune.jit_compile says: compiling for
    each trial's new model outweighs its gain on a CPU at these sizes.
    """
    settings = dataclasses.replace(AttackSettings.from_config(config),
                                   jit_compile=precision.jit_compile(config.tune.jit_compile))
    classifier = precision.float32_copy(model.classifier_model(name="trial"))
    return robust_validation.measure(classifier, images, labels, config.tune.attack,
                                     config.tune.epsilon / 255.0, settings)


class RobustnessHyperModel(keras_tuner.HyperModel):
    """Builds and trains one trial; see the module docstring.

    Args:
        config: the resolved config; its `tune` section holds the space and the objective.
        info: `builders.DataInfo` of the training split (shape, classes, statistics).
        search_key: identifies the search's config. It is in the space as the fixed
            hyperparameter `search`, so that a worker can tell whether the chief it joins
            runs the same search.
    """

    def __init__(self, config, info, search_key):
        super().__init__(name="supcon_margin")
        self.config = config
        self.info = info
        self.search_key = search_key

    def trial_config(self, hp):
        """The config with the trial's loss and its schedule shortened to the trial's epochs.

        The warm-up keeps its share of the schedule. Hyperband gives each trial its epochs
        in `tuner/epochs`; every trial trains from scratch with its whole schedule.
        """
        hp.Fixed(SEARCH_KEY, self.search_key)
        config = space.apply(hp, self.config)
        full = self.config.train
        epochs = int(hp.values.get("tuner/epochs", self.config.tune.epochs))
        warmup = min(epochs, int(round(full.warmup_epochs * epochs / full.epochs)))
        config.train.update(epochs=epochs, warmup_epochs=warmup)
        return config

    def build(self, hp):
        return builders.build_model(self.trial_config(hp), SPEC, self.info)

    def fit(self, hp, model, data, trial_dir, callbacks=(), verbose=None):
        """Trains `model` on `data` (SearchData) into `trial_dir`; returns the trial's metrics."""
        start = time.perf_counter()
        config = self.trial_config(hp)
        # No validation pass after each epoch: the trial is scored once, at its end.
        inputs = builders.build_inputs(config, SPEC, data.train)
        builders.compile_model(model, config, SPEC, inputs.steps_per_epoch)
        fit_lib.fit(model, inputs, config.train.epochs, trial_dir,
                    f"tune trial {os.path.basename(trial_dir)}", callbacks=callbacks,
                    verbose=verbose)
        clean, robust = robustness(model, data.images, data.labels, config)
        value, qualified = score(clean, robust, config.tune.min_clean_accuracy)
        metrics = {OBJECTIVE: value, "clean_accuracy": clean, "robust_accuracy": robust,
                   "qualified": float(qualified), "validation_images": float(len(data.labels)),
                   "seconds": time.perf_counter() - start}
        rss = resident_megabytes()
        if rss is not None:
            metrics["rss_mb"] = rss
        _write_hparams_metrics(callbacks, metrics)
        return metrics


def _write_hparams_metrics(callbacks, metrics):
    """Puts the trial's metrics beside the HParams the tuner's TensorBoard callback records.

    Keras Tuner points that callback at the trial's own folder and adds the HParams
    callback; the metrics computed after training are written there too, so that
    TensorBoard's HParams table shows the objective of every trial.
    """
    for callback in callbacks:
        if isinstance(callback, keras.callbacks.TensorBoard):
            with tf.summary.create_file_writer(str(callback.log_dir)).as_default():
                for name, value in metrics.items():
                    tf.summary.scalar(f"tune/{name}", value, step=0)
            return
