"""Tables and plots of the experiments' results."""

from __future__ import annotations

import dataclasses
import os
import statistics

from .._terminal import format_table
from . import runner
from .runner import Experiment, Result


def is_regression(results: list[Result]) -> bool:
    return bool(results) and bool(results[0].curve)


def _mean_score(r: Result) -> float:
    return statistics.fmean(r.scores.values())


@dataclasses.dataclass
class Summary:
    """The runs of one (task, model) at its best learning rate: best and median over seeds."""
    task: str
    model: str
    lr: float
    runs: list[Result]
    best: dict[int, float]     # test length -> best score over the seeds
    median: dict[int, float]   # test length -> median score over the seeds
    best_mean: float           # over the test lengths (e.g. Grazzi et al.'s 40..256), best seed
    median_mean: float


def summarise(results: list[Result]) -> list[Summary]:
    """Groups the runs by (task, model); takes its learning rate (runner.best_lr: the best
    first-seed run) and the best and median over the seeds run there. Lower is better for mse,
    higher for every other metric."""
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.task, r.model), []).append(r)
    out = []
    for (task, model), runs in groups.items():
        pick = min if runs[0].metric == "mse" else max
        lr = runner.best_lr(runs)
        runs = [r for r in runs if r.lr == lr]
        lengths = list(runs[0].scores)
        out.append(Summary(task, model, lr, runs,
                           {T: pick(r.scores[T] for r in runs) for T in lengths},
                           {T: statistics.median(r.scores[T] for r in runs) for T in lengths},
                           pick(_mean_score(r) for r in runs),
                           statistics.median(_mean_score(r) for r in runs)))
    return out


def _fmt(metric: str, x: float) -> str:
    return f"{x:.3f}" if metric in ("mse", "scaled_accuracy") else f"{100 * x:.1f}%"


def summary_table(exp: Experiment, results: list[Result]) -> str:
    """Several seeds and/or a learning-rate sweep: one row per (task, model) at its best learning
    rate, "best / median" over the seeds per test length and for the mean over the lengths,
    with the parameter count and the recurrent state size."""
    rows = []
    for s in summarise(results):
        metric = s.runs[0].metric
        row = {"task": s.task, "model": s.model, "lr": f"{s.lr:g}", "seeds": str(len(s.runs))}
        info = s.runs[0].info
        if "state_floats" in info:
            row["params"] = f"{info['params'] / 1e3:.0f}k"
            row["state"] = "KV cache" if info["state_floats"] is None else str(info["state_floats"])
        for T in s.best:
            row[f"T={T}"] = f"{_fmt(metric, s.best[T])} / {_fmt(metric, s.median[T])}"
        row["mean"] = f"{_fmt(metric, s.best_mean)} / {_fmt(metric, s.median_mean)}"
        rows.append(row)
    metric = results[0].metric if results else exp.metric
    lengths = exp.recipe.train_length
    sweep = f"lr swept over {list(exp.recipe.lrs)}, best shown" if exp.recipe.lrs else f"lr {exp.recipe.lr:g}"
    header = (f"{exp.title}\n  claim: {exp.claim}\n  trained on lengths {lengths[0]}..{lengths[1]}, "
              f"{exp.recipe.steps} steps, {sweep}; {metric} (best / median over {exp.seeds} seeds)")
    return header + "\n" + format_table(rows)


def table(exp: Experiment, results: list[Result]) -> str:
    """One row per (task, model); one column per test length: accuracy in %, or MSE for
    regression (lower is better). Several seeds or a learning-rate sweep: summary_table."""
    if exp.seeds > 1 or exp.recipe.lrs:
        return summary_table(exp, results)
    rows = []
    for r in results:
        row = {"task": r.task, "model": r.model}
        for T, score in r.scores.items():
            row[f"T={T}"] = f"{score:.3f}" if r.curve else f"{100 * score:.1f}%"
        row["train loss"] = f"{r.final_loss:.3f}"
        row["time"] = f"{r.seconds:.0f}s"
        rows.append(row)
    metric = ("MSE of the last example's prediction (lower is better)" if is_regression(results)
              else "accuracy over scored positions" if exp.metric == "accuracy" else exp.metric)
    lengths = exp.recipe.train_length
    header = (f"{exp.title}\n  claim: {exp.claim}\n  trained on lengths {lengths[0]}..{lengths[1]}, "
              f"{exp.recipe.steps} steps; {metric}; seed {exp.seed}")
    return header + "\n" + format_table(rows)


def plot(exp: Experiment, results: list[Result], path: str) -> None:
    """Score against test length per model (one panel per task); regression: MSE against the
    number of in-context examples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if exp.seeds > 1 or exp.recipe.lrs:  # one line per model: its median seed's mean score
        results = [sorted(s.runs, key=_mean_score)[len(s.runs) // 2] for s in summarise(results)]
    task_names = list(dict.fromkeys(r.task for r in results))
    fig, axes = plt.subplots(1, len(task_names), figsize=(5 * len(task_names), 3.8), squeeze=False)
    for ax, task in zip(axes[0], task_names):
        for r in (r for r in results if r.task == task):
            if r.curve:
                ax.plot(range(len(r.curve)), r.curve, label=r.model)
            else:
                lengths = list(r.scores)
                ax.plot(lengths, [100 * r.scores[T] for T in lengths], marker="o", label=r.model)
        if is_regression(results):
            ax.set_xlabel("in-context examples seen")
            ax.set_ylabel("MSE")
            ax.set_yscale("log")
        else:
            ax.set_xscale("log", base=2)
            ax.set_xlabel("test length T")
            ax.set_ylabel("accuracy (%)")
            ax.set_ylim(0, 102)
            lo, hi = exp.recipe.train_length
            ax.axvspan(lo, hi, color="grey", alpha=0.15, label="training lengths")
        ax.set_title(f"{exp.name}: {task}", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
