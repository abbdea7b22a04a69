"""The tables of `make bench`: issue #11's figures with their goals, then the details,
and the text and Markdown forms they are printed in.

Each row is a dict of strings: figure, measured, goal, met ("yes", "NO", "n/a" where the
machine cannot run it, "skipped" or "error" where its section did not run, "" where the
issue sets no goal), cpu_share (the section's share of the CPUs: below about 0.8 other
programs competed and the wall-clock figures understate the machine) and a note. A
section that is missing, skipped or failed gives rows saying so; it never stops the rest.
The goals are bench/goals.py's.
"""

import statistics

from bench import goals


def text_table(rows, columns):
    """An aligned text table: `columns` is ((key, title), ...), each row is indexed by the keys."""
    widths = [max([len(title)] + [len(row[key]) for row in rows]) for key, title in columns]
    lines = ["  ".join(title.ljust(width) for (_, title), width in zip(columns, widths)).rstrip()]
    lines.append("  ".join("-" * width for width in widths))
    for row in rows:
        lines.append("  ".join(row[key].ljust(width) for (key, _), width in zip(columns, widths)).rstrip())
    return "\n".join(lines)


def markdown_table(rows, columns):
    """The same as a Markdown table."""
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row[key].replace("|", "/") for key, _ in columns) + " |" for row in rows]
    return "\n".join(lines)


def _row(figure, measured, goal="", met=None, cpu_share=None, note=""):
    return {"figure": figure, "measured": measured, "goal": goal,
            "met": "" if met is None else (met if isinstance(met, str) else ("yes" if met else "NO")),
            "cpu_share": "" if cpu_share is None else f"{cpu_share:.2f}", "note": note}


def _absent(section):
    """("skipped" or "error", reason) if the section did not give figures, else None."""
    if section is None:
        return "skipped", "not run"
    for key in ("skipped", "error"):
        if key in section:
            return key, str(section[key])
    return None


def _absent_row(figure, goal, section):
    status, reason = _absent(section)
    return _row(figure, status, goal, status, note=reason)


def _width(width):
    return {0.25: "1/4", 0.5: "1/2", 1.0: "1"}.get(width, f"{width:g}")


def goal_rows(results):
    """One row per figure issue #11 names, in its order."""
    rows = []
    rows += _peer_rows(results.get("peer"))
    rows.append(_custom_step_row(results.get("train_step")))
    rows += _adversarial_rows(results.get("adversarial_step"))
    rows.append(_utilisation_row(results.get("training")))
    rows += _pipeline_rows(results.get("input_pipeline"), results.get("train_step"))
    rows += _attack_rows(results.get("attack"), results.get("fgsm_ops"))
    rows += _precision_rows(results.get("precision"))
    rows += _process_rows(results.get("process"))
    rows.append(_demo_row(results.get("demo")))
    rows.append(_strong_row(results.get("strong_attack")))
    rows.append(_distribute_row(results.get("distribute")))
    return rows


def _peer_rows(peer):
    goal = str(goals.PEER_SPEED)
    figure = "{workload} step / PyTorch best, same work, width {width}, {precision}"
    if _absent(peer):
        return [_absent_row(figure.format(workload=workload, width="1/4 and 1", precision="float32"),
                            goal, peer) for workload in ("contrastive", "plain")]
    rows = []
    cases = sorted(peer.get("cases", []), key=lambda case: (case["workload"] != "contrastive",
                                                            case["precision"], case["width"]))
    for case in cases:
        rows.append(_row(
            figure.format(workload=case["workload"], width=_width(case["width"]),
                          precision=case["precision"]),
            f"{case['ratio']:.2f}", goal, goals.PEER_SPEED.met(case["ratio"]), case.get("cpu_share"),
            f"{case['project_images_per_second']:.0f} vs {case['torch_images_per_second']:.0f} "
            f"images/s (torch: {case.get('torch_setting', '?')}); from CPU seconds "
            f"{case.get('cpu_ratio', float('nan')):.2f}"))
    if "bfloat16" not in peer.get("precisions", ["float32"]):
        rows.append(_row("contrastive and plain step / PyTorch best, bfloat16", "n/a", goal, "n/a",
                         note="no AVX512_BF16 or AMX on this CPU"))
    return rows


def _adversarial_rows(measured):
    figure = "adversarial training step / the same clean step, {name}, width 1/4"
    names = {"n_fgsm_ce": "N-FGSM + CE", "n_fgsm_supcon_margin": "N-FGSM + SupCon + margin"}
    if _absent(measured):
        return [_absent_row(figure.format(name=name), "", measured) for name in names.values()]
    return [_row(figure.format(name=names[key]), f"{workload['ratio']:.2f}", "", None,
                 note=f"{workload['adversarial_images_per_second']:.0f} images/s in AT, "
                      f"{measured['policy']}; a bare Keras N-FGSM loop measured 1.5x")
            for key, workload in measured["workloads"].items()]


def _custom_step_row(step):
    figure = "custom train_step speed / plain Keras fit, same network and images"
    goal = str(goals.CUSTOM_STEP_SPEED)
    if _absent(step):
        return _absent_row(figure, goal, step)
    speeds = [p / c for c, p in zip(step["custom_seconds_per_step"], step["plain_seconds_per_step"])]
    speed = statistics.median(speeds)
    cpu_speed = 1.0 / step["cpu_ratio"]
    return _row(figure, f"{speed:.2f}", goal, goals.CUSTOM_STEP_SPEED.met(speed), step.get("cpu_share"),
                f"median of {len(speeds)} paired steps of {step['images_per_step']} images, width "
                f"{_width(step['width'])}; from CPU seconds {cpu_speed:.2f}")


def _utilisation_row(training):
    figure = "training FLOP/s / measured matmul FLOP/s, full width"
    goal = str(goals.UTILISATION)
    if _absent(training):
        return _absent_row(figure, goal, training)
    full = training["width_1"]
    return _row(figure, f"{training['utilisation']:.0%}", goal,
                goals.UTILISATION.met(training["utilisation"]), full["cpu_share"],
                f"3 x {training['forward_flops_per_image'] / 1e9:.3f} GFLOP x "
                f"{full['images_per_second']:.1f} images/s / {training['matmul_flops_per_second'] / 1e9:.1f} "
                f"GFLOP/s; per CPU-second {training['utilisation_per_cpu_second']:.0%}")


def _pipeline_rows(pipeline, step):
    figure = "input pipeline / training consumption, {name}"
    goal = str(goals.PIPELINE_OVER_TRAINING)
    if _absent(pipeline):
        return [_absent_row(figure.format(name="sample"), goal, pipeline)]
    if _absent(step):
        return [_absent_row(figure.format(name=name), goal, step) for name in pipeline["sources"]]
    # What training at width 1/4 consumes: the faster of the plain fit and the contrastive step.
    consumption = max(step["plain_images_per_second"], step["custom_images_per_second"])
    rows = []
    for name, source in pipeline["sources"].items():
        times = source["views_per_second"] / consumption
        rows.append(_row(figure.format(name=f"{name} ({source['train_images']:,} images)"),
                         f"{times:.0f}x", goal, goals.PIPELINE_OVER_TRAINING.met(times),
                         source["cpu_share"],
                         f"{source['views_per_second']:,.0f} views/s against {consumption:.0f} "
                         "images/s of training at width 1/4"))
    return rows


def _attack_rows(attack, ops):
    # Records before 2026-12-07 timed the training network with XLA, not the evaluator's.
    xla = (attack or {}).get("evaluator_xla", True)
    setting = "xla" if xla else "no_xla"
    fgsm_figure = (f"FGSM / clean forward, as the evaluator runs them ({'XLA' if xla else 'no XLA'}), "
                   "width 1/4, 256 images")
    goal = str(goals.FGSM_OVER_CLEAN)
    if _absent(attack):
        return [_absent_row(fgsm_figure, goal, attack), _absent_row("PGD-10 / clean forward", "", attack)]
    note = f"from CPU seconds {attack['fgsm_cpu_ratio']:.2f}"
    if not _absent(ops or {"skipped": ""}):
        totals = ops["totals"]
        note += (f"; its floor: the convolutions' input gradients cost {totals[setting]['ratio']:.2f}x "
                 f"their forward ({'with' if xla else 'without'} XLA), so FGSM cannot go below "
                 f"{totals[setting]['fgsm_over_clean_from_convolutions']:.2f} clean passes "
                 "(forward, backward to the input, forward)")
    k, fgsm = attack["pgd_steps"], attack["fgsm_ratio"]
    return [
        _row(fgsm_figure, f"{fgsm:.2f}", goal, goals.FGSM_OVER_CLEAN.met(fgsm), attack["cpu_share"], note),
        _row(f"PGD-{k} / clean forward", f"{attack['pgd_ratio']:.1f}", "", None, attack["cpu_share"],
             f"k + 1 = {k + 1} if a backward pass were free, 2k + 1 = {2 * k + 1} if it cost a "
             f"forward; PGD-{k} / ({k} FGSM + clean) = {attack['pgd_over_k_fgsm_plus_clean']:.2f}"),
    ]


def _precision_rows(precision):
    figure = "mixed_bfloat16 / float32 training, full width"
    goal = str(goals.BFLOAT16_SPEEDUP)
    auto_figure = "`auto` precision never slower than float32 at the configured width"
    if precision is None or "skipped" in precision or "error" in precision:
        return [_absent_row(figure, goal, precision), _absent_row(auto_figure, "yes", precision)]
    if "not_applicable" in precision:
        picks = ", ".join(f"{_width(float(width))}: {policy}"
                          for width, policy in precision.get("auto_picks", {}).items())
        return [_row(figure, "n/a", goal, "n/a", note=precision["not_applicable"]),
                _row(auto_figure, "n/a", "yes", "n/a", note=f"auto picks {picks}")]
    rows = []
    for case in precision["cases"]:
        label = (figure if case["width"] == 1.0
                 else f"mixed_bfloat16 / float32 training, width {_width(case['width'])}")
        rows.append(_row(label, f"{case['ratio']:.2f}", goal if case["width"] == 1.0 else "",
                         goals.BFLOAT16_SPEEDUP.met(case["ratio"]) if case["width"] == 1.0 else None,
                         case["cpu_share"],
                         f"{case['images_per_second']['mixed_bfloat16']:.0f} vs "
                         f"{case['images_per_second']['float32']:.0f} images/s"))
    picks = "; ".join(f"width {_width(case['width'])}: {case['auto_picks']}" for case in precision["cases"])
    note = f"auto picks {picks} (bfloat16 from width {_width(precision['bfloat16_min_width'])})"
    missed = [_width(case["width"]) for case in precision["cases"]
              if case["auto_picks"] == "float32" and case["ratio"] >= 1.1]
    if missed:
        note += (f"; bfloat16 was faster at width {', '.join(missed)}: models/precision.py's "
                 "BFLOAT16_MIN_WIDTH could be lowered")
    not_slower = all(case["auto_not_slower"] for case in precision["cases"])
    rows.append(_row(auto_figure, "yes" if not_slower else "no", "yes", not_slower, note=note))
    return rows


def _process_rows(process):
    memory_figure = "peak resident memory, full-width training, batch 128"
    startup_figure = "seconds from process start to the end of the first training step"
    memory_goal, startup_goal = str(goals.PEAK_MEMORY), str(goals.STARTUP)
    if _absent(process):
        return [_absent_row(memory_figure, memory_goal, process),
                _absent_row(startup_figure, startup_goal, process)]
    memory, startup = process["memory"], process["startup"]
    gigabytes = memory["max_rss_bytes"] / 1e9
    return [
        _row(memory_figure, f"{gigabytes:.2f} GB", memory_goal, goals.PEAK_MEMORY.met(gigabytes),
             memory["cpu_share"], f"peak resident memory (VmHWM) of a fresh `{memory['command']}` after "
                                  f"{memory['steps']} steps, data: {memory['data']}"),
        _row(startup_figure, f"{startup['seconds']:.1f} s", startup_goal,
             goals.STARTUP.met(startup["seconds"]), startup["cpu_share"],
             f"fresh `{startup['command']}` (width 1/4, the sample, batch 128), caches warm "
             f"(first run {startup['first_run_seconds']:.1f} s); {_phases(startup)}"),
    ]


def _phases(startup):
    """Where the start-up's seconds went, and its CPU seconds (steadier on a shared machine)."""
    phases = startup.get("phases") or {}
    marks = [("tensorflow_imported", "TensorFlow imported"), ("fit_started", "fit started"),
             ("first_step_ended", "first step done")]
    text = ", ".join(f"{label} at {phases[key]:.1f} s" for key, label in marks if key in phases)
    if "cpu_seconds" in startup:
        text += f"; {startup['cpu_seconds']:.1f} CPU seconds"
    return text


def _demo_row(demo):
    figure = "wall time of `make demo` after set-up"
    goal = str(goals.DEMO)
    if _absent(demo):
        return _absent_row(figure, goal, demo)
    minutes, seconds = divmod(round(demo["seconds"]), 60)
    note = ("measured in this run" if demo["measured"]
            else f"carried: measured {demo['date'][:10]} on {demo['machine']} ({demo['source']}); "
                 "`make bench BENCH_FLAGS=--demo` measures it")
    return _row(figure, f"{minutes} min {seconds:02d} s", goal, goals.DEMO.met(demo["seconds"] / 60),
                demo.get("cpu_share"), note)


def _strong_row(strong):
    figure = "strong evaluation (APGD-CE, APGD-DLR, Square) / PGD-10, s per 100 images"
    if _absent(strong):
        return _absent_row(figure, "", strong)
    pgd = strong.get("pgd10_seconds_per_100")
    robust = strong.get("robust_model_total_seconds_per_100")
    cascade = strong.get("cascade_total_seconds_per_100")
    if pgd is None or robust is None:
        return _row(figure, "?", note=f"unexpected result keys: {', '.join(sorted(strong))[:120]}")
    note = f"on a robust model (nothing breaks): {robust:.0f} s against PGD-10's {pgd:.2f} s"
    if cascade is not None:
        note += f"; the cascade on the untrained width-1/4 network: {cascade:.1f} s"
    if "images" in strong:
        note += f" (timed on {strong['images']} images)"
    return _row(figure, f"{robust / pgd:.0f}x", "", None, strong.get("cpu_share"), note)


def _distribute_row(distribute):
    figure = "training images/s, 2 logical CPU replicas / 1"
    if _absent(distribute):
        return _absent_row(figure, "", distribute)
    ratio = distribute.get("ratio")
    if ratio is None:
        ratios = {key: value for key, value in distribute.items()
                  if "ratio" in key and isinstance(value, (int, float))}
        ratio = next(iter(ratios.values()), None)
    if ratio is None:
        return _row(figure, "?", note=f"unexpected result keys: {', '.join(sorted(distribute))[:120]}")
    return _row(figure, f"{ratio:.2f}", "", None, distribute.get("cpu_share"),
                distribute.get("note", ""))


def detail_rows(results):
    """The figures behind the goals: rates, seconds, and the ratios of each bench."""
    rows = []
    for name, function in (("training", _training_details), ("train_step", _step_details),
                           ("attack", _attack_details), ("input_pipeline", _pipeline_details),
                           ("fgsm_ops", _ops_details)):
        section = results.get(name)
        if not _absent(section):
            rows += function(section)
    return rows


def _training_details(training):
    rows = [_row("float32 matmul 4096^3", f"{training['matmul_flops_per_second'] / 1e9:.1f} GFLOP/s",
                 cpu_share=training["matmul_cpu_share"]),
            _row("forward FLOPs per image, width 1 / width 1/4 (conv + dense)",
                 f"{training['forward_flops_per_image'] / 1e9:.3f} / "
                 f"{training['forward_flops_per_image_width_0.25'] / 1e9:.3f} G")]
    full = training["width_1"]
    rows.append(_row(f"baseline training, width 1, batch {full['batch_size']}",
                     f"{full['images_per_second']:.1f} images/s", cpu_share=full["cpu_share"]))
    return rows


def _step_details(step):
    median = statistics.median
    return [
        _row(f"custom train_step (pretrain: CE + SupCon + margin), width 1/4, "
             f"{step['images_per_step']} images", f"{median(step['custom_seconds_per_step']):.3f} s/step",
             cpu_share=step["cpu_share"], note=f"{step['custom_images_per_second']:.0f} views/s"),
        _row("plain Keras fit (CE), same network and images",
             f"{median(step['plain_seconds_per_step']):.3f} s/step",
             note=f"{step['plain_images_per_second']:.0f} images/s"),
    ]


def _attack_details(attack):
    seconds = attack["seconds"]
    xla = attack.get("evaluator_xla", True)
    rows = [_row(f"clean forward / FGSM / PGD-{attack['pgd_steps']}, {attack['batch_size']} images, "
                 f"{'XLA' if xla else 'no XLA'} (the evaluator's setting)",
                 f"{seconds['clean']:.3f} / {seconds['fgsm']:.3f} / {seconds['pgd']:.3f} s",
                 cpu_share=attack["cpu_share"]),
            _row("each further FGSM epsilon in the evaluator (gradient shared) / clean",
                 f"{attack['fgsm_shared_gradient_ratio']:.2f}")]
    if "fgsm_no_xla_ratio" in attack and xla:
        rows.append(_row("FGSM / clean, both without XLA", f"{attack['fgsm_no_xla_ratio']:.2f}",
                         note=f"FGSM {seconds['fgsm_no_xla']:.3f} s, clean {seconds['clean_no_xla']:.3f} s"))
    if "fgsm_xla_ratio" in attack and not xla:
        rows.append(_row("FGSM / clean, both with XLA", f"{attack['fgsm_xla_ratio']:.2f}",
                         note=f"FGSM {seconds['fgsm_xla']:.3f} s, clean {seconds['clean_xla']:.3f} s"))
    return rows


def _pipeline_details(pipeline):
    return [_row(f"input pipeline, {name} ({source['train_images']:,} images), 2 views, batch 256",
                 f"{source['views_per_second']:,.0f} views/s", str(goals.PIPELINE_VIEWS_PER_SECOND),
                 goals.PIPELINE_VIEWS_PER_SECOND.met(source["views_per_second"]), source["cpu_share"])
            for name, source in pipeline["sources"].items()]


def _ops_details(ops):
    rows = []
    for suffix, label in (("no_xla", "without XLA"), ("xla", "XLA")):
        total = ops["totals"][suffix]
        rows.append(_row(f"all convolutions' input gradient / forward, width 1/4, batch 256, {label}",
                         f"{total['ratio']:.2f}", cpu_share=ops["cpu_share"],
                         note=f"{total['backward_input_seconds'] * 1e3:.0f} / "
                              f"{total['forward_seconds'] * 1e3:.0f} ms"))
    worst = max(ops["layers"], key=lambda row: row["ratio_no_xla"])
    rows.append(_row(f"worst layer without XLA: {worst['layer']} "
                     f"({'x'.join(map(str, worst['input']))} input)", f"{worst['ratio_no_xla']:.2f}",
                     note=f"with XLA {worst['ratio_xla']:.2f}"))
    return rows
