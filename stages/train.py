"""Stages `baseline`, `pretrain` and `finetune`: each trains a model into WORKDIR/<stage>/.

- baseline: ResNet-18 + linear classifier, cross-entropy alone, one view per image.
- pretrain: the paper's joint form, CE + SupCon + margin loss on two views per image.
- finetune: from pretrain's encoder, either a linear probe (frozen encoder in inference
  mode, new linear classifier: SupContrast's protocol) or full fine-tuning, by
  config.finetune.mode, with cross-entropy.

What each stage is lives in `training.specs`; how it is built in `training.builders`;
the training itself in `training.fit`. Each writes `inputs.json` (the config fields that
decide it, see `StageSpec.reads`), `config.json` (the whole resolved config),
`precision.json` (the policy it trains with, see `resumed_precision`),
`history.csv`, TensorBoard logs under `logs/`, a `backup/` it resumes from after a crash,
and, when it completes, `model.keras` (float32, images in [0, 1] -> logits; written
atomically) and `summary.json`. A finished stage with the same inputs is skipped; one
trained with other inputs is never silently mixed with this run (see `check_workdir`).
"""

import hashlib
import json
import os

from common import atomic_files
from common.errors import UserError
from configs import schema
from models import precision as precision_lib
from pipeline import datasets
from training import builders
from training import distribute
from training import fit as fit_lib
from training import robust_validation
from training import specs
from training.run_context import run_context

INPUTS = "inputs.json"
# The precision policy a run started with (kept by a resumed run under `auto`).
PRECISION = "precision.json"


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def stage_inputs(config, workdir, spec):
    """What decides the stage's model: the config fields it reads, and the model it starts from."""
    inputs = specs.decisive_fields(json.loads(config.to_json_best_effort()), spec)
    if spec.init_from:
        parent = parent_model(config, workdir, spec)
        inputs[f"{spec.init_from}_sha256"] = _sha256(parent) if os.path.exists(parent) else None
    return inputs


def parent_model(config, workdir, spec):
    """The model file `spec` starts from: its parent stage's best epoch or last, as
    config.validation.use says (the last where no robust validation kept a best)."""
    return robust_validation.model_file(os.path.join(workdir, spec.init_from), config.validation.use)


def accuracy_on_adversary(config, stage):
    """Whether `stage`'s logged training accuracy is on its adversary's images alone (AT with
    CE on them, no TRADES), so that it can be held against clean validation accuracy."""
    adversarial = config.adversarial
    return bool(schema.adversarial_in(config, stage) and adversarial.ce_on == "adversarial"
                and not adversarial.trades_beta)


def robust_validation_callback(config, stage, validation_split, out, strategy):
    """The RobustValidation callback of `stage`, or None where it does not validate robustly."""
    if not schema.robust_validation_in(config, stage):
        return None
    validation = config.validation
    images, labels = robust_validation.held_out(validation_split, validation.examples, config.seed)
    return robust_validation.RobustValidation(
        images, labels, validation.attack, validation.epsilon / 255.0,
        robust_validation.settings_for(config), out, validation.collapse_drop / 100.0,
        validation.stop_on_collapse, write=distribute.is_chief(strategy), keep=validation.keep,
        adversary_accuracy=accuracy_on_adversary(config, stage))


def _differences(old, new):
    changed = sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))
    shown = "; ".join(f"{name}: {old.get(name)!r} -> {new.get(name)!r}" for name in changed[:3])
    return changed, shown + (f"; and {len(changed) - 3} more" if len(changed) > 3 else "")


def check_workdir(out, inputs, stage):
    """The summary of a finished run with the same inputs (to skip), else None (to train).

    Raises UserError when `out` holds a finished or unfinished run with other inputs:
    resuming or keeping it would mix two experiments. One exception: after a divergence,
    a rerun that changes only the optimiser's step sizes (`specs.RESUMABLE_AFTER_DIVERGENCE`)
    resumes from the last good checkpoint.
    """
    summary = atomic_files.read_json(os.path.join(out, "summary.json"))
    if summary is not None and os.path.exists(os.path.join(out, "model.keras")):
        finished_inputs = specs.with_data_identity(summary.get("inputs") or {})
        if finished_inputs == inputs:
            return {**summary, "inputs": finished_inputs}
        _, shown = _differences(finished_inputs, inputs)
        raise UserError(f"{out} holds a {stage} model trained with another config ({shown}); use "
                        f"another --workdir, or delete {out} to train it again.")
    recorded = atomic_files.read_json(os.path.join(out, INPUTS))
    recorded = specs.with_data_identity(recorded) if isinstance(recorded, dict) else recorded
    if recorded is None or recorded == inputs or not os.path.exists(os.path.join(out, fit_lib.BACKUP)):
        return None
    changed, shown = _differences(recorded, inputs)
    if fit_lib.divergence_record(out) and all(name in specs.RESUMABLE_AFTER_DIVERGENCE
                                              for name in changed):
        print(f"{stage}: resuming after the divergence from the last good checkpoint with {shown}",
              flush=True)
        return None
    raise UserError(f"{out} holds an unfinished {stage} run with another config ({shown}); rerun "
                    f"with the same config to resume it, use another --workdir, or delete {out} "
                    "to start afresh.")


def finished(config, workdir, stage):
    """The summary of `stage` in `workdir` where it finished with this config's inputs (what
    `train` would skip), else None: not trained, unfinished, or trained with another config."""
    try:
        return check_workdir(os.path.join(workdir, stage),
                             stage_inputs(config, workdir, specs.SPECS[stage]), stage)
    except UserError:
        return None


def resumed_precision(out, config, stage):
    """The policy to train `out` with: what config.train.precision picks for this width on
    this machine, except that a run resumed under `auto` keeps the policy it started with
    (a run carried to a machine with bfloat16 instructions must not change arithmetic
    halfway)."""
    chosen = precision_lib.resolve(config.train.precision, config.model.width)
    started = (atomic_files.read_json(os.path.join(out, PRECISION)) or {}).get("policy")
    if (config.train.precision == "auto" and started in precision_lib.POLICIES
            and started not in ("auto", chosen)
            and os.path.exists(os.path.join(out, fit_lib.BACKUP))):
        print(f"{stage}: resuming with the precision policy it started with, {started} (`auto` "
              f"picks {chosen} on this machine)", flush=True)
        return started
    return chosen


def train(config, workdir, stage, callbacks=(), verbose=None):
    """Trains `stage` (baseline, pretrain or finetune); returns its summary dict.

    `callbacks` are handed to the fit seam (the tuner passes its own).
    """
    spec = specs.SPECS[stage]
    out = os.path.join(workdir, stage)
    if spec.init_from and not os.path.exists(os.path.join(workdir, spec.init_from, "model.keras")):
        raise UserError(f"{os.path.join(workdir, spec.init_from, 'model.keras')} does not exist: "
                        f"run --stage {spec.init_from} with the same --workdir first.")
    inputs = stage_inputs(config, workdir, spec)
    finished = check_workdir(out, inputs, stage)
    if finished is not None:
        print(f"{stage}: already done with this config in {out}; delete it to train again.")
        return finished
    atomic_files.write_json(os.path.join(out, INPUTS), inputs)
    atomic_files.write_json(os.path.join(out, "config.json"), json.loads(config.to_json_best_effort()))
    # Before TensorFlow runs anything: see training.distribute.
    strategy = distribute.strategy(config.train)
    precision = resumed_precision(out, config, stage)
    atomic_files.write_json(os.path.join(out, PRECISION), {"policy": precision})

    with run_context(config.seed, precision) as policy, strategy.scope():
        data, train_split, validation_split = datasets.training_splits(config)
        info = builders.DataInfo.from_split(train_split, data.num_classes)
        plan = builders.schedule(config, spec)
        inputs_data = builders.build_distributed_inputs(strategy, config, spec, train_split,
                                                        validation_split)
        encoder = None
        if spec.init_from:
            encoder = builders.load_encoder(parent_model(config, workdir, spec), config, info)
        model = builders.compile_model(builders.build_model(config, spec, info, encoder),
                                       config, spec, inputs_data.steps_per_epoch)
        print(f"{stage}: {len(train_split)} training images, {inputs_data.steps_per_epoch} steps "
              f"per epoch, {plan.epochs} epochs, precision policy {policy}, "
              f"{distribute.describe(strategy)}", flush=True)
        validator = robust_validation_callback(config, stage, validation_split, out, strategy)
        adversary = model.adversary
        if adversary is not None:
            print(f"{stage}: adversarial training, {adversary.method} at "
                  f"{config.adversarial.epsilon:g}/255 (perturbations up to "
                  f"{255 * adversary.reach:.4g}/255), BatchNorm in {adversary.bn_mode} mode while "
                  f"crafting" + (f", TRADES beta {adversary.trades_beta:g}" if adversary.trades_beta
                                 else f", cross-entropy on {config.adversarial.ce_on}"), flush=True)
        history, images_per_second = fit_lib.fit(
            model, inputs_data, plan.epochs, out, stage,
            learning_rate_flag=f"--config.{spec.schedule or 'train'}.learning_rate",
            callbacks=callbacks, verbose=verbose, robust_validation=validator)
        trained = precision_lib.float32_copy(model.classifier_model(name=stage))
    final = {name: float(values[-1]) for name, values in history.items() if values}
    summary = {"stage": stage, "policy": policy, "train_images": len(train_split),
               "images_per_second": images_per_second, "final": final, "inputs": inputs}
    if validator is not None:
        summary["robust_validation"] = validator.record()
    if distribute.is_chief(strategy):  # The chief writes the results (training.distribute).
        atomic_files.save_model(trained, os.path.join(out, "model.keras"))
        atomic_files.write_json(os.path.join(out, "summary.json"), summary)
        if os.path.exists(os.path.join(out, fit_lib.DIVERGED_RECORD)):
            os.replace(os.path.join(out, fit_lib.DIVERGED_RECORD),
                       os.path.join(out, "diverged-before-resume.json"))
    # The next stage reads them: every worker waits until the chief has written them.
    distribute.wait_for_workers(strategy)
    return summary


def run_baseline(config, workdir):
    return train(config, workdir, "baseline")


def run_pretrain(config, workdir):
    return train(config, workdir, "pretrain")


def run_finetune(config, workdir):
    return train(config, workdir, "finetune")
