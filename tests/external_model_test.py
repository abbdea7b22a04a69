"""Stage attack on classifiers this project did not train: a `.keras` file or a SavedModel,
taking floats in [0, 1], floats in [0, 255] or uint8, returning logits or probabilities.

One small CNN is trained here for an epoch on the sample, then saved by the test itself
in each format and input range (the same weights behind each). Every variant must give
the FGSM accuracy of an independent computation on the float [0, 1] model: a plain
`tf.GradientTape` FGSM, written here, not the project's.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from attacks import external_model
from common.errors import UserError
from configs import demo
from pipeline import datasets
from stages import attack as attack_stage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPSILONS = (0, 2, 8)


@pytest.fixture(scope="module")
def layers():
    """The layers of one CNN, trained for an epoch on the sample (images in [0, 1])."""
    keras.utils.set_random_seed(0)
    layers = [keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(),
              keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
              keras.layers.Dense(10)]
    model = classifier(layers)
    train = datasets.load("sample").train
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train.images.astype(np.float32) / 255.0, train.labels, epochs=1, batch_size=64, verbose=0)
    return layers


def classifier(layers, dtype="float32", rescale=False, softmax=False):
    """The CNN behind an input of `dtype` (rescaled from 0..255 when `rescale`), with the same weights."""
    images = keras.Input((32, 32, 3), dtype=dtype, name="images")
    x = keras.layers.Rescaling(1 / 255.0)(images) if rescale else images
    for layer in layers:
        x = layer(x)
    if softmax:
        x = keras.layers.Softmax()(x)
    return keras.Model(images, x)


@pytest.fixture(scope="module")
def saved(layers, tmp_path_factory):
    """{variant: path} of the CNN saved in each format and input range."""
    folder = tmp_path_factory.mktemp("models")
    variants = {"float01": classifier(layers), "float255": classifier(layers, rescale=True),
                "uint8": classifier(layers, "uint8", rescale=True),
                "probabilities": classifier(layers, softmax=True)}
    paths = {}
    for name, model in variants.items():
        paths[f"{name}.keras"] = str(folder / f"{name}.keras")
        model.save(paths[f"{name}.keras"])
        if name in ("float01", "float255", "uint8"):
            paths[f"{name}_savedmodel"] = str(folder / f"{name}_savedmodel")
            model.export(paths[f"{name}_savedmodel"], verbose=False)
    return paths


def smoke_config(**external):
    config = demo.get_config("smoke")
    config.attack.update(epsilons=EPSILONS, attacks=("fgsm", "pgd"), embedding_examples=32)
    config.external.update(external)
    return config


def independent_fgsm_accuracy(layers, config):
    """FGSM accuracy at each epsilon (out of 255) of the [0, 1] model on the stage's images."""
    model = classifier(layers)
    _, images, labels = attack_stage.test_images(config)
    x, y = tf.constant(images), tf.constant(labels)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.keras.losses.sparse_categorical_crossentropy(y, model(x, training=False),
                                                               from_logits=True)
    direction = tf.sign(tape.gradient(loss, x))
    return {epsilon: float(np.mean(np.argmax(model(tf.clip_by_value(x + epsilon / 255.0 * direction, 0, 1)),
                                             -1) == labels))
            for epsilon in EPSILONS}


def accuracies(results, model, attack):
    return {round(row["epsilon"] * 255): row["accuracy"] for row in results["rows"]
            if row["model"] == model and row["attack"] == attack}


@pytest.fixture(scope="module")
def evaluated(saved, tmp_path_factory):
    """The stage run once per declaration, on every model saved with it: {inputs: results}."""
    runs = {
        "float01": dict(models=(saved["float01.keras"], saved["float01_savedmodel"])),
        "float255": dict(models=(saved["float255.keras"], saved["float255_savedmodel"]), inputs="float255"),
        "uint8": dict(models=(saved["uint8.keras"],), inputs="uint8"),
        "probabilities": dict(models=(saved["probabilities.keras"],), outputs="probabilities"),
    }
    results = {}
    for name, external in runs.items():
        workdir = str(tmp_path_factory.mktemp(name))
        config = smoke_config(**external)
        if name == "float01":  # The AutoAttack-like cascade too, at a tiny budget.
            config.attack.attacks = ("fgsm", "pgd", "aa-like")
            config.attack.strong.update(apgd_steps=2, square_queries=5)
        results[name] = (workdir, attack_stage.run_external(config, workdir))
    return results


def test_every_format_and_input_range_gives_the_fgsm_accuracy_of_an_independent_computation(
        layers, evaluated):
    expected = independent_fgsm_accuracy(layers, smoke_config())
    assert expected[8] < expected[0]  # the attack does something
    models = {"float01": ("float01", "float01_savedmodel"), "float255": ("float255", "float255_savedmodel"),
              "uint8": ("uint8",), "probabilities": ("probabilities",)}
    for run, names in models.items():
        _, results = evaluated[run]
        for name in names:
            found = accuracies(results, name, "fgsm")
            # Exact for the [0, 1] model; the scaled ones round differently in the last bit,
            # which may flip a near-zero gradient's sign: at most one image of 64 then.
            tolerance = 0 if run == "float01" else 1 / 64
            for epsilon in EPSILONS:
                assert abs(found[epsilon] - expected[epsilon]) <= tolerance + 1e-9, (run, name, found, expected)


def test_the_report_has_the_table_worst_row_checks_pictures_and_robustbench_entries(evaluated, saved):
    workdir, results = evaluated["float01"]
    out = os.path.join(workdir, "attack")
    for name in ("results.json", "results.md", "robustness.png", "embeddings.png", "robustbench.json"):
        assert os.path.exists(os.path.join(out, name)), name
    assert {row["attack"] for row in results["rows"]} == {"clean", "fgsm", "pgd", "aa-like", "worst"}
    assert set(results["checks"]) == {"float01", "float01_savedmodel"}
    checks = results["checks"]["float01"]
    # With PGD of 2 steps (the smoke config) the strong attack may well find 5 more images
    # of 64; the other checks must pass.
    assert "gradient_attacks_close_to_strong" in checks
    assert all(v["passed"] for name, v in checks.items() if name != "gradient_attacks_close_to_strong"), checks
    # The same network as a .keras file and as a SavedModel: the same evaluation.
    assert checks == results["checks"]["float01_savedmodel"]
    assert results["models"]["float01_savedmodel"]["format"] == "savedmodel"
    assert results["models"]["float01"]["outputs"].startswith("logits (assumed")
    with open(os.path.join(out, "robustbench.json")) as f:
        entry = json.load(f)["float01"]
    # RobustBench's fields, eps as text, accuracies in percent as text.
    assert {"link", "name", "authors", "additional_data", "number_forward_passes", "dataset",
            "venue", "architecture", "eps", "clean_acc", "reported", "autoattack_acc"} <= set(entry)
    assert entry["eps"] == "8/255"
    worst = accuracies(results, "float01", "worst")[8]
    assert entry["autoattack_acc"] == f"{100 * worst:.2f}"
    assert entry["attack"].startswith("AutoAttack-like (ART)")
    assert entry["not_autoattack"].startswith("not the official AutoAttack")


def test_records_are_keyed_by_the_models_content_and_declarations(evaluated, saved):
    workdir, _ = evaluated["float255"]
    folder = os.path.join(workdir, "attack", "records", "float255_savedmodel")
    with open(os.path.join(folder, next(n for n in os.listdir(folder) if n.startswith("fgsm-")))) as f:
        key = json.load(f)["key"]
    assert key["model_sha256"] == external_model.content_sha256(saved["float255_savedmodel"])
    assert key["declared"] == {"inputs": "float255", "outputs": "logits", "signature": "serving_default"}
    # The same command again reuses every record.
    config = smoke_config(models=(saved["float255.keras"], saved["float255_savedmodel"]), inputs="float255")
    before = sorted(os.listdir(folder))
    attack_stage.run_external(config, workdir)
    assert sorted(os.listdir(folder)) == before


@pytest.mark.parametrize("variant,declared,message", [
    ("uint8_savedmodel", dict(inputs="uint8"), "takes uint8 images, through which no gradient flows"),
    ("float01.keras", dict(inputs="uint8"), "takes float32 images, not uint8"),
    ("uint8.keras", dict(), "takes uint8 images, but --model_inputs=float01"),
    ("float01_savedmodel", dict(signature="serve_float"), "has no signature 'serve_float'"),
    ("probabilities.keras", dict(), "returns probabilities"),
    ("float01.keras", dict(outputs="probabilities"), "declared to return probabilities"),
])
def test_a_declaration_the_model_contradicts_is_one_user_error(saved, tmp_path, variant, declared,
                                                                 message):
    config = smoke_config(models=(saved[variant],), **declared)
    with pytest.raises(UserError, match=message) as error:
        attack_stage.run_external(config, str(tmp_path))
    assert str(error.value).startswith(f"--model={saved[variant]}: ")
    assert not os.path.exists(tmp_path / "attack" / "results.json")


def test_paths_that_are_no_model_say_what_to_give(tmp_path):
    (tmp_path / "weights.h5").write_bytes(b"")
    (tmp_path / "export" / "7").mkdir(parents=True)
    for path, message in ((tmp_path / "missing.keras", "no such file or folder"),
                          (tmp_path / "weights.h5", "not a .keras file"),
                          (tmp_path / "export", "give one, e.g. --model=")):
        with pytest.raises(UserError, match=message):
            external_model.ExternalModel("m", str(path)).check_path()
    assert external_model.default_name(str(tmp_path / "export" / "7")) == "export-7"


def test_the_readme_command_evaluates_a_users_model(saved, tmp_path):
    result = subprocess.run(
        [sys.executable, "run.py", "--stage", "attack", "--model", saved["float255.keras"],
         "--model_inputs=float255", "--model_name=users_cnn", "--dataset", "sample",
         "--config", "configs/demo.py:smoke", "--workdir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "attack" / "results.json") as f:
        results = json.load(f)
    assert {row["model"] for row in results["rows"]} == {"users_cnn"}
    assert "| users_cnn | FGSM |" in result.stdout


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
