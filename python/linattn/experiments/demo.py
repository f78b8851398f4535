"""`linattn demo`: the quick (or --full) versions of the four experiments, with progress bars,
result tables and PNG plots in one output folder."""

from __future__ import annotations

import dataclasses
import json
import os
import time

from .._terminal import Progress

EXPERIMENTS = ("state_tracking", "mqar", "regression", "throughput")
# Run by name only (--only): the papers' setups (runner.PAPER_CONFIG_NAMES) and the training
# throughput sweep (throughput_train); see docs/results.md, "How the full runs are made".
PAPER_EXPERIMENTS = ("state_tracking_grazzi", "state_tracking_deltaproduct", "mqar_matched",
                     "regression_switch", "throughput_train")


def run(out: str, full: bool = False, only: tuple[str, ...] = EXPERIMENTS,
        steps: int | None = None, threads: int | None = None,
        labels: list[str] | None = None, seeds: int | None = None) -> str:
    """Runs the experiments in `only`, writes <out>/<name>.png, <out>/<name>.json (the results:
    scores, losses, regression curves), one JSON per run under <out>/runs/<name>/ (raw evaluation
    and training curve, for recomputing a metric: runner.load_result, runner.metrics) and
    <out>/results.md, and returns the text of all result tables. `steps` overrides every
    recipe's training steps (smoke runs); `labels` keeps only the models with these labels (with
    a single experiment in `only`); `seeds` the number of seeds (default: the config's, 3 for
    --full, 1 for the quick runs)."""
    import torch

    from .. import _core
    from . import models, report, runner, throughput, throughput_train

    unknown = [name for name in only if name not in EXPERIMENTS + PAPER_EXPERIMENTS]
    if unknown:
        raise ValueError(f"demo: unknown experiment(s) {', '.join(unknown)}; known: "
                         f"{', '.join(EXPERIMENTS + PAPER_EXPERIMENTS)}")
    if labels and (len(only) != 1 or only[0].startswith("throughput")):
        raise ValueError("demo: --model needs exactly one training experiment in --only, "
                         f"got {', '.join(only)}")
    if seeds is not None and seeds < 1:
        raise ValueError(f"demo: --seeds must be >= 1, got {seeds}")
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
        if name == "throughput_train":
            text = throughput_train.run(full=full, threads=threads,
                                        json_path=os.path.join(out, "throughput_train.json"))
            sections.append(f"## throughput_train\n\n```\n{text}\n```")
            print(text, flush=True)
            continue
        exp = runner.load(name, full=full)
        if seeds is not None:
            exp.seeds = seeds
        if labels:
            runner.select_models(exp, labels)
        if steps is not None:
            exp.recipe = dataclasses.replace(exp.recipe, steps=steps)
        bars: dict[str, Progress] = {}

        def progress(label, step, total):
            bars.setdefault(label, Progress(f"{name}: {label}"))(step, total)

        results = runner.run(exp, models.build_model, progress,
                             out_dir=os.path.join(out, "runs", name), describe=models.describe)
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
