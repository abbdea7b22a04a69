"""Automatic checks that a robustness evaluation is sound, with a verdict for each.

Defences that cluster features have a history of looking robust to FGSM and falling to
stronger attacks, often because their gradients stop pointing anywhere useful (gradient
masking; Athalye, Carlini and Wagner, 2018). These checks catch the usual symptoms:

- eps_zero_is_clean: an attack with epsilon 0 gives exactly the clean accuracy.
- monotone_in_epsilon: accuracy never rises as epsilon grows (per attack).
- pgd_not_weaker_than_fgsm: PGD accuracy is at most FGSM's at every epsilon; if not,
  the gradients mislead the iterative attack (possible gradient masking). One image of
  difference is allowed: at the smallest epsilons PGD's random start can cost it an
  image or two against FGSM on any model; the detail reports it all the same.
- inside_epsilon_ball: every adversarial image is within epsilon of its original and
  inside [0, 1].
- deterministic_inference: two forward passes agree (inference mode, no randomness).
- nonzero_gradients: at most 1% of images have an all-zero input gradient.
"""

# Float32 rounding of x + eps * sign(g) and the clip can exceed eps by about 1 ulp.
_BALL_TOLERANCE = 1e-6
_ZERO_GRADIENT_LIMIT = 0.01
_PGD_ALLOWANCE_IMAGES = 1


def _verdict(passed, detail):
    return {"passed": bool(passed), "detail": detail}


def check(evaluation, epsilons):
    """Returns {check name: {"passed": bool, "detail": str}} for one model's `Evaluation`."""
    checks = {}
    clean = evaluation.accuracy("clean")
    if 0 in epsilons:
        mismatches = [f"{attack} {evaluation.accuracy(attack, 0.0):.4f}" for attack in ("fgsm", "pgd")
                      if evaluation.accuracy(attack, 0.0) != clean]
        detail = f"clean {clean:.4f}; " + (f"at eps 0: {', '.join(mismatches)}" if mismatches
                                           else "every attack equal at eps 0")
        checks["eps_zero_is_clean"] = _verdict(not mismatches, detail)
    else:
        checks["eps_zero_is_clean"] = _verdict(True, "eps 0 not evaluated")

    rises = []
    ordered = sorted(epsilons)
    for attack in ("fgsm", "pgd"):
        for low, high in zip(ordered, ordered[1:]):
            if evaluation.accuracy(attack, high) > evaluation.accuracy(attack, low):
                rises.append(f"{attack} {evaluation.accuracy(attack, low):.4f} at {low * 255:g}/255 "
                             f"-> {evaluation.accuracy(attack, high):.4f} at {high * 255:g}/255")
    checks["monotone_in_epsilon"] = _verdict(
        not rises, "; ".join(rises) or "accuracy falls or stays as epsilon grows")

    excess = {e: evaluation.correct[("pgd", e)] - evaluation.correct[("fgsm", e)] for e in ordered}
    above = [f"{e * 255:g}/255: pgd {evaluation.accuracy('pgd', e):.4f} > fgsm "
             f"{evaluation.accuracy('fgsm', e):.4f}" for e in ordered if excess[e] > 0]
    masking = any(count > _PGD_ALLOWANCE_IMAGES for count in excess.values())
    if masking:
        detail = "possible gradient masking: " + "; ".join(above)
    elif above:
        detail = "within the one-image allowance: " + "; ".join(above)
    else:
        detail = "PGD accuracy <= FGSM accuracy at every epsilon"
    checks["pgd_not_weaker_than_fgsm"] = _verdict(not masking, detail)

    inside = (evaluation.max_ball_excess <= _BALL_TOLERANCE and evaluation.min_pixel >= 0.0
              and evaluation.max_pixel <= 1.0)
    checks["inside_epsilon_ball"] = _verdict(
        inside, f"max |x_adv - x| - eps = {evaluation.max_ball_excess:.2e}, pixels in "
                f"[{evaluation.min_pixel:g}, {evaluation.max_pixel:g}]")

    checks["deterministic_inference"] = _verdict(
        evaluation.deterministic, "two forward passes agree" if evaluation.deterministic
        else "two forward passes differ: the model is not in inference mode or is random, "
             "so gradient attacks understate its weakness (use EOT)")

    share = evaluation.zero_gradient_images / evaluation.n if evaluation.n else 0.0
    checks["nonzero_gradients"] = _verdict(
        share <= _ZERO_GRADIENT_LIMIT,
        f"{evaluation.zero_gradient_images} of {evaluation.n} images ({share:.1%}) have an "
        "all-zero input gradient" + (" (saturated softmax: gradient attacks cannot move them)"
                                     if share > _ZERO_GRADIENT_LIMIT else ""))
    return checks
