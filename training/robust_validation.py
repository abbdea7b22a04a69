"""Robust validation: accuracy under an attack on held-out images, the one measurement of
robustness that training uses.

`measure(classifier, images, labels, attack, epsilon, settings)` is what both the tuner
scores a trial by and what `RobustValidation` logs after every epoch: the classifier
(images in [0, 1] -> logits) is attacked in float32 and inference mode, whatever the
training precision, with the attack stage's own code (`attacks.evaluate`).

`RobustValidation`, a Keras callback, follows Rice, Wong and Kolter (2020): robust accuracy
peaks and then falls while training accuracy rises (robust overfitting), so after each
epoch it runs PGD on a seeded 1,000 validation images, logs `val_robust_accuracy` (and
`val_clean_accuracy` of the same images) into the epoch's logs, so history.csv and
TensorBoard record them, and keeps the best epoch's model in OUT/best_model.keras beside
the last. Which epoch is best (`config.validation.keep`, `choose`):

- `one_se` (the default): the highest clean accuracy among the epochs whose robust accuracy
  is within one standard error of the highest, sqrt(p (1 - p) / n) for the highest p on n
  images (Breiman's one-standard-error rule). On 1,000 images that error is about 1.5
  points, so late epochs of a decaying schedule often measure a few tenths below an
  earlier one by chance alone, with several points more clean accuracy (a first AT + CE
  run, results/robust_photos/weight_decay.md: epoch 17 at 37.6% robust and 58.9% clean,
  epoch 25 at 37.5% and 61.3%);
- `most_robust`: the highest robust accuracy, the earliest epoch among equals.

Under `one_se` an epoch may be chosen after later ones have been measured, so the models
of the epochs that can still be chosen (those within one standard error of the highest so
far: a higher one later only removes epochs) are kept in OUT/candidates/ until they drop
out, and until training ends.

It also guards against catastrophic overfitting (Wong, Rice and Kolter, 2020: a
single-step adversarial training run collapses to 0% PGD accuracy within an epoch or
two): when the robust accuracy falls more than `collapse_drop` below its best, it prints
one warning line naming the epoch, records it, and, if `stop_on_collapse`, ends training
(the best model stays). What it found is in `record()` for the stage's summary.json, and in
OUT/best.json, from which a resumed run carries on.

That rule needs a best to fall from: a run that collapses in its first epochs, while the
best is still low, never drops 20 points. So under adversarial training with cross-entropy
on the adversarial images alone (`adversary_accuracy=True`: the epoch's training accuracy
is then the accuracy on the training adversary's images) it also watches the other sign of
the same failure: the model classifying the training adversary's images better than clean
held-out images, by more than MASKING_GAP. A real adversary cannot make images easier than
clean ones; a single-step one that has collapsed (or whose gradient the model has learnt to
mask) does. The training accuracy is a mean over the epoch, so it is held against the
higher of this epoch's and the last epoch's clean accuracy. Measured on the runs of
results/robust_photos (25 epochs each): AT + CE's largest excess was 2.3 points (epoch 2);
AT + SupCon + CE's 10.8 at epoch 8, where validation PGD-10 fell from 27.4% to 11.4% and
recovered; AT + SupCon + margin + CE's 12.2, 14.9 and 26.4 points at epochs 3-5 (76% on
its N-FGSM images at epoch 5 against 49% clean), while validation PGD-10 read 1.8%, 0.3%
and 19.4% after 10.1% at epoch 1, a collapse the 20-point rule cannot see. It warns (one
line per epoch, recorded as `masking`) and does not stop: a run may recover (that one did,
at epoch 12: 30.8% PGD-10), and the kept epoch is chosen by the validation attack anyway.
`masking_in_history` applies the same rule to a stage's history.csv afterwards.
"""

import dataclasses
import glob
import os
import shutil

import keras
import numpy as np

from attacks.evaluate import AttackSettings
from attacks.evaluate import evaluate
from attacks.evaluate import subset
from common import atomic_files
from models import precision
from report import tables
from training import fit

BEST_MODEL = "best_model.keras"
BEST_RECORD = "best.json"
CANDIDATES = "candidates"  # The models of the epochs `one_se` may still choose.
KEEP = ("one_se", "most_robust")
# Training adversary's accuracy above clean held-out accuracy by more than this: a warning.
MASKING_GAP = 0.10


def choosable(per_epoch, images, keep="one_se"):
    """The epochs of `per_epoch` ([{epoch, robust_accuracy, clean_accuracy}]) that `keep`
    chooses from: those within one standard error of the highest robust accuracy on
    `images` images (`one_se`), or the earliest with the highest (`most_robust`)."""
    if not per_epoch:
        return []
    top = max(e["robust_accuracy"] for e in per_epoch)
    if keep == "most_robust":
        return [next(e for e in per_epoch if e["robust_accuracy"] == top)]
    error = tables.standard_error(top, images) if images else 0.0
    return [e for e in per_epoch if e["robust_accuracy"] >= top - error - 1e-12]


def choose(per_epoch, images, keep="one_se"):
    """The epoch kept: the highest clean accuracy among `choosable`'s, then the highest
    robust accuracy, then the earliest; None for no epochs."""
    epochs = choosable(per_epoch, images, keep)
    return max(epochs, key=lambda e: (e["clean_accuracy"], e["robust_accuracy"], -e["epoch"]),
               default=None)


def model_file(out, use="best"):
    """The model a later stage takes from a training stage's folder `out`: its best epoch's
    (`use="best"`, where robust validation kept one) or its last."""
    best = os.path.join(out, BEST_MODEL)
    return best if use == "best" and os.path.exists(best) else os.path.join(out, "model.keras")


def describe_choice(out, use="best"):
    """One phrase for results: which model of `out` was taken, and why."""
    record = atomic_files.read_json(os.path.join(out, BEST_RECORD))
    if model_file(out, use).endswith(BEST_MODEL) and record:
        best = record["best"]
        rule = ("" if record.get("keep", "most_robust") == "most_robust" else
                f", the most accurate of those within one standard error of the most robust")
        return (f"best epoch {best['epoch']} of {len(record.get('per_epoch', []))} by validation "
                f"{record['attack'].upper()} at {record['epsilon_255']:g}/255 "
                f"({100 * best['robust_accuracy']:.1f}% of {record['images']} images, "
                f"{100 * best['clean_accuracy']:.1f}% clean{rule})")
    return "last epoch"


def measure(classifier, images, labels, attack, epsilon, settings, traced=None):
    """(clean accuracy, accuracy under `attack` at `epsilon`) of `classifier` on float32
    images in [0, 1]; `epsilon` in [0, 1] pixel units, `settings` an AttackSettings (its
    epsilons are replaced by this one); `traced` as `attacks.evaluate.evaluate` takes it."""
    settings = dataclasses.replace(settings, epsilons=(float(epsilon),), own_epsilons=None)
    evaluation = evaluate(classifier, images, np.asarray(labels), attack, settings, progress=False,
                          traced=traced)
    return evaluation.accuracy(), evaluation.accuracy(settings.epsilons[0])


def adversary_sign(current, previous, training_accuracy):
    """The epoch `current` ({epoch, robust_accuracy, clean_accuracy}) as a masking sign, or
    None: its training accuracy on the adversary's images above the higher of its own and
    the `previous` epoch's clean validation accuracy by more than MASKING_GAP."""
    if training_accuracy is None:
        return None
    clean = max(current["clean_accuracy"], previous["clean_accuracy"] if previous else 0.0)
    if float(training_accuracy) <= clean + MASKING_GAP:
        return None
    return dict(current, training_adversary_accuracy=float(training_accuracy))


def masking_in_history(out):
    """The masking signs (`adversary_sign`) of every epoch OUT/history.csv logged with its
    training accuracy and robust validation, read back from the log, so that epochs trained
    before the callback watched the adversary count too. For a stage whose training accuracy
    is on its adversary's images alone (the callback's `adversary_accuracy`)."""
    signs, previous = [], None
    for epoch, row in sorted(fit.history(out).items()):
        try:
            current = {"epoch": epoch, "robust_accuracy": float(row["val_robust_accuracy"]),
                       "clean_accuracy": float(row["val_clean_accuracy"])}
            training_accuracy = float(row["accuracy"])
        except (KeyError, TypeError, ValueError):
            previous = None  # An epoch logged without them: no comparison across it.
            continue
        sign = adversary_sign(current, previous, training_accuracy)
        if sign:
            signs.append(sign)
        previous = current
    return signs


def held_out(split, count, seed):
    """A seeded `count` (0: all) of a split's images as float32 in [0, 1], and their labels."""
    indices = subset(count, len(split.labels), seed)
    return split.images[indices].astype(np.float32) / 255.0, np.asarray(split.labels)[indices]


def settings_for(config):
    """The AttackSettings of config.validation's attack (PGD steps; XLA as the attack stage)."""
    validation = config.validation
    return dataclasses.replace(
        AttackSettings.from_config(config), pgd_steps=validation.steps, pgd_step_size=None,
        pgd_restarts=1, use_predictions=False, batch_size=validation.batch_size)


class RobustValidation(keras.callbacks.Callback):
    """After each epoch: robust accuracy on held-out images, the best model, the collapse guard.

    Args:
        images, labels: the held-out images (float32 in [0, 1]) and labels.
        attack: a name of `attacks.table` ("pgd").
        epsilon: in [0, 1] pixel units.
        settings: AttackSettings for the attack.
        out: the stage's folder (None: keep nothing on disk, as in the tests).
        collapse_drop: in accuracy units (0.2 = 20 points).
        stop_on_collapse: end training at a collapse.
        write: whether this process writes files (under several workers only the chief).
        keep: which epoch is best, one of KEEP (`choose`).
        adversary_accuracy: the epoch's `accuracy` is on the training adversary's images
            alone (AT with CE on them, no TRADES), so it can be held against clean accuracy.
    """

    def __init__(self, images, labels, attack, epsilon, settings, out=None, collapse_drop=0.2,
                 stop_on_collapse=True, write=True, keep="one_se", adversary_accuracy=False):
        super().__init__()
        if keep not in KEEP:
            raise ValueError(f"keep={keep!r}: one of {KEEP}")
        self.images, self.labels = images, labels
        self.attack, self.epsilon, self.settings = attack, float(epsilon), settings
        self.out, self.write, self.keep = out, write, keep
        self.collapse_drop, self.stop_on_collapse = float(collapse_drop), bool(stop_on_collapse)
        self.best = {"epoch": None, "robust_accuracy": -1.0, "clean_accuracy": None}
        self.collapse = None
        self.adversary_accuracy = bool(adversary_accuracy)
        self.masking = []
        self.per_epoch = []
        self._copy = None
        self._traced = {}  # The attack's steps, traced once for the copy.
        if out is not None:
            saved = atomic_files.read_json(os.path.join(out, BEST_RECORD))
            if saved and os.path.exists(os.path.join(out, BEST_MODEL)):
                self.best = saved["best"]
                self.collapse = saved.get("collapse")
                self.masking = saved.get("masking", [])
                self.per_epoch = saved.get("per_epoch", [])

    def _classifier(self):
        """A float32 copy of the model's classifier, built once and given the weights each
        epoch, so the attack is traced once per run rather than once per epoch."""
        if self._copy is None:
            self._source = self.model.classifier_model(name="robust_validation")
            self._copy = precision.float32_copy(self._source)
        else:
            self._copy.set_weights(self._source.get_weights())
        return self._copy

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        classifier = self._classifier()
        clean, robust = measure(classifier, self.images, self.labels, self.attack, self.epsilon,
                                self.settings, self._traced)
        logs["val_robust_accuracy"] = robust
        logs["val_clean_accuracy"] = clean
        earlier = [e for e in self.per_epoch if e["epoch"] < epoch + 1]
        top = max(earlier, key=lambda e: e["robust_accuracy"], default=None)
        current = {"epoch": epoch + 1, "robust_accuracy": robust, "clean_accuracy": clean}
        self.per_epoch = earlier + [current]
        self._keep_best(classifier, current)
        if (self.collapse is None and top is not None
                and robust < top["robust_accuracy"] - self.collapse_drop):
            self.collapse = {"epoch": epoch + 1, "robust_accuracy": robust,
                             "best_epoch": self.best["epoch"],
                             "best_robust_accuracy": top["robust_accuracy"],
                             "stopped": self.stop_on_collapse}
            action = ("training stops; " if self.stop_on_collapse else "") + \
                f"the best model (epoch {self.best['epoch']}) is kept"
            print(f"WARNING: catastrophic overfitting at epoch {epoch + 1}: validation "
                  f"{self.attack.upper()} accuracy {100 * robust:.1f}% fell more than "
                  f"{100 * self.collapse_drop:.0f} points below its best, "
                  f"{100 * top['robust_accuracy']:.1f}% at epoch {top['epoch']}; "
                  f"{action}.", flush=True)
            if self.stop_on_collapse:
                self.model.stop_training = True
        self._watch_the_adversary(current, earlier[-1] if earlier else None, logs)
        if self.out is not None and self.write:
            atomic_files.write_json(os.path.join(self.out, BEST_RECORD), self.record())

    def _watch_the_adversary(self, current, previous, logs):
        """The training adversary's images classified better than clean held-out images: warn."""
        # An epoch trained again after a crash replaces what its first run found.
        self.masking = [m for m in self.masking if m["epoch"] < current["epoch"]]
        sign = adversary_sign(current, previous,
                              logs.get("accuracy") if self.adversary_accuracy else None)
        if sign is None:
            return
        self.masking.append(sign)
        print(f"WARNING: at epoch {sign['epoch']} the model classified "
              f"{100 * sign['training_adversary_accuracy']:.1f}% of its training adversary's "
              f"images and {100 * sign['clean_accuracy']:.1f}% of clean validation images "
              f"(validation {self.attack.upper()}: {100 * sign['robust_accuracy']:.1f}%): the "
              f"adversary has stopped being one (catastrophic overfitting or gradient masking); "
              f"training goes on and the kept epoch is chosen by the validation attack.", flush=True)

    def _candidate(self, epoch):
        return os.path.join(self.out, CANDIDATES, f"epoch-{epoch:04d}.keras")

    def _keep_best(self, classifier, current):
        """Chooses the best epoch so far (`choose`), keeps its model in OUT/best_model.keras
        and the models of the epochs still choosable in OUT/candidates/."""
        writes = self.out is not None and self.write
        images = len(self.labels)
        # An epoch whose model is not at hand (a run carried without OUT/candidates/) is not
        # chosen again, unless it is the one best_model.keras already holds.
        usable = [e for e in self.per_epoch if not writes or e is current
                  or e["epoch"] == self.best["epoch"] or os.path.exists(self._candidate(e["epoch"]))]
        still = {e["epoch"] for e in choosable(usable, images, self.keep)}
        chosen = choose(usable, images, self.keep)
        if writes:
            if current["epoch"] in still and self.keep == "one_se":
                atomic_files.save_model(classifier, self._candidate(current["epoch"]))
            if chosen["epoch"] != self.best["epoch"] or not os.path.exists(
                    os.path.join(self.out, BEST_MODEL)):
                best = os.path.join(self.out, BEST_MODEL)
                if os.path.exists(self._candidate(chosen["epoch"])):
                    atomic_files.link_or_copy(self._candidate(chosen["epoch"]), best)
                else:
                    atomic_files.save_model(classifier, best)  # The current epoch.
            for path in glob.glob(os.path.join(self.out, CANDIDATES, "epoch-*.keras")):
                if int(os.path.basename(path)[6:10]) not in still:
                    os.remove(path)
        self.best = dict(chosen)

    def on_train_end(self, logs=None):
        # Training ended (all its epochs, or stopped at a collapse): the choice is final, and
        # the candidates' models go. A crash skips this, so a resumed run still has them.
        if self.out is not None and self.write:
            shutil.rmtree(os.path.join(self.out, CANDIDATES), ignore_errors=True)

    def record(self):
        """What summary.json keeps of the robust validation."""
        return {"attack": self.attack, "epsilon_255": round(self.epsilon * 255, 3), "keep": self.keep,
                "images": int(len(self.labels)), "steps": getattr(self.settings, "pgd_steps", None),
                "best": self.best, "collapse": self.collapse, "masking": self.masking,
                "per_epoch": self.per_epoch}
