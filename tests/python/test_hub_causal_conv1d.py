"""linattn.hub.causal_conv1d (Dao's causal-conv1d API, channel-first) against torch's conv1d,
and linattn.hub.fla's packed-offset keyword. fp32: 1e-6 relative (a W-tap sum per output);
gradients 1e-5 relative (sums over tokens)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from linattn.hub import causal_conv1d as cc  # noqa: E402
from linattn.hub import fla  # noqa: E402


def rel(a, b) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def torch_conv(x, weight, bias, initial_states, activation):
    """Dao's causal conv with torch's conv1d: x [B, D, T], states [B, D, W-1]."""
    W = weight.shape[1]
    if initial_states is None:
        initial_states = x.new_zeros(x.shape[0], x.shape[1], W - 1)
    full = torch.cat([initial_states, x], dim=-1)
    y = F.conv1d(full, weight.unsqueeze(1), bias, groups=x.shape[1])
    return (F.silu(y) if activation else y), full[..., full.shape[-1] - (W - 1):]


def inputs(B=2, D=24, T=37, W=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=g).transpose(1, 2)  # Dao's layout as transformers has it
    return (x.requires_grad_(), torch.randn(D, W, generator=g).requires_grad_(),
            torch.randn(D, generator=g).requires_grad_(),
            torch.randn(B, D, W - 1, generator=g).requires_grad_())


@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("with_state", [False, True])
def test_fn_matches_torch_forward_and_backward(activation, with_state):
    x, w, b, s0 = inputs()
    s0 = s0 if with_state else None
    out, final = cc.causal_conv1d_fn(x, w, b, initial_states=s0, return_final_states=True,
                                     activation=activation)
    ref, ref_final = torch_conv(x, w, b, s0, activation)
    assert out.shape == ref.shape and rel(out, ref) <= 1e-6 and rel(final, ref_final) <= 1e-6
    dy, ds = torch.randn_like(ref), torch.randn_like(ref_final)
    leaves = [t for t in (x, w, b, s0) if t is not None]
    got = torch.autograd.grad((out * dy).sum() + (final * ds).sum(), leaves)
    want = torch.autograd.grad((ref * dy).sum() + (ref_final * ds).sum(), leaves)
    for g_, w_ in zip(got, want):
        assert rel(g_, w_) <= 1e-5


def test_final_states_out_is_written():
    x, w, b, _ = inputs()
    buf = torch.empty(2, 24, 3)
    _, final = cc.causal_conv1d_fn(x.detach(), w.detach(), b.detach(), return_final_states=True,
                                   final_states_out=buf)
    assert final is buf and rel(buf, torch_conv(x, w, b, None, None)[1]) <= 1e-6


def test_seq_idx_restarts_each_packed_sequence():
    x, w, b, _ = inputs(B=2, T=30)
    seq_idx = torch.tensor([[0] * 7 + [1] * 20 + [2] * 3, [5] * 30], dtype=torch.int32)
    out = cc.causal_conv1d_fn(x, w, b, seq_idx=seq_idx, activation="silu")
    ref = torch.cat([torch_conv(x[:, :, a:e], w, b, None, "silu")[0]
                     for a, e in ((0, 7), (7, 27), (27, 30))], dim=-1)
    assert rel(out[0], ref[0]) <= 1e-6
    assert rel(out[1], torch_conv(x, w, b, None, "silu")[0][1]) <= 1e-6
    got = torch.autograd.grad(out.square().sum(), (x, w))
    want_x = torch.autograd.grad(ref[0].square().sum() + torch_conv(x, w, b, None, "silu")[0][1]
                                 .square().sum(), (x, w))
    for g_, w_ in zip(got, want_x):
        assert rel(g_, w_) <= 1e-5


@pytest.mark.parametrize("tokens", [1, 3])
@pytest.mark.parametrize("grad", [False, True])
def test_update_continues_the_forward(tokens, grad):
    x, w, b, _ = inputs(T=20)
    x, w, b = x.detach(), w.detach(), b.detach()
    whole, _ = torch_conv(x, w, b, None, "silu")
    state = torch.cat([x.new_zeros(2, 24, 1), x[:, :, :17 - tokens]], -1)[..., -4:].clone()
    step = x[:, :, 17 - tokens:17]
    with torch.set_grad_enabled(grad):
        w_ = w.clone().requires_grad_(grad)
        y = cc.causal_conv1d_update(step if tokens > 1 else step[:, :, 0], state, w_, b, "silu")
    assert y.shape == ((2, 24, tokens) if tokens > 1 else (2, 24))
    assert rel(y.reshape(2, 24, tokens), whole[:, :, 17 - tokens:17]) <= 1e-6
    assert torch.equal(state, x[:, :, 13:17])
    assert (y.grad_fn is not None) == grad


def test_bad_input_raises_clear_errors():
    x, w, b, s0 = inputs()
    with pytest.raises(ValueError, match=r"causal_conv1d_fn: x must have shape \[B, D, T\]"):
        cc.causal_conv1d_fn(x[0], w)
    with pytest.raises(ValueError, match=r"weight must have shape \[D, W\] = \[24, W\]"):
        cc.causal_conv1d_fn(x, w[:5])
    with pytest.raises(ValueError, match="seq_idx must be a tensor of shape"):
        cc.causal_conv1d_fn(x, w, seq_idx=torch.zeros(2, 5, dtype=torch.int32))
    with pytest.raises(ValueError, match="cannot be combined with initial_states"):
        cc.causal_conv1d_fn(x, w, seq_idx=torch.zeros(2, 37, dtype=torch.int32),
                            initial_states=s0)
    with pytest.raises(ValueError, match=r"initial_states must have shape \[B, D, W-1\]"):
        cc.causal_conv1d_fn(x, w, initial_states=s0[..., :1])
    with pytest.raises(ValueError, match="activation"):
        cc.causal_conv1d_fn(x, w, activation="gelu")
    with pytest.raises(ValueError, match=r"conv_state must have shape \[B, D, W\]"):
        cc.causal_conv1d_update(x[:, :, 0], torch.zeros(2, 24, 3), w)
    with pytest.raises(ValueError, match="cache_seqlens / conv_state_indices"):
        cc.causal_conv1d_update(x[:, :, 0], torch.zeros(2, 24, 4), w,
                                cache_seqlens=torch.zeros(2, dtype=torch.int32))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        cc.causal_conv1d_fn([1.0], w)


def test_kda_takes_cu_seq_lens_q_as_cu_seqlens():
    g = torch.Generator().manual_seed(3)
    q, k, v = torch.randn(3, 1, 19, 2, 16, generator=g).unbind(0)
    gk = -torch.rand(1, 19, 2, 16, generator=g)
    beta = torch.rand(1, 19, 2, generator=g)
    cu = torch.tensor([0, 8, 19], dtype=torch.int32)
    want, _ = fla.chunk_kda(q, k, v, gk, beta, cu_seqlens=cu, use_qk_l2norm_in_kernel=True)
    got, _ = fla.chunk_kda(q, k, v, gk, beta, cu_seq_lens_q=cu, use_qk_l2norm_in_kernel=True)
    whole, _ = fla.chunk_kda(q, k, v, gk, beta, use_qk_l2norm_in_kernel=True)
    assert torch.equal(got, want) and not torch.allclose(got, whole)
    got, _ = fla.fused_recurrent_kda(q, k, v, gk, beta, cu_seq_lens_q=cu,
                                     use_qk_l2norm_in_kernel=True)
    assert rel(got, want) <= 1e-5
    with pytest.raises(ValueError, match="give cu_seqlens or cu_seq_lens_q"):
        fla.chunk_kda(q, k, v, gk, beta, cu_seqlens=cu, cu_seq_lens_q=cu.clone())
