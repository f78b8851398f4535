"""The pieces of the papers' setups (docs/results.md, "How the full runs are made"): their
metrics on predictors whose score is known, the new tasks' targets, the non-stationary switch,
seeds and learning-rate sweeps with per-run JSON from which a metric is recomputed, the matched
MQAR models, and the training-throughput sweep, each at tiny sizes."""

from __future__ import annotations

import dataclasses
import glob
import itertools
import json
import os

import pytest

torch = pytest.importorskip("torch")

from linattn.experiments import models, report, runner, tasks  # noqa: E402


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


class Oracle(torch.nn.Module):
    """Logits of a fixed predictor of the targets: `fn(inputs) -> predicted classes`."""

    def __init__(self, fn, classes):
        super().__init__()
        self.fn, self.classes = fn, classes

    def forward(self, x):
        return torch.nn.functional.one_hot(self.fn(x), self.classes).float()


# --- metrics ------------------------------------------------------------------------------------

def test_scaled_accuracy_of_perfect_chance_and_always_wrong_predictors():
    task = tasks.Parity(answer_only=True)
    perfect = Oracle(lambda x: x.cumsum(1) % 2, 2)
    constant = Oracle(lambda x: torch.zeros_like(x), 2)
    wrong = Oracle(lambda x: 1 - x.cumsum(1) % 2, 2)
    scaled = {name: runner.metrics(runner.evaluate_raw(m, task, 64, 4000, 0))["scaled_accuracy"]
              for name, m in (("perfect", perfect), ("constant", constant), ("wrong", wrong))}
    assert scaled["perfect"] == 1.0 and scaled["wrong"] == -1.0
    assert abs(scaled["constant"]) < 0.1  # 4000 fair coins: standard deviation 0.016


def test_scaled_accuracy_uses_the_answer_classes_as_chance():
    """Mod-5 arithmetic: chance is 1/5, so accuracy 0.6 is scaled to 0.5."""
    raw = {"correct": [0, 0, 60], "scored": [0, 0, 100], "first_error": [3] * 60 + [2] * 40,
           "chance": 1 / tasks.ModularArithmetic(5).vocab_out}
    m = runner.metrics(raw)
    assert m["accuracy"] == pytest.approx(0.6) and m["scaled_accuracy"] == pytest.approx(0.5)


def test_sequence_accuracy_counts_sequences_right_at_every_position():
    task = tasks.PermutationComposition(3)

    def predict(x):  # right everywhere, except position 5 of the first sequence and 0 of the third
        _, y, _ = task.batch(gen(7), 4, 9)
        y = y.clone()
        y[0, 5] = (y[0, 5] + 1) % 6
        y[2, 0] = (y[2, 0] + 1) % 6
        return y

    raw = runner.evaluate_raw(Oracle(predict, 6), task, 9, 4, 7)
    assert raw["first_error"] == [5, 9, 0, 9]
    m = runner.metrics(raw)
    assert m["sequence_accuracy"] == 0.5 and m["accuracy"] == pytest.approx(34 / 36)


# --- tasks --------------------------------------------------------------------------------------

def _evaluate_tokens(task, tokens):
    """The expression's value by Python's eval (every compound operand is bracketed)."""
    m = task.modulus
    names = {m + task.PLUS: "+", m + task.MINUS: "-", m + task.TIMES: "*", m + task.OPEN: "(",
             m + task.CLOSE: ")"}
    return eval(" ".join(names.get(t, str(t)) for t in tokens)) % m  # noqa: S307


@pytest.mark.parametrize("length", [2, 9, 10, 41])
def test_modular_arithmetic_with_brackets_is_its_expression_value(length):
    task = tasks.ModularArithmetic(5, brackets=True)
    x, y, mask = task.batch(gen(3), 32, length)
    assert x.shape == (32, length) and mask[:, -1].all() and mask.sum() == 32
    m = task.modulus
    for b in range(32):
        tokens = [t for t in x[b].tolist() if t != m + task.PAD]
        assert tokens[-1] == m + task.EQUALS
        assert _evaluate_tokens(task, tokens[:-1]) == int(y[b, -1])
    assert (x == m + task.OPEN).any() == (length >= 9)  # brackets from 4 operands on


def test_modular_arithmetic_without_brackets_evaluates_left_to_right():
    task = tasks.ModularArithmetic(5)
    x, y, _ = task.batch(gen(4), 16, 12)
    m = task.modulus
    for b in range(16):
        tokens = [t for t in x[b].tolist() if t != m + task.PAD][:-1]
        value = tokens[0]
        for op, n in zip(tokens[1::2], tokens[2::2]):
            value = {task.PLUS: value + n, task.MINUS: value - n, task.TIMES: value * n}[op - m] % m
        assert value == int(y[b, -1]) and not (x[b] == m + task.OPEN).any()


def test_alternating_group_is_the_even_permutations_and_closed():
    task = tasks.PermutationComposition(5, alternating=True)
    assert task.name == "A5" and task.vocab_out == 60
    assert set(task.compose.flatten().tolist()) == set(range(60))  # closed under composition
    perms = task.perms
    x, y, _ = task.batch(gen(2), 4, 12)
    for b in range(4):
        acc = tuple(range(5))
        for t in range(12):
            p = perms[int(x[b, t])]
            acc = tuple(p[acc[i]] for i in range(5))
            assert perms[int(y[b, t])] == acc


def _residual(x, y, fit):
    """Relative residual of y ~ x w on the examples `fit`, w fitted by least squares there."""
    w = torch.linalg.lstsq(x[fit], y[fit]).solution
    return float((x @ w - y).norm(dim=-1).max() / y.norm())


def test_non_stationary_regression_switches_its_map_at_the_middle():
    d, pairs = 8, 32
    for switch in (False, True):
        task = tasks.InContextRegression(d, switch=switch)
        inputs, targets, _ = task.batch(gen(5), 3, pairs)
        for b in range(3):
            x, y = inputs[b, 0::2, :d].double(), targets[b, 0::2].double()
            first, second = slice(0, pairs // 2), slice(pairs // 2, pairs)
            assert _residual(x[first], y[first], slice(None)) < 1e-6
            assert _residual(x[second], y[second], slice(None)) < 1e-6
            across = _residual(x, y, first)  # the first map applied to every example
            assert (across > 0.1) if switch else (across < 1e-6)
    assert tasks.InContextRegression(d, switch=True).name == "regression_switch"


# --- seeds, sweeps, saved runs ------------------------------------------------------------------

def _tiny(name, **changes):
    exp = runner.load(name)
    lo = exp.recipe.train_length[0]
    exp.recipe = dataclasses.replace(exp.recipe, **{"steps": 2, "batch": 2, "eval_batch": 4,
                                                    **changes})
    return exp, lo


def test_seeds_and_sweep_write_one_json_per_run_and_the_metric_recomputes(tmp_path):
    exp, _ = _tiny("state_tracking_deltaproduct", lrs=(1e-3, 3e-3), train_length=(8, 8),
                   test_lengths=(8, 12))
    runner.select_models(exp, ["DeltaProduct n_h=2 [-1,1]"])
    exp.seeds = 2
    results = runner.run(exp, models.build_model, out_dir=str(tmp_path), describe=models.describe)
    files = sorted(glob.glob(str(tmp_path / "*.json")))
    assert len(results) == len(files) == 3  # seed 0 at both learning rates, seed 100 at the best
    best = runner.best_lr(results)
    assert [(r.lr, r.seed) for r in results] == [(1e-3, 0), (3e-3, 0), (best, 100)]
    assert results[2].losses != [r for r in results[:2] if r.lr == best][0].losses  # seeds differ
    for r in results:
        path = tmp_path / os.path.basename(runner.save_result(exp, r, str(tmp_path)))
        back = runner.load_result(str(path))
        assert back == r
        for T, raw in back.raw.items():  # the table's metric, and a stricter one, from the file
            assert runner.metrics(raw)["sequence_accuracy"] == r.scores[T]
            assert runner.metrics(raw)["accuracy"] >= runner.metrics(raw)["sequence_accuracy"]
        assert json.loads(path.read_text())["recipe"]["lrs"] == [1e-3, 3e-3]
        assert back.info["params"] > 0 and back.info["options"]["use_short_conv"] is False
    text = report.table(exp, results)
    assert "best / median over 2 seeds" in text and "lr swept" in text


def _result(model, lr, seed, score, metric="accuracy"):
    return runner.Result("t", model, {8: score}, 0.0, 0.0, seed=seed, lr=lr, metric=metric)


def test_summary_picks_the_best_learning_rate_then_best_and_median_over_seeds():
    results = [_result("m", 1e-3, 0, 0.3), _result("m", 1e-2, 0, 0.9)]  # the sweep's first seed
    results += [_result("m", 1e-2, s, x) for s, x in ((1, 0.5), (2, 0.6))]
    results += [_result("d", 1e-2, 0, float("nan")), _result("d", 1e-3, 0, 0.1)]  # 1e-2 diverged
    s = {x.model: x for x in report.summarise(results)}
    assert s["m"].lr == 1e-2 and s["m"].best[8] == 0.9 and s["m"].median[8] == 0.6
    assert s["d"].lr == 1e-3
    mse = [_result("r", 1e-3, 0, 0.5, "mse"), _result("r", 1e-2, 0, 0.1, "mse")]
    assert report.summarise(mse)[0].lr == 1e-2  # lower is better


@pytest.mark.parametrize("name", runner.PAPER_CONFIG_NAMES)
@pytest.mark.parametrize("full", [False, True], ids=["quick", "full"])
def test_paper_config_loads_with_its_seeds(name, full):
    exp = runner.load(name, full=full)
    assert exp.seeds == (3 if full else 1) and exp.models and exp.claim
    assert exp.metric in runner.METRICS


@pytest.mark.parametrize("name", runner.PAPER_CONFIG_NAMES)
def test_paper_config_trains_every_model_a_step(name):
    exp, lo = _tiny(name, steps=1, lrs=())
    exp.recipe = dataclasses.replace(exp.recipe, test_lengths=(exp.recipe.test_lengths[0],))
    results = runner.run(exp, models.build_model, describe=models.describe)
    assert len(results) == len(exp.tasks) * len(exp.models)
    assert all(len(r.losses) == 1 for r in results)


def test_grazzi_setup_scores_the_answer_only():
    exp = runner.load("state_tracking_grazzi", full=True)
    assert exp.recipe.train_length == (3, 40) and exp.recipe.test_lengths[-1] == 256
    for task in exp.tasks:
        _, _, mask = task.batch(gen(), 2, 10)
        assert mask.sum() == 2 and mask[:, -1].all()


def test_deltaproduct_setup_is_the_authors_layer_with_a_control():
    exp = runner.load("state_tracking_deltaproduct", full=True)
    assert {t.name for t in exp.tasks} == {"S3", "S4", "A5"}
    assert exp.recipe.train_length == (128, 128) and max(exp.recipe.test_lengths) == 512
    for m in exp.models:
        assert not m.options["use_short_conv"] and not m.options["use_output_gate"]
        model = models.build_model(m, exp.tasks[0], exp.recipe)
        mixer = model.lm.blocks[0].mixer
        assert not mixer.use_short_conv and not mixer.use_gate
    assert sorted(m.options["num_householder"] for m in exp.models
                  if m.options["allow_neg_eigval"]) == [1, 2, 3]
    assert any(not m.options["allow_neg_eigval"] for m in exp.models)


def test_mqar_grid_pairs_every_mixer_with_and_without_short_convs():
    exp = runner.load("mqar_matched", full=True)
    by_mixer = {}
    for m in exp.models:
        by_mixer.setdefault(m.mixer, set()).add(m.options["use_short_conv"])
    assert all(v == {False, True} for v in by_mixer.values()) and len(by_mixer) == 5
    assert len(exp.recipe.lrs) >= 3 and len(exp.task_lengths) == 3
    task = exp.tasks[0]
    x = torch.randint(0, task.vocab_in, (2, 16))
    for label in ("linear attention no conv", "linear attention + conv"):
        spec = next(m for m in exp.models if m.label == label)
        torch.manual_seed(0)
        model = models.build_model(spec, task, exp.recipe)
        convs = [n for n, _ in model.named_modules() if n.endswith("convs")]
        assert bool(convs) == spec.options["use_short_conv"]
        if convs:  # the convolution is applied: the first token's output differs from no conv's
            torch.manual_seed(0)
            plain = models.build_model(dataclasses.replace(spec, options={
                **spec.options, "use_short_conv": False}), task, exp.recipe)
            plain.load_state_dict(model.state_dict(), strict=False)
            assert not torch.allclose(plain(x), model(x))
        info = models.describe(model)
        assert info["state_floats"] == 2 * 2 * 32 * 32  # 2 layers x 2 heads x 32 x 32


def test_mqar_tasks_train_and_test_at_their_own_length():
    exp, _ = _tiny("mqar_matched", steps=1, lrs=())
    exp.tasks = exp.tasks[:1]
    exp.task_lengths = {exp.tasks[0].name: 24}
    runner.select_models(exp, ["DeltaNet no conv"])
    (r,) = runner.run(exp, models.build_model)
    assert list(r.scores) == [24]


# --- training throughput ------------------------------------------------------------------------

def test_training_throughput_sweep_measures_every_point_in_a_subprocess(tmp_path):
    from linattn.experiments import throughput_train

    path = tmp_path / "tp.json"
    text = throughput_train.run(threads=1, json_path=str(path), tokens=256, H=2, K=16,
                                lengths=(64, 128))
    points = json.loads(path.read_text())
    assert {(p["impl"], p["T"]) for p in points} == set(itertools.product(throughput_train.IMPLS,
                                                                           (64, 128)))
    for p in points:
        assert p["B"] * p["T"] == 256 and p["peak_rss_mib"] > 10
        assert (p["tokens_per_s"] is None) == (p["impl"] == "idle")
    assert "tok/s" in text
