"""The two pictures of the report, made to be read at a glance.

- robustness.png: accuracy against epsilon, one panel per attack (and the per-image worst
  case), one line per model.
- verdict.png (the comparison of several models): the method minus each other model, in
  points with error bars of 2 standard errors, one panel per attack: a bar clear of zero
  is a difference, one across it is not.
- validation.png (models trained with robust validation): robust and clean validation
  accuracy after every epoch, one line per model, the kept (best) epoch marked: where the
  robust line peaks and falls, the model overfits robustly (Rice et al. 2020).
- embeddings.png: a t-SNE map of each model's test features, coloured by class, with
  the cosine silhouette score (how well the classes separate, -1 to 1) in each title.
  Models with identical features (a linear probe keeps its encoder) share one panel.

Figures are made with `matplotlib.figure.Figure` directly, not pyplot: nothing here
changes matplotlib's global backend or keeps figures alive in a global registry.
"""

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from attacks import table as attack_table
from report.tables import attacks_in
from report.tables import epsilon_label

def robustness_figure(rows, title):
    """Accuracy (%) against epsilon (in /255) for each model, one panel per attack."""
    models = list(dict.fromkeys(row["model"] for row in rows))
    palette = matplotlib.colormaps["tab10"]
    colours = {model: palette(i % 10) for i, model in enumerate(models)}
    attacks = attacks_in(rows)
    # Epsilons usually double from step to step: evenly spaced ticks keep the small ones apart.
    ticks = sorted({row["epsilon"] for row in rows if row["attack"] != "clean"})
    position = {epsilon: index for index, epsilon in enumerate(ticks)}
    figure = Figure(figsize=(5.2 * len(attacks) + 0.6, 4.2))
    axes = figure.subplots(1, len(attacks), sharey=True, squeeze=False)[0]
    for axis, attack in zip(axes, attacks):
        for model in models:
            points = sorted((row["epsilon"], row["accuracy"]) for row in rows
                            if row["model"] == model and row["attack"] == attack)
            if not points:
                continue
            epsilons, accuracies = zip(*points)
            axis.plot([position[e] for e in epsilons], [100 * a for a in accuracies], marker="o",
                      color=colours[model], linewidth=2, label=model)
        axis.set_xticks(range(len(ticks)), [epsilon_label(e) for e in ticks])
        axis.set_xlabel("epsilon (L-infinity)")
        sizes = sorted({row["n"] for row in rows if row["attack"] == attack})
        axis.set_title(f"{attack_table.title(attack)} ({' or '.join(map(str, sizes))} images)")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].set_ylim(bottom=0)
    axes[-1].legend(title="model", loc="upper right")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def difference_figure(comparisons, title):
    """Each method's accuracy minus each reference's (points, ±2 SE) against epsilon, per attack.

    `comparisons` is what report.verdict.compare returns (or several of its lists joined,
    for several methods); the clean images are the first point of every panel.
    """
    attacks = list(dict.fromkeys(e["attack"] for e in comparisons if e["attack"] != "clean"))
    series = list(dict.fromkeys((e["method"], r) for e in comparisons for r in e["differences"]))
    methods = list(dict.fromkeys(method for method, _ in series))
    palette = matplotlib.colormaps["tab10"]
    figure = Figure(figsize=(4.6 * max(len(attacks), 1) + 0.6, 3.8 + 0.25 * max(len(series) - 2, 0)))
    axes = figure.subplots(1, max(len(attacks), 1), sharey=True, squeeze=False)[0]
    for axis, attack in zip(axes, attacks):
        entries = [e for e in comparisons if e["attack"] == attack]
        epsilons = sorted({e["epsilon"] for e in entries})
        shown = [e for e in comparisons if e["attack"] == "clean"] + entries
        for index, (method, reference) in enumerate(series):
            shift = (index - (len(series) - 1) / 2) * 0.15
            points = [(0 if e["attack"] == "clean" else 1 + epsilons.index(e["epsilon"]),
                       e["differences"][reference]) for e in shown
                      if e["method"] == method and reference in e["differences"]]
            axis.errorbar([x + shift for x, _ in points], [100 * d["difference"] for _, d in points],
                          yerr=[200 * d["standard_error"] for _, d in points], fmt="o", capsize=3,
                          color=palette((index + 2) % 10),
                          label=f"minus {reference}" if len(methods) == 1 else f"{method} - {reference}")
        axis.axhline(0.0, color="black", linewidth=0.8)
        axis.set_xticks(range(len(epsilons) + 1), ["clean"] + [epsilon_label(e) for e in epsilons])
        axis.set_xlabel("epsilon (L-infinity)")
        sizes = sorted({e["n"] for e in entries})
        axis.set_title(f"{attack_table.title(attack)} ({' or '.join(map(str, sizes))} images)")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel(f"{methods[0]} minus other (points, ±2 SE)" if len(methods) == 1
                       else "difference (points, ±2 SE)")
    axes[-1].legend(loc="upper right", fontsize="small" if len(series) > 2 else None)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def validation_figure(histories, title):
    """Validation accuracy (%) against epoch, robust (solid) and clean (dashed), per model.

    `histories`: {model: {"epoch": [...], "val_robust_accuracy": [...],
    "val_clean_accuracy": [...], "best_epoch": int or None}} (epochs counted from 1).
    """
    palette = matplotlib.colormaps["tab10"]
    figure = Figure(figsize=(7.5, 4.6))
    axis = figure.subplots()
    for index, (model, history) in enumerate(histories.items()):
        colour = palette(index % 10)
        epochs = history["epoch"]
        axis.plot(epochs, [100 * a for a in history["val_robust_accuracy"]], color=colour,
                  linewidth=2, label=f"{model} robust")
        if history.get("val_clean_accuracy"):
            axis.plot(epochs, [100 * a for a in history["val_clean_accuracy"]], color=colour,
                      linewidth=1, linestyle="--", label=f"{model} clean")
        best = history.get("best_epoch")
        if best in epochs:
            axis.plot([best], [100 * history["val_robust_accuracy"][epochs.index(best)]], marker="*",
                      markersize=12, color=colour, linestyle="none")
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation accuracy (%)")
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small", ncol=2)
    axis.set_title(title)
    figure.tight_layout()
    return figure


def embedding_figure(embeddings, labels, class_names, title, seed=0):
    """t-SNE of {model: features [N, D]} coloured by `labels` [N], one panel per model."""
    from sklearn.manifold import TSNE
    from sklearn.metrics import silhouette_score

    panels = {}  # title -> features, with models of identical features merged
    for model, features in embeddings.items():
        features = np.asarray(features, np.float32)
        same = [title for title, seen in panels.items() if np.array_equal(seen, features)]
        if same:
            panels[same[0] + " = " + model] = panels.pop(same[0])
        else:
            panels[model] = features
    count = len(panels)
    figure = Figure(figsize=(4.6 * count, 4.8))
    axes = figure.subplots(1, count, squeeze=False)
    palette = matplotlib.colormaps["tab10" if len(class_names) <= 10 else "tab20"]
    for axis, (model, features) in zip(axes[0], panels.items()):
        perplexity = float(min(30, max(2, (len(features) - 1) // 3)))
        points = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)
        score = (silhouette_score(features, labels, metric="cosine") if len(set(labels)) > 1
                 else float("nan"))
        for label in np.unique(labels):
            mask = labels == label
            axis.scatter(points[mask, 0], points[mask, 1], s=7, color=palette(label % palette.N),
                         label=class_names[label] if len(class_names) <= 20 else None)
        axis.set_title(f"{model}\nsilhouette {score:.3f}")
        axis.set_xticks([])
        axis.set_yticks([])
    if len(class_names) <= 20:
        axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=2.5,
                           frameon=False)
    figure.suptitle(title)
    figure.tight_layout()
    return figure
