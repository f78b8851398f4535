"""Rejected inputs raise ValueError/TypeError with the C++ message, naming the argument.

The kinds of bad input are rows of tests/bad_inputs/catalogue.txt (test_bad_inputs.py); these
are the checks the catalogue does not express: the fla-named wrappers of linattn.reference,
unknown op and form names, and what only the binding checks."""

from __future__ import annotations

import re

import numpy as np
import pytest

import linattn
from linattn import reference


def changed(inputs, **replacements):
    return {**inputs, **replacements}


@pytest.fixture(params=["numpy", "torch"])
def convert(request, as_torch):
    """Turns a dict of numpy inputs into the parametrised kind."""
    return as_torch if request.param == "torch" else (lambda inputs: inputs)


def expect(error, message):
    """pytest.raises for an exact message fragment (no regex syntax in `message`)."""
    return pytest.raises(error, match=re.escape(message))


def test_dplr_low_rank_inputs(make_inputs, convert):
    x = make_inputs("dplr_delta_rule", B=2, T=7, H=2, K=8, V=6)
    with expect(ValueError, "dplr_delta_rule: b must have shape [B, T, H, K] = [2, 7, 2, 8], "
                            "got [2, 7, 2, 5]"):
        reference.dplr_delta_rule(**convert(changed(x, b=x["b"][..., :5])))
    with expect(ValueError, "dplr_delta_rule: a must have the dtype of q (float64), got float32"):
        reference.dplr_delta_rule(**convert(changed(x, a=x["a"].astype(np.float32))))
    g = make_inputs("gla", B=2, T=7, H=2, K=8, V=6)
    with expect(ValueError, "gla: a must not be given (only dplr_delta_rule takes a low-rank "
                            "transition)"):
        linattn.forward("gla", "reference", **convert({**g, "a": x["a"]}),
                        o=np.zeros((2, 7, 2, 6)))


def test_positive_log_decay(make_inputs, convert):
    x = make_inputs("simple_gla")
    g = x["g"].copy()
    g[0, 4, 1] = 0.25
    with expect(ValueError, "simple_gla: g must be in [-inf, 0] (a log decay: the multiplier "
                            "exp(g) must be in [0, 1]), got 0.25 at [0, 4, 1]"):
        reference.simple_gla(**convert(changed(x, g=g)))


def test_missing_and_extra_gates(make_inputs):
    x = make_inputs("gla")
    with expect(ValueError, "gla: gk is required but was not given"):
        linattn.output_shapes("gla", x["q"], x["k"], x["v"])
    with expect(ValueError, "linear_attn: gk must not be given (this op has no per-channel decay)"):
        linattn.output_shapes("linear_attn", **x)


def test_names_forms_and_outputs(make_inputs):
    x = make_inputs("linear_attn", dtype=np.float32)
    o = np.empty(linattn.output_shapes("linear_attn", **x)[0], np.float32)
    with expect(ValueError, "unknown op 'gdn'; known ops: linear_attn, simple_gla, gla"):
        linattn.forward("gdn", "reference", **x, o=o)
    with expect(ValueError, "unknown form 'fast'; known forms: reference, chunk, recurrent"):
        linattn.forward("linear_attn", "fast", **x, o=o)
    with expect(ValueError, "linear_attn: output o must be contiguous (row-major)"):
        linattn.forward("linear_attn", "reference", **x, o=np.empty_like(o, order="F"))
    with expect(ValueError, "linear_attn: o must have the dtype of v (float32), got float64"):
        linattn.forward("linear_attn", "reference", **x, o=o.astype(np.float64))
    with expect(ValueError, "linear_attn: q must have 1 to 6 dimensions, got 0"):
        linattn.forward("linear_attn", "reference", **changed(x, q=np.float32(1.0)), o=o)
    with expect(TypeError, "bfloat16 arrays need torch"):
        linattn._arrays.empty_like(x["q"], (1,), "bfloat16")
