"""The order of the stages, and `run(stage, config, workdir)` which `run.py` calls."""

import os

from configs import arms
from stages import data as data_stage
from stages import train
from training import distribute

ORDER = ("baseline", "pretrain", "finetune", "attack", "export")


def _attack(config, workdir):
    from stages import attack
    if config.external.models:  # Classifiers trained elsewhere (run.py's --model).
        return attack.run_external(config, workdir)
    return attack.run(config, workdir)


def _export(config, workdir):
    from stages import export
    return export.run(config, workdir)


def _compare(config, workdir):
    from stages import compare
    return compare.run(config, workdir)


def _tune(config, workdir):
    from stages import tune
    return tune.run(config, workdir)


STAGES = {
    "data": data_stage.run,
    "baseline": train.run_baseline,
    "pretrain": train.run_pretrain,
    "finetune": train.run_finetune,
    "attack": _attack,
    "export": _export,
    "compare": _compare,  # The paper's three models side by side (configs/real_photos.py).
    "tune": _tune,  # Not part of "all": a search is run on purpose, then its best config.
}


def takes_lock(stage, config):
    """Whether this process holds the stage's lock: any run outside a distributed role, the
    chief of a multi_worker run and the chief of a tune search; not their other workers,
    which share the chief's workdir by design (and would be refused by its lock)."""
    if stage == "tune":
        from tuning import tuner
        return tuner.role() != "worker"
    return distribute.chief_process(config.train)


def run_locked(stage, config, workdir):
    """`run`, holding the lock of WORKDIR/STAGE/ (for 'all', of every stage in ORDER) where
    `takes_lock` says so: what `run.py` calls.

    A command launched twice on one workdir is then refused with one line naming the
    process that has the stage (`common.stage_lock`), instead of mixing two runs.
    """
    import contextlib
    import os

    from common import stage_lock

    with contextlib.ExitStack() as held:
        if takes_lock(stage, config):
            for name in ORDER if stage == "all" else (stage,):
                held.enter_context(stage_lock.hold(os.path.join(workdir, name), name))
        return run(stage, config, workdir)


def run(stage, config, workdir):
    """Runs one stage, or every stage in ORDER for 'all'."""
    if stage == "all":
        for name in ORDER:
            if name == "attack":
                train_arms(config, workdir)
            if name in ("attack", "export") and not distribute.chief_process(config.train):
                print(f"== stage {name}: left to the chief worker", flush=True)
                continue
            print(f"== stage {name}", flush=True)
            STAGES[name](config, workdir)
        return None
    return STAGES[stage](config, workdir)


def train_arms(config, workdir):
    """Trains each arm of config.arms (configs/arms.py) in WORKDIR/<arm>/<stage>/."""
    for name, (stage, changes) in arms.arms(config).items():
        shown = ", ".join(f"{field}={value}" for field, value in changes.items())
        print(f"== arm {name}: stage {stage}" + (f" with {shown}" if shown else ""), flush=True)
        train.train(arms.arm_config(config, changes), os.path.join(workdir, name), stage)
