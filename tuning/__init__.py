"""The Keras Tuner search behind stage `tune` (stages/tune.py).

- `space`: the loss fields a trial sets, each margin form with its own range.
- `hypermodel`: one trial: build pretrain's model with the trial's loss, train it through
  the fit seam, score it by robust accuracy on the validation split.
- `tuner`: the oracle, the tuner (each trial in the core's run context), one process's
  share of the search, the chief/worker roles.
- `process`: a fresh process per trial, since memory grows across trials in one.
- `report`: summary.json, summary.md, objective.png and best_config.py.
"""
