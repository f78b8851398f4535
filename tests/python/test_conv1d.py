"""causal_conv1d / causal_conv1d_update through the binding: against torch's own depthwise
conv1d and autograd (an implementation written apart from linattn's), numpy and torch inputs,
bf16, decode steps, fla's state layout and the errors."""

from __future__ import annotations

import numpy as np
import pytest

import linattn
from conftest import relative_error as rel

torch = pytest.importorskip("torch")
F = torch.nn.functional


def torch_conv(x, weight, bias=None, residual=None, initial_state=None, activation=None):
    """y of fla's causal_conv1d with torch ops: pad with the state's last W-1 columns (or
    zeros), depthwise conv1d, activation, residual; and the final state [B, D, W]."""
    B, T, D = x.shape
    W = weight.shape[1]
    xt = x.transpose(1, 2)
    left = (initial_state[:, :, 1:] if initial_state is not None
            else x.new_zeros(B, D, W - 1))
    full = torch.cat([left, xt], dim=2)
    y = F.conv1d(full, weight.unsqueeze(1), bias, groups=D).transpose(1, 2)
    if activation == "silu":
        y = F.silu(y)
    if residual is not None:
        y = y + residual
    ext = torch.cat([initial_state if initial_state is not None else x.new_zeros(B, D, W), xt], 2)
    return y, ext[:, :, -W:]


def inputs(B=2, T=19, D=70, W=4, dtype=torch.float64, seed=0, state=True, residual=True):
    g = torch.Generator().manual_seed(seed)
    make = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64).mul(2).sub(1).to(dtype)  # noqa: E731
    return dict(x=make(B, T, D), weight=make(D, W), bias=make(D),
                residual=make(B, T, D) if residual else None,
                initial_state=make(B, D, W) if state else None)


@pytest.mark.parametrize("activation", [None, "silu", "swish"])
@pytest.mark.parametrize("form", ["chunk", "reference"])
@pytest.mark.parametrize("T", [19, 2])  # T < W: the final state keeps part of the initial one
def test_matches_torch_forward_and_autograd(activation, form, T):
    a = inputs(T=T)
    act = "silu" if activation else None
    leaves = {k: v.clone().requires_grad_(True) for k, v in a.items()}
    want_y, want_state = torch_conv(**leaves, activation=act)
    dy = torch.randn_like(want_y)
    dstate = torch.randn_like(want_state)
    (want_y * dy).sum().add((want_state * dstate).sum()).backward()

    f32 = {k: v.float() for k, v in a.items()}
    y, state = linattn.causal_conv1d(**f32, output_final_state=True, activation=activation,
                                     form=form)
    assert y.dtype == torch.float32 and state.shape == (2, 70, 4)
    assert rel(y, want_y) < 1e-6
    assert rel(state, want_state.float()) == 0.0  # a copy of inputs
    grads = linattn.causal_conv1d_backward(f32["x"], f32["weight"], dy.float(), dstate.float(),
                                           bias=f32["bias"], residual=f32["residual"],
                                           initial_state=f32["initial_state"],
                                           activation=activation, form=form)
    for name, leaf in leaves.items():
        # torch's autograd through the concatenation: the exact gradient, as linattn's.
        assert rel(grads["d" + name], leaf.grad) < 1e-5, name


def test_numpy_inputs_and_strided_views():
    a = {k: v.float().numpy() for k, v in inputs(residual=False).items() if v is not None}
    y, state = linattn.causal_conv1d(**a, output_final_state=True)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    wide = np.zeros((2, 19, 140), np.float32)
    wide[..., ::2] = a["x"]
    y2, _ = linattn.causal_conv1d(wide[..., ::2], a["weight"], a["bias"],
                                  initial_state=a["initial_state"])
    np.testing.assert_array_equal(y, y2)


def test_bfloat16():
    a = inputs(dtype=torch.bfloat16)
    y, state = linattn.causal_conv1d(**a, output_final_state=True, activation="silu")
    want, want_state = torch_conv(**{k: v.double() for k, v in a.items()}, activation="silu")
    assert y.dtype == torch.bfloat16 and state.dtype == torch.bfloat16
    assert rel(y, want) < 1e-2
    assert rel(state, want_state.bfloat16()) == 0.0


def test_varlen_equals_separate_sequences():
    a = inputs(B=1, T=30, residual=False, state=False)
    cu = torch.tensor([0, 7, 8, 30])
    state = torch.randn(3, 70, 4, dtype=torch.float64)
    y, final = linattn.causal_conv1d(a["x"], a["weight"], a["bias"], initial_state=state,
                                     output_final_state=True, cu_seqlens=cu)
    for n in range(3):
        lo, hi = int(cu[n]), int(cu[n + 1])
        yn, fn = linattn.causal_conv1d(a["x"][:, lo:hi], a["weight"], a["bias"],
                                       initial_state=state[n:n + 1], output_final_state=True)
        assert rel(y[:, lo:hi], yn) < 1e-14
        assert rel(final[n:n + 1], fn) < 1e-14


@pytest.mark.parametrize("shape", ["[N, D]", "[N, 1, D]"])
def test_update_steps_equal_forward(shape):
    a = inputs(T=9)
    f32 = {k: v.float() for k, v in a.items()}
    y, final = linattn.causal_conv1d(**f32, output_final_state=True, activation="silu")
    cache = f32["initial_state"].clone()
    for t in range(9):
        xt, rt = f32["x"][:, t], f32["residual"][:, t]
        if shape == "[N, 1, D]":
            xt, rt = xt[:, None], rt[:, None]
        yt, out_cache = linattn.causal_conv1d_update(xt, cache, rt, f32["weight"], f32["bias"],
                                                     activation="silu")
        assert out_cache is cache and yt.shape == xt.shape
        assert rel(yt.reshape(2, 70), y[:, t]) < 1e-6
    assert rel(cache, final) == 0.0


def test_errors():
    a = inputs()
    with pytest.raises(ValueError, match="activation must be None, 'silu' or 'swish', got 'relu'"):
        linattn.causal_conv1d(**a, activation="relu")
    with pytest.raises(ValueError, match=r"weight must have shape \[D, W\]"):
        linattn.causal_conv1d(a["x"], a["weight"][:5])
    with pytest.raises(ValueError, match=r"initial_state must have shape \[N, D, W\]"):
        linattn.causal_conv1d(a["x"], a["weight"], initial_state=a["initial_state"][:, :, 1:])
    with pytest.raises(TypeError, match="x must have dtype"):
        linattn.causal_conv1d(a["x"].to(torch.int16), a["weight"])
    with pytest.raises(ValueError, match="weight is required"):
        linattn.causal_conv1d_update(a["x"][:, 0], a["initial_state"])
    with pytest.raises(ValueError, match=r"x must have shape \[N, D\] or \[N, 1, D\]"):
        linattn.causal_conv1d_update(a["x"][:, :2], a["initial_state"], weight=a["weight"])
