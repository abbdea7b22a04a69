"""The order of the stages, and `run(stage, config, workdir)` which `run.py` calls."""

from stages import data as data_stage
from stages import train

ORDER = ("baseline", "pretrain", "finetune", "attack", "export")


def _attack(config, workdir):
    from stages import attack
    return attack.run(config, workdir)


def _export(config, workdir):
    from stages import export
    return export.run(config, workdir)


STAGES = {
    "data": data_stage.run,
    "baseline": train.run_baseline,
    "pretrain": train.run_pretrain,
    "finetune": train.run_finetune,
    "attack": _attack,
    "export": _export,
}


def run(stage, config, workdir):
    """Runs one stage, or every stage in ORDER for 'all'."""
    if stage == "all":
        for name in ORDER:
            print(f"== stage {name}", flush=True)
            STAGES[name](config, workdir)
        return None
    return STAGES[stage](config, workdir)
