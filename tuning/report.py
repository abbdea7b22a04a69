"""What stage `tune` leaves in WORKDIR/tune/ from the trials Keras Tuner recorded.

- `summary.json`: the search's settings and every trial: id, status, hyperparameters,
  the config.loss fields they set, objective, clean and robust validation accuracy,
  seconds, resident memory at the end of the trial, and the error of a failed one.
  Statuses: completed; unqualified (finished, but clean accuracy below the floor);
  failed (the error's last line is kept, the whole traceback is in
  search/trial_<id>/trial.json); running (unfinished: in progress, or killed, and then
  run again when the search resumes).
- `summary.md`: the same as a table, best first, and the command that retrains the best.
- `objective.png`: robust validation accuracy against the margin, one panel per margin
  form, temperature as colour; hollow markers did not qualify.
- `best_config.py`: the config of the best qualifying trial, a config file the training
  stages accept (`--config WORKDIR/tune/best_config.py`, `:smoke` too).
"""

import glob
import os
import pprint

import matplotlib
from keras_tuner.engine.trial import Trial
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FormatStrFormatter
from matplotlib.ticker import NullFormatter

from attacks import table as attack_table
from common import atomic_files
from tuning import space
from tuning import tuner as tuner_lib

BEST_CONFIG = "best_config.py"
_METRICS = ("score", "clean_accuracy", "robust_accuracy", "seconds", "rss_mb",
            "validation_images")


def load_trials(out):
    """Every trial Keras Tuner recorded under OUT/search, by id."""
    paths = glob.glob(os.path.join(out, tuner_lib.SEARCH, "trial_*", "trial.json"))
    return sorted((Trial.load(path) for path in paths), key=lambda trial: trial.trial_id)


def _error(message):
    lines = [line for line in (message or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "failed without a message"


def trial_record(trial, epochs):
    """One trial as a plain dict (see the module docstring); `epochs`: config.tune.epochs."""
    metrics = {name: (float(trial.metrics.get_last_value(name))
                      if trial.metrics.exists(name) else None) for name in _METRICS}
    values = dict(trial.hyperparameters.values)
    status = {"COMPLETED": "completed", "FAILED": "failed", "INVALID": "failed"}.get(
        trial.status, trial.status.lower())
    if status == "completed" and trial.metrics.exists("qualified") and \
            not trial.metrics.get_last_value("qualified"):
        status = "unqualified"
    if status == "completed" and metrics["score"] is None:
        status = "failed"
    return {"id": trial.trial_id, "status": status, "hyperparameters": values,
            "epochs": int(values.get("tuner/epochs", epochs)),  # Hyperband gives each its own.
            "loss": space.loss_values(values) if "margin_form" in values else None,
            "objective": metrics["score"], "clean_accuracy": metrics["clean_accuracy"],
            "robust_accuracy": metrics["robust_accuracy"], "seconds": metrics["seconds"],
            "rss_mb": metrics["rss_mb"], "validation_images": metrics["validation_images"],
            "error": _error(trial.message) if status == "failed" else None}


def best_of(records):
    """The qualifying trial with the highest objective (the earliest among equals), or None."""
    done = [r for r in records if r["status"] == "completed"]
    return max(done, key=lambda r: (r["objective"], -int(r["id"]))) if done else None


def _epochs(count):
    return f"{count} epoch" + ("" if count == 1 else "s")


def _percent(value):
    return "-" if value is None else f"{100 * value:.1f}"


def _number(value, digits=3):
    return "-" if value is None else f"{value:.{digits}g}"


def objective_text(tune):
    return (f"{attack_table.title(tune.attack)} accuracy at {tune.epsilon:g}/255 on the validation "
            f"split, for trials with clean accuracy >= {100 * tune.min_clean_accuracy:g}%")


def markdown(summary):
    """summary.md: the table (best first, failures last) and how to retrain the best."""
    search = summary["search"]
    attack = f"{attack_table.title(search['attack'])} {search['epsilon']:g}/255"
    lines = [f"# Search of the loss for robustness: {search['dataset']}", "",
             f"{search['algorithm']}, {len(summary['trials'])} of {search['max_trials']} trials "
             f"of {_epochs(search['epochs'])}; objective: {search['objective']}.", "",
             f"| rank | trial | status | margin form | margin | temperature | SupCon weight | "
             f"margin weight | epochs | clean % | {attack} % | seconds |",
             "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ranked = sorted(summary["trials"], key=lambda r: (
        r["objective"] is None, -(r["objective"] if r["objective"] is not None else 0), r["id"]))
    for rank, record in enumerate(ranked, 1):
        loss = record["loss"] or {}
        lines.append(
            f"| {rank if record['objective'] is not None else '-'} | {record['id']} | "
            f"{record['status']} | {loss.get('margin_form', '-')} | "
            f"{_number(loss.get('margin'))} | "
            f"{_number(loss.get('temperature'))} | {_number(loss.get('supcon_weight'))} | "
            f"{_number(loss.get('margin_weight'))} | {record['epochs']} | "
            f"{_percent(record['clean_accuracy'])} | "
            f"{_percent(record['robust_accuracy'])} | "
            f"{'-' if record['seconds'] is None else round(record['seconds'])} |")
    failed = [r for r in summary["trials"] if r["error"]]
    if failed:
        lines += ["", "Failed trials:", ""]
        lines += [f"- {r['id']}: {r['error']}" for r in failed]
    best = summary["best"]
    if best:
        lines += ["", f"Best: trial {best['id']} ({space.overrides(best['loss'])}). Retrain it in "
                  "full (baseline, pretrain, finetune, attack, export):", "",
                  f"    {best['command']}"]
    return "\n".join(lines) + "\n"


def figure(summary, tune):
    """Robust validation accuracy against the margin, a panel per form, temperature as colour.

    Filled markers qualified, hollow ones fell below the clean-accuracy floor; a red ring
    marks the best trial.
    """
    search = summary["search"]
    forms = list(tune.margin_forms)
    low, high = (float(v) for v in tune.temperature)
    norm = LogNorm(low, high) if high > low else LogNorm(low / 1.5, low * 1.5)
    colours = matplotlib.colormaps["viridis"]
    result = Figure(figsize=(4.6 * len(forms) + 1.2, 4.2), layout="constrained")
    axes = result.subplots(1, len(forms), sharey=True, squeeze=False)[0]
    best = summary["best"]
    plotted = [r for r in summary["trials"] if r["robust_accuracy"] is not None and r["loss"]]
    for axis, form in zip(axes, forms):
        records = [r for r in plotted if r["loss"]["margin_form"] == form]
        for qualified in (True, False):
            chosen = [r for r in records if (r["status"] == "completed") == qualified]
            if chosen:
                shade = colours(norm([r["loss"]["temperature"] for r in chosen]))
                axis.scatter([r["loss"]["margin"] for r in chosen],
                             [100 * r["robust_accuracy"] for r in chosen], s=46,
                             facecolors=shade if qualified else "none", edgecolors=shade,
                             linewidths=1.5)
        if best and best["loss"]["margin_form"] == form:
            axis.scatter([best["loss"]["margin"]], [100 * best["robust_accuracy"]], s=260,
                         facecolors="none", edgecolors="crimson", linewidths=1.5)
        margin_low, margin_high = (float(v) for v in tune[space.MARGIN_NAMES[form]])
        pad = 0.05 * (margin_high - margin_low) or 0.05
        axis.set_xlim(margin_low - pad, margin_high + pad)
        axis.set_xlabel(f"{form} margin ({len(records)} trial{'' if len(records) == 1 else 's'})")
        axis.grid(alpha=0.3)
    keys = [Line2D([], [], marker="o", linestyle="", color="grey", label="qualified"),
            Line2D([], [], marker="o", linestyle="", markerfacecolor="none", color="grey",
                   label=f"clean below {100 * tune.min_clean_accuracy:g}%")]
    if best:
        keys.append(Line2D([], [], marker="o", linestyle="", markersize=14, color="crimson",
                           markerfacecolor="none", label=f"best (trial {best['id']})"))
    axes[0].legend(handles=keys, loc="lower left", fontsize=8)
    axes[0].set_ylabel(f"{attack_table.title(tune.attack)} accuracy at {tune.epsilon:g}/255, "
                       "validation (%)")
    top = max((100 * r["robust_accuracy"] for r in plotted), default=1.0)
    axes[0].set_ylim(0, 1.15 * top + 0.5)
    bar = result.colorbar(matplotlib.cm.ScalarMappable(norm, colours), ax=list(axes))
    bar.set_ticks([t for t in (0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5) if norm.vmin <= t <= norm.vmax]
                  or [norm.vmin, norm.vmax])
    bar.ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    bar.ax.yaxis.set_minor_formatter(NullFormatter())
    bar.set_label("temperature")
    result.suptitle(f"{search['dataset']}: {search['algorithm']} search, "
                    f"{_epochs(search['epochs'])} per trial")
    return result


def best_config_text(config, best, command):
    """A config file (Python): the search's whole config with the best trial's loss."""
    chosen = space.with_loss(config, best["loss"])
    chosen.tune.overwrite = False
    literal = pprint.pformat(chosen.to_dict(), indent=1, width=96, sort_dicts=False)
    robust, clean = 100 * best["robust_accuracy"], 100 * best["clean_accuracy"]
    return f'''"""The best trial ({best['id']}) of a search of the loss: {robust:.1f}% robust and
{clean:.1f}% clean validation accuracy after {_epochs(best['epochs'])}. Written by
`run.py --stage tune`.

Retrain it in full (baseline, pretrain, finetune, attack, export) with the schedule of
config.train:

    {command}

`:smoke` after the file name shrinks it to seconds, like every config. The search's whole
config is recorded below; a field added to configs/base.py since keeps its default.
"""

from configs.base import base_config
from configs.base import shrink_for_smoke
from configs.schema import check_argument

CONFIG = {literal}


def get_config(arg=None):
    check_argument("{BEST_CONFIG}", arg, ("smoke",))
    config = base_config()
    config.update(CONFIG)
    if arg == "smoke":
        shrink_for_smoke(config)
    return config
'''


def write(config, workdir, data_name):
    """Writes every file of the module docstring from the recorded trials; returns the summary."""
    out = os.path.join(workdir, "tune")
    tune = config.tune
    records = [trial_record(trial, tune.epochs) for trial in load_trials(out)]
    best = best_of(records)
    summary = {
        "search": {"algorithm": tune.algorithm, "max_trials": tune.max_trials,
                   "epochs": tune.epochs, "attack": tune.attack, "epsilon": tune.epsilon,
                   "min_clean_accuracy": tune.min_clean_accuracy,
                   "objective": objective_text(tune), "dataset": data_name},
        "trials": records,
        "counts": {status: sum(r["status"] == status for r in records)
                   for status in ("completed", "unqualified", "failed", "running")},
        "best": None,
    }
    best_path = os.path.join(out, BEST_CONFIG)
    if best is not None:
        command = (f"python run.py --stage all --config {best_path} "
                   f"--workdir {os.path.normpath(workdir)}-best")
        summary["best"] = {**best, "config": best_path, "command": command}
        atomic_files.write_text(best_path, best_config_text(config, best, command))
    atomic_files.write_json(os.path.join(out, "summary.json"), summary)
    atomic_files.write_text(os.path.join(out, "summary.md"), markdown(summary))
    if any(r["robust_accuracy"] is not None for r in records):
        atomic_files.save_figure(figure(summary, tune), os.path.join(out, "objective.png"))
    return summary


def describe(summary):
    """A few lines for the terminal: counts, the best trial, failures."""
    counts = summary["counts"]
    lines = [f"tune: {len(summary['trials'])} trials: " +
             ", ".join(f"{count} {status}" for status, count in counts.items() if count)]
    for record in summary["trials"]:
        if record["error"]:
            lines.append(f"  trial {record['id']} failed: {record['error']}")
    best = summary["best"]
    if best:
        lines.append(f"best: trial {best['id']}, {100 * best['robust_accuracy']:.1f}% robust and "
                     f"{100 * best['clean_accuracy']:.1f}% clean ({space.overrides(best['loss'])})")
        lines.append(f"retrain it in full: {best['command']}")
    return "\n".join(lines)
