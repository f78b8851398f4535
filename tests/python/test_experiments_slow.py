"""The parity result (Grazzi et al. 2025) reproduced by the quick state-tracking recipe: DeltaNet
with beta in [0, 2] (a negative eigenvalue) learns parity and extrapolates to 4x the training
length; with beta in [0, 1] it does not. Slow (about a minute on 2 cores): not part of CI; run
with LINATTN_SLOW=1 .venv/bin/python -m pytest tests/python/test_experiments_slow.py."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

from linattn.experiments import models, runner  # noqa: E402

pytestmark = pytest.mark.skipif(os.environ.get("LINATTN_SLOW") != "1",
                                reason="slow experiment: set LINATTN_SLOW=1")


def test_only_negative_eigenvalues_solve_parity():
    exp = runner.load("state_tracking")
    exp.tasks = [t for t in exp.tasks if t.name == "parity"]
    exp.models = [m for m in exp.models if m.mixer == "deltanet"]
    results = {r.model: r.scores for r in runner.run(exp, models.build_model)}
    longest = max(exp.recipe.test_lengths)
    assert results["DeltaNet beta [0,2]"][longest] >= 0.95
    assert results["DeltaNet beta [0,1]"][longest] <= 0.80
