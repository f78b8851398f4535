"""Training and evaluation of the experiments: one loop for every task and model.

An experiment is a config (experiments/configs/*.toml, a quick and a full variant): a task, the
models to compare (each a mixer of linattn.layers with its options), the training recipe and
the evaluation lengths. Everything is seeded: the same config and seed give the same numbers
(threads aside: linattn's kernels are bitwise deterministic, PyTorch's CPU matmuls are too for
a fixed thread count).
"""

from __future__ import annotations

import math
import time
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable

import torch

from . import tasks as task_lib

CONFIG_NAMES = ("state_tracking", "mqar", "regression")


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


@dataclass
class Experiment:
    name: str
    title: str
    tasks: list
    models: list[ModelSpec]
    recipe: Recipe
    seed: int
    claim: str            # the published claim the experiment tests, shown with the results


def make_task(spec: dict):
    kind = spec["kind"]
    if kind == "parity":
        return task_lib.Parity()
    if kind == "modular_addition":
        return task_lib.ModularAddition(spec["modulus"])
    if kind == "permutation":
        return task_lib.PermutationComposition(spec["n"])
    if kind == "mqar":
        return task_lib.MultiQueryAssociativeRecall(spec["pairs"], spec.get("keys", 64),
                                                    spec.get("values", 64))
    if kind == "regression":
        return task_lib.InContextRegression(spec["dim"], spec.get("noise", 0.0))
    raise ValueError(f"experiment config: unknown task kind '{kind}'; known: parity, "
                     "modular_addition, permutation, mqar, regression")


def load(name: str, full: bool = False, path: str | None = None) -> Experiment:
    """The experiment `name` from its packaged config (or the TOML file at `path`); `full`
    selects the [full] recipe (longer training, more test lengths) over [quick]."""
    if path is not None:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    else:
        if name not in CONFIG_NAMES:
            raise ValueError(f"unknown experiment '{name}'; known: {', '.join(CONFIG_NAMES)}")
        raw = tomllib.loads(resources.files(__package__).joinpath(f"configs/{name}.toml").read_text())
    recipe = dict(raw["recipe"])
    variant = dict(raw["full" if full else "quick"])
    task_specs = variant.pop("tasks", raw["tasks"])  # a variant may run fewer tasks
    recipe.update(variant)
    recipe["train_length"] = tuple(recipe["train_length"])
    recipe["test_lengths"] = tuple(recipe["test_lengths"])
    return Experiment(
        name=raw.get("name", name), title=raw["title"], claim=raw["claim"],
        tasks=[make_task(t) for t in task_specs],
        models=[ModelSpec(m["label"], m["mixer"], m.get("options", {}), m.get("full_only", False))
                for m in raw["models"] if full or not m.get("full_only", False)],
        recipe=Recipe(**recipe), seed=raw.get("seed", 0))


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
def evaluate(model: torch.nn.Module, task, length: int, batch: int, seed: int) -> float:
    """Token tasks: accuracy over the scored positions of a fresh batch of sequences of `length`.
    Regression: mean squared error of the last example's prediction (its context holds all the
    earlier examples)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    inputs, targets, mask = _batch(task, gen, batch, length)
    output = model(inputs)
    if isinstance(task, task_lib.InContextRegression):
        return float(((output - targets) ** 2)[:, -2].mean())
    return float((output.argmax(-1) == targets)[mask].float().mean())


@torch.no_grad()
def regression_error_by_examples(model: torch.nn.Module, task, examples: int, batch: int,
                                 seed: int) -> list[float]:
    """In-context regression: mean squared error of the prediction of example i from the i
    earlier ones, for i = 0 .. examples-1 (one forward pass over `examples` pairs)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    inputs, targets, _ = task.batch(gen, batch, examples)
    err = ((model(inputs) - targets) ** 2)[:, 0::2, 0]
    return err.mean(0).tolist()


@dataclass
class Result:
    task: str
    model: str
    scores: dict[int, float]     # test length -> accuracy (or MSE for regression)
    final_loss: float
    seconds: float
    curve: list[float] = field(default_factory=list)  # regression: MSE per example index


def run(exp: Experiment, build_model: Callable[[ModelSpec, Any, Recipe], torch.nn.Module],
        progress: Callable[[str, int, int], None] | None = None) -> list[Result]:
    """Trains every model of `exp` on every task (model seed = exp.seed, data seed = exp.seed + 1,
    test seed = exp.seed + 2) and evaluates each test length."""
    results = []
    r = exp.recipe
    for task in exp.tasks:
        for spec in exp.models:
            torch.manual_seed(exp.seed)
            model = build_model(spec, task, r)
            label = f"{task.name} {spec.label}"
            start = time.monotonic()
            losses = train(model, task, r, exp.seed + 1,
                           None if progress is None else lambda s, _: progress(label, s, r.steps))
            scores = {T: evaluate(model, task, T, r.eval_batch, exp.seed + 2) for T in r.test_lengths}
            curve = []
            if isinstance(task, task_lib.InContextRegression):
                curve = regression_error_by_examples(model, task, max(r.test_lengths) // 2,
                                                     r.eval_batch, exp.seed + 2)
            tail = losses[-max(1, len(losses) // 20):]
            results.append(Result(task.name, spec.label, scores, sum(tail) / len(tail),
                                  time.monotonic() - start, curve))
    return results
