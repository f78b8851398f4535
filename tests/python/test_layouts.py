"""Every op and fast form on the strided layouts real programs pass (issue 15), forward and
backward, against the same values made contiguous: q, k, v as views of a transposed [B, D, T]
convolution output (the head dimension has stride T), [B, H, T, D] buffers permuted to
[B, T, H, D], negative strides (numpy) and zero strides (broadcast views). The fast forms read
a strided block with the same values in the same order as a contiguous one, so the results
must be bitwise identical."""

from __future__ import annotations

import numpy as np
import pytest

import linattn
import linattn.ops
from conftest import OPS, STATELESS, random_inputs
from linattn.reference import _backward, _forward

torch = pytest.importorskip("torch")

ROWS = ("q", "k", "v", "gk", "a", "b")  # the [B, T, H, D] inputs


def conv_output(x: torch.Tensor) -> torch.Tensor:
    """x [B, T, H, D] as a view of a [B, H*D, T] tensor transposed: d has stride T, t stride 1
    (transformers' Gated DeltaNet layers split q, k, v out of such a convolution output)."""
    B, T, H, D = x.shape
    buf = x.reshape(B, T, H * D).transpose(1, 2).contiguous()
    return buf.transpose(1, 2).unflatten(-1, (H, D))


def head_major(x: torch.Tensor) -> torch.Tensor:
    """x [B, T, H, D] as a view of a [B, H, T, D] buffer."""
    return x.transpose(1, 2).contiguous().transpose(1, 2)


def broadcast(x: torch.Tensor) -> torch.Tensor:
    """Zero strides: head 0's rows read by every head, or (v) element 0 of each row for every d."""
    return x[..., :1].expand(x.shape) if x.shape[-1] == V_DIM else x[:, :, :1].expand(x.shape)


def reversed_view(x: np.ndarray, axis: int) -> np.ndarray:
    """x's values through a view with a negative stride along `axis` (numpy: torch has none)."""
    return np.flip(np.flip(x, axis).copy(), axis)


V_DIM = 13  # not a multiple of 4: the transposing loads' column tails run
TORCH_LAYOUTS = {"conv_output": conv_output, "head_major": head_major, "broadcast": broadcast}
NUMPY_LAYOUTS = {"negative_d": 3, "negative_t": 1}
CASES = [(layout, dtype) for layout in TORCH_LAYOUTS for dtype in ("float32", "bfloat16")] + [
    (layout, "float32") for layout in NUMPY_LAYOUTS]


def layout_inputs(op: str, layout: str, dtype: str):
    """(strided inputs, the same values contiguous) of op in a layout."""
    x = random_inputs(op, B=2, T=150, H=2, K=16, V=V_DIM, dtype=np.float32, seed=3,
                      initial_state=op not in STATELESS)
    if layout in NUMPY_LAYOUTS:
        strided = {n: reversed_view(a, NUMPY_LAYOUTS[layout]) if n in ROWS else a
                   for n, a in x.items()}
        return strided, x
    x = {n: torch.from_numpy(a) if isinstance(a, np.ndarray) else a for n, a in x.items()}
    if dtype == "bfloat16":
        x.update({n: x[n].bfloat16() for n in ("q", "k", "v", "a", "b") if n in x})
    views = TORCH_LAYOUTS[layout]
    moved = ("q", "v") if layout == "broadcast" else ROWS
    strided = {n: views(a) if n in moved else a for n, a in x.items()}
    if "initial_state" in x and layout != "broadcast":  # [N, H, V, K] storage (fla's state_v_first)
        strided["initial_state"] = x["initial_state"].transpose(-1, -2).contiguous().transpose(-1, -2)
    for n in moved:
        assert n not in strided or not strided[n].is_contiguous(), n
    contiguous = {n: a.contiguous() if torch.is_tensor(a) else a for n, a in strided.items()}
    return strided, contiguous


def fast_forms(op: str):
    return [f for f in ("chunk", "recurrent") if linattn.has_form(op, f, False)]


def assert_same(got, want, what):
    got, want = (np.asarray(t.float() if torch.is_tensor(t) else t) for t in (got, want))
    np.testing.assert_array_equal(got, want, err_msg=what)


@pytest.mark.parametrize("layout,dtype", CASES)
@pytest.mark.parametrize("op", OPS)
def test_strided_layouts_give_the_contiguous_result(op, layout, dtype):
    strided, contiguous = layout_inputs(op, layout, dtype)
    state = {} if op in STATELESS else {"output_final_state": True}
    for form in fast_forms(op):
        o, s = _forward(op, form, **strided, **state)
        o_ref, s_ref = _forward(op, form, **contiguous, **state)
        assert_same(o, o_ref, f"{form} o")
        if s_ref is not None:
            assert_same(s, s_ref, f"{form} final_state")
    if not linattn.has_form(op, "chunk", True):
        return
    o_ref, _ = _forward(op, "chunk", **contiguous, **state)
    rng = np.random.default_rng(4)
    do = rng.standard_normal(tuple(o_ref.shape)).astype(np.float32)
    dos = {"do": do}
    if torch.is_tensor(o_ref):  # the upstream gradient strided too ([B, H, T, V] storage)
        do_t = torch.from_numpy(do).to(o_ref.dtype)
        dos = {"do": head_major(do_t), "do_ref": do_t}
    g = _backward(op, "chunk", do=dos["do"], **strided)
    g_ref = _backward(op, "chunk", do=dos.get("do_ref", do), **contiguous)
    assert g.keys() == g_ref.keys()
    for name in g_ref:
        assert_same(g[name], g_ref[name], f"chunk backward {name}")


def grads_of(fn, inputs: dict, seed: int = 5):
    """fn(**inputs)'s output and the gradients of every input of a random upstream gradient."""
    leaves = {n: x.detach().requires_grad_() for n, x in inputs.items()}
    out = fn(**leaves)
    out = out[0] if isinstance(out, tuple) else out
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.dtype))
    return out.detach(), {n: x.grad for n, x in leaves.items()}


OWN_API = {
    "parallel_attn": lambda q, k, v: linattn.parallel_attn(q, k, v),
    "parallel_attn (window)": lambda q, k, v: linattn.parallel_attn(q, k, v, window_size=40),
    "lla_attention": lambda q, k, v: linattn.lla_attention(q, k, v),
}


@pytest.mark.parametrize("layout", ["conv_output", "head_major"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", OWN_API)
def test_attention_families_on_strided_layouts(name, dtype, layout):
    gen = torch.Generator().manual_seed(6)
    T = 70 if name == "lla_attention" else 150
    x = {n: torch.randn(2, T, 2, 16, generator=gen).to(dtype) for n in ("q", "k", "v")}
    view = TORCH_LAYOUTS[layout]
    o, g = grads_of(OWN_API[name], {n: view(t) for n, t in x.items()})
    o_ref, g_ref = grads_of(OWN_API[name], x)
    assert_same(o, o_ref, "o")
    for n in x:
        assert_same(g[n], g_ref[n], f"d{n}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_causal_conv1d_on_a_channel_first_view(dtype):
    """x [B, T, D] as the transposed view of a [B, D, T] tensor (how a layer's projection output
    often arrives), forward and backward."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 150, 70, generator=gen).to(dtype)
    w = torch.randn(70, 4, generator=gen).to(dtype)
    strided = x.transpose(1, 2).contiguous().transpose(1, 2)
    conv = lambda x, weight: linattn.ops.causal_conv1d(x, weight, activation="silu")
    y, g = grads_of(conv, {"x": strided, "weight": w})
    y_ref, g_ref = grads_of(conv, {"x": x, "weight": w})
    assert_same(y, y_ref, "y")
    for n in g_ref:
        assert_same(g[n], g_ref[n], f"d{n}")
