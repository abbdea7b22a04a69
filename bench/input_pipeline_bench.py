"""How many augmented views a second `pipeline.input_pipeline.train_dataset` makes, alone.

Two views of 256 images a batch, the default augmentation (reflect-padded crop and flip),
from images already in memory: the embedded sample, and the full CIFAR-10 copy when
`../shared/data/cifar10-jpeg.tar` is there (decoding it takes about half a minute and
is not timed). The goal is 10x what training consumes, so that the pipeline never makes
the model wait: on a 2-core machine, >= 20,000 views/s.

Run alone: `.venv/bin/python bench/input_pipeline_bench.py`.
"""

import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import timing
from pipeline import datasets
from pipeline import input_pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR10_JPEG = os.path.join(REPO, "..", "shared", "data", "cifar10-jpeg.tar")
GOAL_VIEWS_PER_SECOND = 20_000
GOAL_TIMES_TRAINING = 10


def views_per_second(split, batch_size=256, views=2, seed=0, warmup_batches=20, min_seconds=3.0):
    """(views/s, CPU share) of the training pipeline over at least `min_seconds`, after a warm-up."""
    iterator = iter(input_pipeline.train_dataset(split, batch_size, seed, views).repeat())
    for _ in range(warmup_batches):
        next(iterator)
    batches, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < min_seconds:
        next(iterator)  # Eager tensors: the batch is complete when it is returned.
        batches += 1
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return batches * batch_size * views / seconds, timing.cpu_share(cpu_seconds, seconds)


def run(full_cifar10=True):
    """Views per second on the sample and, if present and asked for, on the full CIFAR-10 copy."""
    results = {}
    sources = [("sample", lambda: datasets.load("sample"))]
    if full_cifar10 and os.path.exists(CIFAR10_JPEG):
        sources.append(("cifar10_jpeg", lambda: datasets.load("folder", CIFAR10_JPEG)))
    for name, load in sources:
        start = time.perf_counter()
        split = load().train
        load_seconds = time.perf_counter() - start
        rate, share = views_per_second(split)
        results[name] = {"train_images": len(split), "load_seconds": load_seconds,
                         "views_per_second": rate, "cpu_share": share,
                         "ratio_to_goal": rate / GOAL_VIEWS_PER_SECOND}
    return {"batch_size": 256, "views": 2, "augmentation": "crop (4-pixel reflect padding) + flip",
            "sources": results, "goal_views_per_second": GOAL_VIEWS_PER_SECOND,
            "goal_times_training": GOAL_TIMES_TRAINING,
            "cifar10_jpeg_path": os.path.normpath(CIFAR10_JPEG),
            "cifar10_jpeg_found": os.path.exists(CIFAR10_JPEG)}


if __name__ == "__main__":
    for name, result in run()["sources"].items():
        print(f"{name} ({result['train_images']} images): {result['views_per_second']:,.0f} views/s, "
              f"{result['ratio_to_goal']:.2f} x the goal of {GOAL_VIEWS_PER_SECOND:,} "
              f"(CPU share {result['cpu_share']:.2f})")
