"""Token-mixing layers (torch.nn.Module) in the shape of fla's layers, on linattn's C++ ops.

Each layer has the published projections, the optional short causal convolution, the output
gate and norm of its paper / fla layer; the recurrence itself is one call of ``linattn.ops``
(chunk form for training and prefill, recurrent form for decoding), the short convolution one
call of linattn's causal conv1d (``ops.causal_conv1d``). Projections, norms and gate activations are ordinary torch
modules and functions (model glue, not numeric kernels).

Interface (the same for every layer):
- ``forward(hidden_states, state=None, output_state=False, form="chunk")`` with
  hidden_states ``[B, T, hidden_size]`` returns ``(o [B, T, hidden_size], state or None)``;
- ``step(x, state=None)`` decodes one token, x ``[B, hidden_size]``, returning ``(o, state)``;
- ``state`` is a ``LayerState(conv, recurrent)``: the short convolutions' caches (fla's
  ``[B, D, W]``, a tuple, None without convolutions) and the recurrent state ``[B, HV, K, V]``.
A prefill with ``output_state=True`` followed by ``step`` calls equals one forward over the
whole sequence (tested).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import ops


class LayerState(NamedTuple):
    conv: tuple | None      # one cache per short convolution, or None
    recurrent: torch.Tensor | None


# ---------------------------------------------------------------------------------------------
# Glue modules: norms, the short convolution, feature maps.


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last dimension, or over each group of `group_size`
    consecutive channels of it (Mamba-2's grouped norm; the weight spans all channels)."""

    def __init__(self, hidden_size: int, eps: float = 1e-5, elementwise_affine: bool = True,
                 group_size: int | None = None):
        super().__init__()
        self.eps, self.group_size = eps, group_size
        self.weight = nn.Parameter(torch.ones(hidden_size)) if elementwise_affine else None

    def forward(self, x):
        if self.group_size is None:
            return F.rms_norm(x, x.shape[-1:], self.weight, self.eps)
        y = F.rms_norm(x.unflatten(-1, (-1, self.group_size)), (self.group_size,), None,
                       self.eps).flatten(-2)
        return y if self.weight is None else y * self.weight


class GatedRMSNorm(RMSNorm):
    """fla's FusedRMSNormGated: rmsnorm(x) * weight * act(gate) (norm before the gate), act
    'swish'/'silu' (fla's default) or 'sigmoid'."""

    def __init__(self, hidden_size: int, eps: float = 1e-5, activation: str = "swish"):
        super().__init__(hidden_size, eps)
        gates = {"swish": F.silu, "silu": F.silu, "sigmoid": torch.sigmoid}
        if activation not in gates:
            raise ValueError(f"GatedRMSNorm: activation must be 'swish', 'silu' or 'sigmoid', "
                             f"got {activation!r}")
        self.activation = gates[activation]

    def forward(self, x, gate):
        return super().forward(x) * self.activation(gate)


class ShortConvolution(nn.Module):
    """fla's ShortConvolution: a causal depthwise conv1d over [B, T, D] with kernel_size taps,
    weight [D, 1, W] (nn.Conv1d's depthwise layout) and an optional SiLU; computed by linattn's
    causal conv1d (C++). Its cache is fla's [B, D, W]: the last W inputs."""

    def __init__(self, hidden_size: int, kernel_size: int, bias: bool = False,
                 activation: str | None = "silu"):
        super().__init__()
        if activation not in (None, "silu", "swish"):
            raise ValueError(f"ShortConvolution: activation must be None, 'silu' or 'swish', "
                             f"got {activation!r}")
        self.hidden_size, self.kernel_size = hidden_size, kernel_size
        self.activation = activation
        conv = nn.Conv1d(hidden_size, hidden_size, kernel_size, groups=hidden_size, bias=bias)
        self.weight, self.bias = conv.weight, conv.bias  # nn.Conv1d's initialisation

    def forward(self, x, cache=None, output_final_state: bool = False, form: str = "chunk"):
        """x [B, T, D] -> (y, cache or None). `form` is the mixer's: a decode step is a one-token
        forward from the cache; 'reference' runs the convolution's fp64 oracle."""
        return ops.causal_conv1d(x, self.weight[:, 0], self.bias, initial_state=cache,
                                 output_final_state=output_final_state,
                                 activation=self.activation,
                                 form="reference" if form == "reference" else "chunk")


class HedgehogFeatureMap(nn.Module):
    """Hedgehog (Zhang et al. 2024) as fla computes it: a learnable linear map (identity at
    init), then one softmax over [2x, -2x] (feature dimension 2 * head_dim)."""

    def __init__(self, head_dim: int):
        super().__init__()
        self.layer = nn.Linear(head_dim, head_dim)
        nn.init.eye_(self.layer.weight)
        nn.init.zeros_(self.layer.bias)

    def forward(self, x):
        y = 2 * self.layer(x)
        return torch.cat([y, -y], dim=-1).softmax(-1)


class T2RFeatureMap(nn.Module):
    """T2R (Kasai et al. 2021): relu(W x) (fla's default: no bias)."""

    def __init__(self, head_dim: int, bias: bool = False):
        super().__init__()
        self.layer = nn.Linear(head_dim, head_dim, bias=bias)

    def forward(self, x):
        return F.relu(self.layer(x))


class HadamardFeatureMap(nn.Module):
    """fla's 'elementwise_product' map: (W1 x + b1) * (W2 x + b2)."""

    def __init__(self, head_dim: int):
        super().__init__()
        self.layer1 = nn.Linear(head_dim, head_dim)
        self.layer2 = nn.Linear(head_dim, head_dim)

    def forward(self, x):
        return self.layer1(x) * self.layer2(x)


class DPFPFeatureMap(nn.Module):
    """DPFP (Schlag et al. 2021), parameter-free: r = [relu(x), relu(-x)], then the products of
    r with its rolls by 1..nu (feature dimension 2 * nu * head_dim)."""

    def __init__(self, head_dim: int, nu: int = 4):
        super().__init__()
        self.nu = nu

    def forward(self, x):
        r = torch.cat([x.relu(), (-x).relu()], dim=-1)
        return torch.cat([r * r.roll(shifts=j, dims=-1) for j in range(1, self.nu + 1)], dim=-1)


def _feature_map(name: str | None, head_dim: int) -> tuple[nn.Module, int]:
    """A feature map by fla's name and its output dimension."""
    simple = {
        None: nn.Identity, "identity": nn.Identity, "relu": nn.ReLU,
        "elu": lambda: _Lambda(lambda x: F.elu(x) + 1),  # positive: elu(x) + 1
    }
    if name in simple:
        return simple[name](), head_dim
    maps = {"hedgehog": (HedgehogFeatureMap, 2), "t2r": (T2RFeatureMap, 1),
            "elementwise_product": (HadamardFeatureMap, 1), "dpfp": (DPFPFeatureMap, 8)}
    if name in maps:
        cls, width = maps[name]
        return cls(head_dim), width * head_dim
    raise ValueError(f"LinearAttention: feature_map must be one of identity, elu, relu, t2r, "
                     f"hedgehog, elementwise_product, dpfp, got {name!r}")


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _inverse_softplus_dt(n: int, dt_min: float = 1e-3, dt_max: float = 0.1,
                         dt_floor: float = 1e-4) -> torch.Tensor:
    """Mamba2's dt bias initialisation: dt log-uniform in [dt_min, dt_max], stored as the
    inverse softplus so that softplus(dt_bias) = dt."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    return _inverse_softplus(dt.clamp(min=dt_floor))


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """x with softplus(x) = y > 0."""
    return y + torch.log(-torch.expm1(-y))


def _heads(x, head_dim: int):
    """[B, T, H * d] -> [B, T, H, d] (a view)."""
    return x.unflatten(-1, (-1, head_dim))


# ---------------------------------------------------------------------------------------------
# The shared skeleton.


class _Mixer(nn.Module):
    """Projections -> short convolutions (or their activation alone) -> _mix.

    Subclasses set ``conv_inputs`` (the projections that pass through a short convolution, in
    the order of the conv caches), build their projections (``_make_qkv`` gives q, k, v and the
    default ``_project``; others override ``_project(x)``, a dict of the projections) and
    implement ``_mix(x, h, initial_state, output_final_state, form)`` -> (o, recurrent state)."""

    conv_inputs: tuple[str, ...] = ()
    conv_activation: str | None = "silu"  # inside the convolution
    plain_activation = None               # applied instead when use_short_conv is False

    def _make_qkv(self, hidden_size: int, q_dim: int, k_dim: int, v_dim: int):
        """The q, k, v projections (no bias), and _project for them."""
        self.q_proj = nn.Linear(hidden_size, q_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, k_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, v_dim, bias=False)

    def _project(self, x):
        return {"q": self.q_proj(x), "k": self.k_proj(x), "v": self.v_proj(x)}

    def _make_output(self, hidden_size: int, value_dim: int, use_gate: bool, norm_eps: float,
                     gate_activation: str = "swish"):
        """The output norm over each head's head_v_dim channels (gated by act(g_proj(x)) with
        use_gate) and o_proj; _output_norm applies them."""
        self.use_gate = use_gate
        if use_gate:
            self.g_proj = nn.Linear(hidden_size, value_dim, bias=False)
            norm = GatedRMSNorm(self.head_v_dim, eps=norm_eps, activation=gate_activation)
        else:
            norm = RMSNorm(self.head_v_dim, eps=norm_eps)
        setattr(self, self._norm_name(use_gate), norm)
        self.o_proj = nn.Linear(value_dim, hidden_size, bias=False)

    def _norm_name(self, gated: bool) -> str:
        """fla's attribute of the output norm (gated or not)."""
        return "o_norm"

    def _make_convs(self, use_short_conv: bool, conv_size: int, conv_bias: bool,
                    dims: dict[str, int]):
        """One ShortConvolution per conv input, registered under fla's attribute name
        (``q_conv1d``, ...: _conv_name) so that fla's state_dict keys load as they are."""
        self.use_short_conv = use_short_conv
        if use_short_conv:
            for name in self.conv_inputs:
                setattr(self, self._conv_name(name),
                        ShortConvolution(dims[name], conv_size, conv_bias, self.conv_activation))

    def _conv_name(self, name: str) -> str:
        """fla's attribute of the short convolution of projection `name`."""
        return f"{name}_conv1d"

    def forward(self, hidden_states, state: LayerState | None = None,
                output_state: bool = False, form: str = "chunk"):
        h = self._project(hidden_states)
        caches = []
        for i, name in enumerate(self.conv_inputs):
            if self.use_short_conv:
                cache = None if state is None or state.conv is None else state.conv[i]
                conv = getattr(self, self._conv_name(name))
                h[name], cache = conv(h[name], cache, output_state, form)
                caches.append(cache)
            elif self.plain_activation is not None:
                h[name] = self.plain_activation(h[name])
        recurrent = None if state is None else state.recurrent
        o, recurrent = self._mix(hidden_states, h, recurrent, output_state, form)
        if not output_state:
            return o, None
        return o, LayerState(tuple(caches) if self.use_short_conv else None, recurrent)

    def step(self, x, state: LayerState | None = None):
        """One token of each of B sequences, x [B, hidden_size] -> (o [B, hidden_size], state)."""
        o, state = self.forward(x[:, None], state, output_state=True, form="recurrent")
        return o[:, 0], state


# ---------------------------------------------------------------------------------------------
# The layers.


class GatedDeltaNet(_Mixer):
    """Gated DeltaNet (Yang et al. 2024), fla's GatedDeltaNet: q, k, v projections with short
    convolutions (SiLU), L2-normalised q/k, decay g = -exp(A_log) softplus(a_proj(x) + dt_bias),
    beta = sigmoid(b_proj(x)) (x2 with allow_neg_eigval), output RMSNorm gated by
    act(g_proj(x)) (output_gate_activation: silu or sigmoid), o_proj. num_v_heads > num_heads gives grouped value heads."""

    conv_inputs = ("q", "k", "v")
    plain_activation = staticmethod(F.silu)

    def __init__(self, hidden_size: int = 2048, expand_v: float = 2, head_dim: int = 256,
                 num_heads: int = 6, num_v_heads: int | None = None, use_gate: bool = True,
                 use_short_conv: bool = True, allow_neg_eigval: bool = False, conv_size: int = 4,
                 conv_bias: bool = False, norm_eps: float = 1e-5, layer_idx: int | None = None,
                 output_gate_activation: str = "swish"):
        super().__init__()
        self.head_k_dim, self.head_v_dim = head_dim, int(head_dim * expand_v)
        self.num_heads = num_heads
        self.num_v_heads = num_v_heads or num_heads
        if self.num_v_heads % num_heads:
            raise ValueError(f"GatedDeltaNet: num_v_heads={self.num_v_heads} must be a multiple "
                             f"of num_heads={num_heads}")
        self.allow_neg_eigval, self.layer_idx = allow_neg_eigval, layer_idx
        key_dim, value_dim = num_heads * head_dim, self.num_v_heads * self.head_v_dim
        self._make_qkv(hidden_size, key_dim, key_dim, value_dim)
        self.a_proj = nn.Linear(hidden_size, self.num_v_heads, bias=False)
        self.b_proj = nn.Linear(hidden_size, self.num_v_heads, bias=False)
        self.A_log = nn.Parameter(torch.empty(self.num_v_heads).uniform_(1, 16).log())
        self.dt_bias = nn.Parameter(_inverse_softplus_dt(self.num_v_heads))
        self._make_convs(use_short_conv, conv_size, conv_bias,
                         {"q": key_dim, "k": key_dim, "v": value_dim})
        self._make_output(hidden_size, value_dim, use_gate, norm_eps, output_gate_activation)

    def _mix(self, x, h, initial_state, output_final_state, form):
        g = -self.A_log.exp() * F.softplus(self.a_proj(x).float() + self.dt_bias)
        beta = self.b_proj(x).sigmoid() * (2.0 if self.allow_neg_eigval else 1.0)
        o, state = self.recurrence(_heads(h["q"], self.head_k_dim),
                                   _heads(h["k"], self.head_k_dim),
                                   _heads(h["v"], self.head_v_dim), g, beta, initial_state,
                                   output_final_state, form)
        return self.o_proj(_output_norm(self, x, o).flatten(-2)), state

    def recurrence(self, q, k, v, g, beta, initial_state, output_final_state, form):
        """The gated delta rule with L2-normalised q, k (a method so that benchmarks can swap in
        another implementation of the same function)."""
        return ops.mixer("gated_delta_rule", q, k, v, g=g, beta=beta, form=form,
                         initial_state=initial_state, output_final_state=output_final_state,
                         use_qk_l2norm_in_kernel=True)


def _output_norm(layer, x, o):
    """The output norm, gated by silu(g_proj(x)) per head when the layer has an output gate."""
    if layer.use_gate:
        return getattr(layer, layer._norm_name(True))(o, _heads(layer.g_proj(x), o.shape[-1]))
    return getattr(layer, layer._norm_name(False))(o)


class DeltaNet(_Mixer):
    """DeltaNet (Schlag et al. 2021; Yang et al. 2024), fla's DeltaNet: q, k, v projections with
    short convolutions (SiLU on v, and on q/k with qk_activation='silu'), L2-normalised q/k,
    beta = sigmoid(b_proj(x)) (x2 with allow_neg_eigval; 1 without use_beta), output RMSNorm
    (gated by silu(g_proj(x)) with use_gate), o_proj."""

    conv_inputs = ("q", "k", "v")
    plain_activation = staticmethod(F.silu)

    def __init__(self, hidden_size: int = 1024, expand_k: float = 1.0, expand_v: float = 1.0,
                 num_heads: int = 4, use_beta: bool = True, use_gate: bool = False,
                 use_short_conv: bool = True, conv_size: int = 4, conv_bias: bool = False,
                 allow_neg_eigval: bool = False, qk_activation: str = "silu",
                 qk_norm: str = "l2", norm_eps: float = 1e-5, layer_idx: int | None = None):
        super().__init__()
        if qk_activation != "silu" or qk_norm != "l2":
            raise ValueError("DeltaNet: only qk_activation='silu' and qk_norm='l2' (fla's "
                             f"defaults) are supported, got {qk_activation!r}, {qk_norm!r}")
        key_dim, value_dim = int(hidden_size * expand_k), int(hidden_size * expand_v)
        self.head_k_dim, self.head_v_dim = key_dim // num_heads, value_dim // num_heads
        self.use_beta, self.allow_neg_eigval, self.layer_idx = use_beta, allow_neg_eigval, layer_idx
        self._make_qkv(hidden_size, key_dim, key_dim, value_dim)
        if use_beta:
            self.b_proj = nn.Linear(hidden_size, num_heads, bias=False)
        self._make_convs(use_short_conv, conv_size, conv_bias,
                         {"q": key_dim, "k": key_dim, "v": value_dim})
        self._make_output(hidden_size, value_dim, use_gate, norm_eps)

    def _mix(self, x, h, initial_state, output_final_state, form):
        v = _heads(h["v"], self.head_v_dim)
        if self.use_beta:
            beta = self.b_proj(x).sigmoid() * (2.0 if self.allow_neg_eigval else 1.0)
        else:
            beta = v.new_ones(v.shape[:3])
        o, state = ops.mixer("delta_rule", _heads(h["q"], self.head_k_dim),
                             _heads(h["k"], self.head_k_dim), v, beta=beta,
                             initial_state=initial_state, output_final_state=output_final_state,
                             form=form, use_qk_l2norm_in_kernel=True)
        return self.o_proj(_output_norm(self, x, o).flatten(-2)), state


class GatedLinearAttention(_Mixer):
    """GLA (Yang et al. 2023), fla's GatedLinearAttention: q, k, v projections (optional short
    convolutions, SiLU), a low-rank per-key-channel forget gate
    gk = logsigmoid(W2 W1 x + b) / gate_logit_normalizer (clamped below by clamp_min), output
    RMSNorm gated by swish(g_proj(x)), o_proj."""

    conv_inputs = ("q", "k", "v")

    def __init__(self, hidden_size: int = 1024, expand_k: float = 0.5, expand_v: float = 1.0,
                 num_heads: int = 4, use_short_conv: bool = False, conv_size: int = 4,
                 conv_bias: bool = False, use_output_gate: bool = True, norm_eps: float = 1e-5,
                 gate_logit_normalizer: int = 16, gate_low_rank_dim: int = 16,
                 clamp_min: float | None = None, layer_idx: int | None = None):
        super().__init__()
        key_dim, value_dim = int(hidden_size * expand_k), int(hidden_size * expand_v)
        self.head_k_dim, self.head_v_dim = key_dim // num_heads, value_dim // num_heads
        self.gate_logit_normalizer, self.clamp_min = gate_logit_normalizer, clamp_min
        self.layer_idx = layer_idx
        self._make_qkv(hidden_size, key_dim, key_dim, value_dim)
        self.gk_proj = nn.Sequential(nn.Linear(hidden_size, gate_low_rank_dim, bias=False),
                                     nn.Linear(gate_low_rank_dim, key_dim, bias=True))
        self._make_convs(use_short_conv, conv_size, conv_bias,
                         {"q": key_dim, "k": key_dim, "v": value_dim})
        self._make_output(hidden_size, value_dim, use_output_gate, norm_eps)

    def _norm_name(self, gated: bool) -> str:
        return "g_norm_swish_gate" if gated else "g_norm"  # fla's GLA names

    def _mix(self, x, h, initial_state, output_final_state, form):
        gk = F.logsigmoid(self.gk_proj(x)) / self.gate_logit_normalizer
        if self.clamp_min is not None:
            gk = gk.clamp_min(self.clamp_min)
        o, state = ops.mixer("gla", _heads(h["q"], self.head_k_dim),
                             _heads(h["k"], self.head_k_dim), _heads(h["v"], self.head_v_dim),
                             gk=_heads(gk, self.head_k_dim), initial_state=initial_state,
                             output_final_state=output_final_state, form=form)
        return self.o_proj(_output_norm(self, x, o).flatten(-2)), state


class HGRN2(_Mixer):
    """HGRN2 (Qin et al. 2024), fla's HGRN2Attention: GLA with q = swish(q_proj(x)), forget gate
    g = logsigmoid(f_proj(x)) and input gate k = 1 - exp(g) tied to it, v = i_proj(x)
    (state expansion: expand_ratio key channels per head), RMSNorm over the output, o_proj."""

    conv_inputs = ("q", "f", "i")
    conv_activation = None

    def __init__(self, hidden_size: int = 1024, num_heads: int | None = None,
                 expand_ratio: int | None = 128, use_short_conv: bool = False, conv_size: int = 4,
                 conv_bias: bool = False, elementwise_affine: bool = True, norm_eps: float = 1e-5,
                 layer_idx: int | None = None):
        super().__init__()
        if expand_ratio is not None:
            num_heads = hidden_size // expand_ratio
        elif num_heads is not None:
            expand_ratio = hidden_size // num_heads
        else:
            raise ValueError("HGRN2: give expand_ratio or num_heads")
        self.num_heads, self.expand_ratio = num_heads, expand_ratio
        self.head_i_dim, self.layer_idx = hidden_size // num_heads, layer_idx
        forget_dim = num_heads * expand_ratio
        self.q_proj = nn.Linear(hidden_size, forget_dim, bias=False)
        self.f_proj = nn.Linear(hidden_size, forget_dim, bias=False)
        self.i_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self._make_convs(use_short_conv, conv_size, conv_bias,
                         {"q": forget_dim, "f": forget_dim, "i": hidden_size})
        self.g_norm = RMSNorm(hidden_size, eps=norm_eps, elementwise_affine=elementwise_affine)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def _project(self, x):
        return {"q": self.q_proj(x), "f": self.f_proj(x), "i": self.i_proj(x)}

    def _mix(self, x, h, initial_state, output_final_state, form):
        g = F.logsigmoid(h["f"])
        q, k, g = (_heads(t, self.expand_ratio) for t in (F.silu(h["q"]), 1 - g.exp(), g))
        o, state = ops.mixer("gla", q, k, _heads(h["i"], self.head_i_dim), gk=g,
                             initial_state=initial_state, output_final_state=output_final_state,
                             form=form)
        return self.o_proj(self.g_norm(o.flatten(-2))), state


class LinearAttention(_Mixer):
    """Linear attention (Katharopoulos et al. 2020) with a feature map on q and k (fla's:
    elementwise_product (default), identity, elu (+1), relu, t2r, hedgehog, dpfp), fla's
    LinearAttention: q, k, v projections, optional
    normalisation of q/k features to sum 1 (norm_q, norm_k) and of the output by the
    accumulated key sum (do_feature_map_norm), RMSNorm over the output, o_proj."""

    def __init__(self, hidden_size: int = 1024, expand_k: float = 1.0, expand_v: float = 1.0,
                 num_heads: int = 8, feature_map: str | None = "elementwise_product",
                 tie_feature_map_qk: bool = False, output_norm: str = "rmsnorm",
                 norm_q: bool = False, norm_k: bool = False, do_feature_map_norm: bool = False,
                 elementwise_affine: bool = True, norm_eps: float = 1e-5,
                 layer_idx: int | None = None):
        super().__init__()
        key_dim, value_dim = int(hidden_size * expand_k), int(hidden_size * expand_v)
        self.head_k_dim, self.head_v_dim = key_dim // num_heads, value_dim // num_heads
        self.norm_q, self.norm_k, self.do_feature_map_norm = norm_q, norm_k, do_feature_map_norm
        self.use_short_conv, self.layer_idx = False, layer_idx
        self._make_qkv(hidden_size, key_dim, key_dim, value_dim)
        self.feature_map_q, _ = _feature_map(feature_map, self.head_k_dim)
        self.feature_map_k = (self.feature_map_q if tie_feature_map_qk
                              else _feature_map(feature_map, self.head_k_dim)[0])
        if output_norm == "rmsnorm":  # fla's name: norm
            self.norm = RMSNorm(self.head_v_dim, eps=norm_eps,
                                elementwise_affine=elementwise_affine)
        elif output_norm == "identity":
            self.norm = nn.Identity()
        else:
            raise ValueError(f"LinearAttention: output_norm must be 'rmsnorm' or 'identity', "
                             f"got {output_norm!r}")
        self.o_proj = nn.Linear(value_dim, hidden_size, bias=False)

    def _mix(self, x, h, initial_state, output_final_state, form):
        q = self.feature_map_q(_heads(h["q"], self.head_k_dim))
        k = self.feature_map_k(_heads(h["k"], self.head_k_dim))
        if self.norm_q:
            q = q / (q.sum(-1, keepdim=True) + 1e-4)
        if self.norm_k:
            k = k / (k.sum(-1, keepdim=True) + 1e-4)
        # with do_feature_map_norm the state is fla's pair (kv, z), z the normaliser's key sum
        o, state = ops._linear_attn("LinearAttention", form, q, k,
                                    _heads(h["v"], self.head_v_dim), None, initial_state,
                                    output_final_state, False, self.do_feature_map_norm, None)
        if self.do_feature_map_norm and not output_final_state:
            state = None
        return self.o_proj(self.norm(o).flatten(-2)), state


class Mamba2(_Mixer):
    """Mamba-2's SSD layer (Dao & Gu 2024): in_proj to [z, xBC, dt], a short convolution (SiLU)
    over xBC, then per head h: S_t = exp(dt_t A_h) S_{t-1} + B_t (dt_t x_t)^T, y_t = S_t^T C_t
    + D_h x_t -- simple_gla with q = C, k = B (n_groups heads shared by the value heads),
    v = dt x, g = dt A, scale 1 -- a gated RMSNorm (norm(y silu(z)) per group) and out_proj.

    allow_neg_eigval (Grazzi et al. 2025, algorithms.md §4.7): the decay a_t = 2 exp(dt_t A) - 1
    in (-1, 1) instead of exp(dt_t A) in (0, 1). It runs on the same simple_gla op exactly: with
    the running sign p_t = prod_{r<=t} sign(a_r), prod_{r=j+1..i} a_r = p_i p_j e^{G_i - G_j}
    (G the cumulative log|a|), so q_i and k_j are multiplied by p_i and p_j and the op's state
    by p_t gives the true state."""

    conv_inputs = ("xBC",)
    plain_activation = staticmethod(F.silu)

    def __init__(self, hidden_size: int = 1024, state_size: int = 128, expand: int = 2,
                 head_dim: int = 64, n_groups: int = 1, use_short_conv: bool = True,
                 conv_kernel: int = 4, use_conv_bias: bool = True, use_bias: bool = False,
                 norm_eps: float = 1e-5, time_step_min: float = 1e-3, time_step_max: float = 0.1,
                 time_step_floor: float = 1e-4, allow_neg_eigval: bool = False,
                 layer_idx: int | None = None):
        super().__init__()
        self.allow_neg_eigval = allow_neg_eigval
        self.intermediate_size = expand * hidden_size
        if self.intermediate_size % head_dim:
            raise ValueError(f"Mamba2: expand * hidden_size = {self.intermediate_size} must be "
                             f"a multiple of head_dim = {head_dim}")
        self.num_heads = self.intermediate_size // head_dim
        if self.num_heads % n_groups:
            raise ValueError(f"Mamba2: the number of heads {self.num_heads} must be a multiple "
                             f"of n_groups = {n_groups}")
        self.head_dim, self.state_size, self.n_groups = head_dim, state_size, n_groups
        self.layer_idx = layer_idx
        self.conv_dim = self.intermediate_size + 2 * n_groups * state_size
        self.in_proj = nn.Linear(hidden_size, self.intermediate_size + self.conv_dim
                                 + self.num_heads, bias=use_bias)
        self._make_convs(use_short_conv, conv_kernel, use_conv_bias, {"xBC": self.conv_dim})
        self.dt_bias = nn.Parameter(_inverse_softplus_dt(self.num_heads, time_step_min,
                                                         time_step_max, time_step_floor))
        self.A_log = nn.Parameter(torch.empty(self.num_heads).uniform_(1, 16).log())
        self.D = nn.Parameter(torch.ones(self.num_heads))
        self.norm = RMSNorm(self.intermediate_size, eps=norm_eps,
                            group_size=self.intermediate_size // n_groups)
        self.out_proj = nn.Linear(self.intermediate_size, hidden_size, bias=use_bias)

    def _conv_name(self, name: str) -> str:
        return "conv1d"  # fla's (and Mamba-2's) name of the xBC convolution

    def _project(self, x):
        z, xBC, dt = self.in_proj(x).split(
            [self.intermediate_size, self.conv_dim, self.num_heads], dim=-1)
        return {"z": z, "xBC": xBC, "dt": dt}

    def _mix(self, x, h, initial_state, output_final_state, form):
        xs, B, C = h["xBC"].split([self.intermediate_size, self.n_groups * self.state_size,
                                   self.n_groups * self.state_size], dim=-1)
        dt = F.softplus(h["dt"].float() + self.dt_bias)  # [B, T, heads]
        g = -self.A_log.exp() * dt
        xs = _heads(xs, self.head_dim)
        C, B = _heads(C, self.state_size), _heads(B, self.state_size)
        if self.allow_neg_eigval:
            C, B, g, sign = self._signed_decay(C, B, g)
        o, state = ops.mixer("simple_gla", C, B, xs * dt[..., None].to(xs.dtype), g=g, scale=1.0,
                             initial_state=initial_state, output_final_state=output_final_state,
                             form=form)
        if self.allow_neg_eigval and state is not None:
            state = state * sign[:, -1, :, None, None].to(state.dtype)
        y = (o + xs * self.D[:, None].to(xs.dtype)).flatten(-2) * F.silu(h["z"])
        y = self.norm(y)
        return self.out_proj(y), state

    def _signed_decay(self, C, B, g):
        """The decay a = 2 e^g - 1 as log|a| and the running sign p (class docstring): C, B per
        value head times p, g <- log|a|; returns them and p [batch, T, heads]."""
        a = 2 * g.exp() - 1
        sign = torch.where(a < 0, -1.0, 1.0).to(a.dtype).cumprod(dim=1).detach()
        g = a.abs().clamp_min(1e-30).log()  # |a| = 0 (a reset) stays finite
        per_group = self.num_heads // self.n_groups
        C = C.repeat_interleave(per_group, dim=2) * sign[..., None].to(C.dtype)
        B = B.repeat_interleave(per_group, dim=2) * sign[..., None].to(B.dtype)
        return C, B, g, sign


class GatedDeltaProduct(_Mixer):
    """DeltaProduct (Siems et al. 2025), fla's GatedDeltaProduct: num_householder delta-rule
    steps per token, each with its own key, value and beta (k, v, b projections num_householder
    times wider, short convolutions with SiLU on q, k, v), L2-normalised q/k, beta in [0, 2]
    with allow_neg_eigval (negative eigenvalues), an optional forget gate
    g = -exp(A_log) softplus(a_proj(x) + dt_bias), output RMSNorm gated by silu(g_proj(x))."""

    conv_inputs = ("q", "k", "v")
    plain_activation = staticmethod(F.silu)

    def __init__(self, hidden_size: int = 2048, expand_v: float = 2, head_dim: int = 256,
                 num_heads: int = 6, num_householder: int = 2, use_output_gate: bool = True,
                 use_short_conv: bool = True, allow_neg_eigval: bool = True,
                 use_forget_gate: bool = True, conv_size: int = 4, conv_bias: bool = False,
                 norm_eps: float = 1e-5, layer_idx: int | None = None):
        super().__init__()
        self.head_k_dim, self.head_v_dim = head_dim, int(head_dim * expand_v)
        self.num_heads, self.num_householder = num_heads, num_householder
        self.allow_neg_eigval = allow_neg_eigval
        self.use_forget_gate, self.layer_idx = use_forget_gate, layer_idx
        key_dim, value_dim = num_heads * head_dim, num_heads * self.head_v_dim
        n = num_householder
        self._make_qkv(hidden_size, key_dim, key_dim * n, value_dim * n)
        self.b_proj = nn.Linear(hidden_size, num_heads * n, bias=False)
        if use_forget_gate:
            self.a_proj = nn.Linear(hidden_size, num_heads, bias=False)
            self.A_log = nn.Parameter(torch.empty(num_heads).uniform_(1, 16).log())
            self.dt_bias = nn.Parameter(_inverse_softplus_dt(num_heads))
        self._make_convs(use_short_conv, conv_size, conv_bias,
                         {"q": key_dim, "k": key_dim * n, "v": value_dim * n})
        self._make_output(hidden_size, value_dim, use_output_gate, norm_eps)

    def _steps(self, x, d):
        """[B, T, n_h * H * d] -> [B, T * n_h, H, d]: the n_h steps of a token are consecutive
        rows (fla's '... t (n h d) -> ... (t n) h d')."""
        B, T = x.shape[:2]
        return x.reshape(B, T * self.num_householder, self.num_heads, d)

    def _mix(self, x, h, initial_state, output_final_state, form):
        B, T = x.shape[:2]
        beta = self.b_proj(x).sigmoid() * (2.0 if self.allow_neg_eigval else 1.0)
        g = None
        if self.use_forget_gate:
            g = -self.A_log.exp() * F.softplus(self.a_proj(x).float() + self.dt_bias)
        o, state = ops.mixer("delta_product", _heads(h["q"], self.head_k_dim),
                             self._steps(h["k"], self.head_k_dim),
                             self._steps(h["v"], self.head_v_dim),
                             g=g, beta=beta.reshape(B, T * self.num_householder, self.num_heads),
                             num_householder=self.num_householder, initial_state=initial_state,
                             output_final_state=output_final_state, form=form,
                             use_qk_l2norm_in_kernel=True)
        return self.o_proj(_output_norm(self, x, o).flatten(-2)), state


class KimiDeltaAttention(_Mixer):
    """Kimi Delta Attention (KDA, Kimi Linear 2025), fla's KimiDeltaAttention: the gated delta
    rule with a per-key-channel decay. q, k, v projections with short convolutions (SiLU),
    L2-normalised q/k, a low-rank gate f_proj (hidden -> head_v_dim -> HV * K) turned into the
    log decay -exp(A_log) softplus(f + dt_bias) (or lower_bound sigmoid(exp(A_log) (f +
    dt_bias)) with a lower_bound), beta = sigmoid(b_proj(x)) (x2 with allow_neg_eigval), output
    RMSNorm gated by sigmoid(g_proj(x)) (low rank, with bias), o_proj. num_v_heads > num_heads
    gives grouped value heads. safe_gate (fla's kernel choice for bounded gates) only changes
    A_log's initialisation to zeros, as fla."""

    conv_inputs = ("q", "k", "v")
    plain_activation = staticmethod(F.silu)

    def __init__(self, hidden_size: int = 2048, expand_v: float = 1, head_dim: int = 128,
                 num_heads: int = 16, num_v_heads: int | None = None,
                 use_short_conv: bool = True, allow_neg_eigval: bool = False,
                 safe_gate: bool = False, lower_bound: float | None = None, conv_size: int = 4,
                 conv_bias: bool = False, layer_idx: int | None = None, norm_eps: float = 1e-5):
        super().__init__()
        self.head_k_dim, self.head_v_dim = head_dim, int(head_dim * expand_v)
        self.num_heads = num_heads
        self.num_v_heads = num_v_heads or num_heads
        if self.num_v_heads % num_heads:
            raise ValueError(f"KimiDeltaAttention: num_v_heads={self.num_v_heads} must be a "
                             f"multiple of num_heads={num_heads}")
        self.allow_neg_eigval, self.lower_bound = allow_neg_eigval, lower_bound
        self.layer_idx = layer_idx
        key_dim, value_dim = num_heads * head_dim, self.num_v_heads * self.head_v_dim
        gate_dim = self.num_v_heads * head_dim
        self._make_qkv(hidden_size, key_dim, key_dim, value_dim)
        self._make_convs(use_short_conv, conv_size, conv_bias,
                         {"q": key_dim, "k": key_dim, "v": value_dim})
        self.f_proj = nn.Sequential(nn.Linear(hidden_size, self.head_v_dim, bias=False),
                                    nn.Linear(self.head_v_dim, gate_dim, bias=False))
        self.b_proj = nn.Linear(hidden_size, self.num_v_heads, bias=False)
        self.A_log = nn.Parameter(torch.zeros(self.num_v_heads) if safe_gate else
                                  torch.empty(self.num_v_heads).uniform_(1, 16).log())
        self.dt_bias = nn.Parameter(_inverse_softplus_dt(gate_dim))
        self.use_gate = True
        self.g_proj = nn.Sequential(nn.Linear(hidden_size, self.head_v_dim, bias=False),
                                    nn.Linear(self.head_v_dim, value_dim, bias=True))
        self.o_norm = GatedRMSNorm(self.head_v_dim, eps=norm_eps, activation="sigmoid")
        self.o_proj = nn.Linear(value_dim, hidden_size, bias=False)

    def _mix(self, x, h, initial_state, output_final_state, form):
        # fla's in-kernel gate transforms, as linattn.ops applies them for chunk_kda
        gk, beta = ops._gate_options(
            "KimiDeltaAttention", _heads(self.f_proj(x), self.head_k_dim), self.b_proj(x),
            use_gate_in_kernel=True, A_log=self.A_log, dt_bias=self.dt_bias,
            use_beta_sigmoid_in_kernel=True, allow_neg_eigval=self.allow_neg_eigval,
            lower_bound=self.lower_bound)
        o, state = ops.mixer("kda", _heads(h["q"], self.head_k_dim),
                             _heads(h["k"], self.head_k_dim), _heads(h["v"], self.head_v_dim),
                             gk=gk, beta=beta, form=form, initial_state=initial_state,
                             output_final_state=output_final_state, use_qk_l2norm_in_kernel=True)
        return self.o_proj(_output_norm(self, x, o).flatten(-2)), state


class _LoRA(nn.Module):
    """RWKV-7's low-rank maps: up(act(down(x))) (+ bias). The decay and learning-rate maps
    start at their bias (zero up-projection), as in RWKV-7's initialisation."""

    def __init__(self, dim: int, rank: int, activation, bias: bool = True):
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=bias)
        if bias:
            nn.init.zeros_(self.up.weight)
        self.activation = activation

    def forward(self, x):
        return self.up(self.activation(self.down(x)))


class RWKV7(_Mixer):
    """RWKV-7 "Goose" time mix (Peng et al. 2025), after fla's RWKV7Attention: token shift
    (each projection reads a learned mix of x_t and x_{t-1}), receptance r, key k, value v, a
    data-dependent decay w = -0.6065 sigmoid(LoRA(x)) (log space, per channel), in-context
    learning rate a = sigmoid(LoRA(x)), removal key kk = l2norm(k * k_k), k <- k (1 + (a - 1) k_a);
    the generalized delta rule S_t = diag(exp(w_t)) S_{t-1} + (kk a)(S_{t-1}^T (-kk))^T + k v^T
    read by r (linattn's dplr_delta_rule, scale 1), a per-head group norm, the bonus
    (r . (k * r_k)) v, an output gate g = LoRA(x) and o_proj. The state's ``conv`` field holds
    the token-shift state (the previous token, [B, hidden_size]). Not included: fla's value
    residual across layers (v_first)."""

    def __init__(self, hidden_size: int = 1024, head_dim: int = 64, decay_low_rank_dim: int = 64,
                 a_low_rank_dim: int = 64, gate_low_rank_dim: int = 128, norm_eps: float = 1e-5,
                 layer_idx: int | None = None):
        super().__init__()
        if hidden_size % head_dim:
            raise ValueError(f"RWKV7: hidden_size = {hidden_size} must be a multiple of "
                             f"head_dim = {head_dim}")
        self.head_dim, self.num_heads = head_dim, hidden_size // head_dim
        self.use_short_conv, self.layer_idx = False, layer_idx
        self.x_mix = nn.Parameter(torch.rand(6, hidden_size))  # r, w, k, v, a, g
        self.r_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.w_lora = _LoRA(hidden_size, decay_low_rank_dim, torch.tanh)
        self.a_lora = _LoRA(hidden_size, a_low_rank_dim, nn.Identity())
        self.g_lora = _LoRA(hidden_size, gate_low_rank_dim, torch.sigmoid, bias=False)
        self.k_k = nn.Parameter(torch.full((hidden_size,), 0.85))
        self.k_a = nn.Parameter(torch.ones(hidden_size))
        self.r_k = nn.Parameter(torch.zeros(self.num_heads, head_dim))
        self.g_norm = nn.GroupNorm(self.num_heads, hidden_size, eps=head_dim * norm_eps)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    _FLA_MIXES = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")  # fla's rows of x_mix

    @classmethod
    def state_dict_from_fla(cls, state_dict: dict) -> dict:
        """The one-call conversion of the state_dict of fla's RWKV7Attention of a model's first
        layer (layer_idx 0) to this layer's names: fla's token-shift mixes x_r ... x_g
        [1, 1, D] are the rows of x_mix, its LoRAs' lora.0 / lora.2 are down / up. Later
        layers' v_lora (fla's value residual v_first) is not implemented: ValueError."""
        if any(k.startswith("v_lora.") for k in state_dict):
            raise ValueError("RWKV7.state_dict_from_fla: v_lora (fla's value residual across "
                             "layers, v_first) is not implemented; only a first layer's "
                             "(layer_idx 0) state_dict converts")
        out = {k: v for k, v in state_dict.items() if k not in cls._FLA_MIXES}
        out["x_mix"] = torch.cat([state_dict[k].reshape(1, -1) for k in cls._FLA_MIXES])
        for name in ("w_lora", "a_lora", "g_lora"):
            for fla_part, ours in (("lora.0.", "down."), ("lora.2.", "up.")):
                for key in [k for k in out if k.startswith(f"{name}.{fla_part}")]:
                    out[key.replace(fla_part, ours)] = out.pop(key)
        return out

    def forward(self, hidden_states, state: LayerState | None = None,
                output_state: bool = False, form: str = "chunk"):
        x = hidden_states
        previous = (x.new_zeros(x.shape[0], 1, x.shape[2]) if state is None or state.conv is None
                    else state.conv[0][:, None])
        delta = torch.cat([previous, x[:, :-1]], dim=1) - x  # x_{t-1} - x_t
        xr, xw, xk, xv, xa, xg = (x + delta * m for m in self.x_mix)
        r, k, v = self.r_proj(xr), self.k_proj(xk), self.v_proj(xv)
        w = -0.6065306597126334 * torch.sigmoid(self.w_lora(xw))  # log decay in (-e^-0.5, 0)
        a = torch.sigmoid(self.a_lora(xa))
        kk = F.normalize(_heads(k * self.k_k, self.head_dim), dim=-1)
        k = k * (1 + (a - 1) * self.k_a)
        r, k, v, w, a = (_heads(t, self.head_dim) for t in (r, k, v, w, a))
        o, recurrent = ops.mixer("dplr_delta_rule", r, k, v, a=-kk, b=kk * a, gk=w, scale=1.0,
                                 initial_state=None if state is None else state.recurrent,
                                 output_final_state=output_state, form=form)
        o = self.g_norm(o.flatten(-2).flatten(0, 1)).view(o.shape)
        o = o + (r * k * self.r_k).sum(-1, keepdim=True) * v
        o = self.o_proj(o.flatten(-2) * self.g_lora(xg))
        if not output_state:
            return o, None
        return o, LayerState((x[:, -1],), recurrent)


class Attention(nn.Module):
    """Softmax attention, the "full attention" layer of hybrid stacks and the baseline of the
    experiments (fla's Attention layer without its optional q/k norms): q, k, v projections
    (num_kv_heads < num_heads: grouped-query attention), rotary position embeddings (RoPE),
    causal attention through linattn.parallel_attn (optionally a sliding window), o_proj.
    Its decode state is the KV cache (LayerState.recurrent = (k, v), [B, T, Hkv, D] each);
    step() and continued prefills attend through linattn.attn_with_kvcache."""

    use_short_conv = False

    def __init__(self, hidden_size: int = 2048, num_heads: int = 32,
                 num_kv_heads: int | None = None, head_dim: int | None = None,
                 window_size: int | None = None, rope_theta: float | None = 10000.0,
                 layer_idx: int | None = None):
        super().__init__()
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads or num_heads
        if num_heads % self.num_kv_heads:
            raise ValueError(f"Attention: num_heads={num_heads} must be a multiple of "
                             f"num_kv_heads={self.num_kv_heads}")
        self.head_dim = head_dim or hidden_size // num_heads
        self.window_size, self.rope_theta, self.layer_idx = window_size, rope_theta, layer_idx
        self.q_proj = nn.Linear(hidden_size, num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * self.head_dim, hidden_size, bias=False)

    def _rope(self, x, offset: int):
        """Rotates channel pairs (i, i + D/2) of x [B, T, H, D] by angle position * theta^(-2i/D)."""
        if self.rope_theta is None:
            return x
        half = self.head_dim // 2
        freq = self.rope_theta ** (-torch.arange(half, dtype=torch.float32) / half)
        pos = torch.arange(offset, offset + x.shape[1], dtype=torch.float32)
        angle = (pos[:, None] * freq[None, :])[None, :, None, :]  # [1, T, 1, D/2]
        cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
        x1, x2 = x[..., :half], x[..., half:2 * half]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, x[..., 2 * half:]], dim=-1)

    def forward(self, hidden_states, state: LayerState | None = None,
                output_state: bool = False, form: str = "chunk"):
        cache = None if state is None else state.recurrent
        offset = 0 if cache is None else cache[0].shape[1]
        q = self._rope(_heads(self.q_proj(hidden_states), self.head_dim), offset)
        k = self._rope(_heads(self.k_proj(hidden_states), self.head_dim), offset)
        v = _heads(self.v_proj(hidden_states), self.head_dim)
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=1), torch.cat([cache[1], v], dim=1)
        o = self._attend(hidden_states, q, k, v, cache is not None, form)
        o = self.o_proj(o.flatten(-2))
        return o, (LayerState(None, (k, v)) if output_state else None)

    def _attend(self, x, q, k, v, cached: bool, form: str):
        """Causal attention of q [B, Tq, H, D] (the last Tq positions) over k, v [B, T, Hkv, D]."""
        from .attention import attn_with_kvcache, parallel_attn

        if not cached:
            return parallel_attn(q, k, v, window_size=self.window_size)
        lengths = torch.full((q.shape[0],), k.shape[1], dtype=torch.int32)
        return attn_with_kvcache(q.contiguous(), k, v, lengths, window_size=self.window_size)

    step = _Mixer.step


class LocalLinearAttention(Attention):
    """Local Linear Attention (Zuo et al., ICLR 2026; algorithms.md §4.9): the Attention layer
    above (q, k, v projections, RoPE, o_proj, a KV cache as decode state) with softmax attention
    replaced by ``linattn.lla_attention``: each query outputs the intercept of a softmax-weighted
    ridge regression of the values on k_j - q_i (ridge_lambda -> inf gives this layer's softmax
    attention exactly). ridge_lambda is the authors' fixed lambda (default 10, FlashLLA's), or,
    with learn_ridge_lambda, the initial value of a per-token, per-head lambda
    softplus(lambda_proj(x) + bias) (the op returns its gradient). step() decodes with the op's
    recurrent form (the new query against its cache). solver and cg_* are the op's settings.
    No grouped-query attention or sliding window: the op takes neither."""

    def __init__(self, hidden_size: int = 2048, num_heads: int = 32, head_dim: int | None = None,
                 rope_theta: float | None = 10000.0, ridge_lambda: float = 10.0,
                 learn_ridge_lambda: bool = False, solver: str = "cg", cg_max_iters: int = 32,
                 cg_use_preconditioner: bool = False, layer_idx: int | None = None):
        super().__init__(hidden_size, num_heads, head_dim=head_dim, rope_theta=rope_theta,
                         layer_idx=layer_idx)
        if not ridge_lambda > 0:
            raise ValueError(f"LocalLinearAttention: ridge_lambda must be > 0, got {ridge_lambda}")
        self.ridge_lambda = ridge_lambda
        self.solver, self.cg_max_iters = solver, cg_max_iters
        self.cg_use_preconditioner = cg_use_preconditioner
        self.lambda_proj = None
        if learn_ridge_lambda:
            self.lambda_proj = nn.Linear(hidden_size, num_heads, bias=True)
            nn.init.zeros_(self.lambda_proj.weight)  # starts at ridge_lambda for every token
            with torch.no_grad():
                self.lambda_proj.bias.copy_(_inverse_softplus(torch.tensor(ridge_lambda)))

    def _attend(self, x, q, k, v, cached: bool, form: str):
        from .lla import lla_attention

        ridge = self.ridge_lambda
        if self.lambda_proj is not None:
            ridge = F.softplus(self.lambda_proj(x).float())  # [B, Tq, H]
        return lla_attention(q.contiguous(), k.contiguous(), v.contiguous(), ridge_lambda=ridge,
                             solver=self.solver, cg_max_iters=self.cg_max_iters,
                             cg_use_preconditioner=self.cg_use_preconditioner, form=form)


# Layers by the names models use (linattn.models.LMConfig.mixer).
MIXERS = {
    "gated_deltanet": GatedDeltaNet,
    "deltanet": DeltaNet,
    "gla": GatedLinearAttention,
    "hgrn2": HGRN2,
    "linear_attn": LinearAttention,
    "mamba2": Mamba2,
    "gated_deltaproduct": GatedDeltaProduct,
    "kda": KimiDeltaAttention,
    "rwkv7": RWKV7,
    "attention": Attention,
    "lla": LocalLinearAttention,
}
