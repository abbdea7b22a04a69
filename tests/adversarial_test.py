"""Adversarial training: the adversary's promises, the robust validation, and that AT works.

Tiny networks and images: seconds each.
"""

import os
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from attacks.pgd import perturb
from attacks.pgd import pgd
from models import heads
from models import resnet
from models.contrastive_model import ContrastiveModel
from models.supcon_loss import SupConLoss
from training import adversary as adversary_lib
from training import robust_validation
from training.adversary import Adversary

EPSILON = 8 / 255


def tiny_model(adversary=None, contrastive=False, image_shape=(8, 8, 3), classes=4, seed=0):
    keras.utils.set_random_seed(seed)
    encoder = resnet.resnet18(image_shape, (0.5,) * 3, (0.25,) * 3, width=1 / 16)
    projection = heads.projection_head(encoder.outputs[0].shape[-1], 1 / 16) if contrastive else None
    losses = dict(supcon_loss=SupConLoss(0.1), supcon_weight=1.0) if contrastive else {}
    model = ContrastiveModel(encoder, heads.classifier(classes), projection_head=projection,
                             adversary=adversary, **losses)
    model(tf.zeros((1,) + image_shape), training=False)
    return model


def batch(count=16, shape=(8, 8, 3), classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.uniform(0, 1, (count,) + shape), tf.float32),
            tf.constant(rng.integers(0, classes, count), tf.int64))


@pytest.mark.parametrize("method,reach", [("fgsm_rs", 1.0), ("n_fgsm", 3.0), ("pgd", 1.0)])
def test_crafted_images_lie_in_the_ball_the_method_promises(method, reach):
    adversary = Adversary(method, EPSILON, steps=3, step_size=2 / 255)
    model = tiny_model()
    images, labels = batch()
    # Pixels at the edges of [0, 1] too, where the clip must hold.
    images = tf.concat([images[:8], tf.round(images[8:])], axis=0)
    adversarial = adversary(model, images, labels, tf.constant(5, tf.int64))
    distance = tf.reduce_max(tf.abs(adversarial - images), axis=[1, 2, 3]).numpy()

    assert adversary.reach == pytest.approx(reach * EPSILON)
    assert distance.max() <= reach * EPSILON + 1e-6
    assert float(tf.reduce_min(adversarial)) >= 0.0 and float(tf.reduce_max(adversarial)) <= 1.0
    assert (distance > 0).all()  # Every image moved.
    if method == "n_fgsm":
        assert distance.max() > EPSILON  # Not projected: it goes beyond the ball.


def test_views_keep_their_shape_and_each_view_is_crafted():
    adversary = Adversary("n_fgsm", EPSILON)
    model = tiny_model()
    images, labels = batch(count=8)
    views = tf.stack([images, tf.reverse(images, axis=[2])], axis=1)  # [B, 2, H, W, C]
    adversarial = adversary(model, views, labels, tf.constant(1, tf.int64))

    assert adversarial.shape == views.shape
    assert (tf.reduce_max(tf.abs(adversarial - views), axis=[2, 3, 4]).numpy() > 0).all()


@pytest.mark.parametrize("bn_mode", ["inference", "training"])
def test_crafting_changes_no_weight_and_no_moving_statistic(bn_mode):
    adversary = Adversary("pgd", EPSILON, steps=2, step_size=2 / 255, bn_mode=bn_mode)
    model = tiny_model()
    # Moving statistics away from their initial values, so a change would show.
    images, labels = batch()
    model(images, training=True)
    before = [v.numpy().copy() for v in model.variables]
    craft = tf.function(lambda x, y: adversary(model, x, y, tf.constant(3, tf.int64)))
    craft(images, labels)

    for variable, value in zip(model.variables, before):
        np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.path)


def test_the_same_seed_and_step_craft_the_same_images_after_a_resume():
    model = tiny_model()
    images, labels = batch()
    first = Adversary("n_fgsm", EPSILON, seed=3)(model, images, labels, tf.constant(7, tf.int64))
    # A new adversary, as a resumed process builds it, at the same optimiser step.
    again = Adversary("n_fgsm", EPSILON, seed=3)(model, images, labels, tf.constant(7, tf.int64))
    next_step = Adversary("n_fgsm", EPSILON, seed=3)(model, images, labels, tf.constant(8, tf.int64))

    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert not np.array_equal(first.numpy(), next_step.numpy())


def test_under_mixed_float16_every_image_is_perturbed():
    # A float16 network's input gradient can underflow to zero, and sign(0) leaves a pixel
    # where it is; the adversary scales the loss under float16. From no random start, so
    # that only the gradient step moves the images.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = tiny_model()
        images, labels = batch(count=32)
        scale = adversary_lib._gradient_scale(model)
        adversarial = perturb(lambda x, training=False: model.logits(x, training), images, labels,
                              EPSILON, 1, EPSILON, start="none", gradient_scale=scale)
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.encoder.compute_dtype == "float16" and scale > 1
    moved = tf.abs(adversarial - images) > 0
    assert tf.reduce_all(tf.reduce_any(moved, axis=[1, 2, 3]))
    # The signed step moved nearly every pixel that [0, 1] let it move.
    assert float(tf.reduce_mean(tf.cast(moved, tf.float32))) > 0.9


def test_trades_adds_its_term_and_trains_ce_on_clean_images():
    model = tiny_model(Adversary("pgd", EPSILON, steps=2, step_size=2 / 255, trades_beta=6.0))
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    images, labels = batch()
    logs = model.train_on_batch(images, labels, return_dict=True)

    assert set(logs) >= {"loss", "ce_loss", "trades_loss"}
    assert logs["trades_loss"] >= 0.0
    assert logs["loss"] == pytest.approx(logs["ce_loss"] + 6.0 * logs["trades_loss"], rel=1e-4)


def test_adversarial_images_join_the_contrast_set_as_further_views():
    model = tiny_model(Adversary("n_fgsm", EPSILON), contrastive=True)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    images, labels = batch(count=8)
    views = tf.stack([images, images], axis=1)
    seen = {}
    original = model.supcon_loss.call

    def spy(y_true, y_pred):
        seen["rows"] = y_pred.shape[0]
        return original(y_true, y_pred)

    model.supcon_loss.call = spy
    model.train_on_batch(views, labels)
    assert seen["rows"] == 4 * 8  # Two clean views and their two adversarial images.


def linearly_separable_with_a_fragile_feature(count, seed):
    """Two classes; a robust feature (a bright or dark 4x4 patch, noisy) and a fragile one
    (every other pixel shifted by 0.02 towards the class: perfectly predictive, but
    erased by a perturbation of 8/255 = 0.031)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    sign = (2 * labels - 1).astype(np.float32)[:, None, None, None]
    images = np.full((count, 8, 8, 3), 0.5, np.float32) + 0.02 * sign
    images += rng.normal(0, 0.01, images.shape).astype(np.float32)
    patch = 0.5 + 0.2 * sign + rng.normal(0, 0.15, (count, 1, 1, 1)).astype(np.float32)
    images[:, :4, :4, :] = patch
    return np.clip(images, 0, 1), labels


def pgd_accuracy(model, images, labels):
    classifier = model.classifier_model()
    adversarial = pgd(classifier, tf.constant(images), tf.constant(labels), EPSILON, steps=10)
    predictions = np.argmax(classifier(adversarial, training=False).numpy(), axis=-1)
    return float(np.mean(predictions == labels))


def test_adversarial_training_gives_clearly_higher_pgd_accuracy():
    train_images, train_labels = linearly_separable_with_a_fragile_feature(512, seed=0)
    test_images, test_labels = linearly_separable_with_a_fragile_feature(256, seed=1)
    accuracies = {}
    for name, adversary in (("standard", None), ("adversarial", Adversary("n_fgsm", EPSILON))):
        model = tiny_model(adversary, classes=2)
        model.compile(optimizer=keras.optimizers.Adam(3e-3))
        model.fit(train_images, train_labels, batch_size=64, epochs=6, verbose=0, shuffle=True)
        accuracies[name] = pgd_accuracy(model, test_images, test_labels)

    # The fragile feature carries standard training and PGD erases it; AT learns the patch.
    assert accuracies["adversarial"] >= accuracies["standard"] + 0.2, accuracies
    assert accuracies["adversarial"] >= 0.7, accuracies


class ScriptedValidation(robust_validation.RobustValidation):
    """RobustValidation whose measurement follows a script, and which gives the model
    distinct weights each epoch, so the kept model can be told apart."""

    def __init__(self, script, out, count=4, **kwargs):
        images, labels = batch(count=count)
        super().__init__(images.numpy(), labels.numpy(), "pgd", EPSILON, None, out, **kwargs)
        # Robust accuracy per epoch, or (robust, clean) pairs; clean is 0.9 where not given.
        self.script = [step if isinstance(step, tuple) else (step, 0.9) for step in script]
        self.weights_by_epoch = {}

    def on_epoch_end(self, epoch, logs=None):
        kernel = self.model.classifier.kernel
        kernel.assign(tf.fill(kernel.shape, float(epoch + 1)))
        self.weights_by_epoch[epoch + 1] = float(epoch + 1)
        original = robust_validation.measure
        robust_validation.measure = lambda *args, **kwargs: self.script[epoch][::-1]
        try:
            super().on_epoch_end(epoch, logs)
        finally:
            robust_validation.measure = original


def run_epochs(validation, epochs, first=0, training_accuracy=None):
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    validation.set_model(model)
    model.stop_training = False
    history = []
    for epoch in range(first, epochs):
        logs = {"accuracy": training_accuracy[epoch]} if training_accuracy else {}
        validation.on_epoch_end(epoch, logs)
        history.append(logs)
        if model.stop_training:
            break
    return model, history


def test_the_best_epoch_model_is_the_one_with_the_highest_robust_accuracy(tmp_path):
    validation = ScriptedValidation([0.20, 0.35, 0.31, 0.33], str(tmp_path))
    _, history = run_epochs(validation, 4)

    assert [logs["val_robust_accuracy"] for logs in history] == [0.20, 0.35, 0.31, 0.33]
    assert validation.record()["best"]["epoch"] == 2
    best = keras.models.load_model(tmp_path / robust_validation.BEST_MODEL)
    kernel = [w for w in best.weights if w.path.endswith("kernel")][-1].numpy()
    assert np.all(kernel == 2.0)  # The weights it had at epoch 2.
    assert robust_validation.model_file(str(tmp_path)) == str(tmp_path / robust_validation.BEST_MODEL)
    assert robust_validation.model_file(str(tmp_path), "last") == str(tmp_path / "model.keras")


def test_one_se_keeps_the_most_accurate_epoch_within_one_standard_error_of_the_most_robust():
    per_epoch = [{"epoch": 5, "robust_accuracy": 0.300, "clean_accuracy": 0.70},
                 {"epoch": 17, "robust_accuracy": 0.376, "clean_accuracy": 0.589},
                 {"epoch": 25, "robust_accuracy": 0.375, "clean_accuracy": 0.613}]
    # One standard error of 37.6% on 1,000 images: sqrt(0.376 * 0.624 / 1000) = 1.53 points.
    assert [e["epoch"] for e in robust_validation.choosable(per_epoch, 1000)] == [17, 25]
    assert robust_validation.choose(per_epoch, 1000)["epoch"] == 25
    assert robust_validation.choose(per_epoch, 1000, "most_robust")["epoch"] == 17
    # On 1,000,000 images the error is 0.05 points: 37.5% is no longer within it.
    assert robust_validation.choose(per_epoch, 1000000)["epoch"] == 17
    # Equal clean accuracy: the more robust, then the earlier.
    tied = [dict(e, clean_accuracy=0.6) for e in per_epoch]
    assert robust_validation.choose(tied, 1000)["epoch"] == 17
    assert robust_validation.choose([], 1000) is None


def test_one_se_can_choose_an_earlier_epoch_from_the_candidates_it_kept(tmp_path):
    # 100 images: one standard error is about 5 points. After epoch 2 the choice is epoch 2
    # (within 5 points of epoch 1's 40%, more clean-accurate); epoch 3's 44% leaves epoch 2
    # (38%) out and epoch 1 (40%) in, and epoch 1 is the more clean-accurate of 1 and 3.
    validation = ScriptedValidation([(0.40, 0.62), (0.38, 0.65), (0.44, 0.55)], str(tmp_path), count=100)
    run_epochs(validation, 3)
    assert validation.record()["best"] == {"epoch": 1, "robust_accuracy": 0.40, "clean_accuracy": 0.62}
    best = keras.models.load_model(tmp_path / robust_validation.BEST_MODEL)
    assert np.all([w for w in best.weights if w.path.endswith("kernel")][-1].numpy() == 1.0)
    candidates = tmp_path / robust_validation.CANDIDATES
    assert sorted(os.listdir(candidates)) == ["epoch-0001.keras", "epoch-0003.keras"]
    # Resumed: epoch 4's 45% leaves epoch 1 out; epoch 4 is kept, and only 3 and 4 remain.
    resumed = ScriptedValidation([None] * 3 + [(0.45, 0.70)], str(tmp_path), count=100)
    assert resumed.best["epoch"] == 1
    run_epochs(resumed, 4, first=3)
    assert resumed.record()["best"]["epoch"] == 4 and resumed.record()["keep"] == "one_se"
    assert sorted(os.listdir(candidates)) == ["epoch-0003.keras", "epoch-0004.keras"]
    best = keras.models.load_model(tmp_path / robust_validation.BEST_MODEL)
    assert np.all([w for w in best.weights if w.path.endswith("kernel")][-1].numpy() == 4.0)
    assert "within one standard error" in robust_validation.describe_choice(str(tmp_path))
    resumed.on_train_end()  # The choice is final: the candidates go, the best model stays.
    assert not os.path.exists(candidates) and os.path.exists(tmp_path / robust_validation.BEST_MODEL)
    # most_robust keeps epoch 3, and no candidates.
    other = tmp_path / "most_robust"
    validation = ScriptedValidation([(0.40, 0.62), (0.38, 0.65), (0.44, 0.55)], str(other), count=100,
                                    keep="most_robust")
    run_epochs(validation, 3)
    assert validation.record()["best"]["epoch"] == 3 and not os.path.exists(other / "candidates")


def test_the_collapse_guard_fires_on_a_collapse_and_stops_training(tmp_path, capsys):
    validation = ScriptedValidation([0.30, 0.42, 0.40, 0.05, 0.01], str(tmp_path), collapse_drop=0.2)
    model, history = run_epochs(validation, 5)

    collapse = validation.record()["collapse"]
    assert collapse["epoch"] == 4 and collapse["best_epoch"] == 2 and collapse["stopped"]
    assert model.stop_training and len(history) == 4
    warnings = [line for line in capsys.readouterr().out.splitlines() if "catastrophic" in line]
    assert len(warnings) == 1 and "epoch 4" in warnings[0]
    # The best model stays the one from before the collapse, and a resumed run knows it.
    resumed = ScriptedValidation([], str(tmp_path))
    assert resumed.best["epoch"] == 2 and resumed.collapse["epoch"] == 4


def test_the_collapse_guard_is_quiet_on_a_healthy_run(tmp_path, capsys):
    validation = ScriptedValidation([0.10, 0.25, 0.22, 0.30, 0.28, 0.35], str(tmp_path))
    model, history = run_epochs(validation, 6)

    assert validation.record()["collapse"] is None
    assert not model.stop_training and len(history) == 6
    assert "catastrophic" not in capsys.readouterr().out


def test_the_guard_can_warn_without_stopping(tmp_path):
    validation = ScriptedValidation([0.4, 0.1, 0.1], str(tmp_path), stop_on_collapse=False)
    model, history = run_epochs(validation, 3)

    assert validation.record()["collapse"]["epoch"] == 2 and not model.stop_training
    assert len(history) == 3


# The first 5 epochs of results/robust_photos' AT + SupCon + margin run: (validation PGD-10,
# clean) and the epoch's training accuracy, on its N-FGSM images.
COLLAPSING = [(0.101, 0.300), (0.025, 0.361), (0.018, 0.420), (0.003, 0.492), (0.194, 0.491)]
ON_ITS_ADVERSARY = [0.193, 0.407, 0.542, 0.641, 0.756]


def test_an_adversary_easier_than_clean_images_is_a_warning_where_the_drop_rule_sees_nothing(
        tmp_path, capsys):
    validation = ScriptedValidation(COLLAPSING, str(tmp_path), adversary_accuracy=True)
    model, history = run_epochs(validation, 5, training_accuracy=ON_ITS_ADVERSARY)

    # From a best of 10.1% no epoch falls 20 points: the collapse rule is silent.
    assert validation.record()["collapse"] is None and not model.stop_training and len(history) == 5
    # Above the higher of this and the last epoch's clean accuracy by more than 10 points:
    # epoch 2: 40.7 - max(36.1, 30.0) = 4.6, no; epoch 3: 54.2 - 42.0 = 12.2; epoch 4:
    # 64.1 - 49.2 = 14.9; epoch 5: 75.6 - max(49.1, 49.2) = 26.4.
    masking = validation.record()["masking"]
    assert [m["epoch"] for m in masking] == [3, 4, 5]
    assert masking[-1] == {"epoch": 5, "robust_accuracy": 0.194, "clean_accuracy": 0.491,
                           "training_adversary_accuracy": 0.756}
    printed = capsys.readouterr().out
    assert printed.count("has stopped being one") == 3
    assert ("at epoch 5 the model classified 75.6% of its training adversary's images and 49.1% "
            "of clean validation images (validation PGD: 19.4%)") in printed
    # A resumed run knows what was found; an epoch trained again replaces its first finding.
    resumed = ScriptedValidation(COLLAPSING, str(tmp_path), adversary_accuracy=True)
    assert resumed.masking == masking
    run_epochs(resumed, 5, first=4, training_accuracy=ON_ITS_ADVERSARY[:4] + [0.5])
    assert [m["epoch"] for m in resumed.record()["masking"]] == [3, 4]


def write_history(folder, rows):
    """OUT/history.csv as CSVLogger writes it: 0-based epochs, the logged columns."""
    columns = ["epoch", "accuracy", "val_clean_accuracy", "val_robust_accuracy"]
    lines = [",".join(columns)] + [",".join(str(row.get(c, "")) for c in columns) for row in rows]
    with open(os.path.join(folder, "history.csv"), "w") as f:
        f.write("\n".join(lines) + "\n")


def collapsing_history(accuracies=ON_ITS_ADVERSARY):
    return [{"epoch": k, "accuracy": a, "val_robust_accuracy": r, "val_clean_accuracy": c}
            for k, ((r, c), a) in enumerate(zip(COLLAPSING, accuracies))]


def test_masking_read_back_from_the_log_equals_what_the_callback_found(tmp_path):
    from training.robust_validation import masking_in_history

    validation = ScriptedValidation(COLLAPSING, str(tmp_path), adversary_accuracy=True)
    run_epochs(validation, 5, training_accuracy=ON_ITS_ADVERSARY)
    write_history(str(tmp_path), collapsing_history())
    assert masking_in_history(str(tmp_path)) == validation.record()["masking"]
    # A resumed run appends: epoch 5 trained again (its last row counts), then an epoch
    # logged without robust validation, which nothing is compared across.
    rows = collapsing_history() + [dict(collapsing_history()[4], accuracy=0.5), {"epoch": 5, "accuracy": 0.9}]
    write_history(str(tmp_path), rows)
    assert [m["epoch"] for m in masking_in_history(str(tmp_path))] == [3, 4]
    assert masking_in_history(str(tmp_path / "absent")) == []


def test_the_training_table_counts_masked_epochs_the_record_predates(tmp_path):
    # results/robust_photos' margin arm: epochs 3-8 trained before the callback watched the
    # adversary, so its best.json lists none; history.csv has what the rule needs.
    from common import atomic_files
    from stages.compare import validation_histories

    per_epoch = [{"epoch": k + 1, "robust_accuracy": r, "clean_accuracy": c}
                 for k, (r, c) in enumerate(COLLAPSING)]
    atomic_files.write_json(str(tmp_path / "best.json"), {"per_epoch": per_epoch, "masking": [],
                                                          "best": per_epoch[0], "collapse": None})
    write_history(str(tmp_path), collapsing_history())
    folders = {"at_supcon_margin": str(tmp_path)}
    assert validation_histories(folders, watched={"at_supcon_margin"})["at_supcon_margin"][
        "masking_epochs"] == [3, 4, 5]
    # Not watched (CE on both, TRADES): the record alone, here nothing.
    assert validation_histories(folders)["at_supcon_margin"]["masking_epochs"] == []


def test_the_adversary_is_not_watched_where_training_accuracy_is_not_on_its_images(tmp_path):
    # CE on clean and adversarial images, or TRADES: the accuracy is not the adversary's.
    validation = ScriptedValidation(COLLAPSING, str(tmp_path))
    run_epochs(validation, 5, training_accuracy=ON_ITS_ADVERSARY)
    assert validation.record()["masking"] == []


@pytest.mark.parametrize("changes, watched", [
    ({}, True),
    ({"ce_on": "both"}, False),
    ({"trades_beta": 6.0}, False),
])
def test_a_stage_watches_its_adversary_where_training_accuracy_is_on_its_images(changes, watched):
    from configs import robust_photos
    from stages import train

    config = robust_photos.get_config("smoke")
    config.adversarial.update(changes)
    split = types.SimpleNamespace(images=np.zeros((8, 32, 32, 3), np.uint8), labels=np.arange(8) % 2)
    callback = train.robust_validation_callback(config, "baseline", split, None,
                                                tf.distribute.get_strategy())
    assert callback.adversary_accuracy is watched


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
