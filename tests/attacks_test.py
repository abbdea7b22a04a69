"""FGSM, PGD, the evaluator and its sanity checks."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from attacks import sanity_checks
from attacks.evaluate import AttackSettings
from attacks.evaluate import Evaluation
from attacks.evaluate import Progress
from attacks.evaluate import evaluate
from attacks.evaluate import worst_case
from attacks.fgsm import fgsm
from attacks.pgd import pgd
from models import heads
from models import resnet


def small_classifier(seed=0, num_classes=5):
    """A 1/16-width ResNet-18 with BatchNorm on 8x8 images: small, but the real layers."""
    keras.utils.set_random_seed(seed)
    images = keras.Input((8, 8, 3), name="images")
    encoder = resnet.resnet18((8, 8, 3), [0.45] * 3, [0.25] * 3, width=1 / 16)
    model = keras.Model(images, heads.classifier(num_classes)(encoder(images)))
    # One training-mode pass moves the BatchNorm statistics off their initial values, so
    # that inference mode (what the attacks must use) differs from training mode.
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = batch(32, seed)
    model.fit(x, y, epochs=1, verbose=0)
    return model


def batch(count=16, seed=0, num_classes=5):
    rng = np.random.default_rng(seed)
    return (rng.random((count, 8, 8, 3)).astype(np.float32),
            rng.integers(0, num_classes, count).astype(np.int64))


@pytest.fixture(scope="module")
def model():
    return small_classifier()


def test_fgsm_with_zero_epsilon_returns_the_images_exactly(model):
    x, y = batch()
    np.testing.assert_array_equal(fgsm(model, tf.constant(x), y, 0.0).numpy(), x)


@pytest.mark.parametrize("epsilon", [1 / 255, 8 / 255, 0.3])
def test_fgsm_moves_every_pixel_by_epsilon_inside_the_unit_box(model, epsilon):
    x, y = batch()
    adversarial = fgsm(model, tf.constant(x), y, epsilon).numpy()
    assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
    change = np.abs(adversarial - x)
    assert change.max() <= epsilon + 1e-6
    # Pixels not stopped by the box move by exactly epsilon (the gradient sign is +-1).
    free = (x + epsilon <= 1.0) & (x - epsilon >= 0.0)
    np.testing.assert_allclose(change[free], epsilon, atol=1e-6)


def test_negative_or_too_large_epsilon_is_refused(model):
    x, y = batch(2)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="epsilon"):
            fgsm(model, tf.constant(x), y, bad)
        with pytest.raises(ValueError, match="epsilon"):
            pgd(model, tf.constant(x), y, bad)
    with pytest.raises(ValueError, match="epsilon"):
        AttackSettings(epsilons=(0.0, -1 / 255))


def test_fgsm_uses_inference_mode(model):
    # In training mode BatchNorm would use the batch's statistics and give another gradient.
    x, y = batch()
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, model(x, training=True)))
    training_mode = tf.clip_by_value(x + 0.1 * tf.sign(tape.gradient(loss, x)), 0, 1)
    assert not np.array_equal(fgsm(model, x, y, 0.1).numpy(), training_mode.numpy())


def test_fgsm_matches_cleverhans(model):
    # cleverhans' TF2 fast_gradient_method is an independent implementation of the same
    # attack; given the labels and the same box it must give the same images.
    cleverhans_fgm = pytest.importorskip("cleverhans.tf2.attacks.fast_gradient_method")
    x, y = batch(32, seed=1)
    for epsilon in (2 / 255, 8 / 255):
        ours = fgsm(model, tf.constant(x), y, epsilon).numpy()
        theirs = cleverhans_fgm.fast_gradient_method(
            lambda images: model(images, training=False), tf.constant(x), epsilon, np.inf,
            clip_min=0.0, clip_max=1.0, y=tf.constant(y)).numpy()
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


def test_pgd_stays_in_the_ball_and_is_repeatable(model):
    x, y = batch()
    epsilon = 4 / 255
    first = pgd(model, tf.constant(x), y, epsilon, steps=3, restarts=2, seed=(1, 2)).numpy()
    second = pgd(model, tf.constant(x), y, epsilon, steps=3, restarts=2, seed=(1, 2)).numpy()
    np.testing.assert_array_equal(first, second)
    assert np.abs(first - x).max() <= epsilon + 1e-6
    assert first.min() >= 0.0 and first.max() <= 1.0
    np.testing.assert_array_equal(pgd(model, tf.constant(x), y, 0.0, steps=2).numpy(), x)


def test_pgd_is_at_least_as_strong_as_fgsm_on_a_linear_model():
    # For a linear model FGSM already finds the worst case in the L-infinity ball, so PGD
    # can only match it; on such a model PGD with a step of epsilon must break at least
    # as many images as FGSM does.
    keras.utils.set_random_seed(0)
    linear = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(5)])
    x, y = batch(64, seed=2)
    epsilon = 0.02

    def accuracy(images):
        return float(np.mean(np.argmax(linear(images), -1) == y))

    fgsm_accuracy = accuracy(fgsm(linear, tf.constant(x), y, epsilon))
    pgd_accuracy = accuracy(pgd(linear, tf.constant(x), y, epsilon, steps=5, step_size=epsilon))
    assert pgd_accuracy <= fgsm_accuracy < accuracy(x) or accuracy(x) == 0


def test_evaluation_end_to_end_passes_its_sanity_checks(model):
    x, y = batch(40, seed=3)
    settings = AttackSettings(epsilons=(0.0, 2 / 255, 8 / 255), pgd_steps=3, batch_size=20)
    evaluations = {name: evaluate(model, x, y, name, settings, progress=False) for name in ("fgsm", "pgd")}
    assert evaluations["pgd"].n == 40
    clean = float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))
    assert evaluations["pgd"].accuracy() == pytest.approx(clean)
    checks = sanity_checks.check(evaluations)
    assert checks["eps_zero_is_clean"]["passed"], checks
    assert checks["inside_epsilon_ball"]["passed"], checks
    assert checks["deterministic_inference"]["passed"], checks


def correct_after(model, adversarial, y):
    return np.argmax(model(adversarial, training=False).numpy(), -1) == y


def test_evaluator_counts_equal_those_of_fgsm_pgd_and_cleverhans_images(model):
    # The evaluator shares one gradient among epsilons and compiles its steps with XLA;
    # its per-image verdicts must still be those of the plain attack functions.
    cleverhans_fgm = pytest.importorskip("cleverhans.tf2.attacks.fast_gradient_method")
    x, y = batch(48, seed=4)
    epsilons = (0.0, 2 / 255, 8 / 255)
    settings = AttackSettings(epsilons=epsilons, pgd_steps=3, batch_size=48, seed=9)
    fgsm_result = evaluate(model, x, y, "fgsm", settings, progress=False)
    pgd_result = evaluate(model, x, y, "pgd", settings, progress=False)
    for epsilon in epsilons:
        direct = correct_after(model, fgsm(model, tf.constant(x), y, epsilon), y)
        theirs = correct_after(model, cleverhans_fgm.fast_gradient_method(
            lambda images: model(images, training=False), tf.constant(x), epsilon, np.inf,
            clip_min=0.0, clip_max=1.0, y=tf.constant(y)), y)
        np.testing.assert_array_equal(fgsm_result.correct[epsilon], direct)
        np.testing.assert_array_equal(fgsm_result.correct[epsilon], theirs)
        # The evaluator seeds each batch's random start with (seed, first image's index).
        adversarial = pgd(model, tf.constant(x), y, epsilon, steps=3, seed=(9, 0))
        np.testing.assert_array_equal(pgd_result.correct[epsilon], correct_after(model, adversarial, y))


def test_an_evaluation_cut_short_carries_on_where_it_stopped_with_the_same_result(tmp_path, monkeypatch):
    from attacks import steps
    from common import atomic_files

    # Four evaluations, each tracing its steps: a network small enough to trace in a blink.
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5)])
    x, y = batch(40, seed=5)
    settings = AttackSettings(epsilons=(0.0, 16 / 255, 0.3), pgd_steps=3, batch_size=16, seed=3,
                              jit_compile=False)
    whole = evaluate(model, x, y, "pgd", settings, progress=False)
    assert whole.accuracy(0.3) < whole.accuracy()  # The attack does something.
    real_build, calls = steps.build_pgd, []

    def build_stopping_after(limit):
        def build(*args):
            attack = real_build(*args)

            def run(*call):
                if limit is not None and len(calls) == limit:
                    raise KeyboardInterrupt  # as a kill would, mid-evaluation
                calls.append(call[2])
                return attack(*call)
            return run
        return build

    def progress(key):
        return Progress(str(tmp_path / "pgd.partial.json"), key, atomic_files.write_json)

    monkeypatch.setattr(steps, "build_pgd", build_stopping_after(4))
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, x, y, "pgd", settings, progress=False, resume=progress({"run": 1}))
    monkeypatch.setattr(steps, "build_pgd", build_stopping_after(None))
    calls.clear()
    resumed = evaluate(model, x, y, "pgd", settings, progress=False, resume=progress({"run": 1}))
    assert len(calls) == 3 * 3 - 4  # 3 batches x 3 epsilons, 4 of them done before the kill
    expected, found = whole.to_record(), resumed.to_record()
    expected.pop("seconds"), found.pop("seconds")
    assert found == expected
    # Progress saved under another key (another model or settings) is not used.
    calls.clear()
    evaluate(model, x, y, "pgd", settings, progress=False, resume=progress({"run": 2}))
    assert len(calls) == 9


def test_evaluation_record_round_trips():
    evaluation = crafted((0.5, 0.3, 0.2), (0.5, 0.2, 0.1), zero_gradient_images=3)["pgd"]
    again = Evaluation.from_record(evaluation.to_record())
    assert again.to_record() == evaluation.to_record()
    for epsilon, mask in evaluation.correct.items():
        np.testing.assert_array_equal(again.correct[epsilon], mask)


def test_worst_case_is_at_or_below_every_attack_image_by_image():
    rng = np.random.default_rng(0)
    clean = rng.random(50) < 0.8
    evaluations = {name: Evaluation(name, clean, {e: clean & (rng.random(50) < 0.6) for e in (0.0, 0.1)})
                   for name in ("fgsm", "pgd")}
    worst = worst_case(evaluations)
    for epsilon, mask in worst.items():
        for evaluation in evaluations.values():
            assert not np.any(mask & ~evaluation.correct[epsilon])
        np.testing.assert_array_equal(mask, evaluations["fgsm"].correct[epsilon]
                                      & evaluations["pgd"].correct[epsilon])


def crafted(fgsm_accuracy, pgd_accuracy, clean=0.5, **diagnostics):
    """{attack: Evaluation} of 100 images with the given accuracies per epsilon (0, 4/255, 8/255)."""
    epsilons = (0.0, 4 / 255, 8 / 255)

    def mask(accuracy):
        return np.arange(100) < round(100 * accuracy)

    return {attack: Evaluation(attack, mask(clean), {e: mask(a) for e, a in zip(epsilons, accuracies)},
                               **diagnostics)
            for attack, accuracies in (("fgsm", fgsm_accuracy), ("pgd", pgd_accuracy))}


def test_sanity_checks_pass_a_sound_evaluation():
    assert all(v["passed"] for v in sanity_checks.check(crafted((0.5, 0.3, 0.2), (0.5, 0.2, 0.1))).values())


def test_sanity_checks_flag_pgd_weaker_than_fgsm_as_possible_masking():
    verdict = sanity_checks.check(crafted((0.5, 0.3, 0.2), (0.5, 0.35, 0.1)))["stronger_not_weaker"]
    assert not verdict["passed"] and "gradient masking" in verdict["detail"] and "4/255" in verdict["detail"]


def test_one_image_of_pgd_above_fgsm_is_reported_but_not_flagged():
    verdict = sanity_checks.check(crafted((0.5, 0.30, 0.2), (0.5, 0.31, 0.1)))["stronger_not_weaker"]
    assert verdict["passed"] and "allowance" in verdict["detail"]


def test_sanity_checks_flag_accuracy_rising_with_epsilon_and_eps_zero_mismatch():
    checks = sanity_checks.check(crafted((0.45, 0.3, 0.35), (0.5, 0.2, 0.1)))
    assert not checks["monotone_in_epsilon"]["passed"]
    assert not checks["eps_zero_is_clean"]["passed"]


def test_sanity_checks_flag_images_outside_the_ball_or_box_and_random_models():
    checks = sanity_checks.check(crafted((0.5, 0.3, 0.2), (0.5, 0.2, 0.1), max_ball_excess=1e-3,
                                         deterministic=False, zero_gradient_images=20))
    assert not checks["inside_epsilon_ball"]["passed"]
    assert not checks["deterministic_inference"]["passed"]
    assert not checks["nonzero_gradients"]["passed"]
    checks = sanity_checks.check(crafted((0.5, 0.3, 0.2), (0.5, 0.2, 0.1), min_pixel=-0.01))
    assert not checks["inside_epsilon_ball"]["passed"]


def test_attack_xla_auto_follows_the_device_and_onednn():
    from configs import demo
    from models import precision
    from stages import attack as attack_stage

    config = demo.get_config("smoke")
    for value, expected in (("true", True), ("False", False)):
        config.attack.jit_compile = value
        assert AttackSettings.from_config(config).jit_compile is expected
    if not tf.config.list_physical_devices("GPU"):
        # On a CPU, XLA only where TensorFlow's own kernels run (oneDNN off): with oneDNN,
        # XLA's CPU kernels were the slower ones.
        config.attack.jit_compile = "auto"
        assert AttackSettings.from_config(config).jit_compile is (precision.onednn_enabled() is False)


def test_the_embedding_picture_draws_its_images_from_every_class_of_a_sorted_test_set():
    from stages import attack as attack_stage
    labels = np.repeat(np.arange(10), 100)  # Stored class by class, as an image folder is.
    shown = attack_stage.embedding_indices(len(labels), 200, seed=0)
    assert len(shown) == 200 and len(set(labels[shown])) == 10
    np.testing.assert_array_equal(shown, attack_stage.embedding_indices(len(labels), 200, seed=0))
    assert len(attack_stage.embedding_indices(len(labels), 5000, seed=0)) == len(labels)


def test_an_attack_runs_at_its_own_epsilons_and_pgd_50_takes_fifty_steps(model, monkeypatch):
    from attacks import steps

    x, y = batch(24, seed=5)
    settings = AttackSettings(epsilons=(0.0, 1 / 255, 8 / 255), pgd_steps=3, batch_size=24,
                              jit_compile=False, own_epsilons={"pgd-50": (0.0, 8 / 255)})
    assert settings.epsilons_of("fgsm") == (0.0, 1 / 255, 8 / 255)
    assert settings.epsilons_of("pgd-50") == (0.0, 8 / 255)
    # The record key holds the epsilons the attack ran at; PGD-50's never holds pgd_steps.
    assert settings.key("pgd-50")["epsilons"] == [0.0, 8 / 255] and "pgd_steps" not in settings.key("pgd-50")
    assert settings.key("pgd")["epsilons"] == [0.0, 1 / 255, 8 / 255]
    seen = []
    original = steps.pgd
    monkeypatch.setattr(steps, "pgd", lambda *args: seen.append(args[4]) or original(*args))
    evaluations = {name: evaluate(model, x, y, name, settings, progress=False) for name in ("pgd", "pgd-50")}
    assert set(seen) == {3, 50}
    assert sorted(evaluations["pgd-50"].correct) == [0.0, 8 / 255]
    # Not weaker than PGD-10 image by image beyond the checks' allowance, and the worst case
    # covers the epsilons both attacks ran at.
    assert evaluations["pgd-50"].correct[8 / 255].sum() <= evaluations["pgd"].correct[8 / 255].sum() + 1
    assert sorted(worst_case(evaluations)) == [0.0, 8 / 255]
    assert sanity_checks.check(evaluations)["stronger_not_weaker"]["passed"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
