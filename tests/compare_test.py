"""`run.py --stage compare` end to end (the experiment's stage, on the embedded sample, shrunk),
then `tools/publish_results.py`, then the rerun that `make reproduce` is: nothing retrained or
re-attacked, the same numbers."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARMS = ("baseline", "supcon", "supcon_margin")


def compare(workdir):
    result = subprocess.run(
        [sys.executable, "run.py", "--stage", "compare", "--config", "configs/demo.py:smoke",
         "--config.attack.attacks=fgsm", "--workdir", workdir],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("compare"))
    return workdir, compare(workdir)


def test_three_arms_attacked_alike_with_a_verdict(run):
    workdir, stdout = run
    with open(os.path.join(workdir, "attack", "results.json")) as f:
        results = json.load(f)
    # The paper's three and the demo config's own arm, robust (configs/demo.py).
    assert {row["model"] for row in results["rows"]} == set(ARMS) | {"robust"}
    with open(os.path.join(workdir, "compare.json")) as f:
        record = json.load(f)
    assert set(record["arms"]) == set(ARMS) | {"robust"}
    assert record["arms"]["robust"]["changes"] == {"adversarial.method": "n_fgsm"}
    assert record["arms"]["supcon"]["changes"] == {"loss.margin_weight": 0.0}
    assert record["seed"] == 0 and record["commit"] and "cores" in record["machine"]
    assert record["report_commit"] == record["commit"] == record["arms"]["baseline"]["commit"]
    # Every model's epochs timed from its TensorBoard logs, and tabled.
    for arm in ("baseline", "supcon", "supcon_margin", "robust"):
        times = record["arms"][arm]["epoch_seconds"]
        assert times["logged"] == len(times["per_epoch"]) >= 1 and times["median"] > 0
        assert times["total"] == pytest.approx(sum(times["per_epoch"].values()))
    with open(os.path.join(workdir, "attack", "training.md")) as f:
        training_table = f.read()
    assert all(f"| {arm} | " in training_table for arm in ("baseline", "supcon", "robust"))
    assert "| robust | pretrain | adversarial.method=n_fgsm | " in training_table
    assert record["attack_seconds"] == pytest.approx(
        sum(s for by_attack in results["seconds"].values() for s in by_attack.values()))
    with open(os.path.join(workdir, "attack", "verdict.json")) as f:
        entries = json.load(f)
    assert [e["attack"] for e in entries][:1] == ["clean"] and any(e["attack"] == "fgsm" for e in entries)
    assert all(set(e["differences"]) == {"baseline", "supcon"} for e in entries)
    # The models were attacked on the same images: the standard errors are paired ones.
    assert all(d["paired"] for e in entries for d in e["differences"].values())
    assert any(e["attack"] == "worst" for e in entries)
    with open(os.path.join(workdir, "attack", "verdict.md")) as f:
        text = f.read()
    assert "The claim:" in text and "supcon_margin against baseline" in text
    assert "The claim:" in stdout
    with open(os.path.join(workdir, "attack", "verdict.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # Models that train in seconds are reported on once, at the end.
    assert [line for line in stdout.splitlines() if line.startswith("== attack")] == ["== attack"]


def test_published_and_rerun_gives_the_same_numbers_without_training_or_attacking(run, tmp_path):
    workdir, _ = run
    destination = str(tmp_path / "results")
    published = subprocess.run([sys.executable, "tools/publish_results.py", workdir, destination],
                               cwd=REPO, capture_output=True, text=True, timeout=60)
    assert published.returncode == 0, published.stderr
    assert sorted(os.listdir(destination)) == sorted(
        ["results.json", "results.md", "robustness.png", "embeddings.png", "verdict.md", "verdict.json",
         "verdict.png", "provenance.json",
         # The robust arm's validation per epoch, how each model trained, the RobustBench entries.
         "validation.png", "training.md", "robustbench.json"])
    with open(os.path.join(workdir, "compare.json")) as f:
        first_seconds = json.load(f)["attack_seconds"]
    stdout = compare(workdir)
    assert stdout.count("already done with this config") == 4
    assert "attacking" not in stdout and stdout.count("reusing") == 4
    with open(os.path.join(workdir, "attack", "results.json")) as f:
        again = json.load(f)
    with open(os.path.join(destination, "results.json")) as f:
        first = json.load(f)
    assert again["rows"] == first["rows"]
    # The attacks' seconds are those of the evaluations reused, not of the rerun.
    with open(os.path.join(workdir, "compare.json")) as f:
        assert json.load(f)["attack_seconds"] == first_seconds
    # Publishing the rerun from a later commit: the same accuracies leave the published
    # folder as it is; other accuracies are refused without --replace.
    provenance = os.path.join(destination, "provenance.json")
    with open(provenance) as f:
        published = json.load(f)
    with open(provenance, "w") as f:
        json.dump({**published, "commit": "an-earlier-commit"}, f)
    before = {name: os.path.getmtime(os.path.join(destination, name)) for name in os.listdir(destination)}
    again = subprocess.run([sys.executable, "tools/publish_results.py", workdir, destination],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "already holds these accuracies (published at commit an-earlier-commit)" in again.stdout
    assert before == {name: os.path.getmtime(os.path.join(destination, name)) for name in os.listdir(destination)}
    with open(os.path.join(destination, "results.json")) as f:
        changed = json.load(f)
    changed["rows"][1]["accuracy"] += 0.01
    with open(os.path.join(destination, "results.json"), "w") as f:
        json.dump(changed, f)
    refused = subprocess.run([sys.executable, "tools/publish_results.py", workdir, destination],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        f"error: {destination} holds other results, of commit an-earlier-commit; pass --replace "
        "to overwrite them."]


def test_a_long_comparison_reports_as_it_goes_on_the_models_trained_so_far(tmp_path, monkeypatch):
    # The stage's order of work, with training and the report stood in for: minutes of
    # training per model on a clock of the test's own; an earlier run trained supcon and robust.
    import types

    from configs import demo
    from stages import compare as compare_stage

    minutes = {"baseline": 40, "supcon": 0, "supcon_margin": 31, "robust": 0}
    clock, reports = [0.0], []

    def summary(workdir, stage):
        return os.path.join(workdir, stage, "summary.json")

    def train(config, workdir, stage):
        arm = os.path.basename(workdir)
        clock[0] += 60 * minutes[arm]
        if minutes[arm] or not os.path.exists(summary(workdir, stage)):
            os.makedirs(os.path.dirname(summary(workdir, stage)), exist_ok=True)
            with open(summary(workdir, stage), "w") as f:
                json.dump({"inputs": {"arm": arm}, "seconds": 60 * minutes[arm]}, f)
        return {"inputs": {"arm": arm}}

    monkeypatch.setattr(compare_stage.train, "train", train)
    monkeypatch.setattr(compare_stage.train, "finished",
                        lambda config, workdir, stage: os.path.exists(summary(workdir, stage)))
    monkeypatch.setattr(compare_stage, "time", types.SimpleNamespace(time=lambda: clock[0]))
    monkeypatch.setattr(compare_stage, "report_on", lambda config, workdir, record, chosen: reports.append(
        [arm for arm, _, _ in chosen]) or len(chosen))
    config = demo.get_config("smoke")
    earlier = {"supcon": "pretrain", "robust": "pretrain"}
    for arm, stage in earlier.items():
        train(config, str(tmp_path / arm), stage)
    with open(tmp_path / "compare.json", "w") as f:
        json.dump({"arms": {arm: {"stage": stage} for arm, stage in earlier.items()}}, f)
    assert compare_stage.run(config, str(tmp_path)) == 4
    # After baseline (40 minutes): it and the two models the earlier run trained; after
    # supcon_margin (31) every model is trained, so the final report on all four comes next,
    # once. Models that took this run no time to train are not reported on by themselves.
    assert reports == [["baseline", "supcon", "robust"], ["baseline", "supcon", "supcon_margin", "robust"]]


def test_pairs_are_judged_on_every_seed_both_models_have_and_pooled():
    from stages import compare as compare_stage

    def rows(model, clean, pgd):
        return [{"model": model, "attack": "clean", "epsilon": 0.0, "accuracy": clean, "n": 1000},
                {"model": model, "attack": "pgd", "epsilon": 8 / 255, "accuracy": pgd, "n": 1000}]

    table = (rows("at_ce", 0.70, 0.38) + rows("at_supcon", 0.71, 0.40) + rows("at_ce_long", 0.72, 0.39)
             + rows("at_ce_seed1", 0.69, 0.37) + rows("at_supcon_seed1", 0.70, 0.41))
    groups = compare_stage.judge(("at_supcon - at_ce", "at_supcon - at_ce_long"), table, {}, seed=0)
    # at_ce has both seeds, at_ce_long only seed 0: two groups, each with its own seeds.
    assert [(g[0]["method"], list(g[0]["differences"]), g[0]["seeds"]) for g in groups] == [
        ("at_supcon", ["at_ce"], [0, 1]), ("at_supcon", ["at_ce_long"], [0])]
    pooled = groups[0][1]["differences"]["at_ce"]
    assert pooled["difference"] == pytest.approx(((0.40 - 0.38) + (0.41 - 0.37)) / 2)
    assert groups[1][1]["differences"]["at_ce_long"]["difference"] == pytest.approx(0.01)
    # A pair whose models were not both evaluated is left out.
    assert compare_stage.judge(("at_supcon - missing",), table, {}, seed=0) == []


def test_the_robust_experiment_trains_each_arm_once_before_any_again_and_judges_its_arms_only():
    from configs import arms, robust_photos, schema

    config = schema.validate(robust_photos.get_config())
    order = [name for name, _, _ in arms.compared(config)]
    seed0 = ["at_ce", "at_ce_long", "at_supcon", "at_supcon_margin"]
    follow_ups = ["at_ce_half_width", "at_supcon_margin_keepable"]
    assert order[:4] == seed0 and order[7:] == follow_ups
    assert sorted(order[4:7]) == ["at_ce_seed1", "at_supcon_margin_seed1", "at_supcon_seed1"]
    stage, changes = dict((n, (s, c)) for n, s, c in arms.compared(config))["at_supcon_seed1"]
    assert stage == "pretrain" and changes == {"loss.margin_weight": 0.0, "seed": 1}
    assert [name for name, _, _ in arms.compared(robust_photos.get_config("seed0"))] == seed0 + follow_ups
    assert dict((n, c) for n, _, c in arms.compared(config))["at_ce_long"] == {"train.epochs": 64}
    assert dict((n, c) for n, _, c in arms.compared(config))["at_ce_half_width"] == {"model.width": 0.5}
    # Every pair names two of the arms.
    for pair in config.compare.pairs:
        assert set(arms.parse_pair(pair)) <= set(order)
    assert arms.seed_replica("at_supcon_margin_seed1") == ("at_supcon_margin", 1)
    assert arms.seed_replica("at_ce") == ("at_ce", None)
    # The paper's three come first by default.
    from configs import demo
    assert [n for n, _, _ in arms.compared(demo.get_config())] == ["baseline", "supcon", "supcon_margin", "robust"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
