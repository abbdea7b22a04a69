"""Stage `attack`: every trained model under FGSM and PGD, the sanity checks, the report.

Writes to WORKDIR/attack/: `results.json` ({"rows": [...], "checks": {...}, ...}; each
row {"model", "attack", "epsilon", "accuracy", "n"} with epsilon in [0, 1] units),
`results.md` (the table), `robustness.png` and `embeddings.png`.
"""

import os

import keras
import numpy as np

from attacks import sanity_checks
from attacks.evaluate import AttackSettings
from attacks.evaluate import evaluate
from pipeline.errors import UserError
from report import plots
from report import tables
from stages import atomic_files
from stages import data as data_stage


def test_images(config):
    """The test images (float32 in [0, 1]) and labels, at most config.attack.max_examples of them."""
    data = data_stage.load(config.data)
    images, labels = data.test.images, data.test.labels
    if 0 < config.attack.max_examples < len(labels):
        keep = np.sort(np.random.default_rng(config.seed).choice(
            len(labels), config.attack.max_examples, replace=False))
        images, labels = images[keep], labels[keep]
    return data, images.astype(np.float32) / 255.0, labels


def settings_from(config):
    attack = config.attack
    return AttackSettings(
        epsilons=tuple(e / 255.0 for e in attack.epsilons), pgd_steps=attack.pgd_steps,
        pgd_step_size=attack.pgd_step_size / 255.0 if attack.pgd_step_size else None,
        pgd_restarts=attack.pgd_restarts, use_predictions=attack.use_predictions,
        batch_size=attack.batch_size, seed=config.seed, jit_compile=attack.jit_compile)


def result_rows(model_name, evaluation, epsilons):
    rows = [{"model": model_name, "attack": "clean", "epsilon": 0.0,
             "accuracy": evaluation.accuracy("clean"), "n": evaluation.n}]
    for attack in ("fgsm", "pgd"):
        rows.extend({"model": model_name, "attack": attack, "epsilon": epsilon,
                     "epsilon_255": tables.epsilon_label(epsilon),
                     "accuracy": evaluation.accuracy(attack, epsilon), "n": evaluation.n}
                    for epsilon in epsilons)
    return rows


def encoder_features(encoder, images, batch_size):
    """The encoder's features of `images`, in batches (a plain call: no tracing per model)."""
    return np.concatenate([encoder(images[start:start + batch_size], training=False).numpy()
                           for start in range(0, len(images), batch_size)])


def run(config, workdir):
    out = os.path.join(workdir, "attack")
    keras.config.set_dtype_policy("float32")  # Attacks need float32 gradients.
    settings = settings_from(config)
    paths = {name: os.path.join(workdir, name, "model.keras") for name in config.attack.models}
    missing = [path for path in paths.values() if not os.path.exists(path)]
    if missing:
        raise UserError(f"{missing[0]} does not exist: train it first (--stage all trains every "
                        "model), or list only trained ones in --config.attack.models.")
    data, images, labels = test_images(config)
    shown = slice(0, config.attack.embedding_examples)
    rows, checks, embeddings = [], {}, {}
    for name, path in paths.items():
        print(f"attacking {name} ({path}) on {len(labels)} test images", flush=True)
        model = keras.models.load_model(path)
        evaluation = evaluate(model, images, labels, settings)
        rows.extend(result_rows(name, evaluation, settings.epsilons))
        checks[name] = sanity_checks.check(evaluation, settings.epsilons)
        embeddings[name] = encoder_features(model.get_layer("encoder"), images[shown], settings.batch_size)

    targets = "model predictions" if settings.use_predictions else "true labels"
    results = {
        "rows": rows, "checks": checks, "dataset": data.source, "n": int(len(labels)),
        "attack": {"targets": targets, "pgd_steps": settings.pgd_steps,
                   "pgd_step_size": settings.pgd_step_size or "2.5 * epsilon / steps",
                   "pgd_restarts": settings.pgd_restarts, "norm": "Linf",
                   "epsilon_units": "[0, 1] pixel scale"},
        "all_checks_passed": all(v["passed"] for model in checks.values() for v in model.values()),
    }
    atomic_files.write_json(os.path.join(out, "results.json"), results)
    table = tables.markdown(rows)
    atomic_files.write_text(os.path.join(out, "results.md"),
                            f"# Robustness on {data.source}\n\nAttacks use the {targets}.\n\n{table}")
    title = f"{data.name}: {len(labels)} test images, attacks on {targets}"
    atomic_files.save_figure(plots.robustness_figure(rows, title), os.path.join(out, "robustness.png"))
    atomic_files.save_figure(
        plots.embedding_figure(embeddings, labels[shown], data.class_names,
                               f"Encoder features of {len(labels[shown])} test images (t-SNE)"),
        os.path.join(out, "embeddings.png"))

    print("\n" + table)
    for name, verdicts in checks.items():
        for check_name, verdict in verdicts.items():
            mark = "ok  " if verdict["passed"] else "FLAG"
            print(f"{mark} {name:10s} {check_name:26s} {verdict['detail']}")
    print(f"\nresults: {os.path.join(out, 'results.json')}\npictures: "
          f"{os.path.join(out, 'robustness.png')}, {os.path.join(out, 'embeddings.png')}")
    return results
