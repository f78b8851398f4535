"""kda through Python: the oracle with fla's argument names against a naive numpy recurrence,
and the fast forms through the generic binding (linattn.forward / backward)."""

from __future__ import annotations

import numpy as np
import pytest

import linattn
from linattn import reference


def naive_kda(q, k, v, g, beta, scale, initial_state, l2norm):
    """Independent oracle: S = diag(exp(g)) S; S += k (beta (v - S^T k))^T; o = scale S^T q,
    per (batch, value head); value head hv reads q/k head hv // (HV / H)."""
    B, T, H, K = q.shape
    HV, V = v.shape[2:]
    if l2norm:
        q = q / np.sqrt((q * q).sum(-1, keepdims=True) + 1e-6)
        k = k / np.sqrt((k * k).sum(-1, keepdims=True) + 1e-6)
    o = np.zeros((B, T, HV, V))
    final = np.zeros((B, HV, K, V))
    for b in range(B):
        for hv in range(HV):
            h = hv // (HV // H)
            S = initial_state[b, hv].copy()
            for t in range(T):
                S = np.exp(g[b, t, hv])[:, None] * S
                kt = k[b, t, h]
                S = S + np.outer(kt, beta[b, t, hv] * (v[b, t, hv] - S.T @ kt))
                o[b, t, hv] = scale * S.T @ q[b, t, h]
            final[b, hv] = S
    return o, final


@pytest.mark.parametrize("l2norm", [False, True])
@pytest.mark.parametrize("H,HV", [(2, 2), (1, 3)])
def test_kda_matches_naive_recurrence(H, HV, l2norm, make_inputs, rel_err):
    x = make_inputs("kda", B=2, T=9, H=H, HV=HV, K=5, V=4, initial_state=True)
    assert x["g"].shape == (2, 9, HV, 5)
    o, s = reference.kda(**x, scale=0.7, output_final_state=True, use_qk_l2norm_in_kernel=l2norm)
    o_naive, s_naive = naive_kda(**x, scale=0.7, l2norm=l2norm)
    assert rel_err(o, o_naive) <= 1e-12
    assert rel_err(s, s_naive) <= 1e-12


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
def test_fast_forms_match_the_oracle(form, make_inputs, rel_err):
    """float32 inputs: the fast forms (fp32 accumulation) within 1e-5 of the oracle on the same
    values, T = 150 spanning three chunks, grouped value heads."""
    x = make_inputs("kda", B=2, T=150, H=2, HV=4, K=16, V=8, initial_state=True,
                    dtype=np.float32)
    args = dict(q=x["q"], k=x["k"], v=x["v"], gk=x["g"], beta=x["beta"],
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
    grads = {name: np.empty_like(x[name]) for name in ("q", "k", "v", "g", "beta",
                                                        "initial_state")}
    linattn.backward("kda", "chunk", **args, d_o=do, dq=grads["q"], dk=grads["k"], dv=grads["v"],
                     dgk=grads["g"], dbeta=grads["beta"], dinitial_state=grads["initial_state"])
    for name, grad in grads.items():
        assert rel_err(grad, want["d" + name]) <= 1e-5, name


def test_scalar_g_is_refused(make_inputs):
    x = make_inputs("gated_delta_rule")
    with pytest.raises(ValueError, match="kda: gk must have shape"):
        reference.kda(x["q"], x["k"], x["v"], x["g"], x["beta"])
