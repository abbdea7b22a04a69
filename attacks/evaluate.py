"""Robust accuracy of one model under one attack of the table at several epsilons.

`evaluate(model, images, labels, attack_name, settings)` runs, batch by batch, one clean
step (predictions, whether two forward passes agree, the input gradient of the
cross-entropy, which FGSM reuses for every epsilon, and how many images have an all-zero
gradient) and then the attack at each epsilon. It keeps, per epsilon, which images the
model still classifies correctly (so that the per-image worst case over attacks can be
taken later) and what the sanity checks (`attacks.sanity_checks`) need: how far any
adversarial image strayed from its original and from [0, 1].
"""

import base64
import dataclasses
import json
import time

import keras
import numpy as np
import tensorflow as tf

from attacks import table
from attacks.fgsm import check_epsilon
from attacks.fgsm import input_gradient
from models import precision


@dataclasses.dataclass
class AttackSettings:
    """Epsilons in [0, 1] pixel units; PGD's steps, step size (None: default) and restarts."""

    epsilons: tuple = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255)
    pgd_steps: int = 10
    pgd_step_size: float = None
    pgd_restarts: int = 1
    use_predictions: bool = False
    batch_size: int = 256
    seed: int = 0
    jit_compile: bool = True
    strong: dict = None  # StrongSettings fields for the "aa-like" attack (attacks.strong).
    # {attack name: epsilons} for the attacks run at their own epsilons, not `epsilons`.
    own_epsilons: dict = None

    def __post_init__(self):
        for epsilon in self.epsilons + sum(map(tuple, (self.own_epsilons or {}).values()), ()):
            check_epsilon(epsilon)
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}: must be >= 1.")

    @classmethod
    def from_config(cls, config):
        """The settings of config.attack (epsilons and step sizes out of 255 there)."""
        attack = config.attack
        return cls(
            epsilons=tuple(e / 255.0 for e in attack.epsilons), pgd_steps=attack.pgd_steps,
            pgd_step_size=attack.pgd_step_size / 255.0 if attack.pgd_step_size else None,
            pgd_restarts=attack.pgd_restarts, use_predictions=attack.use_predictions,
            batch_size=attack.batch_size, seed=config.seed,
            # XLA halves the attacks' time on a CPU with TensorFlow's own kernels; with oneDNN's
            # it was the slower one (width 1/4, 256 images, `make bench`: FGSM 0.58 s against
            # 0.47 s, clean 0.171 s against 0.156 s; PGD-10 6.8 s against 5.9 s, busy machine).
            jit_compile=precision.jit_compile(attack.jit_compile,
                                              on_cpu=precision.onednn_enabled() is False),
            strong={key: tuple(value) if isinstance(value, (list, tuple)) else value
                    for key, value in attack.strong.items()},
            own_epsilons=_own_epsilons(attack.get("own_epsilons", {})))

    def epsilons_of(self, attack_name):
        """The epsilons `attack_name` runs at: its own where it has them, else `epsilons`."""
        return tuple((self.own_epsilons or {}).get(attack_name, self.epsilons))

    def key(self, attack_name):
        """The settings that change `attack_name`'s result, as a JSON-able dict."""
        common = dict(epsilons=[float(e) for e in self.epsilons_of(attack_name)],
                      use_predictions=self.use_predictions,
                      batch_size=self.batch_size, seed=self.seed, jit_compile=self.jit_compile)
        own = {field: _plain(getattr(self, field)) for field in table.ATTACKS[attack_name].settings}
        return {**common, **own}


def _own_epsilons(by_field):
    """{attack name: epsilons in [0, 1]} of config.attack.own_epsilons (out of 255 there, keyed
    by the name with '-' spelt '_'), for the attacks that have some."""
    found = {name: tuple(by_field.get(name.replace("-", "_"), ())) for name in table.ATTACKS}
    return {name: tuple(e / 255.0 for e in epsilons) for name, epsilons in found.items() if epsilons}


def _plain(value):
    """Tuples as lists, so that a key compares equal to itself read back from JSON."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


@dataclasses.dataclass
class Batch:
    """What the evaluator computed for one batch, handed to the attack (see attacks.table)."""

    gradient: tf.Tensor
    seed: tf.Tensor
    clean_correct: np.ndarray


@dataclasses.dataclass
class Evaluation:
    """One model under one attack: which images stay correct, and the diagnostics.

    `indices` [N] says which images of the evaluated set these are (all of them, or a
    seeded subset for a slow attack), so that attacks run on different subsets can be
    compared image by image on the images they share.
    """

    attack: str
    clean: np.ndarray  # bool [N]: correct on the clean image
    correct: dict  # epsilon -> bool [N]: correct on the adversarial image
    max_ball_excess: float = 0.0  # max over images of |x_adv - x|_inf - epsilon
    min_pixel: float = 0.0
    max_pixel: float = 1.0
    deterministic: bool = True
    zero_gradient_images: int = 0
    seconds: float = 0.0
    indices: np.ndarray = None

    def __post_init__(self):
        if self.indices is None:
            self.indices = np.arange(len(self.clean))
        self.indices = np.asarray(self.indices, np.int64)

    @property
    def n(self):
        return int(len(self.clean))

    def on(self, indices):
        """Per epsilon, the correct-masks of the images `indices` (a subset of self.indices)."""
        positions = np.searchsorted(self.indices, indices)
        return {epsilon: mask[positions] for epsilon, mask in self.correct.items()}

    def accuracy(self, epsilon=None):
        """Clean accuracy (epsilon None) or accuracy under the attack at `epsilon`."""
        mask = self.clean if epsilon is None else self.correct[epsilon]
        return float(mask.mean()) if self.n else float("nan")

    def to_record(self):
        """A JSON-able dict; masks as base64 of numpy.packbits."""
        return {"attack": self.attack, "n": self.n, "clean": _pack(self.clean),
                "correct": [[float(e), _pack(mask)] for e, mask in self.correct.items()],
                "max_ball_excess": self.max_ball_excess, "min_pixel": self.min_pixel,
                "max_pixel": self.max_pixel, "deterministic": self.deterministic,
                "zero_gradient_images": self.zero_gradient_images, "seconds": self.seconds,
                "indices": base64.b64encode(self.indices.astype(np.int32).tobytes()).decode("ascii")}

    @classmethod
    def from_record(cls, record):
        n = record["n"]
        return cls(record["attack"], _unpack(record["clean"], n),
                   {float(e): _unpack(mask, n) for e, mask in record["correct"]},
                   record["max_ball_excess"], record["min_pixel"], record["max_pixel"],
                   record["deterministic"], record["zero_gradient_images"], record["seconds"],
                   np.frombuffer(base64.b64decode(record["indices"]), np.int32))


def _pack(mask):
    return base64.b64encode(np.packbits(np.asarray(mask, bool)).tobytes()).decode("ascii")


def _unpack(text, n):
    bits = np.frombuffer(base64.b64decode(text), np.uint8)
    return np.unpackbits(bits)[:n].astype(bool)


def subset(count, total, seed):
    """Sorted indices of a seeded subset of `count` of `total` images (all when count is 0).

    Subsets of one seed are nested: the 1,000 images of a slow attack are among the 2,000
    of a faster one, so their per-image worst case covers all 1,000.
    """
    if not count or count >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng([seed, 7]).permutation(total)[:count])


class Progress:
    """An evaluation cut short: what `evaluate` has finished, kept in a file after every step.

    A slow attack (the AutoAttack-like cascade: about an hour per model on the build
    machine) must not start again from nothing after a kill. After each batch and epsilon,
    the partial Evaluation and the list of (batch start, epsilon) pairs done are written
    atomically to `path` with `key`; `evaluate` given the same file and key skips what is
    done. The attacks are seeded per batch and epsilon, so the resumed result equals the
    uninterrupted one. `write` is how the file is written (common.atomic_files.write_json).
    """

    def __init__(self, path, key, write):
        self.path, self.key, self.write = path, key, write

    def load(self, result):
        """The state saved for this key, restored into `result`: ({start: batch stats}, {(start, epsilon)})."""
        try:
            with open(self.path) as f:
                saved = json.load(f)
            if saved.get("key") != self.key:
                return {}, set()
            restored = Evaluation.from_record(saved["evaluation"])
        except (OSError, ValueError, KeyError, TypeError):
            return {}, set()  # None yet, or another evaluation's: start from the beginning.
        if restored.n != result.n or set(restored.correct) != set(result.correct):
            return {}, set()
        result.clean[:] = restored.clean
        for epsilon, mask in restored.correct.items():
            result.correct[epsilon][:] = mask
        result.max_ball_excess, result.min_pixel = restored.max_ball_excess, restored.min_pixel
        result.max_pixel, result.seconds = restored.max_pixel, restored.seconds
        batches = {int(start): stats for start, stats in saved["batches"].items()}
        return batches, {(int(start), float(epsilon)) for start, epsilon in saved["done"]}

    def save(self, result, batches, done):
        self.write(self.path, {"key": self.key, "evaluation": result.to_record(),
                               "batches": {str(start): stats for start, stats in batches.items()},
                               "done": sorted([start, epsilon] for start, epsilon in done)})


def _steps(model, attack_name, settings, image_shape, traced=None):
    """(clean_step, predict, attack) of `model` for these settings; kept in `traced` (a dict
    the caller owns) when given, so a model evaluated again reuses its traced steps."""
    steps = traced if traced is not None else {}
    key = (id(model), attack_name, repr(settings), tuple(image_shape))
    if key in steps:
        return steps[key]
    image_spec = tf.TensorSpec([None, *image_shape], tf.float32)

    # A fixed signature with an open batch size: one trace per model, also for the last,
    # smaller batch.
    @tf.function(input_signature=[image_spec, tf.TensorSpec([None], tf.int32)],
                 jit_compile=settings.jit_compile)
    def clean_step(x, labels):
        """Clean predictions, whether inference is deterministic, the input gradient, zero gradients."""
        logits = model(x, training=False)
        predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
        deterministic = tf.reduce_all(tf.equal(logits, model(x, training=False)))
        targets = predictions if settings.use_predictions else labels
        gradient, _ = input_gradient(model, x, targets)
        zero = tf.reduce_all(tf.equal(tf.reshape(gradient, [tf.shape(x)[0], -1]), 0.0), axis=1)
        return predictions, deterministic, gradient, tf.reduce_sum(tf.cast(zero, tf.int32))

    @tf.function(input_signature=[image_spec], jit_compile=settings.jit_compile)
    def predict(x):
        return tf.argmax(model(x, training=False), axis=-1, output_type=tf.int32)

    attack = table.ATTACKS[attack_name].builder()(model, settings, image_spec)
    steps[key] = (clean_step, predict, attack)
    return steps[key]


def evaluate(model, images, labels, attack_name, settings, progress=True, indices=None, resume=None,
             traced=None):
    """Evaluates `model` on float32 images [N, H, W, C] in [0, 1] and labels [N] under one attack.

    `indices` (sorted) restricts it to those images; the result keeps them. `resume`, a
    `Progress`, keeps the evaluation in progress in a file and carries on from it. `traced`,
    a dict the caller keeps, holds the traced steps for the next evaluation of `model`.
    """
    if indices is not None:
        images, labels = images[indices], np.asarray(labels)[indices]
    clean_step, predict, attack = _steps(model, attack_name, settings, images.shape[1:], traced)
    labels = np.asarray(labels, np.int32)
    epsilons = settings.epsilons_of(attack_name)
    result = Evaluation(attack_name, np.zeros(len(labels), bool),
                        {e: np.zeros(len(labels), bool) for e in epsilons})

    if indices is not None:
        result.indices = np.asarray(indices, np.int64)
    # Per batch start: {"zero": images with an all-zero gradient, "deterministic": bool}.
    batch_stats, done = resume.load(result) if resume else ({}, set())
    seconds_before = result.seconds
    if done and progress:
        print(f"carrying on from {resume.path}: {len(done)} of "
              f"{len(epsilons) * -(-len(labels) // settings.batch_size)} batch x epsilon steps done",
              flush=True)
    start_time = time.perf_counter()
    batches = range(0, len(labels), settings.batch_size)
    bar = keras.utils.Progbar(len(batches), unit_name="batch") if progress else None
    for index, start in enumerate(batches):
        end = min(start + settings.batch_size, len(labels))
        todo = [epsilon for epsilon in epsilons if (start, float(epsilon)) not in done]
        if todo or start not in batch_stats:
            x = tf.constant(images[start:end], tf.float32)
            y = tf.constant(labels[start:end])
            predictions, deterministic, gradient, zero = clean_step(x, y)
            clean_correct = predictions.numpy() == labels[start:end]
            result.clean[start:end] = clean_correct
            batch_stats[start] = {"zero": int(zero), "deterministic": bool(deterministic)}
            targets = predictions if settings.use_predictions else y
            batch = Batch(gradient, tf.constant([settings.seed, start], tf.int64), clean_correct)
        for epsilon in todo:
            adversarial = tf.convert_to_tensor(attack(x, targets, epsilon, batch), tf.float32)
            adversarial_predictions = predict(adversarial)
            result.correct[epsilon][start:end] = adversarial_predictions.numpy() == labels[start:end]
            distance = float(tf.reduce_max(tf.abs(adversarial - x)))
            result.max_ball_excess = max(result.max_ball_excess, distance - epsilon)
            result.min_pixel = min(result.min_pixel, float(tf.reduce_min(adversarial)))
            result.max_pixel = max(result.max_pixel, float(tf.reduce_max(adversarial)))
            done.add((start, float(epsilon)))
            if resume:
                result.seconds = seconds_before + time.perf_counter() - start_time
                resume.save(result, batch_stats, done)
        if bar:
            bar.update(index + 1)
    result.zero_gradient_images = sum(stats["zero"] for stats in batch_stats.values())
    result.deterministic = all(stats["deterministic"] for stats in batch_stats.values())
    result.seconds = seconds_before + time.perf_counter() - start_time
    return result


def common_indices(evaluations):
    """The images every evaluation in {name: Evaluation} covers, sorted."""
    return sorted(set.intersection(*(set(e.indices.tolist()) for e in evaluations.values())))


def worst_case(evaluations):
    """Per epsilon, whether each shared image survived every attack: {epsilon: bool [M]}.

    An image counts as robust only if every attack run on it failed. Computed on the
    images every attack covered (`common_indices`) and the epsilons every attack used.
    """
    shared = common_indices(evaluations)
    masks = [e.on(shared) for e in evaluations.values()]
    epsilons = set.intersection(*(set(m) for m in masks))
    return {epsilon: np.logical_and.reduce([m[epsilon] for m in masks]) for epsilon in sorted(epsilons)}
