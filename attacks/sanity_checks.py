"""Automatic checks that a robustness evaluation is sound, with a verdict for each.

Defences that cluster features have a history of looking robust to FGSM and falling to
stronger attacks, often because their gradients stop pointing anywhere useful (gradient
masking; Athalye, Carlini and Wagner, 2018). These checks catch the usual symptoms, for
one model evaluated under every attack of `attacks.table` that was run:

- eps_zero_is_clean: every attack with epsilon 0 gives exactly the clean accuracy.
- monotone_in_epsilon: accuracy never rises as epsilon grows (per attack).
- stronger_not_weaker: an attack is at most as accurate as each attack its table entry
  names in `not_weaker_than` (PGD against FGSM), at every epsilon; if not, the gradients
  mislead the stronger attack (possible gradient masking). One image of difference is
  allowed: at the smallest epsilons PGD's random start can cost it an image against FGSM
  on any model; the detail reports it all the same.
- inside_epsilon_ball: every adversarial image is within epsilon of its original and
  inside [0, 1].
- deterministic_inference: two forward passes agree (inference mode, no randomness).
- nonzero_gradients: at most 1% of images have an all-zero input gradient.
- gradient_attacks_close_to_strong (`check_strong_gap`, across models): where the
  AutoAttack-like evaluation ran, the accuracy under the best gradient attack (PGD) may
  exceed the strong attack's by at most 5 points more than it does on the reference model
  (the baseline): a model that looks robust to PGD but falls much further under APGD-DLR
  or Square than the baseline does is possibly masking its gradients.
"""

from attacks import table
from attacks.evaluate import common_indices

# Float32 rounding of x + eps * sign(g) and the clip can exceed eps by about 1 ulp.
_BALL_TOLERANCE = 1e-6
_ZERO_GRADIENT_LIMIT = 0.01
_ALLOWANCE_IMAGES = 1
_GAP_LIMIT = 0.05  # Accuracy (0-1) by which PGD may overstate robustness beyond the reference's.
STRONG = "aa-like"
# Compared with the strong attack: every PGD run (the largest gap counts), else FGSM.
GRADIENT_ATTACKS = ("pgd", "pgd-50", "fgsm")


def _verdict(passed, detail):
    return {"passed": bool(passed), "detail": detail}


def _eps(epsilon):
    return f"{epsilon * 255:g}/255"


def check(evaluations):
    """{check name: {"passed": bool, "detail": str}} for one model's {attack name: Evaluation}."""
    checks = {}
    names = list(evaluations)
    first = evaluations[names[0]]
    clean = first.accuracy()

    mismatches = [f"{name} {e.accuracy(0.0):.4f}" for name, e in evaluations.items()
                  if 0.0 in e.correct and e.accuracy(0.0) != e.accuracy()]
    if any(0.0 in e.correct for e in evaluations.values()):
        checks["eps_zero_is_clean"] = _verdict(not mismatches, f"clean {clean:.4f}; " + (
            f"at eps 0: {', '.join(mismatches)}" if mismatches else "every attack equal at eps 0"))
    else:
        checks["eps_zero_is_clean"] = _verdict(True, "eps 0 not evaluated")

    rises = []
    for name, evaluation in evaluations.items():
        ordered = sorted(evaluation.correct)
        for low, high in zip(ordered, ordered[1:]):
            if evaluation.accuracy(high) > evaluation.accuracy(low):
                rises.append(f"{name} {evaluation.accuracy(low):.4f} at {_eps(low)} -> "
                             f"{evaluation.accuracy(high):.4f} at {_eps(high)}")
    checks["monotone_in_epsilon"] = _verdict(
        not rises, "; ".join(rises) or "accuracy falls or stays as epsilon grows")

    above, masking, compared = [], False, []
    for name, evaluation in evaluations.items():
        for weaker in table.ATTACKS[name].not_weaker_than:
            if weaker not in evaluations:
                continue
            compared.append(f"{name} <= {weaker}")
            other = evaluations[weaker]
            # Compared image by image on the images both were run on (subsets may differ).
            shared = common_indices({name: evaluation, weaker: other})
            mine, theirs = evaluation.on(shared), other.on(shared)
            for epsilon in sorted(set(mine) & set(theirs)):
                excess = int(mine[epsilon].sum()) - int(theirs[epsilon].sum())
                if excess > 0:
                    above.append(f"{_eps(epsilon)}: {name} {mine[epsilon].mean():.4f} > "
                                 f"{weaker} {theirs[epsilon].mean():.4f} on {len(shared)} images")
                    masking |= excess > _ALLOWANCE_IMAGES
    if masking:
        detail = "possible gradient masking: " + "; ".join(above)
    elif above:
        detail = "within the one-image allowance: " + "; ".join(above)
    else:
        detail = ("at every epsilon: " + ", ".join(compared)) if compared else "no pair of attacks to compare"
    checks["stronger_not_weaker"] = _verdict(not masking, detail)

    excess = max(e.max_ball_excess for e in evaluations.values())
    low = min(e.min_pixel for e in evaluations.values())
    high = max(e.max_pixel for e in evaluations.values())
    inside = excess <= _BALL_TOLERANCE and low >= 0.0 and high <= 1.0
    checks["inside_epsilon_ball"] = _verdict(
        inside, f"max |x_adv - x| - eps = {excess:.2e}, pixels in [{low:g}, {high:g}]")

    deterministic = all(e.deterministic for e in evaluations.values())
    checks["deterministic_inference"] = _verdict(
        deterministic, "two forward passes agree" if deterministic
        else "two forward passes differ: the model is not in inference mode or is random, "
             "so gradient attacks understate its weakness (use EOT)")

    zero = first.zero_gradient_images
    share = zero / first.n if first.n else 0.0
    checks["nonzero_gradients"] = _verdict(
        share <= _ZERO_GRADIENT_LIMIT,
        f"{zero} of {first.n} images ({share:.1%}) have an all-zero input gradient"
        + (" (saturated softmax: gradient attacks cannot move them)" if share > _ZERO_GRADIENT_LIMIT else ""))
    return checks


def strong_gap(evaluations):
    """(largest accuracy gap, epsilon, gradient attack) between a gradient attack and the strong one.

    None when the strong attack or no gradient attack was run. Compared on shared images.
    """
    if STRONG not in evaluations:
        return None
    run = [name for name in GRADIENT_ATTACKS if name in evaluations]
    pgds = [name for name in run if name != "fgsm"]
    gaps = []
    for gradient in pgds or run[:1]:
        pair = {gradient: evaluations[gradient], STRONG: evaluations[STRONG]}
        shared = common_indices(pair)
        weak, strong = pair[gradient].on(shared), pair[STRONG].on(shared)
        gaps.extend((float(weak[e].mean() - strong[e].mean()), e, gradient)
                    for e in sorted(set(weak) & set(strong)))
    return max(gaps) if gaps else None


def check_strong_gap(evaluations_by_model, reference="baseline"):
    """{model: verdict} of gradient_attacks_close_to_strong, for models where the strong attack ran."""
    reference_gap = strong_gap(evaluations_by_model.get(reference, {})) if reference else None
    allowed = (reference_gap[0] if reference_gap else 0.0) + _GAP_LIMIT
    verdicts = {}
    for model, evaluations in evaluations_by_model.items():
        found = strong_gap(evaluations)
        if found is None:
            continue
        gap, epsilon, gradient = found
        against = (f"{reference} gap {reference_gap[0]:.1%}" if reference_gap and model != reference
                   else "no reference model" if not reference_gap else "this is the reference")
        detail = (f"{gradient} accuracy exceeds the strong attack's by up to {gap:.1%} (at "
                  f"{_eps(epsilon)}); allowed {allowed:.1%} ({against})")
        passed = gap <= allowed
        if not passed:
            detail = "possible gradient masking: " + detail
        verdicts[model] = _verdict(passed, detail)
    return verdicts
