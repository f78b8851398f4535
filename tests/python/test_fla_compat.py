"""linattn against fla (flash-linear-attention) as released: signatures read from fla's installed
source (fla_source; no import of fla or triton), fla's pure-torch ``naive`` references as a second
oracle on fla's test recipes, and fla's behaviours linattn implements (reverse, the (kv, z) state
of normalised linear attention, RWKV-7's defaults, bounded gates, per-channel gates)."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import fla_compat  # noqa: E402
import fla_source  # noqa: E402
from fla_source import MISSING, Param  # noqa: E402

import linattn  # noqa: E402
from linattn import ops, reference  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def pinned_fla():
    problem = fla_source.check_installed()
    if problem:  # requirements-dev.txt installs it: a missing fla is a setup error, not a skip
        pytest.fail(problem)


# -- signatures ---------------------------------------------------------------------------------

@pytest.mark.parametrize("module,name", fla_compat.all_functions())
def test_signature_is_fla_s(module, name):
    fla = fla_source.signature(module, name)
    for fn in fla_compat.linattn_functions(name):
        found = fla_compat.differences(fla, fla_compat.linattn_signature(fn))
        assert not found, f"{fn.__module__}.{name} vs fla {fla_source.installed_version()}: {found}"


def test_differences_sees_every_kind_of_drift():
    """The comparison itself: each change fla could make shows up."""
    fla = [Param("q", "positional"), Param("scale", "positional", None),
           Param("cu_seqlens", "positional", None), Param("kwargs", "**")]
    assert fla_compat.differences(fla, fla) == []
    ours = fla + [Param("form", "keyword", "chunk")]
    assert fla_compat.differences(fla, ours) == []
    cases = {
        "missing ['cu_seqlens']": fla[:2] + fla[3:],
        "order": [fla[0], fla[2], fla[1], fla[3]],
        "instead of fla's scale=None": [fla[0], Param("scale", "positional", 1.0), *fla[2:]],
        "(keyword) instead of fla's": [fla[0], Param("scale", "keyword", None), *fla[2:]],
        "extra parameter normalize": fla[:3] + [Param("normalize", "positional", False), fla[3]],
        "has **kwargs where fla has none": fla,
    }
    for expected, ours in cases.items():
        reference_sig = fla[:3] if expected.startswith("has **") else fla
        assert any(expected in d for d in fla_compat.differences(reference_sig, ours)), expected


def test_fla_source_reads_the_installed_release():
    """The parser follows fla's re-exports to the defining file and reads **kwargs keys."""
    module, fn = fla_source.find_def("fla.ops.gated_delta_rule", "chunk_gated_delta_rule")
    assert module == "fla.ops.gated_delta_rule.chunk" and fn.name == "chunk_gated_delta_rule"
    keys = fla_source.kwargs_keys("fla.ops.gated_delta_rule", "chunk_gated_delta_rule")
    assert {"use_gate_in_kernel", "A_log", "dt_bias"} <= set(keys)


def test_doc_is_current():
    """docs/fla-compat.md is generated from this view of fla (python tests/python/fla_compat.py)."""
    assert fla_compat.DOC.read_text() == fla_compat.render(), (
        "docs/fla-compat.md is stale: run .venv/bin/python tests/python/fla_compat.py")


def test_every_function_has_notes():
    assert set(fla_compat.NOTES) == {n for _, n in fla_compat.all_functions()}


# -- inputs on fla's test recipes ------------------------------------------------------------------

@dataclasses.dataclass
class Recipe:
    """fla's tests' inputs: q, v normal; keys l2-normalised; beta = sigmoid(rand); log decays
    logsigmoid(randn) / gate_logit_normalizer; a normal initial state."""
    B: int = 2
    T: int = 63
    H: int = 2
    K: int = 16
    V: int = 12
    normalizer: float = 1.0
    seed: int = 0

    def __post_init__(self):
        self.gen = torch.Generator().manual_seed(self.seed)

    def randn(self, *shape):
        return torch.randn(*shape, generator=self.gen)

    def qkv(self, rows=None):
        B, T, H, K, V = self.B, self.T, self.H, self.K, self.V
        rows = rows or T
        return (self.randn(B, T, H, K), F.normalize(self.randn(B, rows, H, K), p=2, dim=-1),
                self.randn(B, rows, H, V))

    def beta(self, rows=None):
        return torch.rand(self.B, rows or self.T, self.H, generator=self.gen).sigmoid()

    def decay(self, *channels):
        return F.logsigmoid(self.randn(self.B, self.T, self.H, *channels)) / self.normalizer

    def state(self):
        return self.randn(self.B, self.H, self.K, self.V)


def rel_err(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# fla's naive references compute in float32: agreement to a few float32 roundings over T steps.
NAIVE_TOL = 2e-5


def naive(path: str):
    return fla_source.load_file(path)


RECIPES = [Recipe(), Recipe(T=100, normalizer=0.1, seed=1), Recipe(T=37, normalizer=10, seed=2)]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: f"T{r.T}-norm{r.normalizer}")
@pytest.mark.parametrize("fn", ["chunk_gated_delta_rule", "fused_recurrent_gated_delta_rule"])
def test_gated_delta_rule_vs_fla_naive(fn, recipe):
    ref = naive("fla/ops/gated_delta_rule/naive.py").naive_recurrent_gated_delta_rule
    q, k, v = recipe.qkv()
    g, beta, h0 = recipe.decay(), recipe.beta(), recipe.state()
    o, s = getattr(ops, fn)(q, k, v, g=g, beta=beta, initial_state=h0, output_final_state=True)
    o_ref, s_ref = ref(q, k, v, beta, g, initial_state=h0, output_final_state=True)
    assert rel_err(o, o_ref) <= NAIVE_TOL and rel_err(s, s_ref) <= NAIVE_TOL


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: f"T{r.T}-norm{r.normalizer}")
@pytest.mark.parametrize("fn", ["chunk_kda", "fused_recurrent_kda"])
def test_kda_vs_fla_naive(fn, recipe):
    ref = naive("fla/ops/kda/naive.py").naive_recurrent_kda
    q, k, v = recipe.qkv()
    g, beta, h0 = recipe.decay(recipe.K), recipe.beta(), recipe.state()
    o, s = getattr(ops, fn)(q, k, v, g, beta, initial_state=h0, output_final_state=True)
    o_ref, s_ref = ref(q, k, v, g, beta, initial_state=h0, output_final_state=True)
    assert rel_err(o, o_ref) <= NAIVE_TOL and rel_err(s, s_ref) <= NAIVE_TOL


def test_kda_gradients_vs_fla_naive():
    """Gradients of every input through linattn's C++ backward against torch autograd through
    fla's naive recurrence."""
    ref = naive("fla/ops/kda/naive.py").naive_recurrent_kda
    r = Recipe(T=40)
    q, k, v = r.qkv()
    inputs = [q, k, v, r.decay(r.K), r.beta(), r.state()]
    for x in inputs:
        x.requires_grad_()
    do, ds = r.randn(r.B, r.T, r.H, r.V), r.randn(r.B, r.H, r.K, r.V)

    def grads(run):
        o, s = run(*inputs)
        return torch.autograd.grad((o * do).sum() + (s * ds).sum(), inputs)

    ours = grads(lambda *x: ops.chunk_kda(*x[:5], initial_state=x[5], output_final_state=True))
    theirs = grads(lambda *x: ref(*x[:5], initial_state=x[5], output_final_state=True))
    for name, a, b in zip(("dq", "dk", "dv", "dg", "dbeta", "dh0"), ours, theirs):
        assert rel_err(a, b) <= 1e-4, name


@pytest.mark.parametrize("recipe", RECIPES[:2], ids=lambda r: f"T{r.T}-norm{r.normalizer}")
@pytest.mark.parametrize("fn,naive_path,per_channel", [
    ("chunk_gla", "gla:naive_recurrent_gla", True),
    ("fused_recurrent_gla", "gla:naive_recurrent_gla", True),
    ("chunk_simple_gla", "simple_gla:naive_recurrent_simple_gla", False),
    ("fused_recurrent_simple_gla", "simple_gla:naive_recurrent_simple_gla", False)])
def test_gla_family_vs_fla_naive(fn, naive_path, per_channel, recipe):
    family, name = naive_path.split(":")
    ref = getattr(naive(f"fla/ops/{family}/naive.py"), name)
    q, k, v = recipe.qkv()
    g, h0 = recipe.decay(*((recipe.K,) if per_channel else ())), recipe.state()
    o, s = getattr(ops, fn)(q, k, v, g, initial_state=h0, output_final_state=True)
    o_ref, s_ref = ref(q, k, v, g, initial_state=h0, output_final_state=True)
    assert rel_err(o, o_ref) <= NAIVE_TOL and rel_err(s, s_ref) <= NAIVE_TOL


@pytest.mark.parametrize("fn", ["chunk_retention", "fused_recurrent_retention"])
def test_retention_vs_fla_naive(fn):
    ref = naive("fla/ops/retention/naive.py").naive_retention
    q, k, v = Recipe(T=50).qkv()
    o, _ = getattr(ops, fn)(q, k, v)
    o_ref = ref(*(x.transpose(1, 2) for x in (q, k, v))).transpose(1, 2)
    assert rel_err(o, o_ref) <= NAIVE_TOL


@pytest.mark.parametrize("fn", ["chunk_delta_rule", "fused_recurrent_delta_rule"])
def test_delta_rule_vs_fla_naive(fn):
    ref = naive("fla/ops/delta_rule/naive.py").delta_rule_recurrence
    r = Recipe(T=65)
    q, k, v = r.qkv()
    beta, h0 = r.beta(), r.state()
    o, s = getattr(ops, fn)(q, k, v, beta, initial_state=h0, output_final_state=True)
    o_ref, s_ref = ref(*(x.transpose(1, 2) for x in (q, k, v, beta)), initial_state=h0)
    assert rel_err(o, o_ref.transpose(1, 2)) <= NAIVE_TOL and rel_err(s, s_ref) <= NAIVE_TOL


@pytest.mark.parametrize("fn", ["chunk_dplr_delta_rule", "fused_recurrent_dplr_delta_rule"])
def test_dplr_delta_rule_vs_fla_naive(fn):
    """fla's RWKV-7 recipe: a = -kk, b = kk * iclr, kk an l2-normalised removal key."""
    ref = naive("fla/ops/generalized_delta_rule/dplr/naive.py").dplr_recurrence
    r = Recipe(T=45)
    q, k, v = r.qkv()
    kk = F.normalize(r.randn(r.B, r.T, r.H, r.K), p=2, dim=-1)
    a, b = -kk, kk * torch.rand(r.B, r.T, r.H, r.K, generator=r.gen)
    gk, h0 = r.decay(r.K), r.state()
    o, s = getattr(ops, fn)(q, k, v, a, b, gk, initial_state=h0, output_final_state=True)
    o_ref, s_ref = ref(*(x.transpose(1, 2) for x in (q, k, v, a, b, gk)), initial_state=h0)
    assert rel_err(o, o_ref.transpose(1, 2)) <= NAIVE_TOL and rel_err(s, s_ref) <= NAIVE_TOL


def test_gated_delta_product_varlen_vs_fla_naive():
    """Varlen (cu_seqlens) as fla's test packs it, two Householder steps per token."""
    ref = naive("fla/ops/gated_delta_product/naive.py").naive_recurrent_gated_delta_product
    r = Recipe(B=1, T=50)
    n_h, cu = 2, torch.tensor([0, 13, 14, 50])
    q, k, v = r.qkv(rows=r.T * n_h)
    g, beta = r.decay(), r.beta(rows=r.T * n_h)
    h0 = r.randn(3, r.H, r.K, r.V)
    o, s = ops.chunk_gated_delta_product(q, k, v, g, beta, n_h, scale=0.25, initial_state=h0,
                                         output_final_state=True, cu_seqlens=cu)
    o_ref, s_ref = ref(q, k, v, g, beta, 0.25, cu_seqlens=cu, initial_state=h0,
                       output_final_state=True, num_householder=n_h)
    assert rel_err(o, o_ref) <= NAIVE_TOL and rel_err(s, s_ref) <= NAIVE_TOL


def test_gated_delta_rule_varlen_vs_fla_naive():
    """fla's varlen recipe: the naive recurrence per sequence, linattn on the packed batch."""
    ref = naive("fla/ops/gated_delta_rule/naive.py").naive_recurrent_gated_delta_rule
    r = Recipe(B=1, T=90)
    cu = torch.tensor([0, 1, 31, 64, 90])
    q, k, v = r.qkv()
    g, beta, h0 = r.decay(), r.beta(), r.randn(4, r.H, r.K, r.V)
    o, s = ops.chunk_gated_delta_rule(q, k, v, g, beta, initial_state=h0,
                                      output_final_state=True, cu_seqlens=cu)
    for n, (lo, hi) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        o_ref, s_ref = ref(q[:, lo:hi], k[:, lo:hi], v[:, lo:hi], beta[:, lo:hi], g[:, lo:hi],
                           initial_state=h0[n:n + 1], output_final_state=True)
        assert rel_err(o[:, lo:hi], o_ref) <= NAIVE_TOL and rel_err(s[n:n + 1], s_ref) <= NAIVE_TOL


@pytest.mark.parametrize("fn", ["chunk_linear_attn", "fused_recurrent_linear_attn"])
def test_normalized_linear_attn_continues_through_its_state(fn):
    """fla's normalize=True state is (kv, z): two calls through the state give one call's
    result, and each agrees with fla's naive recurrence (which takes the same tuple)."""
    ref = naive("fla/ops/linear_attn/naive.py").naive_recurrent_linear_attn
    r = Recipe(T=40)
    q, k, v = r.qkv()
    k = k.abs()  # a positive feature map, as normalised linear attention is used
    q = q.abs()
    o, state = getattr(ops, fn)(q, k, v, normalize=True, output_final_state=True)
    o1, s1 = getattr(ops, fn)(q[:, :17], k[:, :17], v[:, :17], normalize=True,
                              output_final_state=True)
    o2, s2 = getattr(ops, fn)(q[:, 17:], k[:, 17:], v[:, 17:], initial_state=s1,
                              normalize=True, output_final_state=True)
    assert rel_err(torch.cat([o1, o2], 1), o) <= 1e-5
    assert rel_err(s2[0], state[0]) <= 1e-5 and rel_err(s2[1], state[1]) <= 1e-5
    o2_ref, s2_ref = ref(q[:, 17:], k[:, 17:], v[:, 17:], initial_state=s1, normalize=True,
                         output_final_state=True)
    assert rel_err(o2, o2_ref) <= NAIVE_TOL
    assert rel_err(s2[0], s2_ref[0]) <= NAIVE_TOL and rel_err(s2[1], s2_ref[1]) <= NAIVE_TOL
    _, (kv, z) = getattr(ops, fn)(q, k, v, normalize=True)  # fla returns z whenever normalize
    assert kv is None and z.shape == (r.B, 1, r.H, r.K)


def test_normalized_linear_attn_state_varlen_and_gradient():
    """The (kv, z) state per packed sequence, and its gradient through autograd against the
    naive recurrence's."""
    ref = naive("fla/ops/linear_attn/naive.py").naive_recurrent_linear_attn
    r = Recipe(B=1, T=30)
    cu = torch.tensor([0, 12, 30])
    q, k, v = (x.abs() if i < 2 else x for i, x in enumerate(r.qkv()))
    kv0 = r.randn(2, r.H, r.K, r.V).requires_grad_()
    z0 = r.randn(2, 1, r.H, r.K).abs().requires_grad_()
    o, (kv, z) = ops.chunk_linear_attn(q, k, v, initial_state=(kv0, z0), output_final_state=True,
                                       cu_seqlens=cu)
    loss = o.square().sum() + kv.sum() + z.square().sum()
    grads = torch.autograd.grad(loss, (kv0, z0))
    loss_ref, o_parts = 0, []
    for n, (lo, hi) in enumerate(((0, 12), (12, 30))):
        o_n, (kv_n, z_n) = ref(q[:, lo:hi], k[:, lo:hi], v[:, lo:hi],
                               initial_state=(kv0[n:n + 1], z0[n:n + 1]), normalize=True,
                               output_final_state=True)
        o_parts.append(o_n)
        loss_ref = loss_ref + o_n.square().sum() + kv_n.sum() + z_n.square().sum()
    assert rel_err(o, torch.cat(o_parts, 1)) <= NAIVE_TOL
    for a, b in zip(grads, torch.autograd.grad(loss_ref, (kv0, z0))):
        assert rel_err(a, b) <= 1e-4


# -- behaviours of fla's arguments ------------------------------------------------------------------

def _reverse_reference(run, tensors, cu=None):
    """reverse=True by definition: the forward recurrence on each sequence read backwards."""
    T = tensors["q"].shape[1]
    bounds = [(0, T)] if cu is None else list(zip(cu[:-1].tolist(), cu[1:].tolist()))
    index = torch.cat([torch.arange(hi - 1, lo - 1, -1) for lo, hi in bounds])
    o, s = run(**{n: x.index_select(1, index) for n, x in tensors.items()})
    return o.index_select(1, index), s


@pytest.mark.parametrize("varlen", [False, True])
@pytest.mark.parametrize("fn,gates", [
    ("fused_recurrent_simple_gla", ("g",)), ("fused_recurrent_gla", ("gk",)),
    ("fused_recurrent_retention", ()), ("fused_recurrent_linear_attn", ()),
    ("fused_recurrent_dplr_delta_rule", ("a", "b", "gk"))])
def test_reverse(fn, gates, varlen):
    r = Recipe(B=1 if varlen else 2, T=23)
    q, k, v = r.qkv()
    kk = F.normalize(r.randn(r.B, r.T, r.H, r.K), p=2, dim=-1)
    make = {"g": lambda: r.decay(), "gk": lambda: r.decay(r.K), "a": lambda: -kk,
            "b": lambda: kk * 0.5}
    tensors = dict(q=q, k=k, v=v, **{n: make[n]() for n in gates})
    cu = torch.tensor([0, 9, 23]) if varlen else None
    h0 = r.randn(2, r.H, r.K, r.V)
    kw = dict(initial_state=h0, output_final_state=True, cu_seqlens=cu)
    o, s = getattr(ops, fn)(**tensors, reverse=True, **kw)
    o_ref, s_ref = _reverse_reference(lambda **x: getattr(ops, fn)(**x, **kw), tensors, cu)
    assert rel_err(o, o_ref) <= 1e-6 and rel_err(s, s_ref) <= 1e-6
    o_fwd, _ = getattr(ops, fn)(**tensors, **kw)
    assert rel_err(o, o_fwd) > 1e-2  # reverse changes the answer


def test_reverse_gradients_flow():
    r = Recipe(B=1, T=6, H=1, K=4, V=3)
    q, k, v = (x.double().requires_grad_() for x in r.qkv())
    g = r.decay().double().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda *x: ops.fused_recurrent_simple_gla(*x, reverse=True)[0], (q, k, v, g))


def test_fused_recurrent_rwkv7_uses_fla_defaults():
    r = Recipe(T=20)
    q, k, v = r.qkv()
    kk = F.normalize(r.randn(r.B, r.T, r.H, r.K), p=2, dim=-1)
    w, a, b = r.decay(r.K), -kk, kk * 0.5
    o, s = ops.fused_recurrent_rwkv7(q, w, k, v, a, b)
    o_ref, s_ref = reference.dplr_delta_rule(q.double(), k.double(), v.double(), a=a.double(),
                                             b=b.double(), gk=w.double(), scale=r.K ** -0.5,
                                             output_final_state=True)
    assert s is not None and rel_err(o, o_ref) <= 1e-5 and rel_err(s, s_ref) <= 1e-5
    o_chunk, s_chunk = ops.chunk_rwkv7(q, w, k, v, a, b)  # chunk_rwkv7: scale 1, no state
    assert s_chunk is None and rel_err(o_chunk, o_ref * r.K ** 0.5) <= 1e-5


@pytest.mark.parametrize("fn", ["chunk_kda", "fused_recurrent_kda"])
def test_kda_lower_bound_gate(fn):
    """fla's bounded KDA gate: g <- lower_bound sigmoid(exp(A_log) (g + dt_bias)) (A_log
    optional)."""
    r = Recipe(T=30)
    q, k, v = r.qkv()
    raw, beta = r.randn(r.B, r.T, r.H, r.K), r.beta()
    A_log, dt_bias = r.randn(r.H), r.randn(r.H * r.K)
    for a_log in (A_log, None):
        o, _ = getattr(ops, fn)(q, k, v, raw, beta, A_log=a_log, dt_bias=dt_bias,
                                use_gate_in_kernel=True, lower_bound=-3.0)
        x = raw + dt_bias.view(r.H, r.K)
        g = -3.0 * torch.sigmoid(x if a_log is None else a_log.exp()[:, None] * x)
        o_ref, _ = ops.chunk_kda(q, k, v, g, beta)
        assert rel_err(o, o_ref) <= 1e-6
    with pytest.raises(ValueError, match="lower_bound must be in"):
        ops.chunk_kda(q, k, v, raw, beta, A_log=A_log, use_gate_in_kernel=True, safe_gate=True,
                      lower_bound=-7.0)
    with pytest.raises(ValueError, match="needs lower_bound"):
        ops.chunk_kda(q, k, v, raw, beta, A_log=A_log, use_gate_in_kernel=True, safe_gate=True)


def test_recurrent_gated_delta_rule_per_channel_gate():
    """gk [B, T, HV, K] is KDA's decay; with g too, the two add in log space."""
    r = Recipe(T=25)
    q, k, v = r.qkv()
    g, gk, beta = r.decay(), r.decay(r.K), r.beta()
    o, s = ops.fused_recurrent_gated_delta_rule(q, k, v, g=g, gk=gk, beta=beta,
                                                output_final_state=True)
    o_ref, s_ref = ops.chunk_kda(q, k, v, gk + g[..., None], beta, output_final_state=True)
    assert rel_err(o, o_ref) <= 1e-5 and rel_err(s, s_ref) <= 1e-5
    with pytest.raises(ValueError, match="gv is not supported"):
        ops.fused_recurrent_gated_delta_rule(q, k, v, g=g, gv=v, beta=beta)


def test_state_v_first_and_gpu_hints():
    r = Recipe(T=21)
    q, k, v = r.qkv()
    g, h0 = r.decay(r.K), r.state()
    o, s = ops.chunk_gla(q, k, v, g, initial_state=h0, output_final_state=True)
    o_t, s_t = ops.chunk_gla(q, k, v, g, initial_state=h0.transpose(-1, -2).contiguous(),
                             output_final_state=True, state_v_first=True,
                             cu_seqlens_cpu=None)
    assert torch.equal(o, o_t) and torch.equal(s, s_t.transpose(-1, -2))
    beta, gh = r.beta(), r.decay()
    o, _ = ops.chunk_gated_delta_rule(q, k, v, gh, beta)
    o_hint, _ = ops.chunk_gated_delta_rule(q, k, v, gh, beta, chunk_size=32, chunk_indices=None,
                                           cu_seqlens_cpu=None, transpose_state_layout=False)
    assert torch.equal(o, o_hint)
    with pytest.raises(ValueError, match="cp_context"):
        ops.chunk_gated_delta_rule(q, k, v, gh, beta, cp_context=object())
    with pytest.raises(TypeError, match="unexpected keyword argument.*chunk_sise"):
        ops.chunk_gated_delta_rule(q, k, v, gh, beta, chunk_sise=64)


@pytest.mark.parametrize("window_size", [None, 7])
def test_parallel_attn_sink_bias_vs_fla_naive(window_size):
    """fla's attention sink against fla's naive attention: outputs and the gradients of q, k,
    v (GQA: 4 query heads on 2 key/value heads) and sink_bias through torch autograd."""
    ref = naive("fla/ops/attn/naive.py").naive_parallel_attn
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 29, 4, 16, generator=gen)
    k, v = torch.randn(2, 29, 2, 16, generator=gen), torch.randn(2, 29, 2, 12, generator=gen)
    sink = torch.randn(4, generator=gen)
    do = torch.randn(2, 29, 4, 12, generator=gen)
    inputs = [x.clone().requires_grad_() for x in (q, k, v, sink)]
    o = linattn.attention.parallel_attn(*inputs[:3], window_size=window_size,
                                        sink_bias=inputs[3])
    grads = torch.autograd.grad(o, inputs, do)
    theirs = [x.clone().requires_grad_() for x in (q, k, v, sink)]
    o_ref = ref(*theirs[:3], window_size=window_size, sink_bias=theirs[3])
    o_ref = o_ref[0] if isinstance(o_ref, tuple) else o_ref
    grads_ref = torch.autograd.grad(o_ref, theirs, do)
    assert rel_err(o, o_ref) <= 1e-5
    for name, a, b in zip(("dq", "dk", "dv", "dsink"), grads, grads_ref):
        assert rel_err(a, b) <= 1e-5, name
    with torch.no_grad():  # the forward without autograd takes the same path
        assert torch.equal(linattn.attention.parallel_attn(
            q, k, v, window_size=window_size, sink_bias=sink), o.detach())
    with pytest.raises(ValueError, match="sink_bias need the chunk form"):
        linattn.attention.parallel_attn(*(x.double() for x in inputs[:3]),
                                        sink_bias=inputs[3].double())
    with pytest.raises(ValueError, match=r"sink_bias must have shape \[H\]"):
        linattn.attention.parallel_attn(q, k, v, sink_bias=sink[:2])


def test_unsupported_arguments_name_themselves():
    r = Recipe(T=8)
    q, k, v = r.qkv()
    with pytest.raises(ValueError, match="weight .* is required"):
        ops.causal_conv1d(q.flatten(2))
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.causal_conv1d(q.flatten(2), torch.ones(r.H * r.K, 4), backend="cudnn")
    with pytest.raises(ValueError, match="lower_bound must be negative"):
        ops.chunk_rwkv7(q, r.decay(r.K), k, v, -k, k, lower_bound=0.5)
    with pytest.raises(ValueError, match="return_intermediate_states"):
        ops.chunk_kda(q, k, v, r.decay(r.K), r.beta(), return_intermediate_states=True)
    y, _ = ops.causal_conv1d(q.flatten(2), torch.ones(r.H * r.K, 4), backend="cuda")
    assert y.shape == q.flatten(2).shape
