"""linattn.reference: the fp64 oracles through the binding, numpy and torch alike."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linattn
from conftest import STATELESS
from linattn import reference

# The ops with a state: the tests below pass and return one (the others: test_noncausal.py).
OPS = [op for op in linattn.op_names() if op not in STATELESS]
DIFFERENTIABLE = ("q", "k", "v", "g", "gk", "beta", "initial_state", "a", "b")


def run(op, inputs, **options):
    return getattr(reference, op)(**inputs, **options)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", OPS)
def test_numpy_and_torch_agree_exactly(op, dtype, make_inputs, as_torch, as_numpy):
    torch = pytest.importorskip("torch")
    inputs = make_inputs(op, HV=4, initial_state=True, dtype=dtype)
    o, s = run(op, inputs, output_final_state=True)
    o_t, s_t = run(op, as_torch(inputs), output_final_state=True)
    np.testing.assert_array_equal(as_numpy(o_t), o)
    np.testing.assert_array_equal(as_numpy(s_t), s)
    assert s.dtype == (np.float64 if dtype == np.float64 else np.float32)

    do, ds = np.cos(o), np.sin(s)
    grads = reference.backward(op, **inputs, do=do, dfinal_state=ds)
    grads_t = reference.backward(op, **as_torch(inputs), do=torch.from_numpy(do),
                                 dfinal_state=torch.from_numpy(ds))
    assert grads.keys() == grads_t.keys()
    for name in grads:
        np.testing.assert_array_equal(as_numpy(grads_t[name]), grads[name])


@pytest.mark.parametrize("op", ["gla", "gated_delta_rule", "delta_product"])
def test_bfloat16_torch_inputs(op, make_inputs, as_torch, rel_err):
    torch = pytest.importorskip("torch")
    inputs = {n: x.bfloat16() if isinstance(x, torch.Tensor) else x
              for n, x in as_torch(make_inputs(op, initial_state=True)).items()}
    o, s = run(op, inputs, output_final_state=True)
    assert (o.dtype, s.dtype) == (torch.bfloat16, torch.float32)
    # The oracle on the same (bf16-rounded) values: only the bf16 rounding of o differs.
    wide = {n: x.double() if isinstance(x, torch.Tensor) else x for n, x in inputs.items()}
    o64, s64 = run(op, wide, output_final_state=True)
    assert rel_err(o, o64) <= 1e-2
    assert rel_err(s, s64) <= 1e-6  # the state is stored in float32

    do = torch.ones_like(o)
    grads = reference.backward(op, **inputs, do=do)
    grads64 = reference.backward(op, **wide, do=do.double())
    for name, grad in grads.items():
        assert grad.dtype == torch.bfloat16
        assert rel_err(grad, grads64[name]) <= 1e-2, name


@settings(max_examples=60, deadline=None)
@given(op=st.sampled_from(OPS), B=st.integers(1, 2), T=st.integers(1, 9), H=st.integers(1, 2),
       group=st.integers(1, 2), K=st.integers(1, 8), V=st.integers(1, 8),
       initial_state=st.booleans(), seed=st.integers(0, 2**16))
def test_float32_inputs_match_float64(op, B, T, H, group, K, V, initial_state, seed,
                                      make_inputs, rel_err):
    x32 = make_inputs(op, B=B, T=T, H=H, HV=H * group, K=K, V=V, initial_state=initial_state,
                      dtype=np.float32, seed=seed)
    x64 = {n: x.astype(np.float64) if isinstance(x, np.ndarray) else x for n, x in x32.items()}
    o32, s32 = run(op, x32, output_final_state=True)
    o64, s64 = run(op, x64, output_final_state=True)
    assert (o32.dtype, s32.dtype, o64.dtype, s64.dtype) == (np.float32,) * 2 + (np.float64,) * 2
    assert rel_err(o32, o64) <= 1e-5
    assert rel_err(s32, s64) <= 1e-5


def naive_gated_delta_rule(q, k, v, g, beta, scale, initial_state, l2norm):
    """Independent oracle: S = exp(g) S (g a scalar per head, or per key channel for kda:
    diag(exp(g)) S); S += k (beta (v - S^T k))^T; o = scale S^T q, per (batch, value head);
    value head hv reads q/k head hv // (HV / H)."""
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
                S = np.exp(g[b, t, hv]).reshape(-1, 1) * S
                kt = k[b, t, h]
                S = S + np.outer(kt, beta[b, t, hv] * (v[b, t, hv] - S.T @ kt))
                o[b, t, hv] = scale * S.T @ q[b, t, h]
            final[b, hv] = S
    return o, final


@pytest.mark.parametrize("l2norm", [False, True])
@pytest.mark.parametrize("H,HV", [(2, 2), (1, 3)])
@pytest.mark.parametrize("op", ["gated_delta_rule", "kda"])
def test_gated_delta_rule_matches_naive_recurrence(op, H, HV, l2norm, make_inputs, rel_err):
    x = make_inputs(op, B=2, T=9, H=H, HV=HV, K=5, V=4, initial_state=True)
    o, s = run(op, x, scale=0.7, output_final_state=True, use_qk_l2norm_in_kernel=l2norm)
    gates = {"g": x.pop("gk")} if op == "kda" else {}  # kda's per-channel decay as the naive g
    o_naive, s_naive = naive_gated_delta_rule(**x, **gates, scale=0.7, l2norm=l2norm)
    assert rel_err(o, o_naive) <= 1e-12
    assert rel_err(s, s_naive) <= 1e-12


@pytest.mark.parametrize("op", OPS)
def test_cu_seqlens_equals_separate_sequences(op, make_inputs):
    bounds = [0, 3, 10]
    x = make_inputs(op, B=1, T=10)
    n_h = x.get("num_householder", 1)
    states = np.random.default_rng(1).standard_normal((2, *x["v"].shape[2:3], x["q"].shape[3],
                                                       x["v"].shape[3]))
    o, s = run(op, x, initial_state=states, cu_seqlens=bounds, output_final_state=True)
    for n, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        rows = {"k": n_h, "v": n_h, "beta": n_h}  # k, v, beta have num_householder rows a token
        part = {name: x[name][:, lo * rows.get(name, 1):hi * rows.get(name, 1)]
                if isinstance(x[name], np.ndarray) else x[name] for name in x}
        o_n, s_n = run(op, part, initial_state=states[n:n + 1], output_final_state=True)
        np.testing.assert_array_equal(o[:, lo:hi], o_n)
        np.testing.assert_array_equal(s[n:n + 1], s_n)


@pytest.mark.parametrize("op", OPS)
def test_backward_matches_finite_differences(op, make_inputs):
    """<grad_x, d> equals the central difference of L = <o, do> + <final_state, dS> along a
    random direction d, for each input x (fp64, so 1e-6 is loose)."""
    x = make_inputs(op, B=1, T=5, H=1, HV=2, K=3, V=2, initial_state=True, seed=3)
    rng = np.random.default_rng(4)
    o, s = run(op, x, output_final_state=True)
    do, ds = rng.standard_normal(o.shape), rng.standard_normal(s.shape)

    def loss(inputs):
        o, s = run(op, inputs, output_final_state=True)
        return float((o * do).sum() + (s * ds).sum())

    grads = reference.backward(op, **x, do=do, dfinal_state=ds)
    assert sorted(grads) == sorted("d" + n for n in x if n in DIFFERENTIABLE)
    eps = 1e-5
    for name in (n for n in x if n in DIFFERENTIABLE):
        d = rng.standard_normal(x[name].shape)
        numeric = (loss({**x, name: x[name] + eps * d}) -
                   loss({**x, name: x[name] - eps * d})) / (2 * eps)
        analytic = float((grads["d" + name] * d).sum())
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-9), name
