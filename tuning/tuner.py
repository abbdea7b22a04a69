"""The Keras Tuner search of stage `tune`: the oracle, the tuner, and one process's share.

`search(config, workdir, trial_quota)` loads the data, opens the search in
WORKDIR/tune/search (Keras Tuner's project: the oracle's state and one folder per trial;
reopened, it resumes) and runs trials until the oracle stops it or `trial_quota` trials
have ended in this process. Each trial trains into WORKDIR/tune/trials/<id>/ (the fit
seam's history, logs and backup) and runs inside the core's `run_context`: a fresh Keras
session, the config's seeds and precision policy, all restored afterwards.

One search, one machine or many. Keras Tuner's environment variables decide the role:
without `KERASTUNER_ORACLE_IP` the process is alone; with it, `KERASTUNER_TUNER_ID`
"chief" serves the oracle over gRPC at `KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT` and
trains nothing, and any other id is a worker that asks the chief for trials.
"""

import json
import os
import shutil
import time

import keras
import keras_tuner

from common import atomic_files
from common.errors import UserError
from training.run_context import run_context
from tuning import hypermodel as hypermodel_lib

SEARCH = "search"  # Keras Tuner's project folder under WORKDIR/tune.
TRIALS = "trials"  # The trials' training folders under WORKDIR/tune.
TENSORBOARD = "tensorboard"  # The tuner's TensorBoard logs (HParams) under WORKDIR/tune.
TRIAL_KEY = "trial_key.json"
STARTS = "starts.jsonl"


def role():
    """"local", "chief" or "worker", from Keras Tuner's environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "local"
    for name in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        if not os.environ.get(name):
            raise UserError(f"KERASTUNER_ORACLE_IP is set but {name} is not: a distributed search "
                            "needs all three (see the README's multi-host recipe).")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


class QuotaReached(Exception):
    """This process ran its share of trials; a fresh one carries on with the search."""


class RobustnessTuner(keras_tuner.Tuner):
    """A Keras Tuner `Tuner` whose trials run inside the core's run context.

    Args:
        trials_dir: where each trial trains (a folder per trial id).
        search_key: identifies the search (its config); a trial folder left by another
            search under the same id is emptied before the trial trains there.
        seed, precision, width: the run context of every trial (width: config.model.width,
            which `auto` precision weighs).
        trial_quota: trials to end in this process before stopping (0: no limit).
    """

    def __init__(self, *args, trials_dir, search_key, seed, precision, width=None, trial_quota=0,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.trials_dir = trials_dir
        self.search_key = search_key
        self.seed = seed
        self.precision = precision
        self.width = width
        self.trial_quota = trial_quota
        self.trials_ended = 0

    def trial_dir(self, trial):
        """The trial's training folder, emptied if another search left it; records this start."""
        path = os.path.join(self.trials_dir, trial.trial_id)
        key = {"search": self.search_key, "values": trial.hyperparameters.values}
        try:
            with open(os.path.join(path, TRIAL_KEY)) as f:
                stale = json.load(f) != json.loads(json.dumps(key))
        except (OSError, ValueError):
            stale = os.path.exists(path)
        if stale:
            shutil.rmtree(path)
        atomic_files.write_json(os.path.join(path, TRIAL_KEY), key)
        with open(os.path.join(path, STARTS), "a") as f:
            f.write(json.dumps({"tuner_id": self.tuner_id, "pid": os.getpid(),
                                "time": time.time()}) + "\n")
        return path

    def run_trial(self, trial, *args, **kwargs):
        path = self.trial_dir(trial)
        with run_context(self.seed, self.precision, width=self.width):
            return super().run_trial(trial, *args, trial_dir=path, **kwargs)

    def pre_create_trial(self):
        if self.trial_quota and self.trials_ended >= self.trial_quota:
            raise QuotaReached()

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        self.trials_ended += 1


def make_oracle(config):
    """The oracle of config.tune.algorithm, maximising the objective, never stopping on failures.

    Failed trials do not stop the search (Keras Tuner's default stops after three in a
    row, from inside the oracle, which on a distributed chief strands the workers): the
    budget bounds it, and the stage reports every failure.
    """
    tune = config.tune
    common = dict(objective=keras_tuner.Objective(hypermodel_lib.OBJECTIVE, "max"),
                  seed=config.seed, max_retries_per_trial=0, max_consecutive_failed_trials=None)
    if tune.algorithm == "random":
        return keras_tuner.oracles.RandomSearchOracle(max_trials=tune.max_trials, **common)
    if tune.algorithm == "bayesian":
        # A third of the budget explores at random before the Gaussian process guides
        # (Keras Tuner's default, 3 per hyperparameter, would spend most small budgets so).
        return keras_tuner.oracles.BayesianOptimizationOracle(
            max_trials=tune.max_trials, num_initial_points=max(2, tune.max_trials // 3), **common)
    oracle = keras_tuner.oracles.HyperbandOracle(max_epochs=tune.epochs, factor=3, **common)
    oracle.max_trials = tune.max_trials
    return oracle


def make_tuner(config, workdir, info, search_key, trial_quota=0):
    """The search in WORKDIR/tune/search, reopened (resumed) if it exists."""
    out = os.path.join(workdir, "tune")
    return RobustnessTuner(
        oracle=make_oracle(config),
        hypermodel=hypermodel_lib.RobustnessHyperModel(config, info, search_key),
        directory=out, project_name=SEARCH, overwrite=False,
        trials_dir=os.path.join(out, TRIALS), search_key=search_key, seed=config.seed,
        precision=config.train.precision, width=config.model.width, trial_quota=trial_quota)


def check_chief(tuner, search_key):
    """Refuses to join a chief whose search has another config (before taking any trial)."""
    chief_key = tuner.oracle.get_space().get(hypermodel_lib.SEARCH_KEY)
    if chief_key != search_key:
        raise UserError(
            f"this worker's config (search {search_key}) differs from the chief's (search "
            f"{chief_key}) at {os.environ['KERASTUNER_ORACLE_IP']}:"
            f"{os.environ['KERASTUNER_ORACLE_PORT']}: start every worker with the chief's "
            "--config, overrides, --dataset, --data_dir and --seed.")


def search(config, workdir, search_key, trial_quota=0, verbose=None):
    """Runs this process's share of the search; returns True when the search is over.

    False means `trial_quota` trials ended here and the oracle may have more to give.
    """
    # The tuner builds models while it declares the space: inside a run context too.
    with run_context(config.seed, config.train.precision, width=config.model.width):
        data = hypermodel_lib.load_search_data(config)
        tuner = make_tuner(config, workdir, data.info, search_key, trial_quota)
        if role() == "worker":
            check_chief(tuner, search_key)
        board = keras.callbacks.TensorBoard(os.path.join(workdir, "tune", TENSORBOARD))
        options = {} if verbose is None else {"verbose": verbose}
        try:
            tuner.search(data, callbacks=[board], **options)
        except QuotaReached:
            return tuner.remaining_trials == 0 if role() == "local" else False
    return True
