"""The README's Python example runs as written and does what it says."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def example(section: str) -> str:
    """The first python block under the README heading `## <section>`."""
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


def test_python_example_runs():
    block = example("Python")
    scope: dict = {}
    exec(compile(block, str(README), "exec"), scope)  # noqa: S102 - our own README
    o, S, grads = scope["o"], scope["S"], scope["grads"]
    assert o.shape == (2, 100, 4, 64) and S.shape == (2, 4, 64, 64)
    assert set(grads) == {"dq", "dk", "dv", "dg", "dbeta"}
    assert all(np.isfinite(g).all() for g in grads.values())


def test_pytorch_example_runs():
    torch = __import__("pytest").importorskip("torch")
    block = example("PyTorch")
    scope: dict = {}
    exec(compile(block, str(README), "exec"), scope)  # noqa: S102 - our own README
    assert scope["o"].shape == (2, 100, 4, 64) and scope["state"].shape == (2, 4, 64, 64)
    assert scope["v"].grad is not None and torch.isfinite(scope["v"].grad).all()
    assert scope["tokens"].shape == (1, 24) and scope["logits"].shape == (1, 8, 256)


def test_transformers_example_names_what_exists():
    # The example loads a released checkpoint (a download), so it is compiled, not run; the
    # calls it names must exist (linattn.transformers is tested on tiny models elsewhere).
    __import__("pytest").importorskip("transformers")
    block = example("Use with transformers")
    compile(block, str(README), "exec")
    import linattn.transformers as lt
    for name in re.findall(r"\b(apply_linattn|revert_linattn)\b", block):
        assert callable(getattr(lt, name))
