"""Stage `compare`: the paper's comparison, three models trained alike, attacked alike.

The arms (the same network, data, schedule and seed; only the loss differs):

1. `baseline`: cross-entropy alone (the baseline stage);
2. `supcon`: SupCon + CE, margin weight 0 (the pretrain stage);
3. `supcon_margin`: SupCon + margin + CE, the paper's method (the pretrain stage with the
   config's margin).

Any further arm of config.arms (`configs/arms.py`; the demo's `robust`, say) trains and
is attacked beside them. Each arm trains in WORKDIR/<arm>/ through `stages.train` (so it resumes after a crash
and is skipped when done), then `stages.attack` evaluates all three on the same test
images and writes the report to WORKDIR/attack/, with verdict.md/.json/.png: the method
against each other arm, attack by attack and epsilon by epsilon, with standard errors
(`report.verdict`). WORKDIR/compare.json records what produced it: the commit of the
last run and of the run that finished each arm, the machine, the data's sha256, the
seed, each arm's config and training time, the attacks' compute time (summed over the
evaluations, whichever run did them) and the commit that wrote the report.
"""

import json
import os
import platform
import subprocess
import time

from common import atomic_files
from common.errors import UserError
from configs import arms
from report import plots, verdict
from stages import attack
from stages import train
from training import robust_validation
from training import specs

# What the paper (arXiv 2412.19747) reports, which the verdict is set beside.
CLAIM = ("margin-based supervised contrastive training (SupCon + margin + CE) raises FGSM "
         "accuracy by up to 2.5 points at the larger epsilons over the baseline while keeping "
         "clean accuracy (ResNet-18, CIFAR-100; the paper evaluates with FGSM only).")

# (arm, training stage, config changes): the paper's three models.
ARMS = (
    ("baseline", "baseline", {}),
    ("supcon", "pretrain", {"loss.margin_weight": 0.0}),
    ("supcon_margin", "pretrain", {}),
)


def _commit():
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10,
                               cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        return result.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def run(config, workdir):
    if config.model.width <= 0:
        raise UserError("--config.model.width must be > 0.")
    record_path = os.path.join(workdir, "compare.json")
    try:
        with open(record_path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        record = {"arms": {}}
    paths = {}
    # The paper's three, then the config's own arms (configs/arms.py), attacked alike.
    chosen = list(ARMS) + [(arm, stage, changes) for arm, (stage, changes) in arms.arms(config).items()]
    for arm, stage, changes in chosen:
        arm_workdir = os.path.join(workdir, arm)
        print(f"== {arm}: {stage} stage" + (f" with {changes}" if changes else ""), flush=True)
        start = time.time()
        summary = train.train(arms.arm_config(config, changes), arm_workdir, stage)
        paths[arm] = robust_validation.model_file(os.path.join(arm_workdir, stage),
                                                  config.validation.use)
        entry = record["arms"].get(arm, {})
        if entry.get("inputs") is not None:
            entry["inputs"] = specs.with_data_identity(entry["inputs"])
        if "seconds" not in entry or entry.get("inputs") != summary.get("inputs"):
            # Wall time of the process that finished it (a resumed run counts its last part only).
            entry = {"stage": stage, "changes": changes, "inputs": summary.get("inputs"),
                     "seconds": time.time() - start, "images_per_second": summary.get("images_per_second"),
                     "final": summary.get("final"), "commit": _commit()}
        record["arms"][arm] = entry
        record.update(commit=_commit(), machine=f"{_cpu_model()}, {os.cpu_count()} cores",
                      data=config.data.name, data_dir=config.data.data_dir,
                      data_sha256=specs.data_sha256(config.data.data_dir), seed=config.seed,
                      config=json.loads(config.to_json_best_effort()))
        atomic_files.write_json(record_path, record)
    print("== attack", flush=True)
    start = time.time()
    evaluations = {}
    results = attack.evaluate_and_report(config, paths, os.path.join(workdir, "attack"), keep=evaluations)
    # The attacks' own compute, whenever and by whichever run it was done (records are reused),
    # and the code that wrote this report.
    record["attack_seconds"] = sum(s for by_attack in results["seconds"].values()
                                   for s in by_attack.values())
    record["report_seconds"] = time.time() - start
    record["report_commit"] = _commit()
    record.pop("attack_commit", None)
    atomic_files.write_json(record_path, record)
    masks = {model: attack.image_masks(by_attack) for model, by_attack in evaluations.items()}
    comparisons = verdict.compare(results["rows"], "supcon_margin", ("baseline", "supcon"), masks)
    atomic_files.write_json(os.path.join(workdir, "attack", "verdict.json"), comparisons)
    text = verdict.markdown(comparisons, CLAIM)
    atomic_files.write_text(os.path.join(workdir, "attack", "verdict.md"), text)
    atomic_files.save_figure(
        plots.difference_figure(comparisons, "supcon_margin (the paper's method) against the "
                                "other models, on the same test images"),
        os.path.join(workdir, "attack", "verdict.png"))
    print("\n" + text)
    return results
