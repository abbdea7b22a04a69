"""report/reproduction.py and tools/check_reproduction.py: a rerun against the published run,
within the spread stated in advance."""

import json
import math
import os
import sys

import pytest

from report import reproduction, verdict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))

import check_reproduction  # noqa: E402


def rows(accuracies, n=1000):
    """Result rows from {model: {(attack, epsilon_255): accuracy}}."""
    return [{"model": model, "attack": attack, "epsilon": epsilon / 255, "accuracy": accuracy, "n": n}
            for model, by_key in accuracies.items() for (attack, epsilon), accuracy in by_key.items()]


def test_the_allowed_gap_is_two_pooled_standard_errors_of_the_difference():
    # The figures results/real_photos/README.md states in advance: 1.4 points on 10,000 images at 50%,
    # 3.2 on 2,000 and 4.5 on 1,000.
    assert reproduction.allowed_gap(0.5, 10000, 0.5, 10000) == pytest.approx(2 * math.sqrt(0.5 / 10000))
    assert [round(100 * reproduction.allowed_gap(0.5, n, 0.5, n), 1) for n in (10000, 2000, 1000)] == [1.4, 3.2, 4.5]
    # Pooled: 0.0% against 0.1% on 2,000 images has an error (unpooled, 0 and 0 would not).
    assert reproduction.allowed_gap(0.0, 2000, 0.001, 2000) > 0.001
    assert reproduction.allowed_gap(0.0, 2000, 0.0, 2000) == 0.0


def test_each_accuracy_is_paired_by_model_attack_and_epsilon_and_called_within_or_outside():
    first = rows({"a": {("clean", 0): 0.80, ("fgsm", 1): 0.50, ("fgsm", 8): 0.0, ("pgd", 4): 0.10},
                  "b": {("clean", 0): 0.82, ("fgsm", 1): 0.52}})
    second = rows({"a": {("clean", 0): 0.81, ("fgsm", 1): 0.56, ("fgsm", 8): 0.0},
                   "b": {("fgsm", 1): 0.53, ("clean", 0): 0.80}})
    compared = reproduction.compare_runs(first, second)
    assert [(c["model"], c["attack"], round(c["epsilon"] * 255)) for c in compared] == [
        ("a", "clean", 0), ("a", "fgsm", 1), ("a", "fgsm", 8), ("b", "clean", 0), ("b", "fgsm", 1)]
    within = {(c["model"], c["attack"], round(c["epsilon"] * 255)): c["within"] for c in compared}
    # 6 points on 1,000 images at 50% is beyond 2 pooled SE (4.5 points); 1 point is not.
    assert within == {("a", "clean", 0): True, ("a", "fgsm", 1): False, ("a", "fgsm", 8): True,
                      ("b", "clean", 0): True, ("b", "fgsm", 1): True}
    assert compared[1]["difference"] == pytest.approx(0.06)
    assert reproduction.missing_rows(first, second) == [("a", "pgd", round(4 / 255, 6))]
    counts = reproduction.summary(compared)
    assert (counts["accuracies"], counts["within"], counts["outside"]) == (5, 4, 1)
    assert counts["largest_gap"] == pytest.approx(0.06)


def test_the_verdicts_are_compared_call_by_call():
    base = {("clean", 0): 0.80, ("fgsm", 4): 0.44}
    first = verdict.compare(rows({"m": {("clean", 0): 0.80, ("fgsm", 4): 0.50}, "base": base}), "m", ("base",))
    second = verdict.compare(rows({"m": {("clean", 0): 0.80, ("fgsm", 4): 0.45}, "base": base}), "m", ("base",))
    paired = reproduction.compare_verdicts(first, second)
    assert [(p["attack"], p["first"], p["second"], p["agree"]) for p in paired] == [
        ("clean", "none", "none", True), ("fgsm", "better", "none", False)]
    text = reproduction.markdown(reproduction.compare_runs(rows({"m": base}), rows({"m": base})), paired)
    assert "1 of 2 calls" in text and "| fgsm | 4/255 | base | better (+6.0) | no clear difference (+1.0) |" in text


def test_the_command_writes_its_report_into_the_rerun_folder(tmp_path, capsys):
    first, second = tmp_path / "real_photos", tmp_path / "rerun"
    for folder, accuracy in ((first, 0.50), (second, 0.60)):
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps({"rows": rows({"m": {("fgsm", 2): accuracy}})}))
    assert check_reproduction.main([str(first), str(second)]) == 0
    printed = capsys.readouterr().out
    assert "0 of 1 accuracies lie within" in printed
    report = json.loads((second / "reproduction.json").read_text())
    assert report["summary"]["outside"] == 1 and report["accuracies"][0]["second"] == 0.60
    assert "| m | fgsm | 2/255 | 1000 | 50.0 | 60.0 | +10.0 **outside** |" in (second / "reproduction.md").read_text()
    assert sorted(os.listdir(first)) == ["results.json"]  # the published run is only read


def test_a_run_not_yet_published_is_one_clear_error(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(SystemExit, match=r"results.json does not exist: publish the run first"):
        check_reproduction.main([str(tmp_path / "a"), str(tmp_path / "b")])
