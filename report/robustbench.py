"""The results in RobustBench's format, so that they can be set beside a leaderboard's.

RobustBench keeps one JSON file per model, `model_info/<dataset>/<threat_model>/<Name>.json`,
with the fields `link`, `name`, `authors`, `additional_data`, `number_forward_passes`,
`dataset`, `venue`, `architecture`, `eps` (text, "8/255"), `clean_acc`, `reported` and
`autoattack_acc` (accuracies as text, in percent with two decimals; RobustBench's README
on github.com/RobustBench/robustbench, whose example is `cifar10/Linf/Rice2020Overfitting.json`). `entry`
fills them for one model at RobustBench's L-infinity budget for CIFAR, 8/255, and adds
what a reader must know: the number is this project's AutoAttack-like evaluation with
ART (`attack`), which is not AutoAttack (`not_autoattack`), taken as the per-image worst
case over every attack run, on `n_examples` test images (RobustBench uses all 10,000).
Fields this project cannot know (the paper, its authors) are left empty.
"""

from attacks import table

EPSILON = 8 / 255
EPSILON_TEXT = "8/255"
STRONG = "aa-like"


def _percent(accuracy):
    return None if accuracy is None else f"{100.0 * accuracy:.2f}"


def entry(name, dataset, clean, robust, n, attacks, strong_settings=None, architecture="",
          additional_data=None, evaluated=True):
    """One model's RobustBench entry.

    Args:
        clean, robust: accuracies in [0, 1] on the same `n` images: clean, and the
            per-image worst case over `attacks` at 8/255 (None if 8/255 was not evaluated).
        attacks: the attacks run, names of `attacks.table`.
        strong_settings: config.attack.strong as a dict, when "aa-like" ran.
        evaluated: False when 8/255 is not among the evaluated epsilons.
    """
    strong = STRONG in attacks and evaluated
    titles = ", ".join(table.ATTACKS[a].title for a in attacks)
    result = {
        "link": "", "name": name, "authors": "", "additional_data": additional_data,
        "number_forward_passes": 1, "dataset": dataset, "venue": "", "architecture": architecture,
        "eps": EPSILON_TEXT, "clean_acc": _percent(clean), "reported": "",
        "autoattack_acc": _percent(robust) if strong else None,
        # Beyond RobustBench's fields: what the numbers are, and are not.
        "threat_model": "Linf",
        "n_examples": int(n),
        "attack": (f"{table.ATTACKS[STRONG].title}: the per-image worst case over {titles}"
                   if strong else f"no {table.ATTACKS[STRONG].title} evaluation ran (add aa-like to "
                   "--config.attack.attacks); autoattack_acc is left empty"),
        "not_autoattack": _not_autoattack(strong_settings or {}),
        "worst_case_acc": _percent(robust),
    }
    if not evaluated:
        result["attack"] = (f"{EPSILON_TEXT} was not among the evaluated epsilons "
                            "(--config.attack.epsilons): no robust accuracy")
    return result


def _not_autoattack(strong):
    steps = strong.get("apgd_steps", 100)
    queries = strong.get("square_queries", 1000)
    run = ", ".join(strong.get("attacks", ("apgd-ce", "apgd-dlr", "square")))
    return (f"not the official AutoAttack: ART's {run} ({steps} APGD steps, {queries} Square "
            "queries, untargeted), each on the images the ones before left correct; the standard "
            "AutoAttack adds targeted APGD-DLR and FAB and runs Square for 5,000 queries. Compare "
            "with a leaderboard's numbers as an upper bound on robust accuracy, no more.")
