"""Did a rerun reproduce a published run? Accuracy by accuracy, and verdict by verdict.

Training on the CPU is not bit-exact at the experiment's scale, so a rerun of `make
reproduce` with the workdir deleted is a second draw of the same recipe, not a copy.
The spread stated before the rerun's numbers existed: each accuracy of the rerun lies
within 2 standard errors of the difference of two independent binomial measurements,

    allowed = 2 sqrt(p (1 - p) (1/n_1 + 1/n_2)),   p = (n_1 p_1 + n_2 p_2) / (n_1 + n_2),

i.e. 2 sqrt(SE_1^2 + SE_2^2) with both standard errors taken at the pooled accuracy (so an
accuracy of 0 on both sides still has an error, and 0.0% against 0.1% is not a failure).
At 2 SE about 1 comparison in 20 falls outside by chance even when the recipe
reproduces, so the count outside is reported, not just a yes or no.

`compare_runs(first, second)` pairs the rows of two results.json (same model, attack and
epsilon); `compare_verdicts` pairs two verdict.json (does each call, better / worse / no
clear difference, come out the same?); `markdown` writes both with the two runs' mean.
"""

import math

from report.tables import epsilon_label, standard_error
from report.verdict import CALLS


def allowed_gap(first, n_first, second, n_second, spread=2.0):
    """`spread` pooled standard errors of the difference of two binomial accuracies."""
    pooled = (first * n_first + second * n_second) / (n_first + n_second)
    return spread * math.hypot(standard_error(pooled, n_first), standard_error(pooled, n_second))


def _key(row):
    return row["model"], row["attack"], round(float(row["epsilon"]), 6)


def compare_runs(first_rows, second_rows, spread=2.0):
    """[{model, attack, epsilon, n, first, second, difference, allowed, within}] for every
    (model, attack, epsilon) measured in both runs, in the first run's order."""
    second = {_key(row): row for row in second_rows}
    compared = []
    for row in first_rows:
        other = second.get(_key(row))
        if other is None:
            continue
        gap = allowed_gap(row["accuracy"], row["n"], other["accuracy"], other["n"], spread)
        difference = other["accuracy"] - row["accuracy"]
        compared.append({"model": row["model"], "attack": row["attack"],
                         "epsilon": float(row["epsilon"]), "n": [row["n"], other["n"]],
                         "first": row["accuracy"], "second": other["accuracy"],
                         "difference": difference, "allowed": gap,
                         "within": abs(difference) <= gap + 1e-12})
    return compared


def missing_rows(first_rows, second_rows):
    """Keys (model, attack, epsilon) the first run has and the second does not."""
    second = {_key(row) for row in second_rows}
    return [_key(row) for row in first_rows if _key(row) not in second]


def compare_verdicts(first, second):
    """[{attack, epsilon, reference, first, second, agree}]: each call of both verdicts."""
    second_by_key = {(c["attack"], round(c["epsilon"], 6)): c for c in second}
    paired = []
    for comparison in first:
        other = second_by_key.get((comparison["attack"], round(comparison["epsilon"], 6)))
        if other is None:
            continue
        for reference, entry in comparison["differences"].items():
            if reference not in other["differences"]:
                continue
            theirs = other["differences"][reference]
            paired.append({"attack": comparison["attack"], "epsilon": comparison["epsilon"],
                           "reference": reference, "method": comparison["method"],
                           "first": entry["call"], "second": theirs["call"],
                           "first_difference": entry["difference"],
                           "second_difference": theirs["difference"],
                           "agree": entry["call"] == theirs["call"]})
    return paired


def summary(compared, verdicts=()):
    """The counts a reader wants first."""
    outside = [c for c in compared if not c["within"]]
    return {"accuracies": len(compared), "within": len(compared) - len(outside),
            "outside": len(outside),
            "largest_gap": max((abs(c["difference"]) for c in compared), default=0.0),
            "largest_gap_in_allowed": max((abs(c["difference"]) / c["allowed"]
                                           for c in compared if c["allowed"] > 0), default=0.0),
            "calls": len(verdicts), "calls_agree": sum(v["agree"] for v in verdicts)}


def _points(value):
    return f"{100 * value:.1f}"


def markdown(compared, verdicts=(), first_name="first run", second_name="rerun", missing=()):
    counts = summary(compared, verdicts)
    lines = [f"# Reproduction: {second_name} against {first_name}", "",
             f"{counts['within']} of {counts['accuracies']} accuracies lie within the spread "
             "stated in advance (2 pooled binomial standard errors of the difference); "
             f"{counts['outside']} outside (about 1 in 20 is expected by chance). Largest gap "
             f"{_points(counts['largest_gap'])} points; largest gap relative to its allowance "
             f"{counts['largest_gap_in_allowed']:.2f}."]
    if missing:
        lines += ["", f"Not measured in the {second_name} ({len(missing)}): "
                  + ", ".join(f"{m} {a} {epsilon_label(e)}" for m, a, e in missing[:6])
                  + (" ..." if len(missing) > 6 else "") + "."]
    if verdicts:
        changed = [v for v in verdicts if not v["agree"]]
        lines += ["", f"Verdict: {counts['calls_agree']} of {counts['calls']} calls (the method "
                  "against each reference, per attack and epsilon) come out the same."]
        if changed:
            lines += ["", "| attack | eps | method vs | " + first_name + " | " + second_name + " |",
                      "|---|---|---|---|---|"]
            for v in changed:
                lines.append(f"| {v['attack']} | {epsilon_label(v['epsilon'])} | {v['reference']} "
                             f"| {CALLS[v['first']]} ({100 * v['first_difference']:+.1f}) "
                             f"| {CALLS[v['second']]} ({100 * v['second_difference']:+.1f}) |")
    lines += ["", "## Every accuracy", "",
              f"| model | attack | eps | images | {first_name} | {second_name} | difference "
              "| allowed | mean of the two |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for c in compared:
        flag = "" if c["within"] else " **outside**"
        images = c["n"][0] if c["n"][0] == c["n"][1] else f"{c['n'][0]} / {c['n'][1]}"
        lines.append(f"| {c['model']} | {c['attack']} | {epsilon_label(c['epsilon'])} | {images} "
                     f"| {_points(c['first'])} | {_points(c['second'])} "
                     f"| {100 * c['difference']:+.1f}{flag} | ±{_points(c['allowed'])} "
                     f"| {_points((c['first'] + c['second']) / 2)} ±{_points(abs(c['difference']) / 2)} |")
    lines += ["", "The mean of the two runs is given ± half their difference (with two runs, "
              "the range is all there is to say about their spread)."]
    return "\n".join(lines) + "\n"
