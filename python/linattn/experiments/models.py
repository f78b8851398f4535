"""The models the experiments train: linattn.models.CausalLM for token tasks, and the same
blocks between linear input/output maps for in-context regression."""

from __future__ import annotations

import torch
from torch import nn

from ..models import CausalLM, LMConfig
from . import tasks as task_lib


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
    config = LMConfig(vocab_size=1 if regression else max(task.vocab_in, task.vocab_out),
                      hidden_size=recipe.d_model, num_layers=recipe.layers, mixer=spec.mixer,
                      mixer_kwargs=dict(spec.options), tie_word_embeddings=not regression)
    lm = CausalLM(config)
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
        heads = getattr(m, "num_v_heads", None) or getattr(m, "num_heads", 1)
        k = getattr(m, "head_k_dim", None) or getattr(m, "state_size", None) or getattr(m, "head_dim", 0)
        v = getattr(m, "head_v_dim", None) or getattr(m, "head_dim", 0)
        total += heads * k * v
    return total


@torch.no_grad()
def describe(model: nn.Module) -> str:
    return f"{parameter_count(model) / 1e3:.0f}k params, state {state_size(model)} floats/seq"
