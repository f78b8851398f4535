"""transformers' Mamba-1 and Mamba-2 families on linattn.hub.mamba_ssm against transformers' own
torch fallback: logits, every parameter gradient (training mode: the fused mamba_inner_fn /
mamba_split_conv1d_scan_combined paths), greedy generation (the decode step), packed sequences
(seq_idx) against the sequences run one by one, and the kernels' own checks.

Tiny random configs from transformers' config classes (no downloads). Tolerances: logits 1e-5
relative (fp32: the chunked scans and the fallback round differently, ~1e-6 measured); gradients
1e-3 relative (fp32 backward through 2-4 layers of different summation orders).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import re
import sys

import pytest
import torch
import transformers
from transformers.integrations import hub_kernels

from linattn.hub import mamba_ssm as hub

torch.set_num_threads(2)

_DECORATED = re.compile(r'@use_kernel_func_from_hub_with_fallback\(\s*"(\w+)",\s*"(\w+)"\s*,?\s*\)'
                        r'\s*def (\w+)')


@contextlib.contextmanager
def served_by_linattn(module, packages=("mamba_ssm",)):
    """The kernels of `module` (a transformers modeling module) looked up again by transformers'
    own decorator with `packages` importable as linattn.hub.<package>: what happens when those
    packages are installed. (A stand-in for linattn.transformers.apply_linattn.)"""
    old_modules = {p: sys.modules.get(p) for p in packages}
    replaced = {}
    try:
        for p in packages:
            sys.modules[p] = importlib.import_module(f"linattn.hub.{p}")
        for kernel, package, name in _DECORATED.findall(inspect.getsource(module)):
            if package in packages:
                fallback = getattr(module, name)
                replaced[name] = fallback
                setattr(module, name, hub_kernels.use_kernel_func_from_hub_with_fallback(
                    kernel, package)(fallback.__wrapped__))
        assert replaced, f"no mamba_ssm kernel found in {module.__name__}"
        yield
    finally:
        for name, fallback in replaced.items():
            setattr(module, name, fallback)
        for p, m in old_modules.items():
            if m is None:
                sys.modules.pop(p, None)
            else:
                sys.modules[p] = m


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
        with served_by_linattn(_module(family)):
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
    with served_by_linattn(_module(family)):
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
    with served_by_linattn(_module(family)):
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

    with served_by_linattn(_module(family)):
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
