"""Does the method beat its references? Epsilon by epsilon, with the uncertainty stated.

`compare(rows, method, references, masks)` reads the rows of results.json (`stages.attack`)
and, for each attack (the worst case included) and epsilon, gives the method's accuracy
minus each reference's, with the standard error of that difference.

Both models are attacked on the same test images, so the difference is a paired one: with
the per-image verdicts (`masks`, from `stages.attack.image_masks`), d_i = correct_i(method)
- correct_i(reference) in {-1, 0, 1} and SE = sd(d) / sqrt(n), which counts only the images
on which the two models disagree (as McNemar's test does). Without them (rows alone), each
accuracy is taken as an independent binomial proportion, SE = sqrt(SE_1^2 + SE_2^2) with
SE_i = sqrt(p_i (1 - p_i) / n): larger, since the models share the images' difficulty, so
conservative. Each entry says which one it used.

A difference is called:
- "better" if it exceeds +2 SE, "worse" if below -2 SE (about 95% two-sided);
- "no clear difference" otherwise.

Several seeds: `pool(per_seed)` joins the comparisons of the same pair made with models
trained with different seeds (each pair attacked on the same images): the accuracies and
the difference are the means over the seeds, and SE = sqrt(sum of SE_k^2) / K, the seeds
being independent (each SE_k paired within its seed).

`markdown(comparisons, claim)` writes it as a table and a few plain sentences: what the
paper claims, and where this run supports it, where it contradicts it, and where it
cannot tell.
"""

import math

import numpy as np

from attacks import table as attack_table
from report.tables import epsilon_label, standard_error

CALLS = {"better": "better", "worse": "worse", "none": "no clear difference"}


def _call(difference, error, threshold=2.0):
    if error == 0.0:
        return "better" if difference > 0 else "worse" if difference < 0 else "none"
    if difference > threshold * error:
        return "better"
    if difference < -threshold * error:
        return "worse"
    return "none"


def paired_standard_error(method_mask, reference_mask):
    """SE of the mean of correct(method) - correct(reference) over the same images."""
    d = np.asarray(method_mask, np.float64) - np.asarray(reference_mask, np.float64)
    return float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")


def _paired(masks, method, reference, key):
    """The paired SE if both models' per-image verdicts on the same images are known, else None."""
    mine, theirs = (masks or {}).get(method, {}).get(key), (masks or {}).get(reference, {}).get(key)
    if mine is None or theirs is None or not np.array_equal(mine[0], theirs[0]):
        return None
    return paired_standard_error(mine[1], theirs[1])


def compare(rows, method, references, masks=None):
    """[{attack, epsilon, n, method, accuracy: {model: a}, differences: {reference: {...}}}].

    One entry per attack (clean first, the worst case last) and epsilon that the method
    and every reference were evaluated at, on the same number of images. `masks`:
    {model: {(attack, epsilon): (image indices, bool correct)}} for paired standard errors.
    """
    by_key = {(row["model"], row["attack"], float(row["epsilon"])): row for row in rows}
    models = (method, *references)
    attacks = ["clean"] + [name for name in _attack_order(rows)]
    entries = []
    for attack in attacks:
        epsilons = sorted({float(row["epsilon"]) for row in rows if row["attack"] == attack})
        for epsilon in epsilons:
            found = [by_key.get((model, attack, epsilon)) for model in models]
            if any(row is None for row in found) or len({row["n"] for row in found}) != 1:
                continue
            if attack != "clean" and epsilon == 0.0:
                continue  # The same as clean.
            n = found[0]["n"]
            accuracy = {model: row["accuracy"] for model, row in zip(models, found)}
            differences = {}
            for reference in references:
                difference = accuracy[method] - accuracy[reference]
                error = _paired(masks, method, reference, (attack, epsilon))
                paired = error is not None
                if not paired:
                    error = math.hypot(standard_error(accuracy[method], n),
                                       standard_error(accuracy[reference], n))
                differences[reference] = {"difference": difference, "standard_error": error,
                                          "paired": paired, "call": _call(difference, error)}
            entries.append({"attack": attack, "epsilon": epsilon, "n": n, "method": method,
                            "accuracy": accuracy, "differences": differences})
    return entries


def pool(per_seed):
    """The comparisons of the same method and references made with each seed's models
    ([entries of `compare`] per seed, models named alike), as one: the entries every seed
    has, with mean accuracies and differences and the pooled standard error (module
    docstring). Each entry's `seeds` lists the seeds pooled."""
    keyed = [{(e["attack"], e["epsilon"]): e for e in entries} for entries in per_seed]
    pooled = []
    for key, first in keyed[0].items():
        found = [entries.get(key) for entries in keyed]
        if any(e is None or e["n"] != first["n"] for e in found):
            continue
        k = len(found)
        differences = {}
        for reference in first["differences"]:
            each = [e["differences"][reference] for e in found]
            difference = sum(d["difference"] for d in each) / k
            error = math.sqrt(sum(d["standard_error"] ** 2 for d in each)) / k
            differences[reference] = {"difference": difference, "standard_error": error,
                                      "paired": all(d["paired"] for d in each),
                                      "call": _call(difference, error),
                                      "by_seed": [d["difference"] for d in each]}
        pooled.append(dict(first, accuracy={model: sum(e["accuracy"][model] for e in found) / k
                                            for model in first["accuracy"]},
                           differences=differences,
                           seeds=[seed for e in found for seed in e.get("seeds", [None])]))
    return pooled


def _attack_order(rows):
    names = list(dict.fromkeys(row["attack"] for row in rows if row["attack"] != "clean"))
    return [n for n in names if n != attack_table.WORST] + [n for n in names if n == attack_table.WORST]


def _title(attack):
    return "clean" if attack == "clean" else attack_table.title(attack)


def _points(value):
    return f"{100 * value:+.1f}"


def markdown(entries, claim=None):
    """The comparison as a Markdown table and one sentence per attack."""
    if not entries:
        return "No attack and epsilon was evaluated for the method and every reference alike.\n"
    method = entries[0]["method"]
    references = list(entries[0]["differences"])
    lines = ["| attack | eps | n | " + " | ".join([method, *references]) + " | "
             + " | ".join(f"{method} - {r} (2 SE)" for r in references) + " |",
             "|---|---|---:|" + "---:|" * (1 + 2 * len(references))]
    for entry in entries:
        cells = [f"{100 * entry['accuracy'][m]:.1f}" for m in [method, *references]]
        for reference in references:
            d = entry["differences"][reference]
            mark = {"better": " **better**", "worse": " **worse**", "none": ""}[d["call"]]
            cells.append(f"{_points(d['difference'])} (±{100 * 2 * d['standard_error']:.1f}){mark}")
        epsilon = "-" if entry["attack"] == "clean" else epsilon_label(entry["epsilon"])
        lines.append(f"| {_title(entry['attack'])} | {epsilon} | {entry['n']} | " + " | ".join(cells) + " |")
    lines.append("")
    paired = all(d["paired"] for entry in entries for d in entry["differences"].values())
    how = ("paired over the same images: only the images on which the two models disagree count"
           if paired else "binomial, the two models' errors taken as independent: conservative")
    lines.append(f"Accuracy in percent; differences in points, with twice their standard error "
                 f"({how}); **better**/**worse**: beyond 2 SE.")
    seeds = entries[0].get("seeds") or []
    if len(seeds) > 1:
        lines[-1] += (f" Each accuracy is the mean over the models trained with seeds "
                      f"{', '.join(map(str, seeds))}, and each difference the mean of the seeds' "
                      f"differences, its SE pooled from theirs (seeds independent).")
    lines.append("")
    if claim:
        lines.append(f"The claim: {claim}")
        lines.append("")
    for attack in dict.fromkeys(entry["attack"] for entry in entries):
        mine = [entry for entry in entries if entry["attack"] == attack]
        for reference in references:
            lines.append(f"- {_title(attack)}, {method} against {reference}: " + _sentence(mine, reference))
    return "\n".join(lines) + "\n"


def _sentence(entries, reference):
    groups = {call: [] for call in CALLS}
    for entry in entries:
        d = entry["differences"][reference]
        label = "the clean images" if entry["attack"] == "clean" else epsilon_label(entry["epsilon"])
        groups[d["call"]].append(f"{label} ({_points(d['difference'])})")
    parts = [f"{CALLS[call]} at {', '.join(items)}" for call, items in groups.items() if items]
    return "; ".join(parts) + "."
