"""Runs every benchmark and writes bench/results/<date>-<machine>.json and bench/results.md.

    make bench                            # or: .venv/bin/python bench/run_all.py
    make bench BENCH_FLAGS=--quick        # about a third of the time, fewer and shorter figures,
                                          # written to bench/results/<date>-<machine>-quick.json
    make bench BENCH_FLAGS=--demo         # also times `make demo` (10 more minutes)

Each figure of issue #11 is printed with its goal (bench/goals.py) and whether it is met
("n/a" where this CPU cannot run it, "skipped"/"error" where its section did not run; a
failing section never stops the others). bench/README.md lists the sections, the bench
module behind each and what it measures; the PyTorch peer's rows need bench/.peer-venv
(`make bench-peer` makes it) and say "skipped" without it.

The machine is shared: each section records its wall seconds, its share of the CPUs (its
CPU seconds / (wall seconds x cores)) and the load average before and after it; below a
share of 0.8 other programs took part of the cores, the wall-clock figures understate
the machine, and a warning says so. About 15 minutes on a quiet 2-core machine.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import startup  # noqa: E402 (imports nothing heavy)

startup.enable_onednn()  # What run.py does: oneDNN on unless the environment says otherwise.

from bench import attack_bench
from bench import demo_bench
from bench import fgsm_ops_bench
from bench import figures
from bench import input_pipeline_bench
from bench import machine
from bench import precision_bench
from bench import process_bench
from bench import timing
from bench import adversarial_bench
from bench import train_step_bench
from bench import training_bench
from common import atomic_files

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
RESULTS_DIR = os.path.join(BENCH_DIR, "results")
PEER_PYTHON = os.path.join(BENCH_DIR, ".peer-venv", "bin", "python")
# Below this CPU share, other programs took a noticeable part of the cores.
CONTENDED_SHARE = 0.8

# Runs another engineer's bench module in a fresh process and writes what its run() returns
# as JSON: a module that does not exist (yet) gives {"skipped": ...}, one that fails {"error": ...}.
_CHILD = """
import json, sys, traceback
sys.path.insert(0, sys.argv[1])
module, out, kwargs = sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
try:
    import importlib
    run = importlib.import_module("bench." + module).run
except ModuleNotFoundError as error:
    result = {"skipped": f"bench/{module}.py cannot be imported ({error})"}
else:
    try:
        result = run(**kwargs)
    except Exception as error:
        traceback.print_exc()
        result = {"error": f"{type(error).__name__}: {error}"}
with open(out, "w") as f:
    json.dump(result, f, default=str)
"""


# A child's time limit: generous, since on a busy shared machine the peer and the strong
# attacks take several times their quiet-machine 5-10 minutes.
CHILD_TIMEOUT_SECONDS = 4 * 3600


def in_child(module, python=sys.executable, timeout=CHILD_TIMEOUT_SECONDS, **kwargs):
    """`bench.<module>.run(**kwargs)` in a fresh process of `python`; its result, and its CPU seconds."""
    with tempfile.TemporaryDirectory(prefix="bench-") as folder:
        out = os.path.join(folder, "result.json")
        command = [python, "-c", _CHILD, REPO, module, out, json.dumps(kwargs)]
        completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        if not os.path.exists(out):
            tail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
            return {"error": f"status {completed.returncode}: {' / '.join(tail)}"}
        with open(out) as f:
            return json.load(f)


def sections(args):
    """(name, function) of each benchmark, in the order they run."""
    quick = args.quick
    peer_kwargs = {"widths": [0.25]} if quick else {}
    # 50 images instead of the module's 100 halve its time; its figures stay per 100 images.
    strong = ((lambda: {"skipped": "--quick"}) if quick
              else (lambda: in_child("strong_attack_bench", count=50)))
    return (
        # The width-1/4 training rate comes from train_step's plain fit: the same network,
        # loss and optimiser, so it is not measured twice.
        ("training", lambda: training_bench.run(quarter_width=False,
                                                max_seconds=10.0 if quick else 15.0)),
        ("train_step", lambda: train_step_bench.run(rounds=4 if quick else 6)),
        ("adversarial_step", lambda: adversarial_bench.run(rounds=4 if quick else 6)),
        ("attack", lambda: attack_bench.run(rounds=2 if quick else 3, no_xla=not quick)),
        ("fgsm_ops", lambda: fgsm_ops_bench.run(rounds=6)),
        ("input_pipeline", lambda: input_pipeline_bench.run(
            full_cifar10=not (quick or args.skip_full_cifar10))),
        ("precision", precision_bench.run),
        ("process", lambda: process_bench.run(startup_runs=1 if quick else 2,
                                              memory_steps=2 if quick else 3)),
        ("peer", lambda: in_child("peer_bench", python=PEER_PYTHON if os.path.exists(PEER_PYTHON)
                                  else sys.executable, **peer_kwargs)),
        ("strong_attack", strong),
        ("distribute", lambda: in_child("distribute_bench")),
        ("demo", lambda: demo_bench.run(measure_now=args.demo)),
    )


def run_section(function):
    """(result, record): the section's result (or {"error": ...}) and its seconds, CPU share and load."""
    record = {"load_average_before": machine.load_average()}
    with timing.Stopwatch(children=True) as clock:
        try:
            result = function()
        except Exception as error:  # One failing section must not lose the others' figures.
            traceback.print_exc()
            result = {"error": f"{type(error).__name__}: {error}"}
    record.update({"seconds": clock.wall, "cpu_share": clock.share,
                   "load_average_after": machine.load_average(),
                   "status": next((key for key in ("skipped", "error", "not_applicable")
                                   if key in result), "ok")})
    return result, record


GOAL_COLUMNS = (("figure", "figure"), ("measured", "measured"), ("goal", "goal"), ("met", "met"),
                ("cpu_share", "CPU share"), ("note", "note"))
DETAIL_COLUMNS = (("figure", "figure"), ("measured", "measured"), ("cpu_share", "CPU share"),
                  ("note", "note"))


def printed(rows, columns):
    """The table for the terminal: numbered rows, each note on a line of its own below the table."""
    numbered = [{**row, "number": str(index)} for index, row in enumerate(rows, 1)]
    table = figures.text_table(numbered,
                               (("number", "#"),) + tuple(c for c in columns if c[0] != "note"))
    notes = [f"{row['number']}. {row['note']}" for row in numbered if row["note"]]
    return table + ("\n\n" + "\n".join(notes) if notes else "")


def header_lines(results):
    description = results["machine"]
    auto = ", ".join(f"width {width}: {policy}"
                     for width, policy in description["precision_auto_by_width"].items())
    lines = [f"machine: {description['cpu_model']} ({description['slug']}), {description['cores']} cores, "
             f"flags: {' '.join(description['cpu_flags']) or 'none of interest'}, CPU bfloat16: "
             f"{'yes' if description['cpu_bfloat16'] else 'no'}, GPUs: {description['gpus']}",
             f"software: Python {description['python']}, TensorFlow {description['tensorflow']}, "
             f"Keras {description['keras']}, oneDNN "
             f"{ {True: 'on', False: 'off', None: 'unknown'}[description.get('onednn')] }"
             f" (TF_ENABLE_ONEDNN_OPTS={description.get('tf_enable_onednn_opts')})",
             f"precision: figures in float32 unless named; --precision=auto picks {auto}",
             *([f"EMULATED: oneDNN capped at {description['onednn_max_cpu_isa']} "
                f"(ATEN_CPU_CAPABILITY={description.get('aten_cpu_capability')}, "
                f"XLA_FLAGS={description.get('xla_flags')}): this CPU's microarchitecture with "
                f"the instruction sets of the capped kind, not a machine of that kind"]
               if emulated(results) else []),
             f"command: `{results['command']}`; total {results['seconds'] / 60:.1f} min; load average "
             f"(1 min) before / after: {results['load_average_before']:.2f} / "
             f"{results['load_average_after']:.2f}"]
    contended = {name: record["cpu_share"] for name, record in results["sections"].items()
                 if record["status"] == "ok" and record["cpu_share"] < CONTENDED_SHARE
                 and name != "demo"}
    if contended:
        lines.append("WARNING: other programs competed for the CPUs (CPU share below "
                     f"{CONTENDED_SHARE} in: " + ", ".join(f"{name} {share:.2f}"
                                                          for name, share in contended.items())
                     + "); the wall-clock figures understate this machine, the ratios from CPU "
                       "seconds are the steadier ones. Re-measure on a quiet machine.")
    return lines


def section_lines(results):
    return [f"{name}: {record['status']}, {record['seconds']:.0f} s, CPU share {record['cpu_share']:.2f}, "
            f"load {record['load_average_before']:.1f} -> {record['load_average_after']:.1f}"
            for name, record in results["sections"].items()]


def markdown(results, json_name):
    lines = ["# Benchmark results", "",
             f"`{results['command']}`, {results['date']}; every figure in "
             f"[`results/{json_name}`](results/{json_name}).", ""]
    lines += [f"- {line}" for line in header_lines(results)]
    lines += ["", "## Issue #11's figures", "", figures.markdown_table(results["goals"], GOAL_COLUMNS), "",
              "## Details", "", figures.markdown_table(results["details"], DETAIL_COLUMNS), "",
              "## Sections", ""]
    lines += [f"- {line}" for line in section_lines(results)]
    return "\n".join(lines) + "\n"


def report(results):
    """Computes the tables of `results` (from its measured sections) and prints them."""
    results["goals"] = figures.goal_rows(results)
    results["details"] = figures.detail_rows(results)
    print("\n" + "\n".join(header_lines(results)))
    print("\nIssue #11's figures\n\n" + printed(results["goals"], GOAL_COLUMNS))
    print("\nDetails\n\n" + printed(results["details"], DETAIL_COLUMNS))


def emulated(results):
    """Whether `results` were measured under an instruction-set cap (make bench BENCH_ISA=...)."""
    return bool(results["machine"].get("onednn_max_cpu_isa"))


def write(results, path, latest):
    """Writes the JSON to `path` and, if `latest`, bench/results.md for it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_files.write_json(path, results)
    written = [path]
    if latest:
        # bench/results.md always shows the newest full run; the README points to it.
        written.append(os.path.join(BENCH_DIR, "results.md"))
        atomic_files.write_text(written[-1], markdown(results, os.path.basename(path)))
    print(f"\nwrote {', '.join(written)}")


def measure(args, parser, argv):
    start = time.perf_counter()
    now = datetime.datetime.now(datetime.timezone.utc)
    flags = " ".join(argv if argv is not None else sys.argv[1:])
    results = {"date": now.isoformat(timespec="seconds"),
               "command": "make bench" + (f" BENCH_FLAGS='{flags}'" if flags else ""),
               "quick": args.quick,
               "machine": machine.describe(), "load_average_before": machine.load_average(),
               "sections": {}}
    chosen = sections(args)
    unknown = set(args.only or []).union(args.skip) - {name for name, _ in chosen}
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {[name for name, _ in chosen]}")
    if args.only:
        chosen = [(name, function) for name, function in chosen if name in args.only]
    chosen = [(name, (lambda: {"skipped": "--skip"}) if name in args.skip else function)
              for name, function in chosen]
    for name, function in chosen:
        print(f"measuring {name} ...", flush=True)
        results[name], results["sections"][name] = run_section(function)
        print(f"  {section_lines({'sections': {name: results['sections'][name]}})[0]}", flush=True)
    results["load_average_after"] = machine.load_average()
    results["seconds"] = time.perf_counter() - start
    return results, now


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="shorter timings, the peer at width 1/4 only, no full CIFAR-10 copy, "
                             "no strong-attack section")
    parser.add_argument("--demo", action="store_true",
                        help="also run and time `make demo` (else its last measured figure is carried)")
    parser.add_argument("--skip_full_cifar10", action="store_true",
                        help="measure the input pipeline on the embedded sample only")
    parser.add_argument("--only", nargs="+", metavar="SECTION",
                        help="run only these sections (the results are then not written under "
                             "bench/results/ unless --output is given)")
    parser.add_argument("--skip", nargs="+", metavar="SECTION", default=[],
                        help="leave these sections out (their rows say skipped)")
    parser.add_argument("--output", help="write the JSON here instead of bench/results/<date>-<machine>.json")
    parser.add_argument("--render", metavar="JSON",
                        help="measure nothing: recompute the tables of this results file, print "
                             "them and rewrite it (and bench/results.md, unless it is a --quick one)")
    args = parser.parse_args(argv)

    if args.render:
        with open(args.render) as f:
            results = json.load(f)
        report(results)
        write(results, args.render, latest=not (results.get("quick") or emulated(results)))
        return
    results, now = measure(args, parser, argv)
    report(results)
    if args.only and not args.output:
        print("\n(--only: nothing written)")
        return
    suffix = "-quick" if args.quick else ""
    path = args.output or os.path.join(RESULTS_DIR, f"{now:%Y-%m-%d}-{results['machine']['slug']}{suffix}.json")
    write(results, path, latest=not (args.output or args.quick or emulated(results)))


if __name__ == "__main__":
    main()
