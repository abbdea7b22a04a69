"""An AutoAttack-like evaluation with ART's attacks: APGD-CE, APGD-DLR and Square.

Feature-clustering defences have a history of looking robust under FGSM and PGD and
falling under AutoAttack (Croce and Hein, 2020). No maintained TensorFlow AutoAttack
installs from PyPI, so this wraps the Adversarial Robustness Toolbox (ART 1.20.1)
instead of re-implementing the attacks:

- APGD-CE: `art.attacks.evasion.AutoProjectedGradientDescent`, cross-entropy loss;
- APGD-DLR: the same attack on the difference-of-logits-ratio loss, which is invariant to
  the scale of the logits (so saturated softmaxes do not stop it);
- Square: `art.attacks.evasion.SquareAttack`, random search that uses no gradient at all.

They run in AutoAttack's manner: L-infinity, epsilon in [0, 1] pixel units, true labels,
and each attack only on the images still correctly classified after the clean pass and
every attack before it; `StrongResult.correct[name]` is, per image, "still correct after
this attack and all before it", so the last one is the robust accuracy.

It is *not* AutoAttack, and tables must call it "AutoAttack-like (ART)" (`StrongResult.name`):
AutoAttack's standard version runs APGD-CE, targeted APGD-DLR over 9 classes, targeted
FAB and Square with 5,000 queries; ART's own `AutoAttack` class runs APGD-CE, APGD-DLR,
DeepFool and Square, and its targeted mode attacks every class. Besides, ART's Square
draws one square (position and per-channel signs) per iteration for the whole batch, where
the reference implementation draws one per image.

Defaults and why:

- `apgd_steps=100`, `apgd_restarts=1`: AutoAttack's standard APGD budget.
- APGD's step size starts at 2 * epsilon, as in Croce and Hein's APGD (it then halves
  itself at checkpoints); ART's default would be 0.1 whatever epsilon is.
- `square_queries=1000` (ART's `max_iter`; one proposal per image per iteration): ART's
  Square asks for 3 forward passes per iteration (the reference makes 1); `InferenceModel`'s
  row cache answers two of them from the logits it already computed, so each query costs
  one forward pass of the proposals (3.2 times fewer images through the network and 3.1
  times faster on the tests' small CNN; `bench/strong_attack_bench.py` measures it at
  width 1/4 as `square_row_cache_speedup`). Before the cache, the bench measured 1.8 s per
  query per 100 still-robust CIFAR images at width 1/4 on the busy 2-core build machine
  (this process got 18% of the cores), roughly 0.3-0.4 s on an idle one. ART scales
  Square's schedule of square sizes to `max_iter`, so 1,000 queries still run the whole
  coarse-to-fine schedule.
  Raise it to 5,000 for a final claim. `p_init=0.8` is AutoAttack's value for L-infinity.
- `dlr_loss="vectorized"`: ART's TensorFlow DLR loss loops over the batch in Python with
  eager ops, twice per APGD step (the loss, then the loss with its gradient): in the
  bench, 0.43 s and 0.74 s per call on 100 images against 0.17 s for the vectorized loss
  with its gradient, and an APGD-DLR step took 4.1 s with ART's loss, 1.9 s with ours.
  `"vectorized"` gives ART's APGD (through its `loss_type=None` path) the same formula
  written with batched gathers: same values and gradients (tests/strong_attacks_test.py
  compares them). `"art"` uses ART's own loss.
- `jit_compile=True`: the network ART is given (`InferenceModel`) runs as `tf.function`s
  compiled with XLA, as `attacks.evaluate` does, batches padded to a few sizes so that
  XLA compiles a few shapes only. ART takes gradients with an eager `tf.GradientTape`
  around the network and the loss, which costs about 2.5 times a gradient compiled in
  one piece; `InferenceModel` makes the network a `tf.custom_gradient` whose backward
  pass is one compiled forward + vector-Jacobian-product function, and reuses the logits
  of the previous call when ART asks again for the same images (APGD computes the loss
  at a point, then its gradient there at the next step). An APGD-CE step then cost 1.3
  (CPU seconds, quiet moment) to 1.6 (wall, busy machine) PGD steps, against 2.8 with ART's
  tape around the XLA-compiled network and 3.6 around the plain one (CPU seconds).

The network is always run in inference mode: ART calls `model(x, training=False)`
already, but the wrapper ignores whatever `training` it is given and forces False, so
BatchNorm uses its moving statistics and dropout is off. Randomness (APGD's random
start, Square's squares) comes from numpy's global RNG inside ART; it is seeded from
`settings.seed` for each attack and numpy's and Python's global RNG states are restored
afterwards, so a run is repeatable (for the same batch size) and leaves no global state
behind. ART's progress bars (tqdm, on stderr) and TensorFlow's retracing warnings are
silenced unless `verbose=True`. Importing ART has side effects this module undoes
(a log handler on the logger named "tests") or cannot (ART creates ~/.art/config.json).
"""

import contextlib
import dataclasses
import logging
import random
import time
import warnings

import numpy as np
import tensorflow as tf

from attacks.fgsm import check_epsilon

ATTACKS = ("apgd-ce", "apgd-dlr", "square")
_DISPLAY = {"apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR", "square": "Square"}


@dataclasses.dataclass
class StrongSettings:
    """Which of ATTACKS to run, in order, and their budgets (see the module docstring)."""

    attacks: tuple = ATTACKS
    apgd_steps: int = 100
    apgd_restarts: int = 1
    apgd_step_size: float = None  # initial step in [0, 1] pixel units; None: 2 * epsilon
    square_queries: int = 1000  # ART's SquareAttack max_iter
    square_p_init: float = 0.8
    square_restarts: int = 1
    dlr_loss: str = "vectorized"  # or "art": ART's own (eager, per-image loop) DLR loss
    batch_size: int = 128
    seed: int = 0
    jit_compile: bool = True

    def __post_init__(self):
        self.attacks = tuple(self.attacks)
        unknown = [name for name in self.attacks if name not in ATTACKS]
        if unknown or not self.attacks or len(set(self.attacks)) != len(self.attacks):
            raise ValueError(f"attacks={self.attacks}: give each of {ATTACKS} at most once, at least one.")
        for field in ("apgd_steps", "apgd_restarts", "square_queries", "square_restarts", "batch_size"):
            if int(getattr(self, field)) < 1:
                raise ValueError(f"{field}={getattr(self, field)}: must be >= 1.")
        if not 0.0 < self.square_p_init <= 1.0:
            raise ValueError(f"square_p_init={self.square_p_init}: must be in (0, 1].")
        if self.apgd_step_size is not None and self.apgd_step_size <= 0:
            raise ValueError(f"apgd_step_size={self.apgd_step_size}: must be > 0 (or None).")
        if self.dlr_loss not in ("vectorized", "art"):
            raise ValueError(f"dlr_loss={self.dlr_loss!r}: must be 'vectorized' or 'art'.")

    def to_dict(self):
        """The settings as JSON-able values."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}


def display_name(attacks):
    """The name for tables, e.g. "aa-like (ART: APGD-CE, APGD-DLR, Square)"."""
    return "aa-like (ART: " + ", ".join(_DISPLAY[name] for name in attacks) + ")"


@dataclasses.dataclass
class StrongResult:
    """What `strong_attack` found, per image and per attack.

    clean_correct: bool [N], the model's clean predictions equal the labels.
    correct: {attack: bool [N]} in the order run, "still correct after this attack and
        every one before it" (so each implies the one before, and clean_correct).
    adversarial: float32 [N, H, W, C]: for each image broken, the image that broke it;
        for the others, the last attack's final image (the clean image if no attack ran
        on it, i.e. if it was misclassified clean).
    attacked: {attack: number of images it ran on}.
    seconds: {attack: wall seconds}, and "clean" for the clean pass.
    """

    name: str
    epsilon: float
    clean_correct: np.ndarray
    correct: dict
    adversarial: np.ndarray
    attacked: dict
    seconds: dict
    settings: dict

    @property
    def robust_correct(self):
        """bool [N]: correct after every attack."""
        return self.correct[list(self.correct)[-1]] if self.correct else self.clean_correct

    def accuracy(self, attack=None):
        """Accuracy after `attack` (and those before it); "clean"; None: after all of them."""
        flags = (self.clean_correct if attack == "clean" else
                 self.robust_correct if attack is None else self.correct[attack])
        return float(np.mean(flags)) if len(flags) else float("nan")

    def to_dict(self):
        """A JSON-able summary: accuracies, image counts, seconds, settings."""
        return {"name": self.name, "epsilon": self.epsilon, "n": int(len(self.clean_correct)),
                "clean_accuracy": self.accuracy("clean"),
                "accuracy": {name: self.accuracy(name) for name in self.correct},
                "robust_accuracy": self.accuracy(),
                "attacked": dict(self.attacked), "seconds": dict(self.seconds),
                "settings": dict(self.settings)}


class InferenceModel:
    """The callable ART is given: float32 images -> logits, always in inference mode.

    ART differentiates it eagerly (a `tf.GradientTape` around `model(x)` and the loss),
    which on a CPU costs about twice a gradient compiled in one piece. So, in eager mode,
    the call is a `tf.custom_gradient` whose backward pass is one compiled function (the
    network's forward and vector-Jacobian product, XLA by default), and the logits of the
    last eager call are kept: APGD computes the loss at a point and then, next step, its
    gradient at the same point, and the second forward pass is then skipped (the cache is
    keyed by the exact image values, so it cannot return another input's logits).

    With XLA, a batch is padded with zero images to the next power of two (at most
    `batch_size`, the size `strong_attack` hands ART) so that XLA compiles a few shapes,
    not one per batch size ART happens to ask for (Square's shrinks as images break); the
    padding's outputs are dropped. Each size is compiled when first met, a forward pass
    and a gradient, several CPU-seconds each at width 1/4; to pay that once for several
    calls (several epsilons), build one `InferenceModel(model, image_shape,
    settings.jit_compile, settings.batch_size)` and pass it as the model.
    """

    def __init__(self, model, image_shape, jit_compile=True, batch_size=128, fast_gradient=True,
                 row_cache=True):
        self.model = model
        self.image_shape = tuple(image_shape)
        self.jit_compile = jit_compile
        self.fast_gradient = fast_gradient
        self.batch_size = int(batch_size)
        self.cache = None  # (images as numpy, logits) of the last eager call
        self.row_cache = row_cache
        self.rows = {}  # image bytes -> (logits [K] numpy, call number): see `predict_logits`
        self.calls = 0
        self.rows_computed = 0  # images that went through the network in `predict_logits`
        spec = tf.TensorSpec([None, *image_shape], tf.float32)
        self._forward = tf.function(lambda x: tf.cast(model(x, training=False), tf.float32),
                                    input_signature=[spec], jit_compile=jit_compile, reduce_retracing=True)

        def vjp(x, upstream):
            with tf.GradientTape() as tape:
                tape.watch(x)
                logits = tf.cast(model(x, training=False), tf.float32)
            return tape.gradient(logits, x, output_gradients=upstream)

        self._vjp = tf.function(vjp, input_signature=[spec, tf.TensorSpec([None, None], tf.float32)],
                                jit_compile=jit_compile, reduce_retracing=True)

    def _size(self, count):
        """The batch size compiled for `count` images (a tensor): `count` without XLA."""
        if not self.jit_compile:
            return count
        power = tf.cast(tf.round(2.0 ** tf.math.ceil(
            tf.math.log(tf.cast(tf.maximum(count, 1), tf.float32)) / np.log(2.0))), tf.int32)
        return tf.maximum(tf.minimum(power, self.batch_size), count)

    @staticmethod
    def _pad(x, size):
        """x with zero rows appended up to `size` rows."""
        return tf.pad(x, [[0, size - tf.shape(x)[0]]] + [[0, 0]] * (len(x.shape) - 1))

    def forward(self, x):
        """Logits, not differentiable by a tape around the call (predictions only)."""
        x = tf.cast(x, tf.float32)
        if not self.jit_compile:
            return self._forward(x)
        count = tf.shape(x)[0]
        return self._forward(self._pad(x, self._size(count)))[:count]

    def predict_logits(self, x):
        """Logits [N, K] (numpy) of numpy images, each image computed once over the last few calls.

        ART's Square asks, each iteration, for the logits of its current images (to find
        those still correct), then of the still-correct ones (the margin before the
        proposal), then of the proposals: the first two were all computed in the two
        calls before. Rows are looked up by their exact bytes among the images of the last
        `ROW_GENERATIONS` calls, so only the proposals go through the network: one forward
        pass an iteration instead of three, as in the reference Square. The logits are the
        network's for that image, computed once (within a batch of another size they may
        differ in the last bits of float32, as any two batchings may).
        """
        x = np.ascontiguousarray(x, np.float32)
        if not self.row_cache:
            self.rows_computed += len(x)
            return self.forward(tf.constant(x)).numpy()
        self.calls += 1
        keys = [row.tobytes() for row in x]
        found = [self.rows.get(key) for key in keys]
        missing = [index for index, hit in enumerate(found) if hit is None]
        logits = np.empty((len(x), 0), np.float32)
        if missing:
            computed = self.forward(tf.constant(x[missing])).numpy()
            self.rows_computed += len(missing)
            for index, row in zip(missing, computed):
                found[index] = (row, self.calls)
        if found:
            logits = np.stack([hit[0] for hit in found])
        for key, hit in zip(keys, found):
            self.rows[key] = (hit[0], self.calls)
        oldest = self.calls - self.ROW_GENERATIONS
        if len(self.rows) > 2 * self.ROW_GENERATIONS * max(len(x), 1):
            self.rows = {key: hit for key, hit in self.rows.items() if hit[1] > oldest}
        return logits

    ROW_GENERATIONS = 3

    def __call__(self, x, training=None):  # `training` is ignored: always inference.
        del training
        x = tf.cast(x, tf.float32)
        if not (self.fast_gradient and tf.executing_eagerly()):
            return self.forward(x)
        return self._differentiable(x)

    @tf.custom_gradient
    def _differentiable(self, x):
        values = x.numpy()
        if (self.cache is not None and self.cache[0].shape == values.shape
                and np.array_equal(self.cache[0], values)):
            logits = self.cache[1]
        else:
            logits = self.forward(x)
            self.cache = (values, logits)

        def gradient(upstream, variables=None):
            count = tf.shape(x)[0]
            size = self._size(count)
            result = self._vjp(self._pad(x, size), self._pad(tf.cast(upstream, tf.float32), size))[:count]
            return result, [None] * len(variables or [])

        return logits, gradient

    def predict(self, x, batch_size):
        """Argmax predictions [N] (int) for numpy images, in batches."""
        return np.concatenate([np.argmax(self.forward(tf.constant(x[start:start + batch_size])).numpy(), axis=-1)
                               for start in range(0, len(x), batch_size)] or [np.zeros(0, int)])


class DifferenceLogitsRatio:
    """ART's TensorFlow DLR loss (the same formula and gradient), with batched gathers.

        DLR = -(z_y - z_i) / (z_1 - z_3)

    z sorted by ART's `tf.argsort` (ascending), z_1 the largest logit, z_3 the third
    largest, z_y the true class's, z_i the largest other than the true class (z_1 unless
    it is the true class, then z_2). Like ART's, it has no guard against z_1 == z_3.
    Labels one-hot [B, K]; `reduction` is what ART's `compute_loss` sets: "none",
    "mean"/"sum_over_batch_size" or "sum".
    """

    def __init__(self):
        self.reduction = "mean"

    def __call__(self, y_true, y_pred, *args, **kwargs):
        y_pred = tf.convert_to_tensor(y_pred)
        true = tf.cast(tf.math.argmax(tf.cast(y_true, tf.int32), axis=1), tf.int32)
        order = tf.argsort(y_pred, axis=1)
        top, second, third = order[:, -1], order[:, -2], order[:, -3]
        other = tf.where(top != true, top, second)
        z_1 = tf.gather(y_pred, top, axis=1, batch_dims=1)
        z_3 = tf.gather(y_pred, third, axis=1, batch_dims=1)
        z_i = tf.gather(y_pred, other, axis=1, batch_dims=1)
        z_y = tf.gather(y_pred, true, axis=1, batch_dims=1)
        dlr = -(z_y - z_i) / (z_1 - z_3)
        if self.reduction in ("mean", "sum_over_batch_size"):
            return tf.reduce_mean(dlr)
        if self.reduction == "sum":
            return tf.reduce_sum(dlr)
        if self.reduction == "none":
            return dlr
        raise NotImplementedError(f"reduction={self.reduction!r}")


_ART = {}


def _art():
    """ART's classes, imported once, without the side effects its import leaves in logging.

    `import art` calls logging.config.dictConfig, which gives the logger named "tests" a
    stream handler at INFO level (ART's own test setup); that logger is put back as it
    was. Its PyTorch-not-found warning is silenced.
    """
    if not _ART:
        tests_logger = logging.getLogger("tests")
        saved = (list(tests_logger.handlers), tests_logger.level, tests_logger.propagate)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from art.attacks.evasion import AutoProjectedGradientDescent
            from art.attacks.evasion import SquareAttack
            from art.estimators.classification import TensorFlowV2Classifier
        tests_logger.handlers[:] = saved[0]
        tests_logger.setLevel(saved[1])
        tests_logger.propagate = saved[2]
        _ART.update(apgd=AutoProjectedGradientDescent, square=SquareAttack,
                    classifier=TensorFlowV2Classifier)
    return _ART


@contextlib.contextmanager
def _quiet(verbose):
    """Silences TensorFlow's log warnings (retracing) and Python warnings while ART runs."""
    if verbose:
        yield
        return
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _seeded(seed):
    """numpy's and Python's global RNGs seeded with `seed` inside, restored on the way out."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    np.random.seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def _attack_seed(seed, index):
    """A 32-bit seed for the attack at `index`, from the settings' seed."""
    return int(np.random.SeedSequence([int(seed), index]).generate_state(1)[0])


def _eager_forward(estimator):
    """Makes ART's `predict` call the network's forward pass directly, not in a `tf.function` of its own.

    ART wraps every prediction in a `tf.function` of its own, one per estimator (and APGD
    builds a new estimator for its loss); calling the XLA-compiled network from inside it
    compiled the network again, for seconds, per estimator and batch size.
    """
    estimator._forward_pass = lambda network, x, training: tf.constant(network.predict_logits(np.asarray(x)))
    return estimator


def _classifier(network, nb_classes, input_shape, loss_object=None):
    return _eager_forward(_art()["classifier"](network, nb_classes=nb_classes, input_shape=input_shape,
                                               loss_object=loss_object, clip_values=(0.0, 1.0)))


def _make_attack(name, estimator, epsilon, settings, verbose):
    art = _art()
    if name == "square":
        return art["square"](estimator, norm=np.inf, eps=float(epsilon), max_iter=settings.square_queries,
                             p_init=settings.square_p_init, nb_restarts=settings.square_restarts,
                             batch_size=settings.batch_size, verbose=verbose)
    step = settings.apgd_step_size if settings.apgd_step_size is not None else 2.0 * epsilon
    common = dict(norm=np.inf, eps=float(epsilon), eps_step=float(step), max_iter=settings.apgd_steps,
                  targeted=False, nb_random_init=settings.apgd_restarts,
                  batch_size=settings.batch_size, verbose=verbose)
    if name == "apgd-dlr" and settings.dlr_loss == "vectorized":
        # ART's loss_type=None path: its APGD, with our estimator's loss as is.
        dlr_estimator = _classifier(estimator.model, estimator.nb_classes, estimator.input_shape,
                                    DifferenceLogitsRatio())
        return art["apgd"](dlr_estimator, loss_type=None, **common)
    loss_type = {"apgd-ce": "cross_entropy", "apgd-dlr": "difference_logits_ratio"}[name]
    attack = art["apgd"](estimator, loss_type=loss_type, **common)
    _eager_forward(attack.estimator)  # the estimator APGD built for its loss
    return attack


def strong_attack(model, images, labels, epsilon, settings=None, verbose=False):
    """Runs `settings.attacks` in turn, each on the images every earlier one left correct.

    Args:
        model: a keras.Model (or any callable taking `training=`) from float32 images
            [N, H, W, C] in [0, 1] to logits [N, K], K >= 3 for APGD-DLR; or an
            `InferenceModel` of one, to reuse its compiled functions across calls.
        images: float32 [N, H, W, C] in [0, 1].
        labels: int [N], the true classes.
        epsilon: L-infinity budget in [0, 1] pixel units; 0 runs no attack.
        settings: a StrongSettings; None gives the defaults.
        verbose: show ART's progress bars and TensorFlow's warnings.
    Returns:
        a StrongResult.
    """
    settings = settings if settings is not None else StrongSettings()
    check_epsilon(epsilon)
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(f"images {images.shape} and labels {labels.shape}: need [N, H, W, C] and [N].")
    if len(images) and (images.min() < 0.0 or images.max() > 1.0):
        raise ValueError("images must be in [0, 1].")
    if isinstance(model, InferenceModel):
        network = model
        if network.image_shape != tuple(images.shape[1:]) or network.jit_compile != settings.jit_compile:
            raise ValueError(f"the InferenceModel was built for images {network.image_shape} and "
                             f"jit_compile={network.jit_compile}; these are {images.shape[1:]} and "
                             f"{settings.jit_compile}.")
        network.cache, network.rows = None, {}  # The weights may have changed since its last call.
    else:
        network = InferenceModel(model, images.shape[1:], settings.jit_compile, settings.batch_size)
    adversarial = images.copy()
    seconds, correct, attacked = {}, {}, {}
    with _quiet(verbose):
        start = time.perf_counter()
        clean_correct = network.predict(images, settings.batch_size) == labels
        seconds["clean"] = time.perf_counter() - start
        still = clean_correct.copy()
        if epsilon > 0 and len(images):
            num_classes = int(network.forward(images[:1]).shape[-1])
            if "apgd-dlr" in settings.attacks and num_classes < 3:
                raise ValueError(f"APGD-DLR needs at least 3 classes; the model has {num_classes}.")
            estimator = _classifier(network, num_classes, tuple(images.shape[1:]))
        for index, name in enumerate(settings.attacks):
            start = time.perf_counter()
            todo = np.flatnonzero(still)
            attacked[name] = int(len(todo))
            if epsilon > 0 and len(todo):
                attack = _make_attack(name, estimator, epsilon, settings, verbose)
                with _seeded(_attack_seed(settings.seed, index)):
                    for first in range(0, len(todo), settings.batch_size):
                        chunk = todo[first:first + settings.batch_size]
                        result = np.asarray(attack.generate(images[chunk], labels[chunk]), np.float32)
                        fooled = network.predict(result, settings.batch_size) != labels[chunk]
                        # Broken images keep the image that broke them; the rest this attack's last try.
                        adversarial[chunk] = result
                        still[chunk[fooled]] = False
            correct[name] = still.copy()
            seconds[name] = time.perf_counter() - start
    return StrongResult(name=display_name(settings.attacks), epsilon=float(epsilon),
                        clean_correct=clean_correct, correct=correct, adversarial=adversarial,
                        attacked=attacked, seconds=seconds, settings=settings.to_dict())
