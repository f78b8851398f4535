"""Shared fixtures of the Python tests: random op inputs and a relative-error measure.

Fixtures are session-scoped factories (stateless), so hypothesis tests can use them too.
"""

from __future__ import annotations

import numpy as np
import pytest

# The gate inputs each op takes (besides q, k, v), as linattn.reference's keyword names.
OP_GATES = {
    "linear_attn": (),
    "simple_gla": ("g",),
    "gla": ("gk",),
    "delta_rule": ("beta",),
    "gated_delta_rule": ("g", "beta"),
    "delta_product": ("g", "beta"),
    "retention": (),
    "noncausal_linear_attn": (),
    "kda": ("g", "beta"),  # fla's name: g is kda's per-channel log decay [B, T, HV, K]
}
OPS = tuple(OP_GATES)
# Ops without a recurrent state: initial_state and output_final_state=True are rejected.
STATELESS = ("noncausal_linear_attn",)


def random_inputs(op, *, B=2, T=7, H=2, HV=None, K=8, V=6, num_householder=None,
                  initial_state=False, dtype=np.float64, seed=0):
    """Keyword arguments for linattn.reference.<op>: q, k, v and the op's gates with values in
    their documented ranges (log decays in [log 0.4, log 0.99], beta in [0.05, 1)), numpy arrays of
    `dtype` (gates and state too). delta_product defaults to 2 Householder steps."""
    rng = np.random.default_rng(seed)
    HV = HV or H
    n_h = num_householder or (2 if op == "delta_product" else 1)
    N = B
    draw = {
        "q": lambda: rng.standard_normal((B, T, H, K)),
        "k": lambda: rng.standard_normal((B, T * n_h, H, K)) / np.sqrt(K),
        "v": lambda: rng.standard_normal((B, T * n_h, HV, V)),
        "g": lambda: np.log(rng.uniform(0.4, 0.99, (B, T, HV))),
        "gk": lambda: np.log(rng.uniform(0.4, 0.99, (B, T, HV, K))),
        "beta": lambda: rng.uniform(0.05, 1.0, (B, T * n_h, HV)),
        "initial_state": lambda: rng.standard_normal((N, HV, K, V)) * 0.5,
    }
    if op == "kda":
        draw["g"] = draw["gk"]
    names = ("q", "k", "v", *OP_GATES[op]) + (("initial_state",) if initial_state else ())
    inputs = {name: draw[name]().astype(dtype) for name in names}
    if op == "delta_product":
        inputs["num_householder"] = n_h
    return inputs


def relative_error(a, b) -> float:
    """||a - b|| / ||b|| in float64 (numpy arrays or torch tensors)."""
    a, b = (np.asarray(to_numpy(x), dtype=np.float64) for x in (a, b))
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def to_numpy(x):
    """A numpy array of x (torch tensors go through float32 when they are bfloat16)."""
    if hasattr(x, "detach"):
        x = x.detach()
        return (x.float() if str(x.dtype) == "torch.bfloat16" else x).numpy()
    return np.asarray(x)


def to_torch(inputs):
    """The same inputs as torch tensors (non-array values unchanged)."""
    torch = pytest.importorskip("torch")
    return {n: torch.from_numpy(x) if isinstance(x, np.ndarray) else x for n, x in inputs.items()}


@pytest.fixture(scope="session")
def make_inputs():
    return random_inputs


@pytest.fixture(scope="session")
def rel_err():
    return relative_error


@pytest.fixture(scope="session")
def as_torch():
    return to_torch


@pytest.fixture(scope="session")
def as_numpy():
    return to_numpy
