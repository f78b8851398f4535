"""Smoke test of the experiments: every experiment's config loads and every model of it
trains for a few steps and is evaluated, end to end through linattn's kernels, with tables and
plots written. No accuracy is asserted here (the parity result has its own slow test)."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")

from linattn.experiments import models, report, runner  # noqa: E402


@pytest.mark.parametrize("name", runner.CONFIG_NAMES)
@pytest.mark.parametrize("full", [False, True], ids=["quick", "full"])
def test_config_loads(name, full):
    exp = runner.load(name, full=full)
    assert exp.tasks and exp.models and exp.recipe.steps > 0 and exp.claim


@pytest.mark.parametrize("name", runner.CONFIG_NAMES)
def test_full_recipe_covers_the_quick_one(name):
    """The smoke run below uses the [full] models and tasks: they include the quick ones."""
    quick, full = runner.load(name), runner.load(name, full=True)
    assert {m.label for m in quick.models} <= {m.label for m in full.models}
    assert {t.name for t in quick.tasks} <= {t.name for t in full.tasks}


@pytest.mark.parametrize("name", runner.CONFIG_NAMES)
def test_experiment_runs_a_few_steps(name, tmp_path):
    exp = runner.load(name, full=True)
    lo = exp.recipe.train_length[0]
    exp.recipe = dataclasses.replace(exp.recipe, steps=2, batch=2, eval_batch=2,
                                     train_length=(lo, lo), test_lengths=(lo,))
    assert exp.seeds == 3  # the full runs' default; one here (test_experiments_faithful: seeds)
    exp.seeds = 1
    results = runner.run(exp, models.build_model)
    assert len(results) == len(exp.tasks) * len(exp.models)
    for r in results:
        assert list(r.scores) == [lo] and all(0 <= s or s != s for s in r.scores.values())
    assert "claim:" in report.table(exp, results)
    report.plot(exp, results, str(tmp_path / f"{name}.png"))
    assert (tmp_path / f"{name}.png").stat().st_size > 0


def test_model_selection_keeps_the_named_models():
    exp = runner.load("state_tracking", full=True)
    runner.select_models(exp, ["DeltaProduct n_h=3 [-1,1]", "DeltaNet beta [0,1]"])
    assert [m.label for m in exp.models] == ["DeltaNet beta [0,1]", "DeltaProduct n_h=3 [-1,1]"]
    with pytest.raises(ValueError, match="unknown model"):
        runner.select_models(exp, ["DeltaNet"])


def test_same_seed_same_numbers():
    exp = runner.load("state_tracking")
    exp.tasks, exp.models = exp.tasks[:1], exp.models[1:2]
    exp.recipe = dataclasses.replace(exp.recipe, steps=3, batch=4, eval_batch=8,
                                     train_length=(8, 12), test_lengths=(16,))
    a, b = (runner.run(exp, models.build_model)[0] for _ in range(2))
    assert a.scores == b.scores and a.final_loss == b.final_loss


def test_demo_writes_tables_plots_and_json_of_the_selected_models(tmp_path):
    import json

    from linattn import _core
    from linattn.experiments import demo

    threads = (torch.get_num_threads(), _core.get_num_threads())
    try:
        text = demo.run(str(tmp_path), only=("regression",), steps=1, threads=1,
                        labels=["Local Linear Attention"])
    finally:
        torch.set_num_threads(threads[0])
        _core.set_num_threads(threads[1])
    assert "Local Linear Attention" in text and "DeltaNet" not in text
    results = json.loads((tmp_path / "regression.json").read_text())
    assert [r["model"] for r in results] == ["Local Linear Attention"] and results[0]["curve"]
    assert (tmp_path / "regression.png").stat().st_size > 0
    assert (tmp_path / "results.md").read_text().startswith("# linattn demo (quick)")
    with pytest.raises(ValueError, match="needs exactly one"):
        demo.run(str(tmp_path), only=("mqar", "regression"), labels=["DeltaNet"])


def _probe(capsys, *argv):
    import json

    from linattn.experiments import investigate

    investigate.main(list(argv))
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_investigation_probes_run(capsys):
    """The probes of docs/results.md's investigations: a changed option, short convolutions on
    softmax attention, and torch SDPA in its place, which must train exactly as linattn's kernel."""
    conv = _probe(capsys, "mqar", "softmax attention", "--pairs", "4", "--steps", "2", "--short-convs")
    assert conv["short_convs"] and list(conv["scores"]) == ["64"]
    ours = _probe(capsys, "mqar", "softmax attention", "--pairs", "4", "--steps", "3")
    sdpa = _probe(capsys, "mqar", "softmax attention", "--pairs", "4", "--steps", "3", "--sdpa")
    assert sdpa["final_loss"] == pytest.approx(ours["final_loss"], rel=1e-4)
    st = _probe(capsys, "state_tracking", "DeltaProduct n_h=2 [-1,1]", "--task", "S3", "--steps",
                "2", "--set", "use_short_conv=false")
    assert st["task"] == "S3" and st["options"]["use_short_conv"] is False
    from linattn import layers
    from linattn.experiments import investigate

    assert layers.MIXERS["attention"] is layers.Attention  # the probes restore the layers
    assert layers.Attention._attend is not investigate._sdpa_attend


def test_investigation_probe_rejects_unknown_task():
    from linattn.experiments import investigate

    with pytest.raises(SystemExit):
        investigate.main(["state_tracking", "DeltaNet beta [0,1]", "--task", "S5"])
    with pytest.raises(SystemExit):
        investigate.main(["state_tracking", "DeltaNet beta [0,1]", "--pairs", "4"])
