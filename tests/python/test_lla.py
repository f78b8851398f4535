"""lla_attention from Python: the binding, torch autograd (exact gradient, incl. a per-token
ridge), the softmax limit against torch's own attention, and errors."""

import numpy as np
import pytest

import linattn

torch = pytest.importorskip("torch")


def qkv(B=1, T=33, H=2, K=8, V=6, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, H, K, generator=g, dtype=dtype),
            torch.randn(B, T, H, K, generator=g, dtype=dtype),
            torch.randn(B, T, H, V, generator=g, dtype=dtype))


def rel(a, b):
    a, b = a.detach(), b.detach()
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def test_gradcheck_reference_with_per_token_lambda():
    q, k, v = (x.requires_grad_() for x in qkv(T=12, H=1, K=4, V=3))
    lam = (torch.rand(1, 12, 1, dtype=torch.float64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda q, k, v, lam: linattn.lla_attention(q, k, v, ridge_lambda=lam), (q, k, v, lam))


def test_chunk_float32_matches_reference_forward_and_backward():
    q64, k64, v64 = qkv()
    want = linattn.lla_attention(q64, k64, v64, ridge_lambda=1.0)  # float64 runs the oracle
    q, k, v = (x.float().requires_grad_() for x in (q64, k64, v64))
    tight = dict(ridge_lambda=1.0, cg_atol=0.0, cg_rtol=1e-14, cg_max_iters=100)
    o = linattn.lla_attention(q, k, v, **tight)
    assert rel(o.double(), want) < 1e-5
    do = torch.randn_like(o)
    o.backward(do)
    q64, k64, v64 = (x.requires_grad_() for x in (q64, k64, v64))
    linattn.lla_attention(q64, k64, v64, ridge_lambda=1.0).backward(do.double())
    for got, ref in ((q.grad, q64.grad), (k.grad, k64.grad), (v.grad, v64.grad)):
        assert rel(got.double(), ref) < 1e-4


def test_direct_solver_matches_cg():
    q, k, v = (x.float() for x in qkv())
    tight = dict(ridge_lambda=0.5, cg_atol=0.0, cg_rtol=1e-14, cg_max_iters=100)
    assert rel(linattn.lla_attention(q, k, v, solver="direct", **tight),
               linattn.lla_attention(q, k, v, **tight)) < 1e-5


def test_numpy_arrays_and_decode_form():
    q, k, v = (x.float().numpy() for x in qkv())
    o = linattn.lla_attention(q, k, v, ridge_lambda=1.0)
    assert isinstance(o, np.ndarray) and o.dtype == np.float32
    last = linattn.lla_attention(q[:, -1:], k, v, ridge_lambda=1.0, form="recurrent")
    np.testing.assert_allclose(last[:, 0], o[:, -1], rtol=1e-4, atol=1e-5)


def test_large_lambda_is_torch_softmax_attention():
    q, k, v = qkv()
    o = linattn.lla_attention(q, k, v, ridge_lambda=1e9)
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True).transpose(1, 2)
    assert rel(o, sdpa) < 1e-6


def test_errors_name_the_argument():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="ridge_lambda must be finite and > 0"):
        linattn.lla_attention(q, k, v, ridge_lambda=-1.0)
    with pytest.raises(ValueError, match=r"v must have shape \[B, T, H, V\]"):
        linattn.lla_attention(q, k, v[:, :-1])
    with pytest.raises(ValueError, match="solver must be 'cg' or 'direct'"):
        linattn.lla_attention(q, k, v, solver="lu")
    with pytest.raises(ValueError, match="has no backward"):
        linattn._core.lla_backward("recurrent", q, k, v, torch.zeros_like(v), dv=torch.empty_like(v))
