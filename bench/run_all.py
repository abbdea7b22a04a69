"""Runs every benchmark in one process and writes bench/results.json and bench/results.md.

    make bench        # or: .venv/bin/python bench/run_all.py [--skip_full_cifar10]

6 1/2 minutes on a 2-core machine that other programs kept busy (load average 6),
including about 45 s decoding the CIFAR-10 JPEG copy. What is measured, each against its goal:

1. the input pipeline alone: augmented views/s, >= 20,000 and >= 10x what training at
   width 1/4 consumes (`input_pipeline_bench`);
2. the custom contrastive train_step against a plain Keras fit: <= 1.05x (`train_step_bench`);
3. full-width float32 training against the float32 matmul rate: >= 75% (`training_bench`);
4. FGSM and PGD-10 against a clean forward pass: FGSM <= 2.5x, PGD about k + 1 = 11x
   (`attack_bench`).

Every row also gives the share of the CPUs the benchmark got (its CPU seconds / (wall
seconds x cores)). When other programs compete for the cores that share drops below 1
and the wall-clock figures understate the machine; the figures per CPU-second are then
the steadier ones.
"""

import argparse
import datetime
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import attack_bench
from bench import input_pipeline_bench
from bench import machine
from bench import train_step_bench
from bench import training_bench
from stages import atomic_files

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
# Below this CPU share, other programs took a noticeable part of the cores.
CONTENDED_SHARE = 0.8


def _row(measure, figure, goal="", ratio=None, met=None, share=None):
    return {"measure": measure, "figure": figure, "goal": goal,
            "ratio": "" if ratio is None else f"{ratio:.2f}",
            "met": "" if met is None else ("yes" if met else "NO"),
            "cpu_share": "" if share is None else f"{share:.2f}"}


def table_rows(results):
    """The printed table: one row per figure, with its goal and ratio where it has one."""
    rows = []
    training = results["training"]
    step = results["train_step"]
    attack = results["attack"]
    pipeline = results["input_pipeline"]
    quarter = step["plain_images_per_second"]

    for name, source in pipeline["sources"].items():
        label = f"1. pipeline, {name} ({source['train_images']:,} images)"
        rate = source["views_per_second"]
        rows.append(_row(label + ": views/s", f"{rate:,.0f}", f">= {pipeline['goal_views_per_second']:,}",
                         rate / pipeline["goal_views_per_second"],
                         rate >= pipeline["goal_views_per_second"], source["cpu_share"]))
        rows.append(_row(label + ": / training at width 1/4", f"{rate / quarter:.1f}x",
                         f">= {pipeline['goal_times_training']}x",
                         rate / quarter / pipeline["goal_times_training"],
                         rate / quarter >= pipeline["goal_times_training"]))
        rows.append(_row(label + ": views per CPU-second x cores",
                         f"{rate / source['cpu_share']:,.0f}", "(if it had every core)"))

    rows.append(_row(f"2. custom train_step, {step['images_per_step']} images/step",
                     f"{train_step_bench.timing.median(step['custom_seconds_per_step']):.3f} s/step",
                     share=step["cpu_share"]))
    rows.append(_row("2. plain Keras fit, same network and images",
                     f"{train_step_bench.timing.median(step['plain_seconds_per_step']):.3f} s/step"))
    rows.append(_row("2. custom / plain (median of paired steps)", f"{step['ratio']:.3f}",
                     f"<= {step['goal_ratio']}", step["ratio"] / step["goal_ratio"],
                     step["ratio"] <= step["goal_ratio"]))
    rows.append(_row("2. custom / plain in CPU seconds", f"{step['cpu_ratio']:.3f}",
                     f"<= {step['goal_ratio']}", step["cpu_ratio"] / step["goal_ratio"],
                     step["cpu_ratio"] <= step["goal_ratio"]))

    rows.append(_row("3. float32 matmul 4096^3",
                     f"{training['matmul_flops_per_second'] / 1e9:.1f} GFLOP/s",
                     share=training["matmul_cpu_share"]))
    rows.append(_row("3. forward FLOPs per image, width 1 (conv + dense)",
                     f"{training['forward_flops_per_image'] / 1e9:.3f} G"))
    full = training["width_1"]
    rows.append(_row(f"3. training width 1, batch {full['batch_size']}",
                     f"{full['images_per_second']:.1f} images/s", share=full["cpu_share"]))
    rows.append(_row("3. utilisation = 3 x forward FLOPs x images/s / matmul",
                     f"{training['utilisation']:.1%}", f">= {training['goal_utilisation']:.0%}",
                     training["utilisation"] / training["goal_utilisation"],
                     training["utilisation"] >= training["goal_utilisation"]))
    rows.append(_row("3. utilisation per CPU-second",
                     f"{training['utilisation_per_cpu_second']:.1%}",
                     f">= {training['goal_utilisation']:.0%}",
                     training["utilisation_per_cpu_second"] / training["goal_utilisation"],
                     training["utilisation_per_cpu_second"] >= training["goal_utilisation"]))
    rows.append(_row("3. training width 1/4 (plain fit of item 2)", f"{quarter:.1f} images/s"))
    rows.append(_row("3. pretrain width 1/4 (custom step of item 2)",
                     f"{step['custom_images_per_second']:.1f} views/s"))

    seconds = attack["seconds"]
    k = attack["pgd_steps"]
    rows.append(_row(f"4. clean forward, {attack['batch_size']} images", f"{seconds['clean']:.3f} s",
                     share=attack["cpu_share"]))
    rows.append(_row("4. FGSM", f"{seconds['fgsm']:.3f} s"))
    rows.append(_row(f"4. PGD-{k}", f"{seconds['pgd']:.3f} s"))
    rows.append(_row("4. FGSM / clean", f"{attack['fgsm_ratio']:.2f}", f"<= {attack['goal_fgsm_ratio']}",
                     attack["fgsm_ratio"] / attack["goal_fgsm_ratio"],
                     attack["fgsm_ratio"] <= attack["goal_fgsm_ratio"]))
    rows.append(_row("4. FGSM / clean in CPU seconds", f"{attack['fgsm_cpu_ratio']:.2f}",
                     f"<= {attack['goal_fgsm_ratio']}", attack["fgsm_cpu_ratio"] / attack["goal_fgsm_ratio"],
                     attack["fgsm_cpu_ratio"] <= attack["goal_fgsm_ratio"]))
    rows.append(_row("4. FGSM / clean, each further epsilon in the evaluator (gradient shared)",
                     f"{attack['fgsm_shared_gradient_ratio']:.2f}"))
    if "fgsm_no_xla_ratio" in attack:
        rows.append(_row("4. FGSM / clean, both without XLA (for comparison)",
                         f"{attack['fgsm_no_xla_ratio']:.2f} (FGSM {seconds['fgsm_no_xla']:.3f} s)",
                         f"<= {attack['goal_fgsm_ratio']}",
                         attack["fgsm_no_xla_ratio"] / attack["goal_fgsm_ratio"],
                         attack["fgsm_no_xla_ratio"] <= attack["goal_fgsm_ratio"]))
    rows.append(_row(f"4. PGD-{k} / clean", f"{attack['pgd_ratio']:.2f}", f"about k + 1 = {k + 1}",
                     attack["pgd_ratio_per_k_plus_1"]))
    rows.append(_row(f"4. PGD-{k} / clean in CPU seconds", f"{attack['pgd_cpu_ratio']:.2f}",
                     f"about k + 1 = {k + 1}", attack["pgd_cpu_ratio"] / (k + 1)))
    rows.append(_row(f"4. PGD-{k} / ({k} x FGSM + clean)", f"{attack['pgd_over_k_fgsm_plus_clean']:.2f}",
                     "about 1"))
    return rows


COLUMNS = (("measure", "measure"), ("figure", "figure"), ("goal", "goal"),
           ("ratio", "ratio to goal"), ("met", "met"), ("cpu_share", "CPU share"))


def text_table(rows):
    widths = [max(len(title), *(len(row[key]) for row in rows)) for key, title in COLUMNS]
    lines = ["  ".join(title.ljust(width) for (_, title), width in zip(COLUMNS, widths))]
    lines.append("  ".join("-" * width for width in widths))
    for row in rows:
        lines.append("  ".join(row[key].ljust(width) for (key, _), width in zip(COLUMNS, widths)))
    return "\n".join(lines)


def markdown_table(rows):
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row[key] for key, _ in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def machine_lines(description, results):
    shares = [float(row["cpu_share"]) for row in results["table"] if row["cpu_share"]]
    lines = [f"machine: {description['cpu_model']}, {description['cores']} cores, "
             f"CPU bfloat16: {'yes' if description['cpu_bfloat16'] else 'no'}, GPUs: {description['gpus']}",
             f"software: Python {description['python']}, TensorFlow {description['tensorflow']}, "
             f"Keras {description['keras']}",
             f"precision: every figure in float32; --precision=auto picks "
             f"{description['precision_auto_resolves_to']} on this machine",
             f"load average (1 min) before / after: {results['load_average_before']:.2f} / "
             f"{results['load_average_after']:.2f}; total {results['seconds']:.0f} s"]
    if shares and min(shares) < CONTENDED_SHARE:
        lines.append(f"WARNING: other programs competed for the CPUs (lowest CPU share "
                     f"{min(shares):.2f}); the wall-clock figures understate this machine, the "
                     "ratios per CPU-second are the steadier ones.")
    return lines


def sections(skip_full_cifar10):
    """(name, function) of each benchmark, in the order they run."""
    return (
        # Item 3's width-1/4 rate comes from item 2's plain fit: the same network, loss and
        # optimiser, so it is not measured twice.
        ("training", lambda: training_bench.run(quarter_width=False)),
        ("train_step", train_step_bench.run),
        ("attack", attack_bench.run),
        ("input_pipeline", lambda: input_pipeline_bench.run(full_cifar10=not skip_full_cifar10)),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip_full_cifar10", action="store_true",
                        help="measure the input pipeline on the embedded sample only")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    description = machine.describe()
    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "command": "make bench",
               "machine": description, "load_average_before": machine.load_average()}
    for name, function in sections(args.skip_full_cifar10):
        section_start = time.perf_counter()
        print(f"measuring {name} ...", flush=True)
        results[name] = function()
        results[name]["section_seconds"] = time.perf_counter() - section_start
        results[name]["load_average_after"] = machine.load_average()
    results["load_average_after"] = machine.load_average()
    results["seconds"] = time.perf_counter() - start
    results["table"] = table_rows(results)

    header = machine_lines(description, results)
    print("\n" + "\n".join(header) + "\n\n" + text_table(results["table"]))
    atomic_files.write_json(os.path.join(BENCH_DIR, "results.json"), results)
    markdown = ["# Benchmark results", "", f"`{results['command']}`, {results['date']}", ""]
    markdown += [f"- {line}" for line in header]
    markdown += ["", markdown_table(results["table"]), ""]
    atomic_files.write_text(os.path.join(BENCH_DIR, "results.md"), "\n".join(markdown))
    print(f"\nwrote {os.path.join(BENCH_DIR, 'results.json')} and results.md")


if __name__ == "__main__":
    main()
