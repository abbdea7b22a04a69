"""Where a training step's time goes, oneDNN primitive by primitive, in this project and in PyTorch.

    bench/.peer-venv/bin/python bench/primitive_profile.py --workload plain --width 1 --precision bfloat16

Both frameworks run their convolutions, BatchNorm, ReLU and pooling on oneDNN on a CPU
(TensorFlow with `TF_ENABLE_ONEDNN_OPTS=1`, run.py's default; PyTorch always), and oneDNN
reports every primitive it executes, with its wall time, when `ONEDNN_VERBOSE=1` is set
before it loads. This runs one framework's step per child process (the project's
`peer_bench.project_step`, or the peer's `torch_peer.make_step` in the setting
`torch_peer.best_setting` picks for that case, or the one given), `--warmup` untimed steps
then `--steps` steps with the verbose log on, and sums the log's milliseconds per
primitive kind and propagation (convolution forward, convolution backward_data, ...):
the same shapes, the same work. The time of a step that no primitive accounts for is
everything else: TensorFlow's or PyTorch's own kernels (element-wise ops, casts, the
optimiser), the framework's scheduling, and oneDNN's reorders counted apart. The verbose
log itself costs a little time, alike on both sides.

Prints one table per framework and the two side by side, and with `--json` writes them.
Needs bench/.peer-venv (`make bench-peer`): torch, TensorFlow and the project.
"""

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One child: FRAMEWORK WORKLOAD WIDTH BATCH PRECISION WARMUP STEPS SETTING_JSON. It prints
# "STEP_SECONDS <median>" lines around its verbose steps; oneDNN prints the rest.
_CHILD = r"""
import json, os, statistics, sys, time
sys.path.insert(0, sys.argv[1])
framework, workload, width, batch, precision, warmup, steps, setting = sys.argv[2:10]
width, batch, warmup, steps, setting = float(width), int(batch), int(warmup), int(steps), json.loads(setting)
if framework == "project":
    from common import startup
    startup.import_tensorflow()
    from bench import peer_bench
    step, _ = peer_bench.project_step(workload, width, batch, precision)
else:
    from bench import torch_peer
    step = torch_peer.make_step(workload, width, batch, precision, **setting)
for _ in range(warmup):
    step()
import ctypes
flush = ctypes.CDLL(None).fflush  # oneDNN writes through C's stdio buffer: keep the order.
times = []
flush(None)
print("PROFILE_BEGIN", flush=True)
for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
flush(None)
print("PROFILE_END", flush=True)
print("STEP_SECONDS", statistics.median(times), sum(times), flush=True)
"""

# onednn_verbose,[timestamp,]exec,cpu,<primitive>,<implementation>,<propagation>,...,<ms>
_EXEC = re.compile(r"^onednn_verbose,(?:v[0-9]+,)?(?:[0-9.]+,)?(?:primitive,)?exec,cpu,([a-z_]+),([^,]*),([a-z_]+),.*,([0-9.]+)$")


def parse(lines):
    """{(primitive, propagation): [calls, milliseconds, {implementation: milliseconds}]} of the
    verbose lines between the markers."""
    totals = collections.defaultdict(lambda: [0, 0.0, collections.Counter()])
    inside = False
    for line in lines:
        if line.startswith("PROFILE_BEGIN"):
            inside = True
        elif line.startswith("PROFILE_END"):
            inside = False
        elif inside:
            found = _EXEC.match(line.strip())
            if found:
                primitive, implementation, propagation, milliseconds = found.groups()
                entry = totals[(primitive, propagation)]
                entry[0] += 1
                entry[1] += float(milliseconds)
                entry[2][implementation] += float(milliseconds)
    return totals


def profile(framework, workload, width, batch_size, precision, warmup, steps, setting, timeout=1800):
    """{"step_seconds", "total_seconds", "primitives": {"kind/propagation": {calls, ms_per_step}}}."""
    # TensorFlow runs independent ops side by side (inter-op threads), so that several
    # primitives share the cores and each one's time overlaps the others'; one inter-op
    # thread runs them one after another on all the cores, as PyTorch's eager step does.
    environment = dict(os.environ, ONEDNN_VERBOSE="1", DNNL_VERBOSE="1", TF_CPP_MIN_LOG_LEVEL="2",
                       TF_ENABLE_ONEDNN_OPTS="1", TF_NUM_INTEROP_THREADS="1")
    command = [sys.executable, "-c", _CHILD, REPO, framework, workload, str(width), str(batch_size),
               precision, str(warmup), str(steps), json.dumps(setting or {})]
    completed = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True,
                               timeout=timeout)
    lines = completed.stdout.splitlines()
    seconds = [line.split() for line in lines if line.startswith("STEP_SECONDS")]
    if completed.returncode or not seconds:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{framework} child failed (status {completed.returncode}): {' / '.join(tail)}")
    primitives = {f"{kind}/{propagation}": {"calls": calls / steps, "ms_per_step": ms / steps,
                                              "implementations": {name: round(t / steps, 2)
                                                                  for name, t in by.most_common()}}
                  for (kind, propagation), (calls, ms, by) in sorted(parse(lines).items())}
    step = float(seconds[0][1])
    return {"step_seconds": step, "total_seconds": float(seconds[0][2]), "primitives": primitives,
            "onednn_ms_per_step": sum(p["ms_per_step"] for p in primitives.values()),
            "other_ms_per_step": 1000 * float(seconds[0][2]) / steps
            - sum(p["ms_per_step"] for p in primitives.values())}


def side_by_side(project, peer):
    """Rows (primitive, project ms, peer ms, project / peer) for every primitive either ran."""
    names = sorted(set(project["primitives"]) | set(peer["primitives"]),
                   key=lambda n: -max(project["primitives"].get(n, {}).get("ms_per_step", 0),
                                      peer["primitives"].get(n, {}).get("ms_per_step", 0)))
    rows = []
    for name in names:
        mine = project["primitives"].get(name, {}).get("ms_per_step", 0.0)
        theirs = peer["primitives"].get(name, {}).get("ms_per_step", 0.0)
        rows.append((name, mine, theirs, mine / theirs if theirs else float("inf")))
    rows.append(("everything else (framework kernels, scheduling)", project["other_ms_per_step"],
                 peer["other_ms_per_step"],
                 project["other_ms_per_step"] / peer["other_ms_per_step"] if peer["other_ms_per_step"] > 0
                 else float("inf")))
    rows.append(("whole step (median, verbose on)", 1000 * project["step_seconds"],
                 1000 * peer["step_seconds"], project["step_seconds"] / peer["step_seconds"]))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=("plain", "contrastive"), default="plain")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="bfloat16")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--channels_last", type=int, choices=(0, 1), default=None,
                        help="the peer's memory format (default: the fastest, as peer_bench picks)")
    parser.add_argument("--compile", type=int, choices=(0, 1), default=None,
                        help="the peer's torch.compile (default: the fastest setting)")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)
    if args.channels_last is None or args.compile is None:
        from bench import torch_peer
        best = torch_peer.best_setting(args.workload, args.width, args.batch_size, args.precision,
                                       rounds=1, warmup=1)
        setting = {"channels_last": best["step"].channels_last, "compile": best["step"].compile}
    else:
        setting = {"channels_last": bool(args.channels_last), "compile": bool(args.compile)}
    case = (args.workload, args.width, args.batch_size, args.precision, args.warmup, args.steps)
    start = time.perf_counter()
    project = profile("project", *case, None)
    peer = profile("torch", *case, setting)
    rows = side_by_side(project, peer)
    print(f"{args.workload} step, width {args.width:g}, batch {args.batch_size}, {args.precision}; "
          f"torch setting {setting}; ms per step, oneDNN's verbose times ({time.perf_counter() - start:.0f} s)")
    print(f"{'primitive/propagation':52s} {'project':>9s} {'torch':>9s} {'ratio':>7s}")
    for name, mine, theirs, ratio in rows:
        print(f"{name:52s} {mine:9.1f} {theirs:9.1f} {ratio:7.2f}")
    for side, result in (("project", project), ("torch", peer)):
        for name, entry in result["primitives"].items():
            if entry["ms_per_step"] >= 10:
                top = ", ".join(f"{impl} {ms:.0f}" for impl, ms in list(entry["implementations"].items())[:3])
                print(f"  {side} {name}: {top} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"case": dict(zip(("workload", "width", "batch_size", "precision", "warmup", "steps"),
                                        case)), "torch_setting": setting, "project": project,
                       "torch": peer, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
