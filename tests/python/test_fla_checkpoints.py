"""fla checkpoints on the CPU: linattn.layers load the state_dict of fla's layer of the same model
and give fla's outputs; linattn.models load a checkpoint directory written by fla's
*ForCausalLM classes and generate from it. fla's layers run here with its Triton-only functions
swapped for pure-torch references (fla_cpu); fla's Triton kernels never run."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from fla_cpu import fla_cpu  # noqa: E402,F401  (the fixture)

import fla_compat  # noqa: E402
from linattn import layers  # noqa: E402


def rel_err(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# float32 end to end on both sides: a few roundings per projection, norm and recurrence step.
TOL = 1e-5


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """fla initialises norms to ones and some gates to constants: random values everywhere so
    that a misplaced parameter cannot go unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + p.mean())


def _compare_layer(theirs, ours, T: int = 37, seed: int = 0):
    """Load fla's state_dict into ours (strict: the same names and shapes) and compare the
    outputs on the same hidden states, in both of fla's modes (chunk under autograd,
    fused_recurrent for short inputs without it)."""
    _randomise(theirs, seed)
    theirs.eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, T, theirs.hidden_size, generator=torch.Generator().manual_seed(seed + 1))
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            o_theirs = theirs(x)[0]
            o_ours = ours(x)[0]
        assert rel_err(o_ours, o_theirs) <= TOL, f"grad={grad}"


@pytest.mark.parametrize("options", [
    dict(),
    dict(num_v_heads=4, allow_neg_eigval=True),
    dict(use_gate=False, conv_bias=True),
    dict(use_short_conv=False),
], ids=["default", "gva-neg-eigval", "no-gate-conv-bias", "no-conv"])
def test_gated_deltanet_loads_fla_layer(fla_cpu, options):
    kwargs = dict(hidden_size=48, expand_v=1.5, head_dim=16, num_heads=2, **options)
    _compare_layer(fla_cpu.layers.GatedDeltaNet(**kwargs), layers.GatedDeltaNet(**kwargs))


@pytest.mark.parametrize("options", [dict(), dict(use_gate=True, allow_neg_eigval=True)],
                         ids=["default", "gate-neg-eigval"])
def test_deltanet_loads_fla_layer(fla_cpu, options):
    kwargs = dict(hidden_size=48, num_heads=3, **options)
    _compare_layer(fla_cpu.layers.DeltaNet(**kwargs), layers.DeltaNet(**kwargs))


def test_mamba2_loads_fla_layer(fla_cpu):
    """n_groups=1: fla's CPU path (torch_forward) tiles B and C over the heads with repeat (head
    h reads group h % n_groups) where Mamba-2's kernels, and linattn, give head h the group
    h // (heads / n_groups); the two agree only for one group."""
    kwargs = dict(hidden_size=48, head_dim=16, state_size=8, n_groups=1)
    _compare_layer(fla_cpu.layers.Mamba2(**kwargs), layers.Mamba2(**kwargs))


# -- models ----------------------------------------------------------------------------------------

FLA_MODEL_CONFIGS = {
    "gated_deltanet": ("GatedDeltaNetConfig", "GatedDeltaNetForCausalLM",
                       dict(head_dim=16, num_heads=2, expand_v=1.5)),
    "delta_net": ("DeltaNetConfig", "DeltaNetForCausalLM", dict(num_heads=3, use_gate=True)),
    "gla": ("GLAConfig", "GLAForCausalLM", dict(num_heads=2, use_short_conv=True)),
    "hgrn2": ("HGRN2Config", "HGRN2ForCausalLM", dict(expand_ratio=16, use_lower_bound=False)),
    "linear_attn": ("LinearAttentionConfig", "LinearAttentionForCausalLM",
                    dict(num_heads=2, feature_map="hedgehog", norm_feature_map=True)),
    "mamba2": ("Mamba2Config", "Mamba2ForCausalLM",
               dict(head_dim=16, num_heads=6, state_size=8, n_groups=1)),
    "kda": ("KDAConfig", "KDAForCausalLM", dict(head_dim=16, num_heads=2)),
    "gated_deltaproduct": ("GatedDeltaProductConfig", "GatedDeltaProductForCausalLM",
                           dict(head_dim=16, num_heads=2, num_householder=2)),
}


@pytest.mark.parametrize("model_type", sorted(FLA_MODEL_CONFIGS))
def test_models_load_an_fla_checkpoint_and_generate(fla_cpu, model_type, tmp_path):
    """A checkpoint directory written by fla's own *ForCausalLM (config.json + safetensors):
    linattn.models.from_fla gives fla's logits, and generate's prefill + decode steps give the
    logits of fla's forward over the generated sequence."""
    from linattn import models

    config_name, model_name, options = FLA_MODEL_CONFIGS[model_type]
    config = getattr(fla_cpu.models, config_name)(
        hidden_size=48, num_hidden_layers=2, vocab_size=101, fuse_swiglu=False,
        fuse_cross_entropy=False, **options)
    assert config.model_type == model_type
    theirs = getattr(fla_cpu.models, model_name)(config)
    _randomise(theirs)
    theirs.eval().save_pretrained(tmp_path)

    ours = models.from_fla(tmp_path)
    prompt = torch.randint(0, 101, (2, 19), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert rel_err(ours(prompt)[0], theirs(prompt).logits) <= TOL
        tokens, step_logits = ours.generate(prompt, max_new_tokens=6)
        logits = theirs(tokens).logits
    assert tokens.shape == (2, 25)
    assert rel_err(step_logits, logits[:, 18:24]) <= TOL
    assert torch.equal(tokens[:, 19:], logits[:, 18:24].argmax(-1))  # greedy


def test_from_fla_refuses_what_it_cannot_build(tmp_path):
    import json

    from linattn import models

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "rodimus"}))
    with pytest.raises(ValueError, match="model_type 'rodimus' is not supported"):
        models.from_fla(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gated_deltanet",
                                                      "attn": {"layers": [1]}}))
    with pytest.raises(ValueError, match="attn=.* is not supported"):
        models.from_fla(tmp_path)


@pytest.mark.parametrize("options", [dict(), dict(use_short_conv=True, clamp_min=-0.5),
                                     dict(use_output_gate=False)],
                         ids=["default", "conv-clamp", "no-gate"])
def test_gla_loads_fla_layer(fla_cpu, options):
    kwargs = dict(hidden_size=48, num_heads=2, **options)
    _compare_layer(fla_cpu.layers.GatedLinearAttention(**kwargs),
                   layers.GatedLinearAttention(**kwargs))


@pytest.mark.parametrize("options", [dict(), dict(use_forget_gate=False, num_householder=3),
                                     dict(allow_neg_eigval=False, use_output_gate=False)],
                         ids=["default", "no-forget-gate-nh3", "no-neg-eigval-no-gate"])
def test_gated_deltaproduct_loads_fla_layer(fla_cpu, options):
    kwargs = dict(hidden_size=48, head_dim=16, num_heads=2, **options)
    _compare_layer(fla_cpu.layers.GatedDeltaProduct(**kwargs), layers.GatedDeltaProduct(**kwargs))


@pytest.mark.parametrize("options", [
    dict(), dict(num_v_heads=4, allow_neg_eigval=True, conv_bias=True),
    dict(safe_gate=True, lower_bound=-5.0), dict(use_short_conv=False, expand_v=2)],
    ids=["default", "gva-neg-eigval", "safe-gate", "no-conv"])
def test_kda_loads_fla_layer(fla_cpu, options):
    kwargs = dict(hidden_size=48, head_dim=16, num_heads=2, **options)
    _compare_layer(fla_cpu.layers.KimiDeltaAttention(**kwargs),
                   layers.KimiDeltaAttention(**kwargs))


@pytest.mark.parametrize("options", [dict(expand_ratio=16), dict(expand_ratio=8, use_short_conv=True)],
                         ids=["expand-ratio", "heads-conv"])
def test_hgrn2_loads_fla_layer(fla_cpu, options):
    kwargs = dict(hidden_size=48, **options)
    _compare_layer(fla_cpu.layers.HGRN2Attention(**kwargs), layers.HGRN2(**kwargs))


@pytest.mark.parametrize("options", [
    dict(), dict(feature_map="hedgehog", norm_q=True, norm_k=True),
    dict(feature_map="t2r", do_feature_map_norm=True), dict(feature_map="dpfp"),
    dict(feature_map="elu", tie_feature_map_qk=True, output_norm="identity")],
    ids=["elementwise-product", "hedgehog-norm-qk", "t2r-normalize", "dpfp", "elu"])
def test_linear_attention_loads_fla_layer(fla_cpu, options):
    kwargs = dict(hidden_size=48, num_heads=2, **options)
    _compare_layer(fla_cpu.layers.LinearAttention(**kwargs), layers.LinearAttention(**kwargs))


@pytest.mark.parametrize("fla_name", sorted(fla_compat.FLA_LAYERS))
def test_layer_parameters_are_fla_s(fla_cpu, fla_name):
    """The layers docs/fla-compat.md lists: the same parameter names and shapes as fla's layer
    at fla's defaults (scaled down)."""
    ours_name = fla_compat.FLA_LAYERS[fla_name][0]
    small = dict(hidden_size=64)
    small.update({"GatedDeltaNet": dict(head_dim=16, num_heads=2),
                  "GatedDeltaProduct": dict(head_dim=16, num_heads=2),
                  "KimiDeltaAttention": dict(head_dim=16, num_heads=2),
                  "Mamba2": dict(head_dim=16, state_size=16),
                  "HGRN2Attention": dict(expand_ratio=16)}.get(fla_name, {}))
    theirs = getattr(fla_cpu.layers, fla_name)(**small).state_dict()
    ours = getattr(layers, ours_name)(**small).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_rwkv7_first_layer_converts_from_fla(fla_cpu):
    """RWKV7 loads fla's RWKV7Attention of a first layer through state_dict_from_fla (fla's
    value residual of later layers is not implemented: refused)."""
    ranks = dict(decay_low_rank_dim=8, a_low_rank_dim=8, gate_low_rank_dim=16)
    theirs = fla_cpu.layers.RWKV7Attention(hidden_size=48, head_dim=16, layer_idx=0,
                                           num_hidden_layers=2, v_low_rank_dim=8, **ranks)
    _randomise(theirs)
    theirs.eval()
    ours = layers.RWKV7(hidden_size=48, head_dim=16, **ranks)
    ours.load_state_dict(layers.RWKV7.state_dict_from_fla(theirs.state_dict()))
    x = torch.randn(2, 37, 48, generator=torch.Generator().manual_seed(1))
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            assert rel_err(ours(x)[0], theirs(x)[0]) <= TOL, f"grad={grad}"
    later = fla_cpu.layers.RWKV7Attention(hidden_size=48, head_dim=16, layer_idx=1,
                                          num_hidden_layers=2, v_low_rank_dim=8, **ranks)
    with pytest.raises(ValueError, match="v_lora"):
        layers.RWKV7.state_dict_from_fla(later.state_dict())
