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
`results.md` (the table), `robustness.png`, `embeddings.png` and `robustbench.json` (each
model's clean and worst-case accuracy at 8/255 in RobustBench's model_info format).

`run_external` does the same for classifiers this project did not train (config.external,
run.py's --model): a `.keras` file or a SavedModel folder each, opened by
`attacks.external_model`, keyed by its content's sha256 and what it was declared to take
and return; their t-SNE picture shows their logits (their features are unknown).
"""

import hashlib
import json
import os

import keras
import numpy as np

from attacks import external_model
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
from report import robustbench
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


def evaluate_model(name, path, images, labels, images_sha256, settings, attacks, out, subsets=None,
                   external=None):
    """{attack: Evaluation} for one model, each read from its record or computed and recorded.

    `subsets` maps an attack to the number of images it is run on (a seeded subset; 0 or
    absent: all of them). `external`, an ExternalClassifier, is the model at `path` when it
    was not trained here; its records are keyed by its content and declarations too.
    """
    model_sha256 = _sha256(path) if external is None else external_model.content_sha256(path)
    model, evaluations = external, {}
    for attack_name in attacks:
        count = subset_size(subsets, attack_name)
        indices = subset(count, len(labels), settings.seed)
        key = {"model_sha256": model_sha256, "images_sha256": images_sha256, "attack": attack_name,
               "examples": len(indices), "settings": settings.key(attack_name)}
        if external is not None:
            key["declared"] = external.spec.key()
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
    # Each stage's model, and every arm's (configs/arms.py) under its own name: the best
    # epoch where robust validation kept one (config.validation.use).
    paths = {name: robust_validation.model_file(arms.model_folder(config, workdir, name),
                                                config.validation.use)
             for name in (*config.attack.models, *arms.arms(config))}
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


def robustbench_entry(name, evaluations, config, dataset, trained_here):
    """The RobustBench entry of one model (`report.robustbench`): clean and worst-case
    accuracy at 8/255 on the same images (those every attack covered)."""
    masks = image_masks(evaluations)
    found = [key for key in masks if key[0] == attack_table.WORST
             and abs(key[1] - robustbench.EPSILON) < 1e-9]
    indices, clean = masks[("clean", 0.0)]
    shared, robust = masks[found[0]] if found else (indices, None)
    clean_shared = clean[np.isin(indices, shared)]
    return robustbench.entry(
        name, dataset, float(np.mean(clean_shared)), None if robust is None else float(np.mean(robust)),
        len(clean_shared), list(evaluations), dict(config.attack.strong),
        architecture=f"ResNet-18 (width {config.model.width:g})" if trained_here else "",
        additional_data=False if trained_here else None, evaluated=bool(found))


def evaluate_and_report(config, paths, out, keep=None, external=None):
    """Attacks the models {name: model.keras path} as config.attack says; writes the report to `out`.

    `keep`, a dict, receives {model: {attack: Evaluation}}. `external` maps the names of
    models not trained here to their ExternalClassifier (their paths are in `paths` too).
    """
    external = external or {}
    settings = AttackSettings.from_config(config)
    attacks = list(config.attack.attacks)
    subsets = dict(config.attack.subsets)
    # Attacks need float32 gradients, whatever policy the training used.
    with run_context(config.seed, "float32"):
        data, images, labels = test_images(config)
        images_sha256 = hashlib.sha256(images.tobytes() + np.asarray(labels).tobytes()).hexdigest()
        shown = embedding_indices(len(labels), config.attack.embedding_examples, settings.seed)
        for name, classifier in external.items():
            accuracy = external_model.check_outputs(classifier, images[:64], labels[:64],
                                                    data.num_classes)
            if accuracy <= 1.5 / data.num_classes:
                print(f"note: {name} classifies {accuracy:.0%} of the first test images correctly, "
                      f"about chance ({1 / data.num_classes:.0%}); if it should do better, check "
                      "--model_inputs (float01, float255 or uint8), --model_outputs and that its "
                      "classes are in the data's order.", flush=True)
        rows, checks, embeddings, seconds, every = [], {}, {}, {}, {}
        for name, path in paths.items():
            evaluations, model = evaluate_model(name, path, images, labels, images_sha256, settings,
                                                attacks, out, subsets, external.get(name))
            rows.extend(result_rows(name, evaluations))
            checks[name] = sanity_checks.check(evaluations)
            every[name] = evaluations
            if keep is not None:
                keep[name] = evaluations
            seconds[name] = {attack: e.seconds for attack, e in evaluations.items()}
            if config.attack.embedding_examples:
                model = model or keras.models.load_model(path)
                # A model trained elsewhere has no known encoder: its logits are drawn.
                features = external[name] if name in external else model.get_layer("encoder")
                embeddings[name] = encoder_features(features, images[shown], settings.batch_size)

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
                        for name, path in paths.items() if name not in external},
        "all_checks_passed": all(v["passed"] for model in checks.values() for v in model.values()),
    }
    results["models"] = {name: external[name].spec.describe() if name in external else
                         {"path": os.path.abspath(path), "format": "keras", "trained": "here",
                          "inputs": "float01", "outputs": "logits"}
                         for name, path in paths.items()}
    atomic_files.write_json(os.path.join(out, "results.json"), results)
    atomic_files.write_json(os.path.join(out, "robustbench.json"),
                            {name: robustbench_entry(name, evaluations, config, data.name,
                                                     name not in external)
                             for name, evaluations in every.items()})
    table = tables.markdown(rows)
    standard = tables.at_epsilon_markdown(rows)
    atomic_files.write_text(os.path.join(out, "results.md"),
                            f"# Robustness on {data.source}\n\nAttacks use the {targets}.\n\n{table}"
                            + (f"\n## At {tables.epsilon_label(tables.STANDARD_EPSILON)}, the "
                               f"epsilon the field reports\n\n{standard}" if standard else ""))
    title = f"{data.name}: {len(labels)} test images, attacks on {targets}"
    atomic_files.save_figure(plots.robustness_figure(rows, title), os.path.join(out, "robustness.png"))
    if embeddings:
        atomic_files.save_figure(
            plots.embedding_figure(embeddings, labels[shown], data.class_names,
                                   f"Encoder features of {len(labels[shown])} test images (t-SNE)"
                                   + (", logits for models trained elsewhere" if external else "")),
            os.path.join(out, "embeddings.png"))

    print("\n" + table)
    for name, verdicts in checks.items():
        for check_name, verdict in verdicts.items():
            mark = "ok  " if verdict["passed"] else "FLAG"
            print(f"{mark} {name:14s} {check_name:22s} {verdict['detail']}")
    print(f"\nresults: {os.path.join(out, 'results.json')}\npictures: "
          f"{os.path.join(out, 'robustness.png')}, {os.path.join(out, 'embeddings.png')}")
    return results


def run_external(config, workdir):
    """Stage attack on the classifiers of config.external (run.py's --model), not trained here.

    Each is opened and its image shape checked against the data before the data are
    loaded; the report goes to WORKDIR/attack/ as for the project's models.
    """
    settings = config.external
    names = list(settings.names) or [external_model.default_name(path) for path in settings.models]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UserError(f"two models would be named {repeated[0]!r} in the tables; name each with "
                        "--model_name (once per --model, in the same order).")
    specs = [external_model.ExternalModel(name, path, settings.inputs, settings.outputs,
                                          settings.signature, settings.image_size, settings.channels)
             for name, path in zip(names, settings.models)]
    for spec in specs:
        spec.check_path()
    classifiers = {}
    with run_context(config.seed, "float32"):
        for spec in specs:
            classifier = spec.load()
            external_model.check_image_shape(classifier, config.data.image_size, config.data.channels)
            classifiers[spec.name] = classifier
            print(f"{spec.name}: {spec.path} ({spec.kind}), takes {spec.inputs} images "
                  f"{'x'.join('?' if d is None else str(d) for d in classifier.image_shape)}, "
                  f"returns {spec.outputs}", flush=True)
    return evaluate_and_report(config, {spec.name: spec.path for spec in specs},
                               os.path.join(workdir, "attack"), external=classifiers)
