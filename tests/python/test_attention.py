"""Softmax attention from Python (linattn.attention): fla's parallel_attn against PyTorch's
scaled_dot_product_attention (an independent implementation) forward and through autograd, with
GQA, sliding windows and cu_seqlens; the decode step against the forward; numpy, bf16 and the
errors bad input raises."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import linattn
from linattn.attention import attn_with_kvcache, parallel_attn, parallel_attn_backward


def rel(a, b) -> float:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return ((a - b).norm() / b.norm()).item()


def torch_attention(q, k, v, scale=None, window_size=None):
    """PyTorch SDPA in fla's layout: kv heads repeated for GQA, the window as an explicit mask."""
    T, H, Hkv = q.shape[1], q.shape[2], k.shape[2]
    k, v = (x.repeat_interleave(H // Hkv, dim=2) for x in (k, v))
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    mask = (j <= i) & ((i - j < window_size) if window_size else True)
    o = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, scale=scale)
    return o.transpose(1, 2)


def inputs(B=2, T=97, H=4, Hkv=2, K=16, V=8, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, T, h, d, generator=g, dtype=dtype) for h, d in ((H, K), (Hkv, K), (Hkv, V))]


@pytest.mark.parametrize("window_size", [None, 1, 16, 500])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_forward_and_grads_match_torch(window_size, dtype, tol):
    q, k, v = (x.requires_grad_() for x in inputs(dtype=dtype))
    o = parallel_attn(q, k, v, scale=0.3, window_size=window_size)
    want = torch_attention(q, k, v, scale=0.3, window_size=window_size)
    assert rel(o, want) < tol
    do = torch.randn_like(o)
    got = torch.autograd.grad(o, (q, k, v), do)
    ref = torch.autograd.grad(want, (q, k, v), do)
    # With window 1 dq and dk vanish identically (dS = P (dP - D) = 0): their rounding noise is
    # measured against the gradient that does not vanish.
    largest = max(b.norm() for b in ref)
    for a, b in zip(got, ref):
        assert ((a - b).norm() / (b.norm() if b.norm() > 0 else largest)).item() < tol


def test_cu_seqlens_equals_separate_runs():
    q, k, v = inputs(B=1, T=80, dtype=torch.float32)
    cu = torch.tensor([0, 1, 50, 80], dtype=torch.int32)
    o = parallel_attn(q, k, v, window_size=20, cu_seqlens=cu)
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        part = parallel_attn(q[:, a:b], k[:, a:b], v[:, a:b], window_size=20)
        assert torch.equal(o[:, a:b], part)


def test_numpy_inputs_and_reference_form():
    q, k, v = (x.numpy() for x in inputs(dtype=torch.float32))
    o = parallel_attn(q, k, v)
    assert isinstance(o, np.ndarray) and o.dtype == np.float32
    ref = parallel_attn(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64), form="reference")
    assert rel(o, ref) < 1e-5
    grads = parallel_attn_backward(q, k, v, np.ones_like(o))
    assert set(grads) == {"dq", "dk", "dv"} and grads["dk"].shape == k.shape


def test_bfloat16():
    q, k, v = inputs(dtype=torch.float32)
    o = parallel_attn(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert o.dtype == torch.bfloat16
    assert rel(o, torch_attention(q.bfloat16().double(), k.bfloat16().double(), v.bfloat16().double())) < 1e-2


@pytest.mark.parametrize("Tq", [1, 3])
def test_decode_matches_forward_rows(Tq):
    lens = [Tq, 40, 73]
    H, Hkv, K, V, S = 4, 2, 16, 8, 80
    q, k, v = inputs(B=len(lens), T=S, H=H, Hkv=Hkv, K=K, V=V, dtype=torch.float32, seed=3)
    o = attn_with_kvcache(q[:, :Tq].contiguous(), k, v, torch.tensor(lens), window_size=30)
    for n, L in enumerate(lens):
        # the new queries are the last Tq tokens of the sequence
        qn = q[n:n + 1, :L].clone()
        qn[:, L - Tq:] = q[n:n + 1, :Tq]
        full = parallel_attn(qn, k[n:n + 1, :L], v[n:n + 1, :L], window_size=30)
        assert rel(o[n], full[0, L - Tq:]) < 1e-5


def test_errors_name_the_argument():
    q, k, v = inputs(dtype=torch.float32)
    with pytest.raises(ValueError, match="parallel_attn: the number of query heads H = 4 must be a multiple"):
        parallel_attn(q, k[:, :, :1].expand(-1, -1, 3, -1), v[:, :, :1].expand(-1, -1, 3, -1))
    with pytest.raises(ValueError, match=r"parallel_attn: v must have shape \[B, T, Hkv, V\]"):
        parallel_attn(q, k, v[:, :50])
    with pytest.raises(ValueError, match="parallel_attn: q must have rank 4"):
        parallel_attn(q[0], k, v)
    with pytest.raises(ValueError, match="g .* is not supported"):
        parallel_attn(q, k, v, torch.zeros(2, 97, 4))
    with pytest.raises(TypeError, match="parallel_attn: q must have dtype"):
        parallel_attn(q.half(), k, v)
    with pytest.raises(ValueError, match=r"attn_with_kvcache: cache_seqlens\[0\] must be in \[Tq, S\]"):
        attn_with_kvcache(q[:, :2], k, v, torch.tensor([1, 5]))
