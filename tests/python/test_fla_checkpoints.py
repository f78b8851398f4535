"""fla checkpoints on the CPU: linattn.layers load the state_dict of fla's layer of the same model
and give fla's outputs; linattn.models load a checkpoint directory written by fla's
*ForCausalLM classes and generate from it. fla's layers run here with its Triton-only functions
swapped for pure-torch references (fla_cpu); fla's Triton kernels never run."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from fla_cpu import fla_cpu  # noqa: E402,F401  (the fixture)

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
