"""Training and evaluation of the experiments: one loop for every task and model.

An experiment is a config (experiments/configs/*.toml, a quick and a full variant): a task, the
models to compare (each a mixer of linattn.layers with its options), the training recipe and
the evaluation lengths. Everything is seeded: the same config and seed give the same numbers
(threads aside: linattn's kernels are bitwise deterministic, PyTorch's CPU matmuls are too for
a fixed thread count).

Every run (task, model, learning rate, seed) can be saved as one JSON file holding its config,
its training curve and the raw evaluation (per test length: correct and scored counts per
position, the first wrong position of every sequence; regression: the error per example), from
which every metric of METRICS is recomputed (`metrics`) without a retrain.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import tomllib
import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable

import torch

from . import tasks as task_lib

CONFIG_NAMES = ("state_tracking", "mqar", "regression")
# The papers' setups (docs/results.md, "How the full runs are made"): [full] is the run,
# [quick] a scaled-down check of the same grid.
PAPER_CONFIG_NAMES = ("state_tracking_grazzi", "state_tracking_deltaproduct", "mqar_matched",
                      "regression_switch")

# accuracy: over every scored position; scaled_accuracy: (accuracy - chance) / (1 - chance),
# 0 = chance, 1 = perfect (Grazzi et al.); sequence_accuracy: the fraction of sequences whose
# every position is right (Siems et al.); mse: regression, the last example's squared error.
METRICS = ("accuracy", "scaled_accuracy", "sequence_accuracy", "mse")


@dataclass
class ModelSpec:
    label: str            # row name in the results, e.g. "DeltaNet beta in [0, 2]"
    mixer: str            # a mixer name of linattn.models
    options: dict[str, Any] = field(default_factory=dict)
    full_only: bool = False  # trained by the [full] recipe only (keeps the quick demo short)


@dataclass
class Recipe:
    steps: int
    batch: int
    lr: float
    train_length: tuple[int, int]      # lengths drawn uniformly in [lo, hi] per batch
    test_lengths: tuple[int, ...]
    eval_batch: int
    d_model: int
    layers: int
    heads: int
    weight_decay: float = 0.01
    warmup: int = 0
    lrs: tuple[float, ...] = ()        # a learning-rate sweep (each trained); empty: lr alone


@dataclass
class Experiment:
    name: str
    title: str
    tasks: list
    models: list[ModelSpec]
    recipe: Recipe
    seed: int
    claim: str            # the published claim the experiment tests, shown with the results
    metric: str = "accuracy"  # one of METRICS: the score of the tables
    seeds: int = 1            # runs per (task, model, lr): seeds seed, seed + 100, ...
    task_lengths: dict[str, int] = field(default_factory=dict)  # task name -> its own T


def make_task(spec: dict):
    kind = spec["kind"]
    if kind == "parity":
        return task_lib.Parity(spec.get("answer_only", False))
    if kind == "modular_addition":
        return task_lib.ModularAddition(spec["modulus"])
    if kind == "modular_arithmetic":
        return task_lib.ModularArithmetic(spec.get("modulus", 5), spec.get("brackets", False))
    if kind == "permutation":
        return task_lib.PermutationComposition(spec["n"], spec.get("alternating", False))
    if kind == "mqar":
        return task_lib.MultiQueryAssociativeRecall(spec["pairs"], spec.get("keys", 64),
                                                    spec.get("values", 64))
    if kind == "regression":
        return task_lib.InContextRegression(spec["dim"], spec.get("noise", 0.0),
                                            spec.get("switch", False))
    raise ValueError(f"experiment config: unknown task kind '{kind}'; known: parity, "
                     "modular_addition, modular_arithmetic, permutation, mqar, regression")


def load(name: str, full: bool = False, path: str | None = None) -> Experiment:
    """The experiment `name` from its packaged config (or the TOML file at `path`); `full`
    selects the [full] recipe (longer training, more test lengths) over [quick]."""
    if path is not None:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    else:
        if name not in CONFIG_NAMES + PAPER_CONFIG_NAMES:
            raise ValueError(f"unknown experiment '{name}'; known: "
                             f"{', '.join(CONFIG_NAMES + PAPER_CONFIG_NAMES)}")
        raw = tomllib.loads(resources.files(__package__).joinpath(f"configs/{name}.toml").read_text())
    recipe = dict(raw["recipe"])
    variant = dict(raw["full" if full else "quick"])
    task_specs = variant.pop("tasks", raw["tasks"])  # a variant may run fewer tasks
    recipe.update(variant)
    recipe["train_length"] = tuple(recipe["train_length"])
    recipe["test_lengths"] = tuple(recipe["test_lengths"])
    recipe["lrs"] = tuple(recipe.get("lrs", ()))
    seeds = recipe.pop("seeds", 3 if full else 1)
    metric = raw.get("metric", "accuracy")
    if metric not in METRICS:
        raise ValueError(f"experiment config: unknown metric '{metric}'; known: {', '.join(METRICS)}")
    tasks = [make_task(t) for t in task_specs]
    return Experiment(
        name=raw.get("name", name), title=raw["title"], claim=raw["claim"], tasks=tasks,
        models=[ModelSpec(m["label"], m["mixer"], m.get("options", {}), m.get("full_only", False))
                for m in raw["models"] if full or not m.get("full_only", False)],
        recipe=Recipe(**recipe), seed=raw.get("seed", 0), metric=metric, seeds=seeds,
        task_lengths={t.name: spec["length"] for t, spec in zip(tasks, task_specs)
                      if "length" in spec})


def select_models(exp: Experiment, labels: list[str]) -> None:
    """Keeps only the models of `exp` whose label is in `labels` (in the config's order); every
    model is seeded alone, so the rows it gives equal those of the whole run."""
    known = [m.label for m in exp.models]
    unknown = [label for label in labels if label not in known]
    if unknown:
        raise ValueError(f"experiment '{exp.name}': unknown model(s) {unknown}; known: {known}")
    exp.models = [m for m in exp.models if m.label in labels]


def learning_rate(step: int, recipe: Recipe) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _loss(task, output, targets, mask):
    if isinstance(task, task_lib.InContextRegression):
        return ((output - targets) ** 2)[mask].mean()
    return torch.nn.functional.cross_entropy(output[mask], targets[mask])


def _batch(task, gen, batch: int, length: int):
    if isinstance(task, task_lib.InContextRegression):
        return task.batch(gen, batch, max(1, length // 2))  # length counts tokens: 2 per example
    return task.batch(gen, batch, length)


def train(model: torch.nn.Module, task, recipe: Recipe, seed: int,
          progress: Callable[[int, float], None] | None = None) -> list[float]:
    """Trains `model` on `task` with AdamW; returns the loss of every step."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    lo, hi = recipe.train_length
    losses = []
    model.train()
    for step in range(recipe.steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, recipe)
        length = int(torch.randint(lo, hi + 1, (1,), generator=gen))
        inputs, targets, mask = _batch(task, gen, recipe.batch, length)
        loss = _loss(task, model(inputs), targets, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if progress:
            progress(step + 1, losses[-1])
    return losses


@torch.no_grad()
def evaluate_raw(model: torch.nn.Module, task, length: int, batch: int, seed: int) -> dict:
    """What every metric of a test length is computed from (`metrics`), on a fresh batch of
    sequences of `length`. Token tasks: correct and scored counts per position, the first wrong
    scored position of every sequence (length if none) and the chance level 1 / vocab_out.
    Regression: the mean squared error of the prediction of every example."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    inputs, targets, mask = _batch(task, gen, batch, length)
    output = model(inputs)
    if isinstance(task, task_lib.InContextRegression):
        return {"mse_by_example": ((output - targets) ** 2)[:, 0::2, 0].mean(0).tolist()}
    wrong = (output.argmax(-1) != targets) & mask
    first_error = torch.where(wrong.any(1), wrong.int().argmax(1), torch.tensor(wrong.shape[1]))
    return {"correct": ((~wrong) & mask).sum(0).tolist(), "scored": mask.sum(0).tolist(),
            "first_error": first_error.tolist(), "chance": 1.0 / task.vocab_out}


def metrics(raw: dict) -> dict[str, float]:
    """Every metric of METRICS that applies, from one evaluate_raw record."""
    if "mse_by_example" in raw:
        return {"mse": raw["mse_by_example"][-1]}
    accuracy = sum(raw["correct"]) / sum(raw["scored"])
    chance = raw["chance"]
    length = len(raw["scored"])
    return {"accuracy": accuracy, "scaled_accuracy": (accuracy - chance) / (1 - chance),
            "sequence_accuracy": sum(e >= length for e in raw["first_error"]) / len(raw["first_error"])}


def evaluate(model: torch.nn.Module, task, length: int, batch: int, seed: int) -> float:
    """Token tasks: accuracy over the scored positions of a fresh batch of sequences of `length`.
    Regression: mean squared error of the last example's prediction (its context holds all the
    earlier examples)."""
    m = metrics(evaluate_raw(model, task, length, batch, seed))
    return m["mse"] if "mse" in m else m["accuracy"]


@dataclass
class Result:
    task: str
    model: str
    scores: dict[int, float]     # test length -> the experiment's metric
    final_loss: float
    seconds: float
    curve: list[float] = field(default_factory=list)  # regression: MSE per example index
    seed: int = 0
    lr: float = 0.0
    metric: str = "accuracy"
    raw: dict[int, dict] = field(default_factory=dict)  # test length -> evaluate_raw record
    losses: list[float] = field(default_factory=list)   # the training curve, one loss per step
    info: dict[str, Any] = field(default_factory=dict)  # parameters, state size, options


def run(exp: Experiment, build_model: Callable[[ModelSpec, Any, Recipe], torch.nn.Module],
        progress: Callable[[str, int, int], None] | None = None,
        out_dir: str | None = None, describe: Callable[[torch.nn.Module], dict] | None = None
        ) -> list[Result]:
    """Trains every model of `exp` on every task with the first seed at each learning rate of the
    sweep, then exp.seeds - 1 more seeds at the best one (best_lr), and evaluates each test
    length. Seed i uses s = exp.seed + 100 i: model seed s, data seed s + 1, test seed s + 2
    (seed 0 repeats the single-seed runs). With `out_dir` every run is written there as one
    JSON file (save_result)."""
    results = []
    for task in exp.tasks:
        r = exp.recipe
        if task.name in exp.task_lengths:
            T = exp.task_lengths[task.name]
            r = dataclasses.replace(r, train_length=(T, T), test_lengths=(T,))
        for spec in exp.models:
            def one(lr, i):
                results.append(_run_one(exp, task, spec, dataclasses.replace(r, lr=lr),
                                        exp.seed + 100 * i, build_model, progress, describe))
                if out_dir:
                    save_result(exp, results[-1], out_dir)
                return results[-1]

            best = best_lr([one(lr, 0) for lr in r.lrs or (r.lr,)])
            for i in range(1, exp.seeds):
                one(best, i)
    return results


def _ranked(score: float, lower: bool) -> float:
    """score, with NaN (a diverged run) ranked worst."""
    return score if score == score else (math.inf if lower else -math.inf)


def best_lr(runs: list[Result]) -> float:
    """The learning rate whose first-seed run has the best mean score over the test lengths
    (lowest for mse, highest otherwise): the sweep runs one seed per learning rate, the other
    seeds run at the rate it picks (Zoology reports each model at its best learning rate)."""
    first = {}
    for r in sorted(runs, key=lambda r: r.seed):
        first.setdefault(r.lr, r)
    lower = runs[0].metric == "mse"
    key = {lr: _ranked(sum(r.scores.values()) / len(r.scores), lower) for lr, r in first.items()}
    return (min if lower else max)(key, key=key.get)


def _run_one(exp, task, spec, r: Recipe, seed: int, build_model, progress, describe) -> Result:
    torch.manual_seed(seed)
    model = build_model(spec, task, r)
    label = f"{task.name} {spec.label}" + (f" lr={r.lr:g}" if r.lrs else "") + (
        f" seed={seed}" if exp.seeds > 1 else "")
    start = time.monotonic()
    losses = train(model, task, r, seed + 1,
                   None if progress is None else lambda s, _: progress(label, s, r.steps))
    raw = {T: evaluate_raw(model, task, T, r.eval_batch, seed + 2) for T in r.test_lengths}
    curve = []
    if isinstance(task, task_lib.InContextRegression):
        curve = raw[max(r.test_lengths)]["mse_by_example"]
    tail = losses[-max(1, len(losses) // 20):]
    metric = exp.metric if not isinstance(task, task_lib.InContextRegression) else "mse"
    info = {"options": dict(spec.options), "mixer": spec.mixer, **(describe(model) if describe else {})}
    return Result(task.name, spec.label, {T: metrics(x)[metric] for T, x in raw.items()},
                  sum(tail) / len(tail), time.monotonic() - start, curve, seed, r.lr, metric,
                  raw, losses, info)


def save_result(exp: Experiment, result: Result, out_dir: str) -> str:
    """Writes one run as <out_dir>/<experiment>__<task>__<model>__lr<lr>__seed<seed>.json:
    the Result (raw evaluation and training curve included) and the experiment's recipe."""
    os.makedirs(out_dir, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9.=-]+", "_", result.model).strip("_")
    path = os.path.join(out_dir, f"{exp.name}__{result.task}__{slug}__lr{result.lr:g}__"
                                 f"seed{result.seed}.json")
    with open(path, "w") as f:
        json.dump({"experiment": exp.name, "recipe": dataclasses.asdict(exp.recipe),
                   "result": dataclasses.asdict(result)}, f)
    return path


def load_result(path: str) -> Result:
    """A Result from a save_result file (test lengths back to int keys)."""
    with open(path) as f:
        r = json.load(f)["result"]
    r["scores"] = {int(T): v for T, v in r["scores"].items()}
    r["raw"] = {int(T): v for T, v in r["raw"].items()}
    return Result(**r)
