"""Training images/s on 2 logical CPU replicas (MirroredStrategy) over 1 replica.

On a CPU the two logical devices share the same cores, so this is no speed-up: it
measures what the distribution costs on top of the same work, namely splitting each
batch, all-reducing the gradients, all-gathering the contrastive embeddings and
synchronising BatchNorm (two all-reduces per layer). A ratio near 1 means the overhead is
small; on GPUs, each with its own share of the batch, the same code divides the step.

The step is the pretrain stage's (CE + SupCon + pairwise margin, two views of 128 images,
width 1/4, float32), run by `training.distributed_loop`'s step function on a fixed batch
in memory, so the input pipeline is not timed. The two are timed step by step in
alternation (`timing.alternate`), and the median of the per-round ratios is reported, as
in train_step_bench.
TensorFlow must split the CPU before it starts, so `run()` measures in a fresh process.

Run alone: `.venv/bin/python bench/distribute_bench.py`.
"""

import json
import os
import subprocess
import sys
import tempfile

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NOTE = ("2 logical CPU replicas share the same cores: the ratio is the overhead of the "
        "distribution (batch split, gradient all-reduce, embedding all-gather, synchronised "
        "BatchNorm), not a speed-up")


def run(width=0.25, pairs=128, rounds=6, timeout=900):
    """Measures in a fresh process (see the module docstring); returns its results."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "result.json")
        subprocess.run([sys.executable, os.path.abspath(__file__), "--child", path, str(width),
                        str(pairs), str(rounds)], check=True, timeout=timeout,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        with open(path) as f:
            return json.load(f)


def _measure(width, pairs, rounds):
    import tensorflow as tf

    tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                               [tf.config.LogicalDeviceConfiguration()] * 2)
    from bench import timing
    from bench import training_bench
    from configs.base import base_config
    from training import builders
    from training import distributed_loop
    from training import specs
    from training.run_context import run_context

    config = base_config()
    config.model.width = width
    config.train.update(batch_size=pairs, schedule="constant", jit_compile="false")
    images, labels = training_bench.synthetic_batch(pairs, views=2)
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    strategies = {1: tf.distribute.get_strategy(),
                  2: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])}
    steps = {}
    for replicas, strategy in strategies.items():
        with run_context(0, "float32", clear_session=False), strategy.scope():
            model = builders.compile_model(
                builders.build_model(config, specs.PRETRAIN, training_bench.DATA_INFO),
                config, specs.PRETRAIN, steps_per_epoch=1)
        step = distributed_loop.train_step_function(model)
        iterator = iter(distributed_loop.distributed(strategy, dataset))
        steps[replicas] = lambda step=step, iterator=iterator: float(step(iterator)["loss"])
        steps[replicas]()  # Traces.
    timed = timing.alternate(steps, rounds, warmup=1)
    images = 2 * pairs
    return {
        "policy": "float32",
        "width": width,
        "images_per_step": images,
        "rounds": rounds,
        "one_replica_seconds_per_step": timed.wall[1],
        "two_replicas_seconds_per_step": timed.wall[2],
        "one_replica_images_per_second": images / timed.seconds(1),
        "two_replicas_images_per_second": images / timed.seconds(2),
        "ratios": timed.ratios(1, 2),  # images/s of 2 over 1
        "ratio": timed.ratio(1, 2),
        "cpu_ratio": timed.cpu_ratio(1, 2),
        "cpu_share": timed.cpu_share(),
        "note": NOTE,
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        result = _measure(float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        with open(sys.argv[2], "w") as f:
            json.dump(result, f, indent=2)
    else:
        result = run()
        print(f"1 replica: {result['one_replica_images_per_second']:.1f} images/s, 2 logical CPU "
              f"replicas: {result['two_replicas_images_per_second']:.1f} images/s "
              f"({result['images_per_step']} images a step, width {result['width']}, float32)")
        print(f"images/s of 2 replicas over 1 (median of paired steps): {result['ratio']:.3f}, "
              f"in CPU seconds {result['cpu_ratio']:.3f}; CPU share {result['cpu_share']:.2f}")
        print(f"({result['note']}.)")
