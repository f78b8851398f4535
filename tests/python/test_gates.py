"""Every gated op's fast forms on strong gates (issue 15): log decays logsigmoid(x) * 20 and
-inf resets, forward and chunk backward, against the fp64 oracle. These gates drive exp() of the
cumulative decays far into (and below) the subnormal range, which the fast forms flush to zero
(core/float_mode.hpp); the results must stay within fp32 rounding of the oracle's."""

from __future__ import annotations

import numpy as np
import pytest

import linattn
from conftest import OP_GATES, STATELESS, random_inputs, relative_error
from linattn.reference import _backward, _forward

GATED = [op for op, gates in OP_GATES.items() if {"g", "gk"} & set(gates)]
# fp32 forms against the fp64 oracle: relative error of the whole output (or gradient) array.
TOLERANCE = 1e-5
GRAD_TOLERANCE = 1e-4  # gradients sum more fp32 terms (the backward's chunk recomputations)


def strong_inputs(op: str, kind: str):
    x = random_inputs(op, B=2, T=200, H=2, K=16, V=16, dtype=np.float64, seed=11,
                      initial_state=op not in STATELESS)
    rng = np.random.default_rng(12)
    for name in ("g", "gk"):
        if name not in x:
            continue
        logits = rng.standard_normal(x[name].shape)
        logsig = -np.logaddexp(0.0, -logits)
        if kind == "x20":
            x[name] = logsig * 20.0
        else:  # resets: a -inf log decay every 37 tokens, mild gates between
            x[name] = logsig
            x[name][:, ::37] = -np.inf
    return x


def as_f32(x):
    return {n: a.astype(np.float32) if isinstance(a, np.ndarray) else a for n, a in x.items()}


@pytest.mark.parametrize("kind", ["x20", "resets"])
@pytest.mark.parametrize("op", GATED)
def test_strong_gates_match_the_oracle(op, kind):
    x = strong_inputs(op, kind)
    state = {"output_final_state": True}
    o_ref, s_ref = _forward(op, "reference", **x, **state)
    for form in ("chunk", "recurrent"):
        if not linattn.has_form(op, form, False):
            continue
        o, s = _forward(op, form, **as_f32(x), **state)
        assert relative_error(o, o_ref) < TOLERANCE, (form, "o")
        assert relative_error(s, s_ref) < TOLERANCE, (form, "final_state")
    if not linattn.has_form(op, "chunk", True):
        return
    do = np.random.default_rng(13).standard_normal(o_ref.shape)
    g_ref = _backward(op, "reference", do=do, **x)
    g = _backward(op, "chunk", do=do.astype(np.float32), **as_f32(x))
    for name, want in g_ref.items():
        assert np.all(np.isfinite(g[name])), name
        assert relative_error(g[name], want) < GRAD_TOLERANCE, name
