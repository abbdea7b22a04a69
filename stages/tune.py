"""Stage `tune`: Keras Tuner searches the loss (margin form, margin, temperature, weights)
for robustness on the validation split, on one machine or many.

    python run.py --stage tune --config configs/tune_demo.py --workdir runs/tune

Each trial trains pretrain's model for config.tune.epochs with the trial's loss and is
scored by its accuracy under config.tune.attack at config.tune.epsilon on the validation
split, if its clean accuracy reaches config.tune.min_clean_accuracy (`tuning.hypermodel`).
Everything is written under WORKDIR/tune/ (`tuning.report`): summary.json, summary.md,
objective.png, TensorBoard HParams in tensorboard/, and best_config.py, a config file with
the best trial's loss that `--stage all` retrains in full.

- Memory: by default each trial runs in a fresh process (config.tune.trials_per_process;
  `tuning.process`), since memory grows across trials in one process.
- Resume: rerun the same command; finished trials are kept, a trial cut short is run
  again with the same values (from its last finished epoch). A rerun with another config
  is refused; `--config.tune.overwrite=True` starts afresh, deleting only what this stage
  wrote (WORKDIR/tune/search, trials, tensorboard and the report files).
- Failures: a failed trial is recorded with its error and the search goes on; the stage
  exits non-zero, naming the errors, when no trial completed.
- Distributed: Keras Tuner's environment variables make the process the chief (serves
  the oracle, trains nothing, writes the report) or a worker (`tuning.tuner`).
"""

import hashlib
import json
import os
import shutil

from common import atomic_files
from common.errors import UserError
from training import specs
from training.run_context import run_context
from tuning import process
from tuning import report
from tuning import tuner as tuner_lib

INPUTS = "inputs.json"
# The config fields that decide the search's results: pretrain's (a trial trains pretrain's
# model, adversarially where config.adversarial trains pretrain), the search's and its
# objective's. The budget (tune.max_trials) may grow on a rerun, which then runs the extra
# trials; how trials are spread over processes and tune.overwrite decide nothing.
SPEC = specs.StageSpec(specs.PRETRAIN.name, reads=specs.PRETRAIN.reads + (
    "tune", "attack.pgd_steps", "attack.pgd_step_size", "attack.pgd_restarts",
    "attack.use_predictions", "attack.batch_size", "attack.jit_compile"))
# Nor does which epoch a stage keeps: a trial is scored after its last epoch.
NOT_DECIDING = ("tune.max_trials", "tune.trials_per_process", "tune.overwrite", "validation.keep")
OWN = (tuner_lib.SEARCH, tuner_lib.TRIALS, tuner_lib.TENSORBOARD, INPUTS, "config.json",
       "summary.json", "summary.md", "objective.png", report.BEST_CONFIG)


def search_inputs(config):
    resolved = json.loads(config.to_json_best_effort())
    return {name: value for name, value in specs.decisive_fields(resolved, SPEC).items()
            if name not in NOT_DECIDING}


def start_afresh(out):
    """Deletes what this stage wrote in `out` (nothing else)."""
    for name in OWN:
        path = os.path.join(out, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
    print(f"tune: --config.tune.overwrite=True: starting afresh in {out}", flush=True)


def check_inputs(out, inputs):
    """Refuses to resume a search that was started with another config."""
    try:
        with open(os.path.join(out, INPUTS)) as f:
            recorded = json.load(f)
    except (OSError, ValueError):
        recorded = None
    recorded = specs.with_data_identity(recorded) if isinstance(recorded, dict) else None
    if recorded is None:
        # Only a search's own state counts (Keras Tuner's oracle.json, written by a local
        # search or a chief): workers create the search folder too, and may start first.
        if os.path.exists(os.path.join(out, tuner_lib.SEARCH, "oracle.json")):
            raise UserError(f"{out} holds a search without its {INPUTS}; use another --workdir, "
                            "or --config.tune.overwrite=True to start afresh.")
        return
    changed = sorted(name for name in set(recorded) | set(inputs)
                     if recorded.get(name) != inputs.get(name))
    if changed:
        shown = "; ".join(f"{name}: {recorded.get(name)!r} -> {inputs.get(name)!r}"
                          for name in changed[:3])
        raise UserError(f"{out} holds a search with another config ({shown}); rerun with the same "
                        "config to resume it, use another --workdir, or add "
                        "--config.tune.overwrite=True to start afresh.")


def run(config, workdir):
    """Runs (or resumes, or joins) the search; returns the summary (None on a worker)."""
    out = os.path.join(workdir, "tune")
    role = tuner_lib.role()
    inputs = search_inputs(config)
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    if role != "worker":
        if config.tune.overwrite:
            start_afresh(out)
        check_inputs(out, inputs)
        atomic_files.write_json(os.path.join(out, INPUTS), inputs)
        atomic_files.write_json(os.path.join(out, "config.json"),
                                json.loads(config.to_json_best_effort()))
    print(f"tune: {config.tune.algorithm} search of {config.tune.max_trials} trials in {out}"
          + ("" if role == "local" else f" as the {role} {os.environ['KERASTUNER_TUNER_ID']}"),
          flush=True)
    if "adversarial.method" in inputs:
        print(f"tune: every trial trains adversarially ({config.adversarial.method} at "
              f"{config.adversarial.epsilon:g}/255)", flush=True)
    if role == "chief" or not config.tune.trials_per_process:
        tuner_lib.search(config, workdir, key)
    else:
        process.run_in_processes(config, workdir, key, config.tune.trials_per_process)
    if role == "worker":
        print(f"tune: worker {os.environ['KERASTUNER_TUNER_ID']} done; the chief writes the "
              "summary.")
        return None

    data_name = config.data.name + (f" ({config.data.data_dir})" if config.data.data_dir else "")
    # Keras Tuner draws a random id (from Python's global generator) for every trial it loads.
    with run_context(config.seed, "float32", clear_session=False):
        summary = report.write(config, workdir, data_name)
    print(report.describe(summary))
    print(f"\nsummary: {os.path.join(out, 'summary.md')}\n"
          f"picture: {os.path.join(out, 'objective.png')}\n"
          f"TensorBoard HParams: tensorboard --logdir {os.path.join(out, tuner_lib.TENSORBOARD)}")
    if summary["counts"]["completed"] == 0:
        raise UserError(no_completed_trial(summary, config.tune, out))
    return summary


def no_completed_trial(summary, tune, out):
    """Why no trial qualified: the errors of failed trials, or the floor nobody reached."""
    errors = sorted({r["error"] for r in summary["trials"] if r["error"]})
    failed = (f"{summary['counts']['failed']} trial(s) failed, with {len(errors)} distinct "
              f"error(s), the first: {errors[0]}") if errors else ""
    if not summary["counts"]["unqualified"]:
        return (f"no trial of the search completed: {failed or 'none ran'} "
                f"(every trial in {os.path.join(out, 'summary.json')}).")
    best_clean = max(r["clean_accuracy"] for r in summary["trials"]
                     if r["clean_accuracy"] is not None)
    return (f"no trial reached the floor --config.tune.min_clean_accuracy="
            f"{tune.min_clean_accuracy:g} (the best clean validation accuracy was "
            f"{best_clean:.3f}); lower it or train longer "
            f"(--config.tune.epochs)" + (f"; also {failed}" if failed else "") + ".")
