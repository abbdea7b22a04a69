"""The AutoAttack-like attack inside the evaluator: the worst case, and the masking check.

The plain model is tests/masking_models.py's small CNN (accurate, not robust); the masked
one is the same network with its logits times 1e4, which saturates the softmax so that
PGD's cross-entropy gradient vanishes while APGD-DLR and Square still break it.
"""

import sys

import numpy as np
import pytest

from attacks import sanity_checks
from attacks.evaluate import AttackSettings
from attacks.evaluate import evaluate
from attacks.evaluate import subset
from attacks.evaluate import worst_case
from tests import masking_models

EPSILON = 0.1
ATTACKS = ("fgsm", "pgd", "aa-like")
SETTINGS = AttackSettings(epsilons=(0.0, EPSILON), pgd_steps=10, batch_size=32, jit_compile=False,
                          strong=dict(apgd_steps=10, square_queries=150, batch_size=32))


@pytest.fixture(scope="module")
def evaluations():
    """{model: {attack: Evaluation}} for the plain and the masked model; aa-like on 24 of 32."""
    plain = masking_models.trained_cnn()
    models = {"baseline": plain, "masked": masking_models.scaled_logits(plain)}
    images, labels = masking_models.separable_data(32, seed=7)
    strong_images = subset(24, len(labels), seed=0)
    return {name: {attack: evaluate(model, images, labels, attack, SETTINGS, progress=False,
                                    indices=strong_images if attack == "aa-like" else None)
                   for attack in ATTACKS}
            for name, model in models.items()}


def test_the_strong_attack_breaks_the_undefended_model(evaluations):
    plain = evaluations["baseline"]["aa-like"]
    assert plain.accuracy() >= 0.9 and plain.n == 24
    assert plain.accuracy(EPSILON) <= 0.1


def test_the_worst_case_is_at_or_below_every_attack_image_by_image(evaluations):
    for per_attack in evaluations.values():
        worst = worst_case(per_attack)
        shared = np.array(sorted(set.intersection(*(set(e.indices) for e in per_attack.values()))))
        assert len(shared) == 24  # The strong attack's subset lies inside the others' sets.
        for evaluation in per_attack.values():
            theirs = evaluation.on(shared)
            for epsilon, mask in worst.items():
                assert not np.any(mask & ~theirs[epsilon])


def test_the_masking_check_fires_on_the_masked_model_only(evaluations):
    masked = evaluations["masked"]
    # The premise: PGD is fooled by the saturated softmax, the strong attack is not.
    assert masked["pgd"].accuracy(EPSILON) >= 0.8
    assert masked["aa-like"].accuracy(EPSILON) <= 0.2
    verdicts = sanity_checks.check_strong_gap(evaluations, reference="baseline")
    assert verdicts["baseline"]["passed"], verdicts
    assert not verdicts["masked"]["passed"]
    assert "possible gradient masking" in verdicts["masked"]["detail"]
    assert "pgd accuracy exceeds" in verdicts["masked"]["detail"]
    # The strong attack being far below PGD is also "stronger_not_weaker" holding, not failing.
    assert sanity_checks.check(masked)["stronger_not_weaker"]["passed"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
