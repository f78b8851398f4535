"""Tables and plots of the experiments' results."""

from __future__ import annotations

import os

from .._terminal import format_table
from .runner import Experiment, Result


def is_regression(results: list[Result]) -> bool:
    return bool(results) and bool(results[0].curve)


def table(exp: Experiment, results: list[Result]) -> str:
    """One row per (task, model); one column per test length: accuracy in %, or MSE for
    regression (lower is better)."""
    rows = []
    for r in results:
        row = {"task": r.task, "model": r.model}
        for T, score in r.scores.items():
            row[f"T={T}"] = f"{score:.3f}" if r.curve else f"{100 * score:.1f}%"
        row["train loss"] = f"{r.final_loss:.3f}"
        row["time"] = f"{r.seconds:.0f}s"
        rows.append(row)
    metric = ("MSE of the last example's prediction (lower is better)" if is_regression(results)
              else "accuracy over scored positions")
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
