"""The results table: one row per model and attack, one column per epsilon."""

from attacks import table as attack_table


def epsilon_label(epsilon):
    """0.0313725 -> '8/255' (epsilons are chosen as whole steps of 1/255)."""
    steps = epsilon * 255
    return f"{round(steps)}/255" if abs(steps - round(steps)) < 1e-6 else f"{epsilon:.4g}"


def attacks_in(rows):
    """The attacks of `rows` in table order (as run), the worst case last."""
    names = list(dict.fromkeys(row["attack"] for row in rows if row["attack"] != "clean"))
    return [n for n in names if n != attack_table.WORST] + [n for n in names if n == attack_table.WORST]


def markdown(rows):
    """A Markdown table of accuracies (percent) from result rows."""
    epsilons = sorted({row["epsilon"] for row in rows if row["attack"] != "clean"})
    lines = ["| model | attack | clean | " + " | ".join(f"eps {epsilon_label(e)}" for e in epsilons)
             + " |", "|---|---|---:|" + "---:|" * len(epsilons)]
    models = list(dict.fromkeys(row["model"] for row in rows))
    sizes = set()
    for model in models:
        mine = {(row["attack"], row["epsilon"]): row for row in rows if row["model"] == model}
        clean = mine[("clean", 0.0)]["accuracy"]
        for attack in attacks_in(rows):
            cells = [f"{100 * mine[(attack, e)]['accuracy']:.1f}" if (attack, e) in mine else "-"
                     for e in epsilons]
            sizes.update(mine[(attack, e)]["n"] for e in epsilons if (attack, e) in mine)
            lines.append(f"| {model} | {attack_table.title(attack)} | {100 * clean:.1f} | "
                         + " | ".join(cells) + " |")
    shown = " or ".join(str(n) for n in sorted(sizes)) or "0"
    lines.append(f"\nAccuracy in percent on {shown} test images; the worst case counts an image "
                 "as robust only if every attack failed on it.")
    return "\n".join(lines) + "\n"
