"""The results table: one row per model and attack, one column per epsilon.

Each accuracy carries its binomial standard error, sqrt(p (1 - p) / n): what another draw of
n test images would move it by, for one trained model (one seed).
"""

import math

from attacks import table as attack_table


def epsilon_label(epsilon):
    """0.0313725 -> '8/255' (epsilons are chosen as whole steps of 1/255)."""
    steps = epsilon * 255
    return f"{round(steps)}/255" if abs(steps - round(steps)) < 1e-6 else f"{epsilon:.4g}"


def attacks_in(rows):
    """The attacks of `rows` in table order (as run), the worst case last."""
    names = list(dict.fromkeys(row["attack"] for row in rows if row["attack"] != "clean"))
    return [n for n in names if n != attack_table.WORST] + [n for n in names if n == attack_table.WORST]


def standard_error(accuracy, n):
    """The binomial standard error of an accuracy measured on n images (nan for none)."""
    return math.sqrt(max(accuracy * (1.0 - accuracy), 0.0) / n) if n else float("nan")


def cell(row):
    """'52.7 ±0.5': accuracy and one standard error, in percent."""
    return f"{100 * row['accuracy']:.1f} ±{100 * standard_error(row['accuracy'], row['n']):.1f}"


def markdown(rows):
    """A Markdown table of accuracies (percent, ± one standard error) from result rows."""
    epsilons = sorted({row["epsilon"] for row in rows if row["attack"] != "clean"})
    lines = ["| model | attack | images | clean | "
             + " | ".join(f"eps {epsilon_label(e)}" for e in epsilons) + " |",
             "|---|---|---:|---:|" + "---:|" * len(epsilons)]
    models = list(dict.fromkeys(row["model"] for row in rows))
    total = max((row["n"] for row in rows if row["attack"] == "clean"), default=0)
    for model in models:
        mine = {(row["attack"], row["epsilon"]): row for row in rows if row["model"] == model}
        clean = mine[("clean", 0.0)]
        for attack in attacks_in(rows):
            cells = [cell(mine[(attack, e)]) if (attack, e) in mine else "-" for e in epsilons]
            sizes = sorted({mine[(attack, e)]["n"] for e in epsilons if (attack, e) in mine})
            lines.append(f"| {model} | {attack_table.title(attack)} | "
                         f"{' or '.join(f'{n:,}' for n in sizes) or '-'} | {cell(clean)} | "
                         + " | ".join(cells) + " |")
    lines.append(f"\nAccuracy in percent ± one binomial standard error, sqrt(p(1-p)/n), for one "
                 f"trained model; `clean` on all {total:,} test images, the epsilon columns "
                 "on the attack's `images` (eps 0 = clean accuracy there); the worst case counts an "
                 "image as robust only if every attack failed on it.")
    return "\n".join(lines) + "\n"


# The epsilon the field reports L-infinity robustness on CIFAR at (RobustBench).
STANDARD_EPSILON = 8 / 255


def at_epsilon_markdown(rows, epsilon=STANDARD_EPSILON):
    """A Markdown table of every model (rows) under every attack (columns, the worst case
    last) at one `epsilon`, clean accuracy first; each column names its images. Empty text
    where no attack ran at `epsilon`."""
    attacks = [a for a in attacks_in(rows)
               if any(r["attack"] == a and abs(r["epsilon"] - epsilon) < 1e-9 for r in rows)]
    if not attacks:
        return ""
    found = {(r["model"], r["attack"]): r for r in rows
             if r["attack"] == "clean" or abs(r["epsilon"] - epsilon) < 1e-9}
    columns = ["clean"] + attacks

    def images(attack):
        sizes = sorted({r["n"] for (model, a), r in found.items() if a == attack})
        return " or ".join(f"{n:,}" for n in sizes)

    lines = [f"| model | " + " | ".join(f"{attack_table.title(a) if a != 'clean' else 'clean'} "
                                         f"({images(a)})" for a in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for model in dict.fromkeys(r["model"] for r in rows):
        lines.append(f"| {model} | " + " | ".join(
            cell(found[(model, a)]) if (model, a) in found else "-" for a in columns) + " |")
    lines.append(f"\nAccuracy in percent ± one binomial standard error at eps "
                 f"{epsilon_label(epsilon)}, each attack on the number of test images its column "
                 "names; the worst case counts an image as robust only if every attack failed on it.")
    return "\n".join(lines) + "\n"


def training_markdown(models, histories):
    """A Markdown table of how each model trained: {model: compare.json's arm entry} and
    {model: its robust validation (`stages.compare.validation_histories`)}."""
    lines = ["| model | stage | changes | epochs logged | best epoch (val robust / clean) | "
             "warnings | median s per epoch | training hours | commit |",
             "|---|---|---|---:|---|---|---:|---:|---|"]
    for model, entry in models.items():
        times = entry.get("epoch_seconds") or {}
        history = histories.get(model) or {}
        best = history.get("best_epoch")
        if best in history.get("epoch", []):
            at = history["epoch"].index(best)
            kept = (f"{best} ({100 * history['val_robust_accuracy'][at]:.1f} / "
                    f"{100 * history['val_clean_accuracy'][at]:.1f})")
        else:
            kept = "-"
        changes = "; ".join(f"{k}={v}" for k, v in (entry.get("changes") or {}).items()) or "-"
        warnings = "; ".join(
            ([f"collapse at epoch {history['collapse_epoch']}"] if history.get("collapse_epoch") else [])
            + ([f"adversary easier than clean images at epochs "
                f"{', '.join(map(str, history['masking_epochs']))}"]
               if history.get("masking_epochs") else [])) or "-"
        median = f"{times['median']:.0f}" if times.get("median") else "-"
        hours = f"{times['total'] / 3600:.2f}" if times.get("total") else "-"
        lines.append(f"| {model} | {entry.get('stage', '-')} | {changes} | {times.get('logged', '-')} | "
                     f"{kept} | {warnings} | {median} | {hours} | {str(entry.get('commit', '-'))[:10]} |")
    lines.append("\nEpoch times from each model's history.csv (`training.fit.Throughput`), over "
                 "every run that trained it: an epoch's training and validation; training hours "
                 "sum them, so they include any time a run was suspended, which the median "
                 "ignores; an epoch a killed run did not log is not counted. Warnings: the "
                 "robust validation's collapse guard, and the epochs whose training adversary's "
                 "images the model classified better than clean validation images "
                 "(`training.robust_validation`: catastrophic overfitting or gradient masking).")
    return "\n".join(lines) + "\n"
