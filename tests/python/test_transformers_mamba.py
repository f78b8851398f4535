"""transformers' Mamba-1 and Mamba-2 families on linattn.hub.mamba_ssm against transformers' own
torch fallback: logits, every parameter gradient (training mode: the fused mamba_inner_fn /
mamba_split_conv1d_scan_combined paths), greedy generation (the decode step), packed sequences
(seq_idx) against the sequences run one by one, and the kernels' own checks.

Tiny random configs from transformers' config classes (no downloads). Tolerances: logits 1e-5
relative (fp32: the chunked scans and the fallback round differently, ~1e-6 measured); gradients
1e-3 relative (fp32 backward through 2-4 layers of different summation orders).
"""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
import transformers

from linattn.transformers import linattn_kernels
from linattn.hub import mamba_ssm as hub

torch.set_num_threads(2)

_COMMON = dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, pad_token_id=0,
               tie_word_embeddings=False)
_ATTN = dict(num_attention_heads=4, num_key_value_heads=2)

# family: (config class, modeling module, config kwargs). Head counts / sizes small but with
# grouped B/C (ngroups > 1) and lengths past one chunk.
FAMILIES = {
    "mamba": ("MambaConfig", "mamba", dict(state_size=16, expand=2, time_step_rank=8)),
    "falcon_mamba": ("FalconMambaConfig", "falcon_mamba",
                     dict(state_size=16, expand=2, time_step_rank=8)),
    "jamba": ("JambaConfig", "jamba", dict(
        **_ATTN, intermediate_size=128, num_experts=4, num_experts_per_tok=2,
        attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1,
        mamba_d_state=16, mamba_expand=2, mamba_dt_rank=8)),
    "zamba": ("ZambaConfig", "zamba", dict(
        num_hidden_layers=4, attention_hidden_size=128, attention_head_dim=32,
        num_attention_heads=4, num_key_value_heads=4, intermediate_size=128, n_mamba_heads=2,
        mamba_d_state=16, mamba_expand=2, mamba_dt_rank=8, attn_layer_period=2,
        attn_layer_offset=1)),
    "mamba2": ("Mamba2Config", "mamba2", dict(
        num_heads=8, head_dim=16, expand=2, n_groups=2, state_size=16, chunk_size=16)),
    "falcon_h1": ("FalconH1Config", "falcon_h1", dict(
        **_ATTN, head_dim=16, intermediate_size=128, mamba_d_ssm=128, mamba_n_heads=8,
        mamba_d_head=16, mamba_n_groups=2, mamba_d_state=16, mamba_chunk_size=16)),
    "bamba": ("BambaConfig", "bamba", dict(
        **_ATTN, intermediate_size=128, attn_layer_indices=[1], mamba_n_heads=8, mamba_d_head=16,
        mamba_n_groups=2, mamba_d_state=16, mamba_chunk_size=16)),
    "granitemoehybrid": ("GraniteMoeHybridConfig", "granitemoehybrid", dict(
        **_ATTN, intermediate_size=128, shared_intermediate_size=64, num_local_experts=4,
        num_experts_per_tok=2, layer_types=["mamba", "attention"], mamba_n_heads=8,
        mamba_d_head=16, mamba_n_groups=2, mamba_d_state=16, mamba_chunk_size=16)),
    "nemotron_h": ("NemotronHConfig", "nemotron_h", dict(
        **_ATTN, head_dim=16, intermediate_size=128, num_hidden_layers=3,
        layers_block_type=["mamba", "attention", "mlp"], mamba_num_heads=8, mamba_head_dim=16,
        n_groups=2, ssm_state_size=16, chunk_size=16, moe_intermediate_size=64,
        moe_shared_expert_intermediate_size=64)),
    "zamba2": ("Zamba2Config", "zamba2", dict(
        num_hidden_layers=3, layers_block_type=["mamba", "hybrid", "mamba"],
        hybrid_layer_ids=[1], num_attention_heads=4, num_key_value_heads=4,
        intermediate_size=128, n_mamba_heads=8, mamba_ngroups=2, mamba_d_state=16,
        chunk_size=16, adapter_rank=8)),
}
MAMBA1 = ("mamba", "falcon_mamba", "jamba", "zamba")


def _module(family):
    return importlib.import_module(f"transformers.models.{family}.modeling_{family}")


def _model(family, seed=0, **overrides):
    config_cls, _, kwargs = FAMILIES[family]
    config = getattr(transformers, config_cls)(**{**_COMMON, **kwargs, **overrides})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).float()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _ids(batch, length, seed=1):
    return torch.randint(1, 256, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_fallback(family):
    model = _model(family).eval()
    ids = _ids(2, 45)
    with torch.no_grad():
        want = model(ids).logits
        with linattn_kernels():
            got = model(ids).logits
    assert _rel(got, want) <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_match_fallback(family):
    """Training mode: Mamba-1 goes through mamba_inner_fn, Mamba-2 through
    mamba_split_conv1d_scan_combined (the fallback returns None there and runs the unfused
    path); every parameter gradient present and within 1e-3."""
    # Falcon-Mamba's fused path differs from its own torch path by design (mamba_ssm's
    # mamba_inner_fn normalises delta after dt_proj, transformers' torch path the input of
    # dt_proj), so it is compared in eval mode (the unfused path through selective_scan_fn);
    # test_mamba_inner_fn_rms_norms checks the fused function against mamba_ssm's semantics.
    model = _model(family).train(family != "falcon_mamba")
    ids = _ids(2, 37)

    def grads():
        model.zero_grad(set_to_none=True)
        model(ids, labels=ids).loss.backward()
        return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    want = grads()
    with linattn_kernels():
        got = grads()
    missing = [n for n, g in got.items() if g is None and want[n] is not None]
    assert not missing, f"no gradient for {missing}"
    bad = {n: _rel(got[n], want[n]) for n in want if want[n] is not None
           and _rel(got[n], want[n]) > 1e-3}
    assert not bad, bad


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generation_matches_fallback(family):
    model = _model(family).eval()
    ids = _ids(2, 21)
    kwargs = dict(max_new_tokens=32, min_new_tokens=32, do_sample=False)
    want = model.generate(ids, **kwargs)
    with linattn_kernels():
        got = model.generate(ids, **kwargs)
    assert got.shape[1] == ids.shape[1] + 32
    assert torch.equal(got, want)


MAMBA2 = tuple(f for f in FAMILIES if f not in MAMBA1)


@pytest.mark.parametrize("family", MAMBA2)
def test_packed_sequences_match_one_by_one(family):
    """Three sequences packed in one row with seq_idx and position_ids (transformers'
    DataCollatorWithFlattening(return_seq_idx=True)) give the hidden states and parameter
    gradients of the three run apart (the fallback cannot run this at all: it raises on
    seq_idx). Training mode, where the Mamba-2 mixers pass seq_idx to
    mamba_split_conv1d_scan_combined. The base model is called because Mamba2ForCausalLM does
    not hand its keyword arguments (seq_idx) to its backbone. GraniteMoeHybrid's attention mask
    ignores position_ids (its attention layers would read across the packed sequences with any
    kernel), so its model here has Mamba layers only."""
    overrides = {"layer_types": ["mamba", "mamba"]} if family == "granitemoehybrid" else {}
    model = _model(family, **overrides).train()
    base = model.base_model
    lengths = (19, 5, 24)
    seqs = [_ids(1, n, seed=10 + i) for i, n in enumerate(lengths)]
    packed = torch.cat(seqs, dim=1)
    seq_idx = torch.cat([torch.full((1, n), i, dtype=torch.int32)
                         for i, n in enumerate(lengths)], dim=1)
    position_ids = torch.cat([torch.arange(n) for n in lengths])[None]

    # A random projection as the loss: the squares of RMS-normalised states would sum to a
    # near-constant, leaving gradients that are all cancellation.
    weights = torch.randn(1, sum(lengths), model.config.hidden_size,
                          generator=torch.Generator().manual_seed(2))

    def run(ids, **kwargs):
        return base(ids, use_cache=False, **kwargs).last_hidden_state

    with linattn_kernels():
        model.zero_grad(set_to_none=True)
        got = run(packed, seq_idx=seq_idx, position_ids=position_ids)
        (got * weights).sum().backward()
        got_grads = {n: p.grad.clone() for n, p in model.named_parameters()
                     if p.grad is not None}
        model.zero_grad(set_to_none=True)
        want = torch.cat([run(s) for s in seqs], dim=1)
        (want * weights).sum().backward()
        want_grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert _rel(got, want) <= 1e-5
    assert got_grads.keys() == want_grads.keys()
    bad = {n: _rel(got_grads[n], want_grads[n]) for n in want_grads
           if _rel(got_grads[n], want_grads[n]) > 1e-4}
    assert not bad, bad


# ----------------------------------------------------------------------------------------------
# The kernels one by one: against transformers' torch fallbacks (the functions the decorators
# wrap), against the fp64 oracle, and their errors.

def _fallback(family, name):
    return getattr(_module(family), name).__wrapped__


def _randn(*shape, scale=1.0, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=dtype)).requires_grad_()


def test_selective_scan_fn_records_autograd_and_matches_oracle():
    """The Mamba-1 training bug: every input gets a gradient, equal to the fp64 oracle's
    (torch.autograd.gradcheck: finite differences of the oracle's forward)."""
    batch, dim, dstate, L = 2, 6, 4, 11
    args = [_randn(batch, dim, L, seed=1, dtype=torch.float64),
            _randn(batch, dim, L, scale=0.5, seed=2, dtype=torch.float64),
            (-torch.rand(dim, dstate, dtype=torch.float64) - 0.2).requires_grad_(),
            _randn(batch, dstate, L, seed=3, dtype=torch.float64),
            _randn(batch, dstate, L, seed=4, dtype=torch.float64),
            _randn(dim, seed=5, dtype=torch.float64),
            _randn(batch, dim, L, seed=6, dtype=torch.float64),
            _randn(dim, scale=0.3, seed=7, dtype=torch.float64)]
    out = hub.selective_scan_fn(*args, delta_softplus=True)
    grads = torch.autograd.grad(out.sum(), args)
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert torch.autograd.gradcheck(
        lambda *a: hub.selective_scan_fn(*a, delta_softplus=True, return_last_state=True),
        args, eps=1e-6, atol=1e-7, rtol=1e-6)


def test_selective_scan_fn_fp32_matches_fallback_autograd():
    batch, dim, dstate, L = 2, 16, 8, 37
    args = [_randn(batch, dim, L, seed=1), _randn(batch, dim, L, scale=0.5, seed=2),
            (-torch.rand(dim, dstate) - 0.2).requires_grad_(), _randn(batch, dstate, L, seed=3),
            _randn(batch, dstate, L, seed=4), _randn(dim, seed=5), _randn(batch, dim, L, seed=6),
            _randn(dim, scale=0.3, seed=7)]
    kw = dict(delta_softplus=True, return_last_state=True)
    fallback = _fallback("mamba", "mamba_selective_scan")
    outs = [hub.selective_scan_fn(*args, **kw), fallback(*args, **kw)]
    w = torch.randn(batch, dim, L, generator=torch.Generator().manual_seed(9))
    grads = [torch.autograd.grad((o * w).sum() + s.sum(), args) for o, s in outs]
    assert _rel(outs[0][0], outs[1][0]) <= 1e-5 and _rel(outs[0][1], outs[1][1]) <= 1e-5
    for a, b in zip(*grads):
        assert _rel(a, b) <= 1e-4


def test_mamba_inner_fn_rms_norms():
    """Falcon-Mamba's fused path with mamba_ssm's semantics: B and C normalised over dstate,
    delta normalised over dim after dt_proj, then the scan gated by z and out_proj."""
    batch, dim, dstate, rank, L, d_model = 2, 16, 8, 4, 23, 12
    xz = _randn(batch, 2 * dim, L, seed=1)
    conv_w, conv_b = _randn(dim, 1, 4, scale=0.5, seed=2), _randn(dim, seed=3)
    x_proj, dt_proj = _randn(rank + 2 * dstate, dim, scale=0.3, seed=4), _randn(dim, rank, seed=5)
    out_w, out_b = _randn(d_model, dim, scale=0.3, seed=6), _randn(d_model, seed=7)
    A = (-torch.rand(dim, dstate) - 0.2).requires_grad_()
    D, dt_bias = _randn(dim, seed=8), _randn(dim, scale=0.3, seed=9)
    rms = dict(b_rms_weight=_randn(dstate, seed=10), c_rms_weight=_randn(dstate, seed=11),
               dt_rms_weight=_randn(dim, seed=12), b_c_dt_rms_eps=1e-6)
    got = hub.mamba_inner_fn(xz, conv_w, conv_b, x_proj, dt_proj, out_w, out_b, A, None, None,
                             D, dt_bias, delta_softplus=True, **rms)

    def norm(t, w):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6) * w

    x, z = xz.chunk(2, dim=1)
    x = F.silu(F.conv1d(x, conv_w, conv_b, padding=3, groups=dim)[..., :L])
    x_dbl = x.transpose(1, 2) @ x_proj.T
    delta = norm(x_dbl[..., :rank] @ dt_proj.T, rms["dt_rms_weight"]).transpose(1, 2)
    B = norm(x_dbl[..., rank:rank + dstate], rms["b_rms_weight"]).transpose(1, 2)
    C = norm(x_dbl[..., rank + dstate:], rms["c_rms_weight"]).transpose(1, 2)
    y = _fallback("mamba", "mamba_selective_scan")(x, delta, A, B, C, D, z, dt_bias, True)
    want = F.linear(y.transpose(1, 2), out_w, out_b)
    assert _rel(got, want) <= 1e-5
    inputs = [xz, conv_w, conv_b, x_proj, dt_proj, out_w, out_b, A, D, dt_bias]
    for a, b in zip(torch.autograd.grad(got.sum(), inputs), torch.autograd.grad(want.sum(), inputs)):
        assert _rel(a, b) <= 1e-4


@pytest.mark.parametrize("with_indices", [False, True])
def test_selective_state_update_multihead(with_indices):
    """Mamba-2's 4-D step against transformers' torch step, with z, D, dt_bias, softplus and
    state_batch_indices (rows of a larger state pool, updated in place, others untouched)."""
    batch, nheads, headdim, dstate, ngroups = 3, 4, 8, 16, 2
    g = torch.Generator().manual_seed(0)
    pool = torch.randn(5, nheads, headdim, dstate, generator=g)
    rows = torch.tensor([4, 0, 2]) if with_indices else torch.arange(batch)
    x = torch.randn(batch, nheads, headdim, generator=g)
    dt = torch.randn(batch, nheads, 1, generator=g).expand(-1, -1, headdim)
    A = (-torch.rand(nheads, generator=g))[:, None, None].expand(-1, headdim, dstate)
    B, C = torch.randn(2, batch, ngroups, dstate, generator=g)
    D = torch.randn(nheads, generator=g)[:, None].expand(-1, headdim)
    dt_bias = torch.randn(nheads, generator=g)[:, None].expand(-1, headdim)
    z = torch.randn(batch, nheads, headdim, generator=g)
    want_state = pool[rows].clone()
    want = _fallback("mamba2", "mamba2_selective_state_update")(
        want_state, x, dt, A, B, C, D, dt_bias=dt_bias, dt_softplus=True, z=z)
    state = pool.clone() if with_indices else pool[:batch].clone()
    got = hub.selective_state_update(state, x, dt, A, B, C, D, z=z, dt_bias=dt_bias,
                                     dt_softplus=True,
                                     state_batch_indices=rows if with_indices else None)
    assert _rel(got, want) <= 1e-6
    assert _rel(state[rows], want_state) <= 1e-6
    if with_indices:
        assert torch.equal(state[[1, 3]], pool[[1, 3]])


def _ssd_inputs(batch=2, L=45, nheads=4, headdim=8, ngroups=2, dstate=16, seed=0):
    return dict(x=_randn(batch, L, nheads, headdim, seed=seed + 1),
                dt=_randn(batch, L, nheads, seed=seed + 2),
                A=(-torch.rand(nheads, generator=torch.Generator().manual_seed(seed)) - 0.1)
                .requires_grad_(),
                B=_randn(batch, L, ngroups, dstate, scale=0.5, seed=seed + 3),
                C=_randn(batch, L, ngroups, dstate, scale=0.5, seed=seed + 4),
                D=_randn(nheads, seed=seed + 5), dt_bias=_randn(nheads, scale=0.5, seed=seed + 6))


@pytest.mark.parametrize("dt_limit", [(0.0, float("inf")), (0.05, 0.6)])
def test_mamba_chunk_scan_combined_matches_fallback(dt_limit):
    inputs = _ssd_inputs()
    batch, L, nheads, headdim = inputs["x"].shape
    s0 = _randn(batch, nheads, headdim, 16, seed=20)
    kw = dict(chunk_size=16, dt_softplus=True, dt_limit=dt_limit, initial_states=s0,
              return_final_states=True)
    got = hub.mamba_chunk_scan_combined(**inputs, **kw)
    fallback_inputs = {("hidden_states" if n == "x" else n): t for n, t in inputs.items()}
    want = _fallback("mamba2", "mamba2_chunk_scan")(**fallback_inputs, **kw)
    w = torch.randn(got[0].shape, generator=torch.Generator().manual_seed(3))
    diff = [*inputs.values(), s0]
    grads = [torch.autograd.grad((o * w).sum() + s.sum(), diff) for o, s in (got, want)]
    assert _rel(got[0], want[0]) <= 1e-5 and _rel(got[1], want[1]) <= 1e-5
    for a, b in zip(*grads):
        assert _rel(a, b) <= 1e-4


def test_mamba_chunk_scan_combined_z_gate_and_headdim_D():
    inputs = _ssd_inputs()
    inputs["D"] = _randn(4, 8, seed=30)
    z = _randn(*inputs["x"].shape, seed=31)
    got = hub.mamba_chunk_scan_combined(**inputs, chunk_size=16, z=z, dt_softplus=True)
    base = hub.mamba_chunk_scan_combined(**{**inputs, "D": None}, chunk_size=16,
                                         dt_softplus=True)
    want = (base + inputs["D"] * inputs["x"]) * F.silu(z)
    assert _rel(got, want) <= 1e-6


def test_mamba_chunk_scan_combined_seq_idx_and_varlen_states():
    """seq_idx in a batch of two rows (the second row holds two sequences) and an initial state
    per row (entering each row's first sequence only) against the sequences run apart."""
    inputs = _ssd_inputs()
    s0 = _randn(2, 4, 8, 16, seed=40)
    seq_idx = torch.zeros(2, 45, dtype=torch.int32)
    seq_idx[1, 30:] = 1
    out, final = hub.mamba_chunk_scan_combined(**inputs, chunk_size=16, dt_softplus=True,
                                               seq_idx=seq_idx, initial_states=s0,
                                               return_final_states=True)

    def part(row, sl, state):
        sub = {n: t[row:row + 1, sl] if t.dim() > 2 else t for n, t in inputs.items()}
        return hub.mamba_chunk_scan_combined(**sub, chunk_size=16, dt_softplus=True,
                                             initial_states=state, return_final_states=True)

    o0, f0 = part(0, slice(None), s0[:1])
    o1a, _ = part(1, slice(0, 30), s0[1:])
    o1b, f1 = part(1, slice(30, None), None)
    assert _rel(out, torch.cat([o0, torch.cat([o1a, o1b], dim=1)])) <= 1e-6
    assert _rel(final, torch.cat([f0, f1])) <= 1e-6
    # return_varlen_states: the states at the end of each cu_seqlens sequence (batch 1)
    row = {n: t[1:] if t.dim() > 2 else t for n, t in inputs.items()}
    _, varlen = hub.mamba_chunk_scan_combined(
        **row, chunk_size=16, dt_softplus=True, seq_idx=seq_idx[1:],
        cu_seqlens=torch.tensor([0, 30, 45]), return_varlen_states=True)
    assert varlen.shape == (2, 4, 8, 16)
    assert _rel(varlen[1], f1[0]) <= 1e-6


def test_split_conv1d_scan_combined_matches_unfused_fallback():
    """The fused Mamba-2 mixer (conv, scan, gated RMSNorm, out_proj) against transformers'
    unfused torch path written out with its fallback kernels."""
    batch, L, nheads, headdim, ngroups, dstate, d_model = 2, 40, 4, 8, 2, 16, 24
    dim, conv_dim = nheads * headdim, nheads * headdim + 2 * ngroups * dstate
    zxbcdt = _randn(batch, L, 2 * dim + 2 * ngroups * dstate + nheads, seed=1)
    conv_w, conv_b = _randn(conv_dim, 4, scale=0.5, seed=2), _randn(conv_dim, seed=3)
    dt_bias, D = _randn(nheads, scale=0.5, seed=4), _randn(nheads, seed=5)
    A = (-torch.rand(nheads) - 0.1).requires_grad_()
    norm_w, out_w = _randn(dim, seed=6), _randn(d_model, dim, scale=0.3, seed=7)
    kw = dict(rmsnorm_weight=norm_w, rmsnorm_eps=1e-5, outproj_weight=out_w, headdim=headdim,
              ngroups=ngroups, norm_before_gate=False)
    got = hub.mamba_split_conv1d_scan_combined(zxbcdt, conv_w, conv_b, dt_bias, A, D, 16, **kw)

    z, xBC, dt = zxbcdt.split([dim, conv_dim, nheads], dim=-1)
    xBC = _fallback("mamba2", "causal_conv1d_fn")(xBC.transpose(1, 2), conv_w, conv_b,
                                                  activation="silu").transpose(1, 2)
    x, B, C = xBC.split([dim, ngroups * dstate, ngroups * dstate], dim=-1)
    y = _fallback("mamba2", "mamba2_chunk_scan")(
        x.reshape(batch, L, nheads, headdim), dt, A, B.reshape(batch, L, ngroups, dstate),
        C.reshape(batch, L, ngroups, dstate), 16, D=D, dt_bias=dt_bias, dt_softplus=True)
    norm = _module("mamba2").MambaRMSNormGated(dim, group_size=dim // ngroups, eps=1e-5)
    norm.weight = torch.nn.Parameter(norm_w.detach())
    want = F.linear(norm(y.reshape(batch, L, dim), z), out_w)
    assert _rel(got, want) <= 1e-5
    inputs = [zxbcdt, conv_w, conv_b, dt_bias, A, D, out_w]
    for a, b in zip(torch.autograd.grad(got.sum(), inputs), torch.autograd.grad(want.sum(), inputs)):
        assert _rel(a, b) <= 1e-4


def test_bad_inputs_raise_clear_errors():
    inputs = _ssd_inputs()
    with pytest.raises(ValueError, match=r"dt must have shape \[2, 45, 4\]"):
        hub.mamba_chunk_scan_combined(**{**inputs, "dt": inputs["dt"][:, :-1]}, chunk_size=16)
    with pytest.raises(ValueError, match="ngroups dividing nheads"):
        hub.mamba_chunk_scan_combined(**{**inputs, "B": inputs["B"][:, :, :1].expand(-1, -1, 3, -1),
                                         "C": inputs["C"][:, :, :1].expand(-1, -1, 3, -1)},
                                      chunk_size=16)
    with pytest.raises(ValueError, match="seq_idx must be an integer tensor"):
        hub.mamba_chunk_scan_combined(**inputs, chunk_size=16, seq_idx=torch.zeros(2, 45))
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        hub.mamba_chunk_scan_combined(**inputs, chunk_size=0)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        hub.mamba_chunk_scan_combined(**{**inputs, "x": inputs["x"].detach().numpy()},
                                      chunk_size=16)
    with pytest.raises(ValueError, match="expected state"):
        hub.selective_state_update(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3),
                                   torch.zeros(3, 4), torch.zeros(2, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="do not split"):
        hub.mamba_split_conv1d_scan_combined(torch.zeros(1, 4, 10), torch.zeros(12, 4), None,
                                             torch.zeros(2), torch.zeros(2), torch.zeros(2), 16,
                                             headdim=4)
    with pytest.raises(ValueError):  # the C++ validation: A's shape against u's channels
        hub.selective_scan_fn(torch.zeros(1, 4, 5), torch.zeros(1, 4, 5), torch.zeros(3, 2),
                              torch.zeros(1, 2, 5), torch.zeros(1, 2, 5))


def test_ssd_scan_gradcheck_against_oracle():
    """linattn.ssd_scan (the C++ SSD op under mamba_chunk_scan_combined): torch autograd through
    the fp64 oracle's backward against finite differences of its forward, every input and
    flag at once (small: gradcheck runs the op once per input element)."""
    from linattn.ssd import ssd_scan

    d = torch.float64
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=d).requires_grad_()  # noqa: E731
    args = (r(1, 9, 2, 2), r(1, 9, 2), (-torch.rand(2, generator=g, dtype=d) - 0.1).requires_grad_(),
            r(1, 9, 1, 3), r(1, 9, 1, 3), r(2, 2), r(1, 9, 2, 2), r(2), r(2, 2, 2, 3))
    cu = torch.tensor([0, 4, 9])
    for limit in ((0.0, float("inf")), (0.1, 0.7)):
        def fn(*a):
            return ssd_scan(*a[:8], dt_softplus=True, dt_limit=limit, initial_state=a[8],
                            output_final_state=True, cu_seqlens=cu, form="reference")
        assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-8, rtol=1e-6,
                                        fast_mode=True)


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
def test_ssd_scan_fp32_forms_match_oracle(form):
    from linattn.ssd import ssd_scan

    inputs = _ssd_inputs(L=150)
    s0 = _randn(2, 4, 8, 16, seed=50)
    kw = dict(dt_softplus=True, initial_state=s0, output_final_state=True)
    got = ssd_scan(**inputs, **kw, form=form)
    want = ssd_scan(**{n: t.double() for n, t in inputs.items()},
                    **{**kw, "initial_state": s0.double()}, form="reference")
    assert _rel(got[0], want[0]) <= 1e-5 and _rel(got[1], want[1]) <= 1e-5
    w = torch.randn(got[0].shape, generator=torch.Generator().manual_seed(1))
    diff = [*inputs.values(), s0]
    for a, b in zip(torch.autograd.grad((got[0] * w).sum() + got[1].sum(), diff),
                    torch.autograd.grad((want[0] * w).sum() + want[1].sum(), diff)):
        assert _rel(a, b) <= 1e-5
