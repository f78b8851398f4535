"""The models the experiments train: linattn.models.CausalLM for token tasks, and the same
blocks between linear input/output maps for in-context regression."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from .. import layers
from ..models import CausalLM, LMConfig
from . import tasks as task_lib


def add_short_convs(mixer: nn.Module, kernel: int = 4) -> nn.Module:
    """Short convolutions (kernel 4, SiLU, as the recurrent layers have them) after the q, k, v
    projections of a layer that has none (linear and softmax attention): a token then sees its
    predecessors' keys, so the MQAR grid can compare every mixer with and without one."""
    projections = (mixer.q_proj, mixer.k_proj, mixer.v_proj)
    mixer.convs = nn.ModuleList(layers.ShortConvolution(p.out_features, kernel) for p in projections)
    for proj, conv in zip(projections, mixer.convs):
        proj.register_forward_hook(lambda _m, _i, out, conv=conv: conv(out)[0])
    return mixer


def _has_option(mixer: str, option: str) -> bool:
    return option in inspect.signature(layers.MIXERS[mixer].__init__).parameters


class TokenModel(nn.Module):
    """CausalLM returning its logits only."""

    def __init__(self, lm: CausalLM):
        super().__init__()
        self.lm = lm

    def forward(self, tokens):
        return self.lm(tokens)[0]


class RegressionModel(nn.Module):
    """inputs [B, T, d_in] -> Linear -> the CausalLM's blocks and final norm -> Linear -> [B, T, 1]."""

    def __init__(self, lm: CausalLM, d_in: int):
        super().__init__()
        hidden = lm.config.hidden_size
        self.read_in = nn.Linear(d_in, hidden)
        self.blocks, self.norm = lm.blocks, lm.norm
        self.read_out = nn.Linear(hidden, 1)

    def forward(self, inputs):
        x = self.read_in(inputs)
        for block in self.blocks:
            x, _ = block(x)
        return self.read_out(self.norm(x))


def build_model(spec, task, recipe) -> nn.Module:
    """The model of one ModelSpec: `recipe.layers` blocks of the spec's mixer (its options from
    the config, hidden_size from the recipe) with SwiGLU MLPs."""
    regression = isinstance(task, task_lib.InContextRegression)
    options = dict(spec.options)
    # use_short_conv on a layer without the option: add_short_convs after the fact
    added_convs = (not _has_option(spec.mixer, "use_short_conv")
                   and options.pop("use_short_conv", False))
    config = LMConfig(vocab_size=1 if regression else max(task.vocab_in, task.vocab_out),
                      hidden_size=recipe.d_model, num_layers=recipe.layers, mixer=spec.mixer,
                      mixer_kwargs=options, tie_word_embeddings=not regression)
    lm = CausalLM(config)
    if added_convs:
        for block in lm.blocks:
            add_short_convs(block.mixer)
    if regression:
        return RegressionModel(lm, task.dim + 1)
    return TokenModel(lm)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def state_size(model: nn.Module) -> int:
    """Floats of recurrent state per sequence (summed over the blocks): the memory a mixer
    reads from; MQAR compares models at matched state size."""
    blocks = model.lm.blocks if isinstance(model, TokenModel) else model.blocks
    total = 0
    for block in blocks:
        m = block.mixer
        k = getattr(m, "head_k_dim", None) or getattr(m, "state_size", None) or getattr(m, "head_dim", 0)
        v = getattr(m, "head_v_dim", None) or getattr(m, "head_dim", 0)
        # LinearAttention keeps no head count: its o_proj reads heads * head_v_dim channels
        heads = (getattr(m, "num_v_heads", None) or getattr(m, "num_heads", None)
                 or m.o_proj.in_features // v)
        total += heads * k * v
    return total


def describe(model: nn.Module) -> dict:
    """The sizes a results table states: trainable parameters and recurrent state floats (None
    for softmax attention and LLA, whose KV cache grows with T)."""
    blocks = model.lm.blocks if isinstance(model, TokenModel) else model.blocks
    grows = any(isinstance(b.mixer, layers.Attention) for b in blocks)
    return {"params": parameter_count(model), "state_floats": None if grows else state_size(model)}
