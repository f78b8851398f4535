"""linattn.ops: fla-named torch autograd functions over the C++ forward and backward."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import linattn  # noqa: E402
from conftest import OP_GATES, STATELESS  # noqa: E402
from linattn import ops, reference  # noqa: E402

OPS = [op for op in linattn.op_names() if op in OP_GATES]  # the ops the fixtures can feed
DIFFERENTIABLE = ("q", "k", "v", "g", "gk", "beta", "initial_state", "a", "b")


def torch_inputs(make_inputs, op, dtype=torch.float64, requires_grad=True, **shape):
    """make_inputs' arrays as torch tensors of `dtype` that require grad (options unchanged)."""
    stateful = op not in STATELESS
    raw = make_inputs(op, initial_state=stateful, **shape)
    out = {}
    for name, x in raw.items():
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x).to(dtype).requires_grad_(requires_grad)
        out[name] = x
    return out


def state_options(op):
    return {} if op in STATELESS else {"output_final_state": True}


def outputs(result):
    return tuple(x for x in result if x is not None)


def forms_of(op):
    return [f for f in ("chunk", "recurrent") if linattn.has_form(op, f)]


# -- autograd ------------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["chunk", "recurrent"])
@pytest.mark.parametrize("op", OPS)
def test_gradcheck_float64(op, form, make_inputs):
    """float64 runs the oracle forward and backward: gradcheck compares the backward through the
    autograd function with central differences of the forward, for every differentiable input
    and both outputs (o and final_state)."""
    if form not in forms_of(op):
        pytest.skip(f"{op} has no {form} form")
    x = torch_inputs(make_inputs, op, B=2, T=5, H=2, K=4, V=3)
    n_h = x.pop("num_householder", 1)
    names = [n for n in DIFFERENTIABLE if n in x]

    def run(*tensors):
        return outputs(ops.mixer(op, form=form, num_householder=n_h, **dict(zip(names, tensors)),
                                 **state_options(op)))

    # Fast mode (a random projection of the Jacobian) for the op x form matrix, the full
    # Jacobian for one op: the oracle's own gradients are checked element by element in C++.
    full = op == "gated_delta_rule" and form == "chunk"
    assert torch.autograd.gradcheck(run, [x[n] for n in names], eps=1e-6, atol=1e-8, rtol=1e-6,
                                    fast_mode=not full)


@pytest.mark.parametrize("variant", ["normalize", "l2norm", "cu_seqlens", "grouped_heads"])
def test_gradcheck_float64_variants(variant, make_inputs):
    op, options, shape = {
        "normalize": ("linear_attn", {"normalize": True}, {}),
        "l2norm": ("gated_delta_rule", {"use_qk_l2norm_in_kernel": True}, {}),
        "cu_seqlens": ("gla", {"cu_seqlens": torch.tensor([0, 3, 8])}, {"B": 1, "T": 8}),
        "grouped_heads": ("gated_delta_rule", {}, {"H": 1, "HV": 2}),
    }[variant]
    shape = {"B": 2, "T": 5, "H": 2, "K": 4, "V": 3, **shape}
    x = torch_inputs(make_inputs, op, **shape)
    if variant == "cu_seqlens":
        x["initial_state"] = x["initial_state"].detach()[:1].expand(2, -1, -1, -1).clone()
        x["initial_state"].requires_grad_()
    names = list(x)

    def run(*tensors):
        return outputs(ops.mixer(op, **dict(zip(names, tensors)), output_final_state=True,
                                 **options))

    assert torch.autograd.gradcheck(run, [x[n] for n in names], eps=1e-6, atol=1e-8, rtol=1e-6,
                                    fast_mode=True)


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
@pytest.mark.parametrize("op", OPS)
def test_float32_matches_the_oracle(op, form, make_inputs, rel_err):
    """The fast forms in float32 against the fp64 oracle, outputs and every gradient."""
    if form not in forms_of(op):
        pytest.skip(f"{op} has no {form} form")
    x32 = torch_inputs(make_inputs, op, dtype=torch.float32, B=2, T=70, H=2, HV=4, K=16, V=8)
    x64 = {n: t.detach().double() if isinstance(t, torch.Tensor) else t for n, t in x32.items()}
    n_h = x32.pop("num_householder", 1)
    x64.pop("num_householder", None)
    result = ops.mixer(op, form=form, num_householder=n_h, **x32, **state_options(op))
    expected = getattr(reference, op)(**x64, **({"num_householder": n_h} if n_h > 1 else {}),
                                      **state_options(op))
    for got, want in zip(outputs(result), outputs(expected)):
        assert got.dtype == (torch.float32)
        assert rel_err(got, want) <= 1e-5

    do = torch.randn_like(result[0])
    ds = None if result[1] is None else torch.randn_like(result[1])
    torch.autograd.backward(outputs(result), outputs((do, ds)))
    grads = reference.backward(op, **x64, do=do.double(),
                               dfinal_state=None if ds is None else ds.double(),
                               **({"num_householder": n_h} if n_h > 1 else {}))
    for name, t in x32.items():
        if isinstance(t, torch.Tensor):
            assert rel_err(t.grad, grads["d" + name]) <= 1e-5, name


def test_only_needed_gradients_are_computed(make_inputs, monkeypatch, rel_err):
    x = torch_inputs(make_inputs, "gated_delta_rule", dtype=torch.float32, requires_grad=False)
    x["v"].requires_grad_()
    seen = set()
    real = linattn._core.backward

    def spy(*args, **kwargs):
        seen.update(n for n in kwargs if n.startswith("d") and n not in ("d_o", "dfinal_state")
                    and kwargs[n] is not None)
        return real(*args, **kwargs)

    monkeypatch.setattr(linattn._core, "backward", spy)
    o, _ = ops.mixer("gated_delta_rule", **x)
    o.sum().backward()  # an expanded (stride 0) upstream gradient
    assert seen == {"dv"}
    x64 = {n: t.detach().double() for n, t in x.items()}
    dv = reference.backward("gated_delta_rule", **x64, do=torch.ones_like(o).double())["dv"]
    assert rel_err(x["v"].grad, dv) <= 1e-5


def test_bfloat16(make_inputs, rel_err):
    """bfloat16 storage: outputs and gradients in bfloat16 (state float32), against the oracle
    on the same bf16-rounded inputs. Bound 2e-2: a few bf16 roundings (2^-8 relative each) of
    o, do and the gradients."""
    x = torch_inputs(make_inputs, "gated_delta_rule", dtype=torch.bfloat16, T=40)
    o, s = ops.chunk_gated_delta_rule(**x, output_final_state=True)
    assert (o.dtype, s.dtype) == (torch.bfloat16, torch.float32)
    do = torch.randn_like(o)
    o.backward(do)
    x64 = {n: t.detach().double() for n, t in x.items()}
    o64, _ = reference.gated_delta_rule(**x64, output_final_state=True)
    grads = reference.backward("gated_delta_rule", **x64, do=do.double())
    assert rel_err(o, o64) <= 1e-2
    for name, t in x.items():
        assert t.grad.dtype == torch.bfloat16
        assert rel_err(t.grad, grads["d" + name]) <= 2e-2, name


def test_gradient_through_the_final_state_only(make_inputs, rel_err):
    x = torch_inputs(make_inputs, "gla", dtype=torch.float32)
    _, s = ops.chunk_gla(x["q"], x["k"], x["v"], x["gk"], initial_state=x["initial_state"],
                         output_final_state=True)
    s.square().sum().backward()
    x64 = {n: t.detach().double() for n, t in x.items()}
    _, s64 = reference.gla(**x64, output_final_state=True)
    grads = reference.backward("gla", **x64, do=torch.zeros(2, 7, 2, 6, dtype=torch.float64),
                               dfinal_state=2 * s64)
    for name, t in x.items():
        assert rel_err(t.grad, grads["d" + name]) <= 1e-5, name


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_no_grad_and_inference_mode(mode, make_inputs):
    x = torch_inputs(make_inputs, "gated_delta_rule", dtype=torch.float32)
    o_ref, s_ref = ops.chunk_gated_delta_rule(**x, output_final_state=True)
    context = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with context:
        fresh = {n: t.detach().clone() for n, t in x.items()} if mode == "inference_mode" else x
        o, s = ops.chunk_gated_delta_rule(**fresh, output_final_state=True)
    assert o.grad_fn is None and not o.requires_grad
    assert torch.equal(o, o_ref.detach()) and torch.equal(s, s_ref.detach())


def test_non_contiguous_inputs(make_inputs):
    """Inputs through transposed/strided views give the contiguous result and gradients."""
    x = torch_inputs(make_inputs, "gated_delta_rule", dtype=torch.float32, requires_grad=False)
    strided = {}
    for name, t in x.items():  # the same values through a permuted buffer: T (or V) not innermost
        dims = (-1, -2) if name == "initial_state" else (1, 2)
        strided[name] = t.transpose(*dims).contiguous().transpose(*dims).requires_grad_()
        assert not strided[name].is_contiguous()
        x[name].requires_grad_()
    o, s = ops.chunk_gated_delta_rule(**x, output_final_state=True)
    o2, s2 = ops.chunk_gated_delta_rule(**strided, output_final_state=True)
    assert torch.equal(o, o2) and torch.equal(s, s2)
    (o.sum() + s.sum()).backward()
    (o2.sum() + s2.sum()).backward()
    for name in x:
        assert torch.equal(x[name].grad, strided[name].grad), name


def test_contiguous_inputs_are_not_copied(make_inputs, monkeypatch):
    """The arrays the C++ forward and backward receive are the caller's memory."""
    x = torch_inputs(make_inputs, "gated_delta_rule", dtype=torch.float32)
    pointers = {t.data_ptr() for t in x.values()}
    received = []

    def spy(real):
        def call(*args, **kwargs):
            received.append({n: a.data_ptr() for n, a in kwargs.items()
                             if n in DIFFERENTIABLE and a is not None})
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(linattn._core, "forward", spy(linattn._core.forward))
    monkeypatch.setattr(linattn._core, "backward", spy(linattn._core.backward))
    o, s = ops.chunk_gated_delta_rule(**x, output_final_state=True)
    (o.sum() + s.sum()).backward()
    assert len(received) == 2
    for call in received:
        assert set(call) == set(DIFFERENTIABLE) - {"gk", "a", "b"}
        assert set(call.values()) <= pointers


# -- fla compatibility ---------------------------------------------------------------------------

# Each fla function called by keyword with fla's argument names, against the oracle of its op.
FLA_CALLS = {
    # name: (op, {fla argument: input name}, extra fla keywords)
    "chunk_linear_attn": ("linear_attn", {}, {"normalize": False}),
    "fused_recurrent_linear_attn": ("linear_attn", {}, {}),
    "chunk_simple_gla": ("simple_gla", {"g": "g"}, {}),
    "fused_recurrent_simple_gla": ("simple_gla", {"g": "g"}, {}),
    "chunk_retention": ("retention", {}, {}),
    "fused_recurrent_retention": ("retention", {}, {}),
    "chunk_gla": ("gla", {"g": "gk"}, {}),
    "fused_recurrent_gla": ("gla", {"gk": "gk"}, {}),
    "chunk_delta_rule": ("delta_rule", {"beta": "beta"}, {"use_qk_l2norm_in_kernel": True}),
    "fused_recurrent_delta_rule": ("delta_rule", {"beta": "beta"}, {}),
    "chunk_gated_delta_rule": ("gated_delta_rule", {"g": "g", "beta": "beta"}, {}),
    "fused_recurrent_gated_delta_rule": ("gated_delta_rule", {"g": "g", "beta": "beta"},
                                         {"use_qk_l2norm_in_kernel": True}),
    "chunk_gated_delta_product": ("delta_product", {"g": "g", "beta": "beta"},
                                  {"num_householder": 2}),
    "chunk_kda": ("kda", {"g": "gk", "beta": "beta"}, {"use_qk_l2norm_in_kernel": True}),
    "fused_recurrent_kda": ("kda", {"g": "gk", "beta": "beta"}, {}),
    "chunk_dplr_delta_rule": ("dplr_delta_rule", {"a": "a", "b": "b", "gk": "gk"}, {}),
    "fused_recurrent_dplr_delta_rule": ("dplr_delta_rule", {"a": "a", "b": "b", "gk": "gk"}, {}),
}


@pytest.mark.parametrize("name", sorted(FLA_CALLS))
def test_fla_call_by_keyword(name, make_inputs, rel_err):
    op, gates, extra = FLA_CALLS[name]
    x = torch_inputs(make_inputs, op, dtype=torch.float32, requires_grad=False, T=20)
    x.pop("num_householder", None)
    kwargs = {"q": x["q"], "k": x["k"], "v": x["v"], "scale": 0.3,
              "initial_state": x["initial_state"], "output_final_state": True,
              **{fla: x[ours] for fla, ours in gates.items()}, **extra}
    kwargs["cu_seqlens"] = None
    o, s = getattr(ops, name)(**kwargs)
    x64 = {n: t.double() for n, t in x.items()}
    expected = getattr(reference, op)(**x64, scale=0.3, output_final_state=True, **extra)
    assert rel_err(o, expected[0]) <= 1e-5 and rel_err(s, expected[1]) <= 1e-5
    assert s.dtype == torch.float32 and o.dtype == x["v"].dtype


@pytest.mark.parametrize("name,scale", [("chunk_rwkv7", 1.0),
                                        ("fused_recurrent_rwkv7", 8 ** -0.5)])
def test_fla_rwkv7_by_keyword(name, scale, make_inputs, rel_err):
    """RWKV-7's names: r is the query, w the per-channel log decay; fla's default scale is 1
    for chunk_rwkv7 and K^-0.5 for fused_recurrent_rwkv7."""
    x = torch_inputs(make_inputs, "dplr_delta_rule", dtype=torch.float32, requires_grad=False,
                     T=20)
    o, s = getattr(ops, name)(r=x["q"], w=x["gk"], k=x["k"], v=x["v"], a=x["a"], b=x["b"],
                              initial_state=x["initial_state"], output_final_state=True)
    x64 = {n: t.double() for n, t in x.items()}
    expected = reference.dplr_delta_rule(**x64, scale=scale, output_final_state=True)
    assert rel_err(o, expected[0]) <= 1e-5 and rel_err(s, expected[1]) <= 1e-5


def test_fla_defaults_and_variants(make_inputs, rel_err):
    """fla's optional gates: simple_gla without g is linear attention, g_gamma a fixed decay;
    fused_recurrent_delta_rule's beta defaults to 1; state_v_first transposes the states."""
    x = torch_inputs(make_inputs, "simple_gla", dtype=torch.float64, requires_grad=False)
    q, k, v, s0 = x["q"], x["k"], x["v"], x["initial_state"]
    o, _ = ops.chunk_simple_gla(q, k, v)
    assert torch.equal(o, reference.linear_attn(q, k, v)[0])

    g_gamma = torch.tensor([-0.1, -0.5], dtype=torch.float64, requires_grad=True)
    o, _ = ops.chunk_simple_gla(q, k, v, g_gamma=g_gamma)
    assert torch.equal(o, reference.simple_gla(q, k, v, g_gamma.detach().expand(2, 7, 2))[0])
    o.sum().backward()
    assert g_gamma.grad is not None and g_gamma.grad.shape == (2,)

    beta = torch.ones(2, 7, 2, dtype=torch.float64)
    o, _ = ops.fused_recurrent_delta_rule(q, k, v)
    assert torch.equal(o, reference.delta_rule(q, k, v, beta)[0])

    o, s = ops.chunk_simple_gla(q, k, v, x["g"], initial_state=s0.transpose(-1, -2),
                                output_final_state=True, state_v_first=True)
    o_ref, s_ref = reference.simple_gla(q, k, v, x["g"], initial_state=s0,
                                        output_final_state=True)
    assert torch.equal(o, o_ref) and torch.equal(s, s_ref.transpose(-1, -2))


def test_gated_delta_rule_gate_in_kernel(make_inputs, rel_err):
    """Newer fla's use_gate_in_kernel / use_beta_sigmoid_in_kernel / allow_neg_eigval."""
    x = torch_inputs(make_inputs, "gated_delta_rule", dtype=torch.float64, requires_grad=False)
    a, b = torch.randn(2, 7, 2, dtype=torch.float64), torch.randn(2, 7, 2, dtype=torch.float64)
    A_log, dt_bias = torch.tensor([0.5, -1.0]).double(), torch.tensor([0.1, 0.2]).double()
    o, _ = ops.chunk_gated_delta_rule(x["q"], x["k"], x["v"], a, b, use_gate_in_kernel=True,
                                      A_log=A_log, dt_bias=dt_bias, use_beta_sigmoid_in_kernel=True,
                                      allow_neg_eigval=True)
    g = -A_log.exp() * torch.nn.functional.softplus(a + dt_bias)
    o_ref, _ = reference.gated_delta_rule(x["q"], x["k"], x["v"], g, 2 * b.sigmoid())
    assert rel_err(o, o_ref) <= 1e-12


# -- bad input ------------------------------------------------------------------------------------

def test_bad_input_errors(make_inputs):
    x = torch_inputs(make_inputs, "gated_delta_rule", dtype=torch.float32, requires_grad=False)
    q, k, v, g, beta = x["q"], x["k"], x["v"], x["g"], x["beta"]
    with pytest.raises(ValueError, match="chunk_gated_delta_rule: q: linattn runs on the CPU only"):
        ops.chunk_gated_delta_rule(q.to("meta"), k, v, g, beta)
    with pytest.raises(ValueError, match="q must be float32, bfloat16 or float64, got int32"):
        ops.chunk_gated_delta_rule(q.int(), k, v, g, beta)
    with pytest.raises(ValueError, match=r"k must have shape \[B, T, H, K\]"):
        ops.chunk_gated_delta_rule(q, k[:, :5], v, g, beta)
    with pytest.raises(ValueError, match=r"beta must be in \[0, 2\]"):
        ops.chunk_gated_delta_rule(q, k, v, g, beta + 2.5)
    with pytest.raises(ValueError, match="v must have the dtype of q"):
        ops.chunk_gated_delta_rule(q, k, v.double(), g, beta)
    with pytest.raises(ValueError, match="cu_seqlens must be int32 or int64"):
        ops.chunk_gated_delta_rule(q[:1], k[:1], v[:1], g[:1], beta[:1],
                                   cu_seqlens=torch.tensor([0.0, 7.0], requires_grad=True))
    with pytest.raises(TypeError, match="q must be a torch.Tensor"):
        ops.chunk_gated_delta_rule(q.numpy(), k, v, g, beta)
    with pytest.raises(ValueError, match="head_first=True is not supported"):
        ops.chunk_gated_delta_rule(q, k, v, g, beta, head_first=True)
    with pytest.raises(TypeError, match="unexpected keyword argument.*chunk_sise"):
        ops.chunk_gated_delta_rule(q, k, v, g, beta, chunk_sise=64)
    with pytest.raises(ValueError, match="gv is not supported"):
        ops.fused_recurrent_gla(q, k, v, gk=g[..., None].expand(-1, -1, -1, 8), gv=v)
    with pytest.raises(RuntimeError, match="floating point"):  # torch itself refuses
        torch.zeros(3, dtype=torch.int64).requires_grad_()


# -- the short convolution ---------------------------------------------------------------------

@pytest.mark.parametrize("activation", [None, "silu"])
def test_causal_conv1d_gradcheck_float64(activation):
    """float64 runs the conv1d oracle forward and backward; gradcheck against central
    differences for x, weight, bias, residual and initial_state, both outputs."""
    gen = torch.Generator().manual_seed(0)
    shapes = {"x": (2, 9, 5), "weight": (5, 4), "bias": (5,), "residual": (2, 9, 5),
              "initial_state": (2, 5, 4)}
    tensors = [torch.randn(s, generator=gen, dtype=torch.float64, requires_grad=True)
               for s in shapes.values()]

    def run(*t):
        return ops.causal_conv1d(*t, output_final_state=True, activation=activation)

    assert torch.autograd.gradcheck(run, tensors, eps=1e-6, atol=1e-8, rtol=1e-6)


def test_causal_conv1d_float32_matches_torch():
    """Against torch's own depthwise conv1d (left zero padding), values and gradients."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 30, 6, generator=gen, requires_grad=True)
    w = torch.randn(6, 4, generator=gen, requires_grad=True)
    y, _ = ops.causal_conv1d(x, w, activation="silu")
    y_ref = torch.nn.functional.silu(torch.nn.functional.conv1d(
        torch.nn.functional.pad(x.transpose(1, 2), (3, 0)), w[:, None], groups=6)).transpose(1, 2)
    dy = torch.randn(y.shape, generator=gen)
    grads = torch.autograd.grad(y, (x, w), dy)
    grads_ref = torch.autograd.grad(y_ref, (x, w), dy)
    assert float((y - y_ref).detach().norm() / y_ref.detach().norm()) <= 1e-6
    for g, ref in zip(grads, grads_ref):
        assert float((g - ref).norm() / ref.norm()) <= 1e-6


def test_kda_gate_in_kernel(make_inputs, rel_err):
    """fla's KDA gate keywords: per-channel dt_bias [HV * K], A_log [HV]."""
    x = torch_inputs(make_inputs, "kda", dtype=torch.float64, requires_grad=False)
    a = torch.randn(2, 7, 2, 8, dtype=torch.float64)
    A_log, dt_bias = torch.tensor([0.5, -1.0]).double(), torch.randn(16).double()
    o, _ = ops.fused_recurrent_kda(x["q"], x["k"], x["v"], a, x["beta"], A_log, dt_bias,
                                   use_gate_in_kernel=True)
    gk = -A_log.exp()[:, None] * torch.nn.functional.softplus(a + dt_bias.view(2, 8))
    o_ref, _ = reference.kda(x["q"], x["k"], x["v"], gk, x["beta"])
    assert rel_err(o, o_ref) <= 1e-12
