"""`linattn demo`: the quick (or --full) versions of the four experiments, with progress bars,
result tables and PNG plots in one output folder."""

from __future__ import annotations

import dataclasses
import json
import os
import time

from .._terminal import Progress

EXPERIMENTS = ("state_tracking", "mqar", "regression", "throughput")


def run(out: str, full: bool = False, only: tuple[str, ...] = EXPERIMENTS,
        steps: int | None = None, threads: int | None = None,
        labels: list[str] | None = None) -> str:
    """Runs the experiments in `only`, writes <out>/<name>.png, <out>/<name>.json (the results:
    scores, losses, regression curves) and <out>/results.md, and returns
    the text of all result tables. `steps` overrides every recipe's training steps (smoke runs);
    `labels` keeps only the models with these labels (with a single experiment in `only`)."""
    import torch

    from .. import _core
    from . import models, report, runner, throughput

    unknown = [name for name in only if name not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"demo: unknown experiment(s) {', '.join(unknown)}; known: "
                         f"{', '.join(EXPERIMENTS)}")
    if labels and (len(only) != 1 or only[0] == "throughput"):
        raise ValueError("demo: --model needs exactly one of state_tracking, mqar, regression "
                         f"in --only, got {', '.join(only)}")
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    _core.set_num_threads(threads)
    os.makedirs(out, exist_ok=True)
    sections = []
    start = time.monotonic()
    for name in only:
        if name == "throughput":
            plot = os.path.join(out, "throughput.png")
            text = throughput.run(full=full, threads=threads, plot=plot).format()
            sections.append(f"## throughput\n\n```\n{text}\n```\nplot: {plot}")
            print(text, flush=True)
            continue
        exp = runner.load(name, full=full)
        if labels:
            runner.select_models(exp, labels)
        if steps is not None:
            exp.recipe = dataclasses.replace(exp.recipe, steps=steps)
        bars: dict[str, Progress] = {}

        def progress(label, step, total):
            bars.setdefault(label, Progress(f"{name}: {label}"))(step, total)

        results = runner.run(exp, models.build_model, progress)
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump([dataclasses.asdict(r) for r in results], f, indent=1)
        plot = os.path.join(out, f"{name}.png")
        report.plot(exp, results, plot)
        text = report.table(exp, results)
        sections.append(f"## {name}\n\n```\n{text}\n```\nplot: {plot}")
        print(text + f"\nplot: {plot}\n", flush=True)
    minutes = (time.monotonic() - start) / 60
    summary = (f"# linattn demo ({'full' if full else 'quick'}), {threads} threads, "
               f"{minutes:.1f} min\n\n" + "\n\n".join(sections) + "\n")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(summary)
    return summary
