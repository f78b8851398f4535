"""The README's Python example runs as written and does what it says."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_python_example_runs():
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(block, str(README), "exec"), scope)  # noqa: S102 - our own README
    o, S, grads = scope["o"], scope["S"], scope["grads"]
    assert o.shape == (2, 100, 4, 64) and S.shape == (2, 4, 64, 64)
    assert set(grads) == {"dq", "dk", "dv", "dg", "dbeta"}
    assert all(np.isfinite(g).all() for g in grads.values())


def test_pytorch_example_runs():
    torch = __import__("pytest").importorskip("torch")
    block = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[1]
    scope: dict = {}
    exec(compile(block, str(README), "exec"), scope)  # noqa: S102 - our own README
    assert scope["o"].shape == (2, 100, 4, 64) and scope["state"].shape == (2, 4, 64, 64)
    assert scope["v"].grad is not None and torch.isfinite(scope["v"].grad).all()
    assert scope["tokens"].shape == (1, 24) and scope["logits"].shape == (1, 8, 256)
