"""The experiments' synthetic tasks produce the targets their definitions say, checked by
brute force on small batches, and are deterministic given the generator's seed."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")

from linattn.experiments import tasks  # noqa: E402


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("task", [tasks.Parity(), tasks.ModularAddition(3),
                                  tasks.ModularAddition(5)], ids=lambda t: t.name)
def test_running_sums(task):
    x, y, mask = task.batch(gen(), 16, 33)
    assert x.shape == y.shape == mask.shape == (16, 33) and mask.all()
    m = task.vocab_out
    for b in range(16):
        total = 0
        for t in range(33):
            total = (total + int(x[b, t])) % m
            assert int(y[b, t]) == total


@pytest.mark.parametrize("n", [3, 5])
def test_permutation_composition(n):
    task = tasks.PermutationComposition(n)
    perms = list(itertools.permutations(range(n)))
    x, y, _ = task.batch(gen(1), 8, 20)
    for b in range(8):
        acc = tuple(range(n))
        for t in range(20):
            p = perms[int(x[b, t])]
            acc = tuple(p[acc[i]] for i in range(n))  # p after the prefix
            assert perms[int(y[b, t])] == acc


def test_mqar_queries_recall_their_values():
    task = tasks.MultiQueryAssociativeRecall(pairs=6, keys=20, values=20)
    x, y, mask = task.batch(gen(2), 32, 40)
    assert (mask.sum(1) == 6).all()
    for b in range(32):
        kv = {int(x[b, 2 * i]): int(x[b, 2 * i + 1]) for i in range(6)}
        assert len(kv) == 6 and all(1 <= k <= 20 < v for k, v in kv.items())
        queried = [int(x[b, t]) for t in range(12, 40) if mask[b, t]]
        assert sorted(queried) == sorted(kv)
        for t in range(40):
            if mask[b, t]:
                assert int(y[b, t]) == kv[int(x[b, t])]
            elif t >= 12:
                assert int(x[b, t]) == 0


def test_mqar_rejects_short_sequences():
    with pytest.raises(ValueError, match="length must be >= 4 \\* pairs = 32, got 20"):
        tasks.MultiQueryAssociativeRecall(pairs=8).batch(gen(), 2, 20)


def test_in_context_regression_is_one_linear_map_per_sequence():
    task = tasks.InContextRegression(dim=4)
    inputs, targets, mask = task.batch(gen(3), 5, 10)
    assert inputs.shape == (5, 20, 5) and targets.shape == (5, 20, 1)
    x, y = inputs[:, 0::2, :4], targets[:, 0::2, 0]
    assert torch.equal(inputs[:, 1::2, 0], y) and mask[:, 0::2].all() and not mask[:, 1::2].any()
    w = torch.linalg.lstsq(x, y[..., None]).solution  # exact fit: y is linear in x
    assert torch.allclose(x @ w, y[..., None], atol=1e-5)


@pytest.mark.parametrize("task", [tasks.Parity(), tasks.PermutationComposition(3),
                                  tasks.MultiQueryAssociativeRecall(pairs=4)], ids=lambda t: t.name)
def test_deterministic_given_the_seed(task):
    a, b = task.batch(gen(7), 4, 16), task.batch(gen(7), 4, 16)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
