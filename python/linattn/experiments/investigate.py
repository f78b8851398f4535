"""One-model probes behind the "investigated" notes of docs/results.md: a model of an experiment's
config trained alone with one thing changed (a layer option, the learning rate, the steps, short
convolutions added to softmax attention, or torch's SDPA in place of linattn's attention kernel),
printing one JSON line. Seeds are the experiment's, so an unchanged probe repeats the config's run.

    python -m linattn.experiments.investigate mqar 'softmax attention' --short-convs
    python -m linattn.experiments.investigate mqar GLA --set use_short_conv=true --lr 1e-3
    python -m linattn.experiments.investigate state_tracking 'DeltaProduct n_h=2 [-1,1]' \\
        --task S3 --steps 6000 --full
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import time

import torch

from .. import layers
from . import models as exp_models
from . import runner


class _ConvAttention(layers.Attention):
    """Softmax attention with short convolutions after its q, k, v projections
    (models.add_short_convs)."""

    def __init__(self, hidden_size: int = 2048, num_heads: int = 32, **kwargs):
        super().__init__(hidden_size=hidden_size, num_heads=num_heads, **kwargs)
        exp_models.add_short_convs(self)


def _sdpa_attend(self, x, q, k, v, cached: bool, form: str):
    """torch's causal scaled_dot_product_attention in place of linattn.parallel_attn."""
    o = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
    return o.transpose(1, 2)


@contextlib.contextmanager
def _attention_variant(short_convs: bool, sdpa: bool):
    """Swaps the softmax attention layer for the probe's variant while it runs."""
    saved = layers.MIXERS["attention"], layers.Attention._attend
    if short_convs:
        layers.MIXERS["attention"] = _ConvAttention
    if sdpa:
        layers.Attention._attend = _sdpa_attend
    try:
        yield
    finally:
        layers.MIXERS["attention"], layers.Attention._attend = saved


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m linattn.experiments.investigate",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("experiment", help="a config name: state_tracking, mqar, regression")
    ap.add_argument("model", help="a model label of the config")
    ap.add_argument("--task", help="a task name of the config (default: its first task)")
    ap.add_argument("--pairs", type=int, help="mqar: the number of key-value pairs")
    ap.add_argument("--full", action="store_true", help="the [full] recipe (default: [quick])")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                    help="a layer option (JSON value), e.g. use_short_conv=true")
    ap.add_argument("--short-convs", action="store_true", help="softmax attention with short convs")
    ap.add_argument("--sdpa", action="store_true", help="softmax attention through torch SDPA")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    exp = runner.load(args.experiment, full=args.full)
    runner.select_models(exp, [args.model])
    spec = exp.models[0]
    spec.options = {**spec.options, **{k: _value(v) for k, v in (s.split("=", 1) for s in args.set)}}
    recipe = exp.recipe
    if args.steps:
        recipe = dataclasses.replace(recipe, steps=args.steps)
    if args.lr:
        recipe = dataclasses.replace(recipe, lr=args.lr)
    tasks = {t.name: t for t in exp.tasks}
    if args.task and args.task not in tasks:
        ap.error(f"experiment '{exp.name}' has no task {args.task!r}; its tasks: {list(tasks)}")
    task = tasks[args.task] if args.task else exp.tasks[0]
    if args.pairs:
        if not hasattr(task, "pairs"):
            ap.error(f"--pairs applies to MQAR tasks, not to {task.name!r}")
        task = dataclasses.replace(task, pairs=args.pairs)
    with _attention_variant(args.short_convs, args.sdpa):
        torch.manual_seed(exp.seed)
        model = exp_models.build_model(spec, task, recipe)
        start = time.monotonic()
        losses = runner.train(model, task, recipe, exp.seed + 1)
        scores = {T: runner.evaluate(model, task, T, recipe.eval_batch, exp.seed + 2)
                  for T in recipe.test_lengths}
    tail = losses[-20:]
    print(json.dumps(dict(model=args.model, task=task.name, options=spec.options,
                          short_convs=args.short_convs, sdpa=args.sdpa, steps=recipe.steps,
                          lr=recipe.lr, scores=scores, final_loss=round(sum(tail) / len(tail), 4),
                          seconds=round(time.monotonic() - start, 1))), flush=True)


if __name__ == "__main__":
    main()
