"""Stage `attack`: every trained model under every configured attack, the checks, the report.

For each model and each attack of `config.attack.attacks` (names from `attacks.table`)
the evaluation is recorded as soon as it finishes, in
`WORKDIR/attack/records/<model>/<attack>-<key>.json`, where the key is a hash of the
model file's sha256, the test images and the attack's settings; while it runs, what is
done (batch by batch, epsilon by epsilon) is kept beside it in `<attack>-<key>.partial.json`.
A kill loses at most one batch at one epsilon; a rerun reuses every record whose key
matches, carries on a partial one, and computes only what is missing, with the same
numbers (the attacks are seeded per batch and epsilon).

Then it writes `results.json` ({"rows": [...], "checks": {...}, ...}; each row
{"model", "attack", "epsilon", "accuracy", "n"} with epsilon in [0, 1] units, including
a "worst" row per epsilon: an image counts as robust only if every attack failed on it),
`results.md` (the table), `robustness.png` and `embeddings.png`.
"""

import hashlib
import json
import os

import keras
import numpy as np

from attacks import sanity_checks
from attacks import table as attack_table
from attacks.evaluate import AttackSettings
from attacks.evaluate import Evaluation
from attacks.evaluate import Progress
from attacks.evaluate import common_indices
from attacks.evaluate import evaluate
from attacks.evaluate import subset
from attacks.evaluate import worst_case
from common import atomic_files
from common.errors import UserError
from configs import arms
from models import precision
from pipeline import datasets
from report import plots
from report import tables
from training import robust_validation
from training.run_context import run_context


def test_images(config):
    """The test images (float32 in [0, 1]) and labels, at most config.attack.max_examples of them."""
    data = datasets.load_config(config.data)
    images, labels = data.test.images, data.test.labels
    if 0 < config.attack.max_examples < len(labels):
        keep = np.sort(np.random.default_rng(config.seed).choice(
            len(labels), config.attack.max_examples, replace=False))
        images, labels = images[keep], labels[keep]
    return data, images.astype(np.float32) / 255.0, labels


def result_rows(model_name, evaluations):
    """Rows of results.json for one model: clean, each attack at each epsilon, the worst case."""
    largest = max(evaluations.values(), key=lambda e: e.n)
    rows = [{"model": model_name, "attack": "clean", "epsilon": 0.0, "accuracy": largest.accuracy(),
             "n": largest.n}]
    masks = {name: e.correct for name, e in evaluations.items()}
    masks[attack_table.WORST] = worst_case(evaluations)
    for name, by_epsilon in masks.items():
        rows.extend({"model": model_name, "attack": name, "epsilon": float(epsilon),
                     "epsilon_255": tables.epsilon_label(epsilon),
                     "accuracy": float(np.mean(mask)), "n": int(len(mask))}
                    for epsilon, mask in sorted(by_epsilon.items()))
    return rows


def embedding_indices(total, count, seed):
    """The test images of the t-SNE picture: a seeded draw of `count`, not the first ones (a
    test set stored class by class, as an image folder is, would show a single class)."""
    return subset(count, total, seed)


def encoder_features(encoder, images, batch_size):
    """The encoder's features of `images`, in batches (a plain call: no tracing per model)."""
    return np.concatenate([encoder(images[start:start + batch_size], training=False).numpy()
                           for start in range(0, len(images), batch_size)])


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def record_path(out, model_name, attack_name, key):
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(out, "records", model_name, f"{attack_name}-{digest}.json")


def partial_path(path_of_record):
    """Where the evaluation of that record is kept while it runs (attacks.evaluate.Progress)."""
    return path_of_record[:-len(".json")] + ".partial.json"


def _read_record(path, key):
    try:
        with open(path) as f:
            record = json.load(f)
        return Evaluation.from_record(record["evaluation"]) if record.get("key") == key else None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # Missing, or cut short by a crash before the rename: computed again.


def subset_size(subsets, attack_name):
    """config.attack.subsets' count for an attack (its key spells '-' as '_'); 0 means all."""
    return int((subsets or {}).get(attack_name.replace("-", "_"), 0))


def evaluate_model(name, path, images, labels, images_sha256, settings, attacks, out, subsets=None):
    """{attack: Evaluation} for one model, each read from its record or computed and recorded.

    `subsets` maps an attack to the number of images it is run on (a seeded subset; 0 or
    absent: all of them).
    """
    model_sha256 = _sha256(path)
    model, evaluations = None, {}
    for attack_name in attacks:
        count = subset_size(subsets, attack_name)
        indices = subset(count, len(labels), settings.seed)
        key = {"model_sha256": model_sha256, "images_sha256": images_sha256, "attack": attack_name,
               "examples": len(indices), "settings": settings.key(attack_name)}
        path_of_record = record_path(out, name, attack_name, key)
        evaluation = _read_record(path_of_record, key)
        if evaluation is not None:
            print(f"{name} / {attack_name}: reusing {path_of_record}", flush=True)
        else:
            if model is None:
                model = keras.models.load_model(path)
            print(f"attacking {name} ({path}) with {attack_name} on {len(indices)} test images",
                  flush=True)
            partial = Progress(partial_path(path_of_record), key, atomic_files.write_json)
            evaluation = evaluate(model, images, labels, attack_name, settings,
                                  indices=None if len(indices) == len(labels) else indices, resume=partial)
            atomic_files.write_json(path_of_record, {"key": key, "evaluation": evaluation.to_record()})
            if os.path.exists(partial.path):
                os.remove(partial.path)  # Our own file, superseded by the record.
        evaluations[attack_name] = evaluation
    return evaluations, model


def run(config, workdir):
    # Each stage's best epoch where robust validation kept one (config.validation.use).
    paths = {name: robust_validation.model_file(os.path.join(workdir, name), config.validation.use)
             for name in config.attack.models}
    # And every arm (configs/arms.py), under its own name.
    paths.update({name: robust_validation.model_file(os.path.join(workdir, name, stage),
                                                     config.validation.use)
                  for name, (stage, _) in arms.arms(config).items()})
    missing = [path for path in paths.values() if not os.path.exists(path)]
    if missing:
        raise UserError(f"{missing[0]} does not exist: train it first (--stage all trains every "
                        "model), or list only trained ones in --config.attack.models.")
    return evaluate_and_report(config, paths, os.path.join(workdir, "attack"))


def image_masks(evaluations):
    """{(attack, epsilon): (indices, bool mask)} of one model's evaluations, "clean" and the worst case included.

    What each row of `result_rows` counts, image by image, so that two models can be
    compared on the same images (report.verdict's paired standard errors).
    """
    largest = max(evaluations.values(), key=lambda e: e.n)
    masks = {("clean", 0.0): (largest.indices, largest.clean)}
    for name, evaluation in evaluations.items():
        masks.update({(name, float(epsilon)): (evaluation.indices, mask)
                      for epsilon, mask in evaluation.correct.items()})
    shared = np.asarray(common_indices(evaluations), np.int64)
    masks.update({(attack_table.WORST, float(epsilon)): (shared, mask)
                  for epsilon, mask in worst_case(evaluations).items()})
    return masks


def evaluate_and_report(config, paths, out, keep=None):
    """Attacks the models {name: model.keras path} as config.attack says; writes the report to `out`.

    `keep`, a dict, receives {model: {attack: Evaluation}}.
    """
    settings = AttackSettings.from_config(config)
    attacks = list(config.attack.attacks)
    subsets = dict(config.attack.subsets)
    # Attacks need float32 gradients, whatever policy the training used.
    with run_context(config.seed, "float32"):
        data, images, labels = test_images(config)
        images_sha256 = hashlib.sha256(images.tobytes() + np.asarray(labels).tobytes()).hexdigest()
        shown = embedding_indices(len(labels), config.attack.embedding_examples, settings.seed)
        rows, checks, embeddings, seconds, every = [], {}, {}, {}, {}
        for name, path in paths.items():
            evaluations, model = evaluate_model(name, path, images, labels, images_sha256, settings,
                                                attacks, out, subsets)
            rows.extend(result_rows(name, evaluations))
            checks[name] = sanity_checks.check(evaluations)
            every[name] = evaluations
            if keep is not None:
                keep[name] = evaluations
            seconds[name] = {attack: e.seconds for attack, e in evaluations.items()}
            if config.attack.embedding_examples:
                model = model or keras.models.load_model(path)
                embeddings[name] = encoder_features(model.get_layer("encoder"), images[shown],
                                                    settings.batch_size)

    reference = "baseline" if "baseline" in every else None
    for name, verdict in sanity_checks.check_strong_gap(every, reference).items():
        checks[name]["gradient_attacks_close_to_strong"] = verdict
    targets = "model predictions" if settings.use_predictions else "true labels"
    results = {
        "rows": rows, "checks": checks, "dataset": data.source, "n": int(len(labels)),
        "attacks": {name: {"title": attack_table.ATTACKS[name].title,
                           "description": attack_table.ATTACKS[name].description,
                           "examples": len(subset(subset_size(subsets, name), len(labels), settings.seed)),
                           "settings": settings.key(name)} for name in attacks},
        "attack": {"targets": targets, "pgd_steps": settings.pgd_steps,
                   "pgd_step_size": settings.pgd_step_size or "2.5 * epsilon / steps",
                   "pgd_restarts": settings.pgd_restarts, "norm": "Linf",
                   "epsilon_units": "[0, 1] pixel scale"},
        "seconds": seconds,
        # Which model of each stage was attacked: its best epoch or its last.
        "checkpoints": {name: robust_validation.describe_choice(os.path.dirname(path), config.validation.use)
                        if os.path.basename(path) == robust_validation.BEST_MODEL else "last epoch"
                        for name, path in paths.items()},
        "all_checks_passed": all(v["passed"] for model in checks.values() for v in model.values()),
    }
    atomic_files.write_json(os.path.join(out, "results.json"), results)
    table = tables.markdown(rows)
    atomic_files.write_text(os.path.join(out, "results.md"),
                            f"# Robustness on {data.source}\n\nAttacks use the {targets}.\n\n{table}")
    title = f"{data.name}: {len(labels)} test images, attacks on {targets}"
    atomic_files.save_figure(plots.robustness_figure(rows, title), os.path.join(out, "robustness.png"))
    if embeddings:
        atomic_files.save_figure(
            plots.embedding_figure(embeddings, labels[shown], data.class_names,
                                   f"Encoder features of {len(labels[shown])} test images (t-SNE)"),
            os.path.join(out, "embeddings.png"))

    print("\n" + table)
    for name, verdicts in checks.items():
        for check_name, verdict in verdicts.items():
            mark = "ok  " if verdict["passed"] else "FLAG"
            print(f"{mark} {name:14s} {check_name:22s} {verdict['detail']}")
    print(f"\nresults: {os.path.join(out, 'results.json')}\npictures: "
          f"{os.path.join(out, 'robustness.png')}, {os.path.join(out, 'embeddings.png')}")
    return results
