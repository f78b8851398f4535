"""linattn.reference.noncausal_linear_attn: bidirectional linear attention, which has no state."""

from __future__ import annotations

import re

import numpy as np
import pytest

import linattn
from linattn import reference

OP = "noncausal_linear_attn"


def naive(q, k, v, scale, normalize, bounds):
    """Independent oracle: per sequence and value head, o = A V / den with A = scale Q K^T over
    the whole sequence (no mask), den = A.sum(-1) + 1e-10 with normalize; value head hv reads
    q/k head hv // (HV / H)."""
    HV = v.shape[2]
    o = np.zeros(q.shape[:2] + v.shape[2:])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        for hv in range(HV):
            h = hv // (HV // q.shape[2])
            A = scale * q[0, lo:hi, h] @ k[0, lo:hi, h].T
            den = A.sum(-1, keepdims=True) + 1e-10 if normalize else 1.0
            o[0, lo:hi, hv] = A @ v[0, lo:hi, hv] / den
    return o


def inputs(make_inputs, normalize, **kw):
    x = make_inputs(OP, **kw)
    if normalize:  # positive features (as elu+1 gives), so the denominators stay away from 0
        x["q"], x["k"] = np.abs(x["q"]) + 0.1, np.abs(x["k"]) + 0.1
    return x


@pytest.mark.parametrize("normalize", [False, True])
def test_matches_attention_form(normalize, make_inputs, rel_err):
    x = inputs(make_inputs, normalize, B=1, T=12, H=2, HV=4, K=5, V=3)
    bounds = [0, 1, 8, 12]
    o, s = reference.noncausal_linear_attn(**x, scale=0.7, normalize=normalize, cu_seqlens=bounds)
    assert s is None
    assert rel_err(o, naive(**x, scale=0.7, normalize=normalize, bounds=bounds)) <= 1e-12


@pytest.mark.parametrize("normalize", [False, True])
def test_backward_matches_finite_differences(normalize, make_inputs):
    x = inputs(make_inputs, normalize, B=2, T=5, H=1, HV=2, K=3, V=2, seed=3)
    rng = np.random.default_rng(4)
    do = rng.standard_normal(reference.noncausal_linear_attn(**x)[0].shape)

    def loss(inputs):
        return float((reference.noncausal_linear_attn(**inputs, normalize=normalize)[0] * do).sum())

    grads = reference.backward(OP, **x, do=do, normalize=normalize)
    assert sorted(grads) == ["dk", "dq", "dv"]
    eps = 1e-5
    for name in ("q", "k", "v"):
        d = rng.standard_normal(x[name].shape)
        numeric = (loss({**x, name: x[name] + eps * d}) - loss({**x, name: x[name] - eps * d})) / (2 * eps)
        assert float((grads["d" + name] * d).sum()) == pytest.approx(numeric, rel=1e-6, abs=1e-9), name


@pytest.mark.parametrize("normalize", [False, True])
def test_chunk_form_matches_reference(normalize, make_inputs, rel_err):
    x = inputs(make_inputs, normalize, B=2, T=100, H=2, HV=4, K=16, V=8, dtype=np.float32)
    o_ref, _ = reference.noncausal_linear_attn(**x, normalize=normalize)
    o = np.empty_like(o_ref)
    linattn.forward(OP, "chunk", **x, normalize=normalize, o=o)
    assert rel_err(o, o_ref) <= 1e-5


def test_numpy_and_torch_agree_exactly(make_inputs, as_torch, as_numpy):
    x = make_inputs(OP, HV=4)
    o, _ = reference.noncausal_linear_attn(**x)
    o_t, s_t = reference.noncausal_linear_attn(**as_torch(x))
    np.testing.assert_array_equal(as_numpy(o_t), o)
    assert s_t is None


def test_state_is_rejected(make_inputs):
    x = make_inputs(OP, initial_state=True)
    with pytest.raises(ValueError, match=re.escape(
            "noncausal_linear_attn: initial_state must not be given (a non-causal op has no "
            "recurrent state)")):
        linattn.output_shapes(OP, **x)
    del x["initial_state"]
    with pytest.raises(ValueError, match=re.escape(
            "noncausal_linear_attn: output_final_state=True is not supported")):
        linattn.output_shapes(OP, **x, output_final_state=True)
