"""selective_scan_fn / selective_state_update through the binding, in mamba's channel-first
layout: against a per-token torch scan and its autograd (written apart from linattn), numpy
and torch inputs, grouped B/C, bf16, decode steps, varlen and the errors."""

from __future__ import annotations

import numpy as np
import pytest

import linattn
from conftest import relative_error as rel

torch = pytest.importorskip("torch")
F = torch.nn.functional


def torch_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
               initial_state=None):
    """mamba's selective_scan_ref semantics, token by token in torch (float64)."""
    batch, dim, L = u.shape
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    if B.dim() == 3:
        B, C = B[:, None], C[:, None]
    rep = dim // B.shape[1]
    Bx = B.repeat_interleave(rep, dim=1)  # [batch, dim, N, L]
    Cx = C.repeat_interleave(rep, dim=1)
    h = initial_state if initial_state is not None else u.new_zeros(batch, dim, A.shape[1])
    ys = []
    for t in range(L):
        dt = delta[:, :, t, None]
        h = torch.exp(dt * A) * h + dt * Bx[..., t] * u[:, :, t, None]
        ys.append((h * Cx[..., t]).sum(-1))
    y = torch.stack(ys, dim=2)
    if D is not None:
        y = y + u * D[:, None]
    if z is not None:
        y = y * F.silu(z)
    return y, h


def inputs(batch=2, dim=40, L=23, N=8, G=None, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64)  # noqa: E731
    bc = (batch, N, L) if G is None else (batch, G, N, L)
    a = dict(u=r(batch, dim, L) * 2 - 1, delta=r(batch, dim, L) * 2 - 3,
             A=-(torch.arange(1, N + 1, dtype=torch.float64)[None] * (0.5 + r(dim, 1))),
             B=r(*bc) * 2 - 1, C=r(*bc) * 2 - 1, D=r(dim) * 2 - 1, z=r(batch, dim, L) * 4 - 2,
             delta_bias=r(dim) - 0.5)
    return {k: v.to(dtype) for k, v in a.items()}


@pytest.mark.parametrize("form", ["chunk", "reference"])
@pytest.mark.parametrize("G", [None, 2])
def test_matches_torch_scan_and_autograd(form, G):
    a = inputs(G=G)
    h0 = torch.rand(2, 40, 8, dtype=torch.float64) - 0.5
    leaves = {k: v.clone().requires_grad_(True) for k, v in {**a, "initial_state": h0}.items()}
    want, want_h = torch_scan(**leaves, delta_softplus=True)
    dout, dh = torch.randn_like(want), torch.randn_like(want_h)
    (want * dout).sum().add((want_h * dh).sum()).backward()

    f32 = {k: v.float() for k, v in a.items()}
    out, last = linattn.selective_scan_fn(**f32, delta_softplus=True, return_last_state=True,
                                          initial_state=h0.float(), form=form)
    assert out.shape == (2, 40, 23) and out.dtype == torch.float32 and last.shape == (2, 40, 8)
    assert rel(out, want) < 1e-5 and rel(last, want_h) < 1e-5
    grads = linattn.selective_scan_backward(**f32, dout=dout.float(), delta_softplus=True,
                                            dlast_state=dh.float(), initial_state=h0.float(),
                                            form=form)
    for name, leaf in leaves.items():
        assert grads["d" + name].shape == leaf.shape, name
        assert rel(grads["d" + name], leaf.grad) < 1e-4, name


def test_numpy_minimal_arguments():
    a = {k: v.float().numpy() for k, v in inputs().items()}
    a["delta"] = np.log1p(np.exp(a["delta"]))  # Δ > 0 without delta_softplus
    out = linattn.selective_scan_fn(a["u"], a["delta"], a["A"], a["B"], a["C"])
    want, _ = torch_scan(*(torch.from_numpy(a[k]).double() for k in ("u", "delta", "A", "B", "C")))
    assert isinstance(out, np.ndarray) and out.shape == (2, 40, 23)
    assert rel(torch.from_numpy(np.ascontiguousarray(out)), want) < 1e-5


def test_bfloat16():
    a = inputs(dtype=torch.bfloat16)
    out = linattn.selective_scan_fn(**a, delta_softplus=True)
    want, _ = torch_scan(**{k: v.double() for k, v in a.items()}, delta_softplus=True)
    assert out.dtype == torch.bfloat16 and rel(out, want) < 1e-2


def test_varlen_equals_separate_sequences():
    a = inputs(batch=1, L=30)
    cu = torch.tensor([0, 9, 10, 30])
    h0 = torch.rand(3, 40, 8, dtype=torch.float64)
    out, last = linattn.selective_scan_fn(**a, delta_softplus=True, return_last_state=True,
                                          initial_state=h0, cu_seqlens=cu)
    for n in range(3):
        lo, hi = int(cu[n]), int(cu[n + 1])
        part = {k: (v[..., lo:hi] if v.dim() == 3 and k not in ("A",) else v) for k, v in a.items()}
        o, h = linattn.selective_scan_fn(**part, delta_softplus=True, return_last_state=True,
                                         initial_state=h0[n:n + 1])
        assert rel(out[..., lo:hi], o) < 1e-13 and rel(last[n:n + 1], h) < 1e-13


def test_decode_steps_equal_forward():
    a = {k: v.float() for k, v in inputs(G=4).items()}
    out, last = linattn.selective_scan_fn(**a, delta_softplus=True, return_last_state=True)
    state = torch.zeros(2, 40, 8)
    for t in range(23):
        y = linattn.selective_state_update(state, a["u"][..., t], a["delta"][..., t], a["A"],
                                           a["B"][..., t], a["C"][..., t], D=a["D"],
                                           z=a["z"][..., t], dt_bias=a["delta_bias"],
                                           dt_softplus=True)
        assert rel(y, out[..., t]) < 1e-5
    assert rel(state, last) < 1e-5


def test_errors():
    a = inputs()
    with pytest.raises(ValueError, match=r"A must have shape \[D, N\] \(D from u\)"):
        linattn.selective_scan_fn(a["u"], a["delta"], a["A"][:5], a["B"], a["C"])
    with pytest.raises(ValueError, match="must divide the number of channels D = 40"):
        linattn.selective_scan_fn(a["u"], a["delta"], a["A"], a["B"][:, None].expand(2, 3, 8, 23),
                                  a["C"][:, None].expand(2, 3, 8, 23))
    with pytest.raises(TypeError, match="u must have dtype"):
        linattn.selective_scan_fn(a["u"].to(torch.int16), a["delta"], a["A"], a["B"], a["C"])
    with pytest.raises(ValueError, match=r"selective_state_update: x must have shape \[N, D\]"):
        linattn.selective_state_update(torch.zeros(2, 40, 8), a["u"][:, :3, 0], a["delta"][..., 0],
                                       a["A"], a["B"][..., 0], a["C"][..., 0])
