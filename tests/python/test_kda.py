"""kda through Python: the fast forms through the generic binding (linattn.forward / backward)
against the oracle with fla's argument names (which test_reference.py checks against a naive
numpy recurrence, with the other ops)."""

from __future__ import annotations

import numpy as np
import pytest

import linattn
from linattn import reference


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
def test_fast_forms_match_the_oracle(form, make_inputs, rel_err):
    """float32 inputs: the fast forms (fp32 accumulation) within 1e-5 of the oracle on the same
    values, T = 150 spanning three chunks, grouped value heads."""
    x = make_inputs("kda", B=2, T=150, H=2, HV=4, K=16, V=8, initial_state=True,
                    dtype=np.float32)
    args = dict(q=x["q"], k=x["k"], v=x["v"], gk=x["gk"], beta=x["beta"],
                initial_state=x["initial_state"], use_qk_l2norm_in_kernel=True)
    o_ref, s_ref = reference.kda(**x, output_final_state=True, use_qk_l2norm_in_kernel=True)
    o = np.empty_like(o_ref)
    s = np.empty_like(s_ref)
    linattn.forward("kda", form, **args, output_final_state=True, o=o, final_state=s)
    assert rel_err(o, o_ref) <= 1e-5
    assert rel_err(s, s_ref) <= 1e-5
    if form != "chunk":
        return
    do = np.cos(o_ref)
    want = reference.backward("kda", **x, do=do, use_qk_l2norm_in_kernel=True)
    grads = {name: np.empty_like(x[name]) for name in ("q", "k", "v", "gk", "beta",
                                                        "initial_state")}
    linattn.backward("kda", "chunk", **args, d_o=do, dq=grads["q"], dk=grads["k"], dv=grads["v"],
                     dgk=grads["gk"], dbeta=grads["beta"], dinitial_state=grads["initial_state"])
    for name, grad in grads.items():
        assert rel_err(grad, want["d" + name]) <= 1e-5, name


def test_scalar_g_is_refused(make_inputs):
    x = make_inputs("gated_delta_rule")
    with pytest.raises(ValueError, match="kda: gk must have shape"):
        reference.kda(x["q"], x["k"], x["v"], x["g"], x["beta"])


def test_bench_token_loop_agrees_with_the_oracle(rel_err):
    """`linattn bench`'s PyTorch baseline for kda (a token loop written apart from the oracle)
    computes the same recurrence, in float64."""
    torch = pytest.importorskip("torch")
    from linattn import bench

    x = bench.make_inputs("kda", bench.Shape(B=2, T=40, H=2, K=8, V=6), torch.float64)
    o, s = bench.torch_recurrent("kda", **x)
    o_ref, s_ref = reference.kda(x["q"], x["k"], x["v"], x["gk"], x["beta"],
                                 initial_state=x["initial_state"], output_final_state=True)
    assert rel_err(o, o_ref) <= 1e-12
    assert rel_err(s, s_ref) <= 1e-12
