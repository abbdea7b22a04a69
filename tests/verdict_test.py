"""report/verdict.py: the method against its references, epsilon by epsilon, with standard errors;
report/tables.py: the results table with each accuracy's standard error."""

import math
import sys

import numpy as np
import pytest

from report import tables, verdict


def rows(accuracies, n=1000):
    """Result rows from {model: {(attack, epsilon_255): accuracy}}."""
    return [{"model": model, "attack": attack, "epsilon": epsilon / 255, "accuracy": accuracy, "n": n}
            for model, by_key in accuracies.items() for (attack, epsilon), accuracy in by_key.items()]


def test_a_difference_is_called_only_beyond_two_standard_errors():
    # At n = 1000 and accuracies near 0.5, one SE of a difference is about 2.2 points.
    table = rows({
        "method": {("clean", 0): 0.80, ("fgsm", 0): 0.80, ("fgsm", 4): 0.50, ("fgsm", 8): 0.30},
        "base": {("clean", 0): 0.81, ("fgsm", 0): 0.81, ("fgsm", 4): 0.44, ("fgsm", 8): 0.36},
    })
    entries = verdict.compare(table, "method", ("base",))
    assert [(e["attack"], round(e["epsilon"] * 255)) for e in entries] == [("clean", 0), ("fgsm", 4), ("fgsm", 8)]
    clean, four, eight = (e["differences"]["base"] for e in entries)
    assert clean["call"] == "none" and four["call"] == "better" and eight["call"] == "worse"
    expected = math.hypot(math.sqrt(0.5 * 0.5 / 1000), math.sqrt(0.44 * 0.56 / 1000))
    assert four["standard_error"] == pytest.approx(expected)
    assert four["difference"] == pytest.approx(0.06)
    # Just inside 2 SE is no clear difference.
    table = rows({"method": {("clean", 0): 0.5, ("pgd", 2): 0.5 + 0.0}, "base": {("clean", 0): 0.5, ("pgd", 2): 0.46}})
    assert verdict.compare(table, "method", ("base",))[1]["differences"]["base"]["call"] == "none"


def test_the_text_names_the_claim_each_reference_and_where_it_does_not_hold():
    table = rows({
        "supcon_margin": {("clean", 0): 0.80, ("fgsm", 8): 0.30, ("worst", 8): 0.02},
        "baseline": {("clean", 0): 0.80, ("fgsm", 8): 0.24, ("worst", 8): 0.02},
        "supcon": {("clean", 0): 0.81, ("fgsm", 8): 0.29, ("worst", 8): 0.03},
    })
    text = verdict.markdown(verdict.compare(table, "supcon_margin", ("baseline", "supcon")), "up to +2.5 points")
    assert "The claim: up to +2.5 points" in text
    assert "| FGSM | 8/255 | 1000 | 30.0 | 24.0 | 29.0 | +6.0" in text
    assert "- FGSM, supcon_margin against baseline: better at 8/255 (+6.0)." in text
    assert "- worst case, supcon_margin against supcon: no clear difference at 8/255 (-1.0)." in text
    assert "- clean, supcon_margin against baseline: no clear difference at the clean images (+0.0)." in text


def test_per_image_verdicts_give_the_paired_error_which_sees_a_small_consistent_gain():
    # Both models are right on the same 480 of 1,000 images; the method also on 20 more.
    n = 1000
    indices = np.arange(n)
    base = np.zeros(n, bool)
    base[:480] = True
    method = base.copy()
    method[480:500] = True
    table = rows({"method": {("clean", 0): 0.9, ("pgd", 8): 0.50}, "base": {("clean", 0): 0.9, ("pgd", 8): 0.48}})
    unpaired = verdict.compare(table, "method", ("base",))[1]["differences"]["base"]
    assert unpaired["call"] == "none" and not unpaired["paired"]
    masks = {"method": {("pgd", 8 / 255): (indices, method)}, "base": {("pgd", 8 / 255): (indices, base)}}
    paired = verdict.compare(table, "method", ("base",), masks)[1]["differences"]["base"]
    assert paired["paired"] and paired["call"] == "better"
    assert paired["standard_error"] == pytest.approx(np.std(method.astype(float) - base, ddof=1) / np.sqrt(n))
    assert paired["standard_error"] < unpaired["standard_error"] / 4
    # Verdicts on different images cannot be paired: the independent error is used.
    masks["base"][("pgd", 8 / 255)] = (indices + 1, base)
    assert not verdict.compare(table, "method", ("base",), masks)[1]["differences"]["base"]["paired"]


def test_rows_missing_for_a_model_or_on_other_images_are_left_out():
    table = rows({"method": {("clean", 0): 0.8, ("pgd", 8): 0.3}, "base": {("clean", 0): 0.8}})
    assert [e["attack"] for e in verdict.compare(table, "method", ("base",))] == ["clean"]
    table = rows({"method": {("pgd", 8): 0.3}}, n=500) + rows({"base": {("pgd", 8): 0.3}}, n=1000)
    assert verdict.compare(table, "method", ("base",)) == []
    assert "No attack" in verdict.markdown([])


def test_the_results_table_gives_each_accuracy_its_images_and_standard_error():
    table = rows({"baseline": {("clean", 0): 0.8, ("fgsm", 0): 0.8, ("fgsm", 4): 0.1}}, n=10000)
    table += rows({"baseline": {("pgd", 0): 0.8, ("pgd", 4): 0.5}}, n=2000)
    text = tables.markdown(table)
    # sqrt(.8 * .2 / 10000) = 0.4 points; sqrt(.1 * .9 / 10000) = 0.3; sqrt(.25 / 2000) = 1.1.
    assert "| baseline | FGSM | 10,000 | 80.0 ±0.4 | 80.0 ±0.4 | 10.0 ±0.3 |" in text
    assert "| baseline | PGD | 2,000 | 80.0 ±0.4 | 80.0 ±0.9 | 50.0 ±1.1 |" in text
    assert "on all 10,000 test images" in text
    assert math.isnan(tables.standard_error(0.5, 0)) and tables.standard_error(1.0, 7) == 0.0


def test_the_table_at_8_255_puts_every_attack_beside_clean_with_its_images():
    table = rows({"at_ce": {("clean", 0): 0.7}, "at_supcon": {("clean", 0): 0.6}}, n=10000)
    table += rows({"at_ce": {("fgsm", 8): 0.45, ("fgsm", 4): 0.6}, "at_supcon": {("fgsm", 8): 0.4}},
                  n=10000)
    table += rows({"at_ce": {("worst", 8): 0.36}, "at_supcon": {("worst", 8): 0.5}}, n=1000)
    text = tables.at_epsilon_markdown(table)
    assert text.splitlines()[0] == "| model | clean (10,000) | FGSM (10,000) | worst case (1,000) |"
    # sqrt(.7 * .3 / 10000) = 0.46; sqrt(.45 * .55 / 10000) = 0.50; sqrt(.36 * .64 / 1000) = 1.52.
    assert "| at_ce | 70.0 ±0.5 | 45.0 ±0.5 | 36.0 ±1.5 |" in text
    assert "| at_supcon | 60.0 ±0.5 | 40.0 ±0.5 | 50.0 ±1.6 |" in text
    assert tables.at_epsilon_markdown(table, 16 / 255) == ""


def test_the_training_table_names_each_model_s_kept_epoch_times_and_warnings():
    models = {"at_ce": {"stage": "baseline", "changes": {}, "commit": "0123456789abc",
                        "epoch_seconds": {"logged": 3, "median": 89.4, "total": 3 * 3600.0}},
              "at_supcon_margin": {"stage": "pretrain", "changes": {"loss.margin": 1.759}}}
    histories = {"at_ce": {"epoch": [1, 2, 3], "val_robust_accuracy": [0.1, 0.3, 0.2],
                           "val_clean_accuracy": [0.3, 0.5, 0.6], "best_epoch": 2,
                           "collapse_epoch": None, "masking_epochs": []},
                 "at_supcon_margin": {"epoch": [1, 2], "val_robust_accuracy": [0.1, 0.01],
                                      "val_clean_accuracy": [0.3, 0.4], "best_epoch": 1,
                                      "collapse_epoch": 2, "masking_epochs": [2]}}
    table = tables.training_markdown(models, histories).splitlines()
    assert table[2] == "| at_ce | baseline | - | 3 | 2 (30.0 / 50.0) | - | 89 | 3.00 | 0123456789 |"
    assert table[3] == ("| at_supcon_margin | pretrain | loss.margin=1.759 | - | 1 (10.0 / 30.0) | "
                        "collapse at epoch 2; adversary easier than clean images at epochs 2 | "
                        "- | - | - |")


def test_two_seeds_pool_to_the_mean_difference_with_the_error_of_a_mean_of_two():
    one = rows({"method": {("clean", 0): 0.70, ("pgd", 8): 0.42}, "base": {("clean", 0): 0.72, ("pgd", 8): 0.38}})
    two = rows({"method": {("clean", 0): 0.74, ("pgd", 8): 0.40}, "base": {("clean", 0): 0.70, ("pgd", 8): 0.40}})
    per_seed = [[dict(e, seeds=[seed]) for e in verdict.compare(table, "method", ("base",))]
                for seed, table in ((0, one), (1, two))]
    pooled = verdict.pool(per_seed)
    pgd = pooled[1]
    d = pgd["differences"]["base"]
    assert pgd["seeds"] == [0, 1]
    assert pgd["accuracy"] == pytest.approx({"method": 0.41, "base": 0.39})
    assert d["difference"] == pytest.approx(0.02) and d["by_seed"] == pytest.approx([0.04, 0.0])
    errors = [per_seed[k][1]["differences"]["base"]["standard_error"] for k in (0, 1)]
    assert d["standard_error"] == pytest.approx(math.sqrt(errors[0] ** 2 + errors[1] ** 2) / 2)
    assert d["call"] == ("better" if d["difference"] > 2 * d["standard_error"] else "none")
    assert "mean over the models trained with seeds 0, 1" in verdict.markdown(pooled)
    # An attack or epsilon one seed lacks is left out of the pooled verdict.
    per_seed[1] = per_seed[1][:1]
    assert [e["attack"] for e in verdict.pool(per_seed)] == ["clean"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
