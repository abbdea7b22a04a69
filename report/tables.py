"""The results table: one row per model and attack, one column per epsilon."""


def epsilon_label(epsilon):
    """0.0313725 -> '8/255' (epsilons are chosen as whole steps of 1/255)."""
    steps = epsilon * 255
    return f"{round(steps)}/255" if abs(steps - round(steps)) < 1e-6 else f"{epsilon:.4g}"


def markdown(rows):
    """A Markdown table of accuracies (percent) from result rows."""
    epsilons = sorted({row["epsilon"] for row in rows if row["attack"] != "clean"})
    lines = ["| model | attack | clean | " + " | ".join(f"eps {epsilon_label(e)}" for e in epsilons)
             + " |", "|---|---|---:|" + "---:|" * len(epsilons)]
    models = list(dict.fromkeys(row["model"] for row in rows))
    for model in models:
        mine = {(row["attack"], row["epsilon"]): row for row in rows if row["model"] == model}
        clean = mine[("clean", 0.0)]["accuracy"]
        for attack in ("fgsm", "pgd"):
            cells = [f"{100 * mine[(attack, e)]['accuracy']:.1f}" if (attack, e) in mine else "-"
                     for e in epsilons]
            lines.append(f"| {model} | {attack} | {100 * clean:.1f} | " + " | ".join(cells) + " |")
    n = rows[0]["n"] if rows else 0
    lines.append(f"\nAccuracy in percent on {n} test images.")
    return "\n".join(lines) + "\n"
