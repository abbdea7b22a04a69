"""What the AutoAttack-like evaluation (attacks/strong.py, ART) costs next to PGD-10.

A width-1/4 float32 ResNet-18 + linear classifier (32x32x3 images, 10 classes) with
random (untrained) weights, and the first 128 test images of the embedded sample (one
batch of the default size, so that no padding inflates the figures), with the network's
own clean predictions as labels, so that every image starts correct and every attack
has all of them to work on. Epsilon 8/255, `StrongSettings()` defaults
(APGD 100 steps, 1 restart; Square 1,000 queries; batch 128; XLA).

Figures, all in wall seconds per 100 images:

- pgd10: `attacks.pgd.pgd` with 10 steps and the forward pass that scores its images,
  one `tf.function` compiled with XLA, as `attacks.evaluate` runs it (median of rounds,
  after tracing: `timing.alternate` of it alone);
- standalone: each attack alone on all the images. APGD runs all its steps on every
  image whatever happens (ART stops early only when the loss of every image is exactly
  0), so its cost does not depend on the model; Square stops on each image once it is
  broken, so on this undefended network it is far cheaper than on a robust one;
- square_worst_case: Square where no image breaks (epsilon 1e-4, too small to flip
  anything), `square_probe_queries` queries, scaled linearly to the default queries: what
  each still-robust image costs Square on a robust model; and the same probe with
  `InferenceModel(row_cache=False)`, where ART's Square makes three forward passes per
  query instead of one (`square_row_cache_speedup`);
- cascade: the evaluation as run (each attack on what the earlier ones left): on an
  undefended network APGD-CE breaks everything and the later attacks have nothing to do;
  on a robust one the total approaches the sum of the standalone figures, with Square at
  its worst case;
- calls: where the time goes, one call on 100 images: a forward pass; a cross-entropy
  gradient as ART takes it (eager `tf.GradientTape` around the network and the loss)
  through the plain compiled network, through `InferenceModel`'s custom gradient, and
  the same when the forward pass is cached (as at each APGD step); ART's own DLR loss (a
  Python loop over the images, eager) alone and with its gradient, and the vectorized one,
  all timed in alternation (`timing.alternate`). An APGD step is one loss gradient and one
  forward pass (ART's `compute_loss`).

One `attacks.strong.InferenceModel` serves every run, compiled beforehand for every
padded batch size (`compile_seconds`, paid once per network), so that compiling is not
counted in the attacks' figures. APGD-DLR is also run with ART's own DLR loss for
`art_dlr_steps` steps, to give its cost per step. Run alone:
`.venv/bin/python bench/strong_attack_bench.py`: 50 minutes on the 2-core build machine
while other programs kept it busy (load average 10; this process got 18% of the cores),
so roughly 10 on an idle one, most of it Square (standalone and the worst-case probe).

Measured then (wall seconds per 100 images, CPU share 0.18, so several times what an
idle machine takes; the ratios are the figures to use): PGD-10 9.7 s; APGD-CE 154 s
(16x PGD-10, 1.5 s per step against 0.97 per PGD step); APGD-DLR 189 s (20x; 4.1 s per
step with ART's own DLR loss); Square alone 1,032 s (it left 4% of this random
network's images unbroken, so most images used many queries); Square with nothing
breaking 1.8 s per query, 1,779 s for 1,000; compiling 249 s once per network; the
cascade 138 s (APGD-CE broke every image); a robust model, where nothing breaks, about
2,100 s = 220x PGD-10, 84% of it Square. Per call on 100 images: forward 0.72 s, a
cross-entropy gradient through ART's eager tape 1.95 s, through the custom gradient
1.72 s, 1.24 s with the cached forward pass; ART's DLR loss 0.43 s, with its gradient
0.74 s; the vectorized one with its gradient 0.17 s.
"""

import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from attacks import strong
from attacks.pgd import pgd
from bench import timing
from bench import training_bench
from bench.training_bench import IMAGE_SHAPE
from bench.training_bench import NUM_CLASSES
from pipeline import datasets
from training.run_context import run_context

EPSILON = 8 / 255


def _per_100(seconds, count):
    return seconds * 100.0 / count


def _warm_up(network, batch_size):
    """Compiles the forward pass and the gradient for every padded batch size; returns seconds."""
    start = time.perf_counter()
    sizes = sorted({int(network._size(tf.constant(count))) for count in range(1, batch_size + 1)})
    for size in sizes:
        x = tf.zeros((size, *network.image_shape))
        network.forward(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = network(x)
        tape.gradient(logits, x)
    network.cache = None
    return time.perf_counter() - start


def _call_costs(model, images, labels, settings, rounds):
    """Seconds of one call of each piece ART's APGD runs per step, on these images."""
    fast = strong.InferenceModel(model, images.shape[1:], settings.jit_compile, settings.batch_size)
    tape_only = strong.InferenceModel(model, images.shape[1:], settings.jit_compile, settings.batch_size,
                                      fast_gradient=False)
    x = tf.constant(images)
    one_hot = tf.one_hot(labels, NUM_CLASSES)
    art_dlr = _arts_dlr_loss(fast)
    ours = strong.DifferenceLogitsRatio()
    ce = tf.keras.losses.CategoricalCrossentropy(from_logits=True)
    logits = fast.forward(x)

    def gradient(network, loss, cached):
        def run():
            if not cached:
                network.cache = None
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = loss(one_hot, network(x))
            return tape.gradient(value, x)
        return run

    def loss_with_gradient(loss):
        def run():
            with tf.GradientTape() as tape:
                tape.watch(logits)
                value = loss(one_hot, logits)
            return tape.gradient(value, logits)
        return run

    calls = {
        "forward": lambda: fast.forward(x),
        # What ART's loss_gradient costs: eager tape around the network and the loss.
        "ce_gradient_art_tape": gradient(tape_only, ce, False),
        "ce_gradient_custom": gradient(fast, ce, False),
        # fast's gradient calls leave x's forward pass in `fast.cache`: this one always finds it.
        "ce_gradient_custom_cached_forward": gradient(fast, ce, True),
        "dlr_art_loss": lambda: art_dlr(one_hot, logits),
        "dlr_art_loss_and_gradient": loss_with_gradient(art_dlr),
        "dlr_vectorized_loss_and_gradient": loss_with_gradient(ours),
    }
    timed = timing.alternate(calls, rounds, warmup=1)  # The warm-up traces and compiles.
    return {name: timed.seconds(name) for name in calls}


def _arts_dlr_loss(network):
    art = strong._art()
    classifier = art["classifier"](network, nb_classes=NUM_CLASSES, input_shape=IMAGE_SHAPE,
                                   clip_values=(0.0, 1.0))
    with strong._quiet(False):
        attack = art["apgd"](classifier, eps=EPSILON, eps_step=2 * EPSILON,
                             loss_type="difference_logits_ratio", verbose=False)
    return attack.estimator.loss_object


@run_context(0, "float32", clear_session=False)  # Restores the policy and seeds afterwards.
def run(width=0.25, count=128, rounds=3, square_probe_queries=100, art_dlr_steps=10, settings=None):
    """Seconds per 100 images of the strong evaluation, per attack and in total, and of PGD-10."""
    settings = settings or strong.StrongSettings()
    model = training_bench.classifier_network(width)
    test = datasets.load("sample").test
    images = (test.images[:count].astype(np.float32) / 255.0)
    # Random weights: the network's own predictions as labels, so every image starts correct.
    labels = np.argmax(model(images, training=False).numpy(), axis=-1)
    clock = timing.Stopwatch()

    x, y = tf.constant(images), tf.constant(labels.astype(np.int32))
    pgd10 = tf.function(lambda: tf.argmax(model(pgd(model, x, y, EPSILON, steps=10), training=False), axis=-1),
                        jit_compile=True)
    pgd_seconds = timing.alternate({"pgd10": pgd10}, rounds, warmup=1).seconds("pgd10")
    pgd_accuracy = float(np.mean(pgd10().numpy() == labels))

    network = strong.InferenceModel(model, images.shape[1:], settings.jit_compile, settings.batch_size)
    compile_seconds = _warm_up(network, settings.batch_size)

    standalone, accuracy = {}, {}
    for name in settings.attacks:
        alone = strong.StrongSettings(**{**settings.to_dict(), "attacks": (name,)})
        result = strong.strong_attack(network, images, labels, EPSILON, alone)
        standalone[name] = _per_100(result.seconds[name], count)
        accuracy[name] = result.accuracy()

    art_dlr = strong.StrongSettings(**{**settings.to_dict(), "attacks": ("apgd-dlr",), "dlr_loss": "art",
                                       "apgd_steps": art_dlr_steps})
    result = strong.strong_attack(network, images, labels, EPSILON, art_dlr)
    art_dlr_per_step = _per_100(result.seconds["apgd-dlr"], count) / art_dlr_steps

    probe = strong.StrongSettings(**{**settings.to_dict(), "attacks": ("square",),
                                     "square_queries": square_probe_queries})
    result = strong.strong_attack(network, images, labels, 1e-4, probe)
    if result.accuracy() < 1.0:
        raise RuntimeError("the worst-case Square probe broke an image; lower its epsilon.")
    square_per_query = _per_100(result.seconds["square"], count) / square_probe_queries
    # The same probe on a network without the row cache (ART's three forward passes per query).
    uncached = strong.InferenceModel(model, images.shape[1:], settings.jit_compile, settings.batch_size,
                                     row_cache=False)
    _warm_up(uncached, settings.batch_size)
    result = strong.strong_attack(uncached, images, labels, 1e-4, probe)
    square_per_query_uncached = _per_100(result.seconds["square"], count) / square_probe_queries

    cascade = strong.strong_attack(network, images, labels, EPSILON, settings)
    calls = _call_costs(model, images, labels, settings, rounds)
    clock.read()

    pgd_per_100 = _per_100(pgd_seconds, count)
    robust_total = sum(standalone[name] for name in settings.attacks if name != "square")
    if "square" in settings.attacks:
        robust_total += square_per_query * settings.square_queries
    return {
        "width": width,
        "weights": "random (untrained); labels = the network's clean predictions",
        "images": count,
        "epsilon": "8/255",
        "settings": settings.to_dict(),
        "pgd10_seconds_per_100": pgd_per_100,
        "pgd10_accuracy": pgd_accuracy,
        "compile_seconds": compile_seconds,
        "standalone_seconds_per_100": standalone,
        "standalone_over_pgd10": {name: value / pgd_per_100 for name, value in standalone.items()},
        "standalone_accuracy": accuracy,
        "apgd_seconds_per_step_per_100": {name: standalone[name] / settings.apgd_steps
                                          for name in standalone if name.startswith("apgd")},
        "apgd_dlr_art_loss_seconds_per_step_per_100": art_dlr_per_step,
        "art_dlr_steps": art_dlr_steps,
        "square_worst_case_seconds_per_query_per_100": square_per_query,
        "square_worst_case_seconds_per_100": square_per_query * settings.square_queries,
        "square_probe_queries": square_probe_queries,
        "square_worst_case_seconds_per_query_per_100_without_row_cache": square_per_query_uncached,
        "square_row_cache_speedup": square_per_query_uncached / square_per_query,
        "cascade_seconds_per_100": {name: _per_100(cascade.seconds[name], count) for name in cascade.correct},
        "cascade_attacked": cascade.attacked,
        "cascade_total_seconds_per_100": _per_100(sum(cascade.seconds[name] for name in cascade.correct), count),
        "cascade_accuracy": cascade.accuracy(),
        "robust_model_total_seconds_per_100": robust_total,
        "robust_model_total_over_pgd10": robust_total / pgd_per_100,
        "call_seconds_per_100": {key: _per_100(value, count) for key, value in calls.items()},
        "cpu_share": clock.share,
    }


if __name__ == "__main__":
    result = run()
    print(f"width {result['width']}, {result['weights']}, epsilon {result['epsilon']}, "
          f"seconds per 100 images (CPU share {result['cpu_share']:.2f}):")
    print(f"  PGD-10 (XLA): {result['pgd10_seconds_per_100']:.2f} s (accuracy {result['pgd10_accuracy']:.2f})")
    for name, seconds in result["standalone_seconds_per_100"].items():
        print(f"  {name} alone: {seconds:.1f} s = {seconds / result['pgd10_seconds_per_100']:.0f}x PGD-10 "
              f"(accuracy {result['standalone_accuracy'][name]:.2f})")
    print(f"  compiling (once per network, every padded batch size): {result['compile_seconds']:.0f} s")
    print("  APGD per step: " + ", ".join(f"{name} {value:.2f} s" for name, value in
                                         result["apgd_seconds_per_step_per_100"].items())
          + f", apgd-dlr with ART's own loss {result['apgd_dlr_art_loss_seconds_per_step_per_100']:.2f} s "
          f"(PGD step about {result['pgd10_seconds_per_100'] / 10:.2f} s)")
    print(f"  square, no image breaking: {result['square_worst_case_seconds_per_query_per_100']:.3f} s per "
          f"query, {result['square_worst_case_seconds_per_100']:.0f} s for "
          f"{result['settings']['square_queries']} queries "
          f"({result['square_row_cache_speedup']:.1f}x faster than without the row cache)")
    parts = ", ".join(f"{name} {seconds:.1f} s on {result['cascade_attacked'][name]} images"
                      for name, seconds in result["cascade_seconds_per_100"].items())
    print(f"  cascade on this network: {result['cascade_total_seconds_per_100']:.1f} s ({parts}), "
          f"accuracy {result['cascade_accuracy']:.2f}")
    print(f"  on a robust model (nothing breaks): about {result['robust_model_total_seconds_per_100']:.0f} s "
          f"= {result['robust_model_total_over_pgd10']:.0f}x PGD-10")
    print("  one call on 100 images: " + ", ".join(
        f"{key} {value:.3f} s" for key, value in result["call_seconds_per_100"].items()))
