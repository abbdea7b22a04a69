"""Stage `compare`: models trained alike, attacked alike, judged pair by pair.

The models (the same network, data, schedule and seed; only what the config changes
differs): by default the paper's three (`configs.arms.PAPER_ARMS`),

1. `baseline`: cross-entropy alone (the baseline stage);
2. `supcon`: SupCon + CE, margin weight 0 (the pretrain stage);
3. `supcon_margin`: SupCon + margin + CE, the paper's method (the pretrain stage with the
   config's margin);

then every arm of config.arms (`configs/arms.py`; the demo's `robust`, say);
`config.compare.paper_arms=False` trains the arms alone (configs/robust_photos.py). Each
trains in WORKDIR/<model>/ through `stages.train` (so it resumes after a crash and is
skipped when done), then `stages.attack` evaluates them all on the same test images and
writes the report to WORKDIR/attack/. A comparison that trains for hours reports as it
goes: after each model that took this run half an hour or more to train (the last model
excepted), the report is written for the models trained so far (those before it in the
order, and any after it that an earlier run finished), so that results publish as they
finish, not hours later. The report holds verdict.md/.json/.png: each pair "A - B" of
config.compare.pairs, A against B, attack by attack and epsilon by epsilon, with standard
errors (`report.verdict`). Where arms NAME_seedK train A and B again with seed K, the
pair is judged on every seed both have, pooled. WORKDIR/compare.json records what
produced it: the commit of the last run and of the run that finished each model, the
machine, the data's sha256, the seed, each model's config and training time (its epochs'
times too, tabled in WORKDIR/attack/training.md), the attacks' compute time (summed over
the evaluations, whichever run did them) and the commit that wrote the report.
"""

import json
import os
import statistics
import subprocess
import time

from common import atomic_files
from common import cpu
from common.errors import UserError
from configs import arms
from report import plots, tables, verdict
from stages import attack
from stages import train
from training import fit
from training import robust_validation
from training import specs

# What the paper (arXiv 2412.19747) reports, which the verdict is set beside.
CLAIM = ("margin-based supervised contrastive training (SupCon + margin + CE) raises FGSM "
         "accuracy by up to 2.5 points at the larger epsilons over the baseline while keeping "
         "clean accuracy (ResNet-18, CIFAR-100; the paper evaluates with FGSM only).")

# A model whose training took a run this long is evaluated, with every model trained
# before it, as soon as it is trained, not after the models still to train (see above).
REPORT_AFTER_SECONDS = 30 * 60


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


def run(config, workdir):
    if config.model.width <= 0:
        raise UserError("--config.model.width must be > 0.")
    record_path = os.path.join(workdir, "compare.json")
    try:
        with open(record_path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        record = {"arms": {}}
    chosen = arms.compared(config)
    if not chosen:
        raise UserError("--config.compare.paper_arms=False and no config.arms: nothing to compare.")
    for index, (arm, stage, changes) in enumerate(chosen):
        arm_workdir = os.path.join(workdir, arm)
        print(f"== {arm}: {stage} stage" + (f" with {changes}" if changes else ""), flush=True)
        start = time.time()
        summary_path = os.path.join(arm_workdir, stage, "summary.json")
        before = atomic_files.read_json(summary_path)
        summary = train.train(arms.arm_config(config, changes), arm_workdir, stage)
        trained_now = atomic_files.read_json(summary_path) != before
        entry = record["arms"].get(arm, {})
        if entry.get("inputs") is not None:
            entry["inputs"] = specs.with_data_identity(entry["inputs"])
        if "seconds" not in entry or entry.get("inputs") != summary.get("inputs"):
            # Wall time of the process that finished it (a resumed run counts its last part only).
            entry = {"stage": stage, "changes": changes, "inputs": summary.get("inputs"),
                     "seconds": time.time() - start, "images_per_second": summary.get("images_per_second"),
                     "final": summary.get("final"), "commit": _commit()}
        entry["epoch_seconds"] = _epoch_times(os.path.join(arm_workdir, stage))
        record["arms"][arm] = entry
        record.update(commit=_commit(), machine=f"{cpu.model_name()}, {os.cpu_count()} cores",
                      data=config.data.name, data_dir=config.data.data_dir,
                      data_sha256=specs.data_sha256(config.data.data_dir), seed=config.seed,
                      config=json.loads(config.to_json_best_effort()))
        atomic_files.write_json(record_path, record)
        if trained_now and time.time() - start >= REPORT_AFTER_SECONDS and index < len(chosen) - 1:
            # A long comparison reports as it goes (see above).
            done = chosen[:index + 1] + _finished_earlier(config, workdir, record, chosen[index + 1:])
            if len(done) < len(chosen):  # Else the final report follows at once.
                print(f"== attack: the {len(done)} of {len(chosen)} models trained so far", flush=True)
                report_on(config, workdir, record, done)
    print("== attack", flush=True)
    return report_on(config, workdir, record, chosen)


def _finished_earlier(config, workdir, record, later):
    """Those of `later` ([(name, stage, changes)]) that an earlier run trained to the end."""
    return [(name, stage, changes) for name, stage, changes in later
            if name in record["arms"]
            and train.finished(arms.arm_config(config, changes), os.path.join(workdir, name), stage)]


def report_on(config, workdir, record, chosen):
    """Evaluates the models `chosen` ([(name, stage, changes)], each trained) and writes the
    report on them to WORKDIR/attack/; returns the attack stage's results. Evaluations done
    before are reused (`stages.attack`'s records)."""
    record_path = os.path.join(workdir, "compare.json")
    paths = {arm: robust_validation.model_file(os.path.join(workdir, arm, stage), config.validation.use)
             for arm, stage, _ in chosen}
    histories = validation_histories(
        {arm: os.path.join(workdir, arm, stage) for arm, stage, _ in chosen},
        watched={arm for arm, stage, changes in chosen
                 if train.accuracy_on_adversary(arms.arm_config(config, changes), stage)})
    os.makedirs(os.path.join(workdir, "attack"), exist_ok=True)
    atomic_files.write_text(os.path.join(workdir, "attack", "training.md"),
                            tables.training_markdown({arm: record["arms"][arm] for arm, _, _ in chosen},
                                                     histories))
    if histories:
        atomic_files.save_figure(
            plots.validation_figure(histories, "Robust validation after every epoch (the star: "
                                    "the epoch kept)"),
            os.path.join(workdir, "attack", "validation.png"))
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
    groups = judge(config.compare.pairs, results["rows"], masks, config.seed)
    comparisons = [entry for group in groups for entry in group]
    atomic_files.write_json(os.path.join(workdir, "attack", "verdict.json"), comparisons)
    claim = CLAIM if config.compare.claim == "paper" else config.compare.claim or None
    text = "\n".join(verdict.markdown(group, claim if index == 0 else None)
                     for index, group in enumerate(groups)) if groups else verdict.markdown([])
    atomic_files.write_text(os.path.join(workdir, "attack", "verdict.md"), text)
    atomic_files.save_figure(
        plots.difference_figure(comparisons, "Each model against the others it is judged "
                                "against, on the same test images"),
        os.path.join(workdir, "attack", "verdict.png"))
    print("\n" + text)
    return results


def _epoch_times(folder):
    """How long a model's epochs took (`training.fit.epoch_seconds`), or None if unlogged."""
    seconds = fit.epoch_seconds(folder)
    if not seconds:
        return None
    return {"logged": len(seconds), "median": statistics.median(seconds.values()),
            "total": sum(seconds.values()), "per_epoch": seconds}


def validation_histories(folders, watched=()):
    """{model: its robust validation per epoch} (`report.plots.validation_figure`) for the
    models of {model: stage folder} that validated robustly (their best.json). For the
    `watched` models (training accuracy on their adversary's images) the masking epochs are
    also read back from history.csv, which holds epochs trained before the rule existed."""
    histories = {}
    for model, folder in folders.items():
        record = atomic_files.read_json(os.path.join(folder, robust_validation.BEST_RECORD))
        if record and record.get("per_epoch"):
            per_epoch = record["per_epoch"]
            masking = {m["epoch"] for m in record.get("masking") or []}
            if model in watched:
                masking |= {m["epoch"] for m in robust_validation.masking_in_history(folder)}
            histories[model] = {
                "epoch": [e["epoch"] for e in per_epoch],
                "val_robust_accuracy": [e["robust_accuracy"] for e in per_epoch],
                "val_clean_accuracy": [e["clean_accuracy"] for e in per_epoch],
                "best_epoch": (record.get("best") or {}).get("epoch"),
                "collapse_epoch": (record.get("collapse") or {}).get("epoch"),
                "masking_epochs": sorted(masking)}
    return histories


def judge(pairs, rows, masks, seed):
    """[[verdict entries]]: a group per method and set of seeds, its pairs "A - B" from `pairs`.

    Models named NAME_seedK are NAME trained with seed K (`configs.arms.seed_replica`); a
    pair is judged with every seed both of its models have (the config's own `seed` for
    the models without the suffix) and pooled over them (`report.verdict.pool`).
    """
    by_seed = {}  # seed -> {name as the pairs say it: model name in the rows}
    for model in dict.fromkeys(row["model"] for row in rows):
        name, replica = arms.seed_replica(model)
        by_seed.setdefault(seed if replica is None else replica, {})[name] = model
    references = {}  # method -> {seeds: [references]}
    for pair in pairs:
        method, reference = arms.parse_pair(pair)
        seeds = tuple(k for k, names in by_seed.items() if method in names and reference in names)
        if seeds:
            references.setdefault(method, {}).setdefault(seeds, []).append(reference)
    groups = []
    for method, by_seeds in references.items():
        for seeds, names in by_seeds.items():
            per_seed = []
            for k in seeds:
                models = by_seed[k]
                renamed = [dict(row, model=name) for name, model in models.items()
                           for row in rows if row["model"] == model]
                entries = verdict.compare(renamed, method, tuple(names),
                                          {name: masks[model] for name, model in models.items()
                                           if model in masks})
                per_seed.append([dict(entry, seeds=[k]) for entry in entries])
            groups.append(verdict.pool(per_seed) if len(per_seed) > 1 else per_seed[0])
    return [group for group in groups if group]
