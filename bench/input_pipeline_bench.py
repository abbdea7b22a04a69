"""How many augmented views a second `pipeline.input_pipeline.train_dataset` makes, alone.

Two views of 256 images a batch, the default augmentation (reflect-padded crop and flip),
from images already in memory: the embedded sample, and the full CIFAR-10 copy when
`../shared/data/cifar10-jpeg.tar` is there (decoding it takes about half a minute and
is not timed). The goal is `goals.PIPELINE_OVER_TRAINING`, a multiple of what training
consumes, so that the pipeline never makes the model wait (bench/figures.py compares the
two); as a rate of its own on a 2-core machine, `goals.PIPELINE_VIEWS_PER_SECOND`.

Run alone: `.venv/bin/python bench/input_pipeline_bench.py`.
"""

import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import goals
from bench import timing
from pipeline import datasets
from pipeline import input_pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR10_JPEG = os.path.join(REPO, "..", "shared", "data", "cifar10-jpeg.tar")


def views_per_second(split, batch_size=256, views=2, seed=0, warmup_batches=20, min_seconds=3.0):
    """(views/s, CPU share) of the training pipeline over at least `min_seconds`, after a warm-up."""
    iterator = iter(input_pipeline.train_dataset(split, batch_size, seed, views).repeat())
    for _ in range(warmup_batches):
        next(iterator)
    batches, clock = 0, timing.Stopwatch()
    while clock.read().wall < min_seconds:
        next(iterator)  # Eager tensors: the batch is complete when it is returned.
        batches += 1
    return batches * batch_size * views / clock.wall, clock.share


def run(full_cifar10=True):
    """Views per second on the sample and, if present and asked for, on the full CIFAR-10 copy."""
    results = {}
    sources = [("sample", lambda: datasets.load("sample"))]
    if full_cifar10 and os.path.exists(CIFAR10_JPEG):
        sources.append(("cifar10_jpeg", lambda: datasets.load("folder", CIFAR10_JPEG)))
    for name, load in sources:
        with timing.Stopwatch() as loading:
            split = load().train
        rate, share = views_per_second(split)
        results[name] = {"train_images": len(split), "load_seconds": loading.wall,
                         "views_per_second": rate, "cpu_share": share,
                         "ratio_to_goal": rate / goals.PIPELINE_VIEWS_PER_SECOND.bound}
    return {"batch_size": 256, "views": 2, "augmentation": "crop (4-pixel reflect padding) + flip",
            "sources": results, "goal_views_per_second": goals.PIPELINE_VIEWS_PER_SECOND.bound,
            "goal_times_training": goals.PIPELINE_OVER_TRAINING.bound,
            "cifar10_jpeg_path": os.path.normpath(CIFAR10_JPEG),
            "cifar10_jpeg_found": os.path.exists(CIFAR10_JPEG)}


if __name__ == "__main__":
    for name, result in run()["sources"].items():
        print(f"{name} ({result['train_images']} images): {result['views_per_second']:,.0f} views/s, "
              f"{result['ratio_to_goal']:.2f} x the goal ({goals.PIPELINE_VIEWS_PER_SECOND}) "
              f"(CPU share {result['cpu_share']:.2f})")
