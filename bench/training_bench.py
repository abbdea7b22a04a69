"""How close float32 training of ResNet-18 comes to this machine's float32 matmul rate.

Utilisation = training FLOPs per image x images per second / matmul FLOP/s, with the
training FLOPs per image taken as 3 x the forward FLOPs (forward, gradient with respect
to the activations, gradient with respect to the weights) and the forward FLOPs counted
from the model's layers: 2 H_out W_out k k C_in C_out per Conv2D and 2 in out per Dense
(BatchNorm, ReLU and the additions are left out, as is usual). Training is baseline-style
(cross-entropy, one view, the project's SGD) on a fixed in-memory batch, so the input
pipeline is not part of the figure.

Both rates are also given per CPU-second this process got; their ratio ("utilisation per
CPU-second") does not depend on how many other programs shared the cores meanwhile.
The goal is `goals.UTILISATION`.

Run alone: `.venv/bin/python bench/training_bench.py`.
"""

import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras
import tensorflow as tf

from bench import goals
from bench import machine
from bench import timing
from configs.base import base_config
from models import optimizer as optimizer_lib
from training import builders
from training import specs
from training.run_context import run_context

IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
# CIFAR-10's per-channel statistics; the speed does not depend on them.
MEAN, STD = (0.491, 0.482, 0.447), (0.247, 0.243, 0.262)
DATA_INFO = builders.DataInfo(IMAGE_SHAPE, NUM_CLASSES, MEAN, STD)


def layers(model):
    """Every layer of `model` that is not itself a model, nested models included, in order."""
    for layer in model.layers:
        yield from layers(layer) if isinstance(layer, keras.Model) else (layer,)


def forward_flops(model):
    """Forward FLOPs of one image through the Conv2D and Dense layers of `model` (nested models included)."""
    total = 0
    for layer in layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, _ = layer.output.shape
            kernel_height, kernel_width, channels_in, channels_out = layer.kernel.shape
            total += 2 * height * width * kernel_height * kernel_width * channels_in * channels_out
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return total


def project_optimizer():
    """The project's SGD (momentum 0.9, weight decay 5e-4) at a constant learning rate."""
    train = base_config().train
    train.schedule = "constant"
    return optimizer_lib.build_optimizer(train, total_steps=1)


def bench_config(width):
    """The base config at `width`, with a constant learning rate (no schedule to warm up)."""
    config = base_config()
    config.model.width = width
    config.train.schedule = "constant"
    return config


def project_model(stage, width, data_info=DATA_INFO):
    """The stage's training model as the training core builds it, compiled with its optimizer."""
    config, spec = bench_config(width), specs.SPECS[stage]
    return builders.compile_model(builders.build_model(config, spec, data_info), config, spec,
                                  steps_per_epoch=1)


def classifier_network(width):
    """encoder + classifier of the baseline, as one functional model: images in [0, 1] -> logits."""
    config = bench_config(width)
    return builders.build_model(config, specs.BASELINE, DATA_INFO).classifier_model(name="network")


def synthetic_batch(batch_size, views=1, seed=0):
    """A fixed (images, labels) batch in memory; images [B, (V,) 32, 32, 3] in [0, 1]."""
    shape = (batch_size,) + ((views,) if views > 1 else ()) + IMAGE_SHAPE
    images = tf.random.stateless_uniform(shape, [seed, 1])
    labels = tf.random.stateless_uniform([batch_size], [seed, 2], 0, NUM_CLASSES, tf.int64)
    return images, labels


class StepTimer(keras.callbacks.Callback):
    """Seconds per training step within one `fit` call, from the end of its first step to its last.

    Leaving out the first step leaves out `fit`'s own start-up (iterator, callbacks), so
    what remains is the training step alone. Like `stages.train.Throughput`, it makes
    Keras run the callbacks in step with training, as a real run does. With
    `max_seconds`, training stops once that much has been measured (2 steps at least).
    """

    def __init__(self, max_seconds=None):
        super().__init__()
        self.max_seconds, self.clock, self.steps = max_seconds, None, 0

    def on_train_batch_end(self, batch, logs=None):
        if self.clock is None:
            self.clock = timing.Stopwatch()
            return
        self.steps += 1
        self.clock.read()
        if self.max_seconds is not None and self.clock.wall >= self.max_seconds and self.steps >= 2:
            self.model.stop_training = True


def training_speed(width, batch_size, max_steps, max_seconds):
    """Baseline-style training at `width`: images/s and the CPU share, over up to `max_steps`
    timed steps (and one untimed) or `max_seconds`, after one traced step."""
    keras.utils.set_random_seed(0)
    model = project_model("baseline", width)
    dataset = tf.data.Dataset.from_tensors(synthetic_batch(batch_size)).repeat()
    model.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)  # Tracing: not timed.
    timer = StepTimer(max_seconds)
    model.fit(dataset, epochs=1, steps_per_epoch=max_steps + 1, verbose=0, shuffle=False,
              callbacks=[timer])
    if timer.steps < 1:
        raise ValueError("StepTimer needs a fit of at least 2 steps.")
    return {"width": width, "batch_size": batch_size,
            "images_per_second": batch_size * timer.steps / timer.clock.wall,
            "cpu_share": timer.clock.share}


@run_context(0, "float32", clear_session=False)  # Restores the policy and seeds afterwards.
def run(batch_size=64, max_steps=16, max_seconds=25.0, quarter_width=True):
    """The matmul rate, the FLOPs per image, and training images/s at width 1.0 (and 0.25)."""
    matmul, matmul_share = machine.matmul_flops_per_second()
    flops = forward_flops(classifier_network(1.0))
    full = training_speed(1.0, batch_size, max_steps, max_seconds)
    utilisation = 3 * flops * full["images_per_second"] / matmul
    result = {
        "policy": "float32",
        "matmul_flops_per_second": matmul,
        "matmul_cpu_share": matmul_share,
        "forward_flops_per_image": flops,
        "forward_flops_per_image_width_0.25": forward_flops(classifier_network(0.25)),
        "train_flops_per_image": 3 * flops,
        "width_1": full,
        "utilisation": utilisation,
        "utilisation_per_cpu_second": utilisation * matmul_share / full["cpu_share"],
        "goal_utilisation": goals.UTILISATION.bound,
    }
    if quarter_width:
        result["width_0.25"] = training_speed(0.25, 256, 8, 15.0)
    return result


if __name__ == "__main__":
    result = run()
    print(f"float32 matmul: {result['matmul_flops_per_second'] / 1e9:.1f} GFLOP/s "
          f"(CPU share {result['matmul_cpu_share']:.2f})")
    print(f"forward: {result['forward_flops_per_image'] / 1e9:.3f} GFLOPs per image (width 1)")
    for key in ("width_1", "width_0.25"):
        print(f"training {key}: {result[key]['images_per_second']:.1f} images/s "
              f"(CPU share {result[key]['cpu_share']:.2f})")
    print(f"utilisation: {result['utilisation']:.1%}, per CPU-second "
          f"{result['utilisation_per_cpu_second']:.1%} (goal {goals.UTILISATION})")
