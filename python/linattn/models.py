"""A small causal language model over linattn's layers.

``CausalLM(LMConfig(...))``: token embeddings, ``num_layers`` pre-norm blocks of
(mixer, SwiGLU MLP) with RMSNorm, a final RMSNorm and an LM head tied to the embeddings. The
mixer of each block is chosen by name (``linattn.layers.MIXERS``); ``layers`` gives one name
per block for hybrid stacks (e.g. three linear mixers to one "attention"). ``generate`` runs a chunked prefill (the chunk form over the
prompt, keeping every layer's state) and then decodes token by token with the recurrent form;
its logits equal a full forward pass over the generated sequence (tested).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .layers import MIXERS, RMSNorm


@dataclass
class LMConfig:
    vocab_size: int = 256
    hidden_size: int = 256
    num_layers: int = 4
    mixer: str = "gated_deltanet"             # a name of linattn.layers.MIXERS
    mixer_kwargs: dict = field(default_factory=dict)  # the mixer's keyword arguments; with
    # `layers`, a dict from mixer name to its keyword arguments
    layers: tuple[str, ...] | None = None     # one mixer name per block (hybrid stacks)
    intermediate_size: int | None = None      # SwiGLU width; default 8/3 hidden, rounded to 32
    use_mlp: bool = True                      # False: mixer-only blocks (Mamba-2's)
    norm_eps: float = 1e-5
    tie_word_embeddings: bool = True

    def layer_mixers(self) -> tuple[str, ...]:
        names = tuple(self.layers) if self.layers is not None else (self.mixer,) * self.num_layers
        if len(names) != self.num_layers:
            raise ValueError(f"LMConfig: layers names {len(names)} mixers for num_layers = "
                             f"{self.num_layers}")
        for name in names:
            if name not in MIXERS:
                raise ValueError(f"LMConfig: unknown mixer {name!r}; available: "
                                 f"{', '.join(sorted(MIXERS))}")
        return names


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """x + mixer(norm(x)), then x + mlp(norm(x)) (unless config.use_mlp is False)."""

    def __init__(self, config: LMConfig, mixer: str, layer_idx: int):
        super().__init__()
        hidden = config.hidden_size
        width = config.intermediate_size or 32 * -(-(8 * hidden // 3) // 32)
        self.mixer_norm = RMSNorm(hidden, eps=config.norm_eps)
        own = config.mixer_kwargs.get(mixer, {}) if config.layers else config.mixer_kwargs
        kwargs = {"hidden_size": hidden, "layer_idx": layer_idx, **own}
        self.mixer = MIXERS[mixer](**kwargs)
        self.mlp_norm = RMSNorm(hidden, eps=config.norm_eps) if config.use_mlp else None
        self.mlp = SwiGLU(hidden, width) if config.use_mlp else None

    def forward(self, x, state=None, output_state: bool = False, form: str = "chunk"):
        o, state = self.mixer(self.mixer_norm(x), state, output_state, form)
        x = x + o
        return (x if self.mlp is None else x + self.mlp(self.mlp_norm(x))), state


class CausalLM(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.blocks = nn.ModuleList(Block(config, name, i)
                                    for i, name in enumerate(config.layer_mixers()))
        self.norm = RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed.weight

    def forward(self, input_ids, states=None, output_states: bool = False,
                form: str = "chunk"):
        """input_ids [B, T] -> (logits [B, T, vocab], per-block states or None). `states`
        continues from earlier tokens (each block's LayerState)."""
        x = self.embed(input_ids)
        new_states = []
        for i, block in enumerate(self.blocks):
            x, state = block(x, None if states is None else states[i], output_states, form)
            new_states.append(state)
        logits = self.lm_head(self.norm(x))
        return logits, (new_states if output_states else None)

    def step(self, token, states):
        """One decode step: token [B] -> (logits [B, vocab], states), the recurrent form."""
        logits, states = self(token[:, None], states, output_states=True, form="recurrent")
        return logits[:, 0], states

    @torch.no_grad()
    def generate(self, input_ids, max_new_tokens: int, temperature: float = 0.0,
                 generator: torch.Generator | None = None):
        """Chunked prefill of the prompt, then max_new_tokens recurrent decode steps (greedy,
        or sampled at `temperature`). Returns (tokens [B, T + max_new_tokens],
        logits [B, max_new_tokens, vocab]: the logits each new token was drawn from)."""
        if max_new_tokens < 1:
            raise ValueError(f"generate: max_new_tokens must be >= 1, got {max_new_tokens}")
        logits, states = self(input_ids, output_states=True, form="chunk")
        step_logits, tokens = [logits[:, -1]], [input_ids]
        for i in range(max_new_tokens):
            last = step_logits[-1]
            if temperature > 0:
                probs = (last.float() / temperature).softmax(-1)
                token = torch.multinomial(probs, 1, generator=generator)[:, 0]
            else:
                token = last.argmax(-1)
            tokens.append(token[:, None])
            if i + 1 < max_new_tokens:
                logits, states = self.step(token, states)
                step_logits.append(logits)
        return torch.cat(tokens, dim=1), torch.stack(step_logits, dim=1)


# ----------------------------------------------------------------------------------------------
# fla checkpoints: a directory written by fla's <Model>ForCausalLM.save_pretrained (config.json
# and model.safetensors, or shards with model.safetensors.index.json). fla's blocks are this
# module's Block (pre-norm mixer, pre-norm SwiGLU MLP), so loading renames parameters only.

# fla model_type -> (linattn mixer, the fla config keys that are the mixer's keyword arguments
# (under the same name, or (config key, argument)), the config values linattn's mixer requires
# (fla's defaults)). The mixer's norm_eps is the config's, as fla passes it.
FLA_MODELS = {
    "gated_deltanet": ("gated_deltanet", ("expand_v", "head_dim", "num_heads", "num_v_heads",
                                          "use_gate", "use_short_conv", "allow_neg_eigval",
                                          "conv_size", "output_gate_activation"), {}),
    "delta_net": ("deltanet", ("expand_k", "expand_v", "num_heads", "use_beta", "use_gate",
                               "use_short_conv", "conv_size", "allow_neg_eigval",
                               "qk_activation", "qk_norm"), {}),
    "gated_deltaproduct": ("gated_deltaproduct", ("expand_v", "head_dim", "num_heads",
                                                  "use_output_gate", "use_forget_gate",
                                                  "use_short_conv", "conv_size",
                                                  "allow_neg_eigval", "num_householder"), {}),
    "kda": ("kda", ("expand_v", "head_dim", "num_heads", "num_v_heads", "use_short_conv",
                    "allow_neg_eigval", "safe_gate", "lower_bound", "conv_size"), {}),
    "hgrn2": ("hgrn2", ("num_heads", "expand_ratio", "use_short_conv", "conv_size",
                        "elementwise_affine"), {"use_lower_bound": False}),
    "mamba2": ("mamba2", ("head_dim", "state_size", "expand", "n_groups", "conv_kernel",
                          "use_conv_bias", "use_bias"),
               {"hidden_act": "silu", "D_has_hdim": False, "rmsnorm": True,
                "norm_before_gate": False}),
    "linear_attn": ("linear_attn", ("expand_k", "expand_v", "num_heads", "feature_map",
                                    "tie_feature_map_qk", "norm_q", "norm_k",
                                    ("norm_feature_map", "do_feature_map_norm"),
                                    "elementwise_affine"), {"num_kv_heads": None}),
    "gla": ("gla", ("expand_k", "expand_v", "num_heads", "use_short_conv", "conv_size",
                    "use_output_gate", "clamp_min"),
            {"num_kv_heads": None, "feature_map": None, "elementwise_affine": True}),
}
# fla config keys whose non-default values linattn's blocks do not implement.
_FLA_DEFAULTS = {"attn": None, "attnres_block_size": None, "hidden_act": "swish"}
# fla's parameter names -> linattn's (regular expressions on the whole key, in order).
_FLA_RENAMES = ((r"^model\.embeddings\.", "embed."), (r"^model\.norm\.", "norm."),
                (r"^model\.layers\.(\d+)\.attn_norm\.", r"blocks.\1.mixer_norm."),
                (r"^model\.layers\.(\d+)\.attn\.", r"blocks.\1.mixer."),
                (r"^model\.layers\.", "blocks."),
                # Mamba-2's backbone: mixer-only blocks
                (r"^backbone\.embeddings\.", "embed."), (r"^backbone\.norm_f\.", "norm."),
                (r"^backbone\.layers\.(\d+)\.norm\.", r"blocks.\1.mixer_norm."),
                (r"^backbone\.layers\.", "blocks."))


def from_fla(path, dtype: torch.dtype | None = None) -> CausalLM:
    """The CausalLM of an fla checkpoint directory (fla's *ForCausalLM.save_pretrained; model
    types in FLA_MODELS), its parameters renamed from fla's (model.layers.i.attn.* ->
    blocks.i.mixer.*, ...) and loaded strictly. `dtype` converts the parameters (default: as
    stored)."""
    import json
    import pathlib

    from safetensors.torch import load_file

    root = pathlib.Path(path)
    config = json.loads((root / "config.json").read_text())
    kind = config.get("model_type")
    if kind not in FLA_MODELS:
        raise ValueError(f"from_fla: model_type {kind!r} is not supported; supported: "
                         f"{', '.join(sorted(FLA_MODELS))}")
    mixer, keys, required = FLA_MODELS[kind]
    for key, default in {**_FLA_DEFAULTS, **required}.items():
        if config.get(key, default) != default:
            raise ValueError(f"from_fla: {key}={config[key]!r} is not supported (only "
                             f"{default!r})")
    index = root / "model.safetensors.index.json"
    files = (sorted(set(json.loads(index.read_text())["weight_map"].values()))
             if index.exists() else ["model.safetensors"])
    weights = {}
    for name in files:
        weights.update(load_file(str(root / name)))
    state = {_linattn_key(k): w if dtype is None else w.to(dtype) for k, w in weights.items()}
    tied = config.get("tie_word_embeddings", False)
    mlp = state.get("blocks.0.mlp.gate_proj.weight")
    model = CausalLM(LMConfig(
        vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
        num_layers=config["num_hidden_layers"], mixer=mixer,
        mixer_kwargs={"norm_eps": config["norm_eps"], **_mixer_kwargs(config, keys)},
        intermediate_size=mlp.shape[0] if mlp is not None else None, use_mlp=mlp is not None,
        norm_eps=config["norm_eps"], tie_word_embeddings=tied))
    if tied:
        state.setdefault("lm_head.weight", state["embed.weight"])
    model.load_state_dict(state)
    return model.to(dtype) if dtype is not None else model


def _mixer_kwargs(config: dict, keys) -> dict:
    pairs = (k if isinstance(k, tuple) else (k, k) for k in keys)
    return {arg: config[key] for key, arg in pairs if key in config}


def _linattn_key(key: str) -> str:
    for pattern, replacement in _FLA_RENAMES:
        key = re.sub(pattern, replacement, key)
    return key
