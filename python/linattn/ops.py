"""fla's ``chunk_*`` / ``fused_recurrent_*`` entry points as torch autograd functions.

Every function here has fla's name, argument names, defaults, return values and ``[B, T, H, K]``
layout (docs/fla-compat.md lists them with the few differences), and runs linattn's C++ forms:
the forward through ``_core.forward`` and the backward through ``_core.backward``, so no Python
loop touches tokens or heads. The ``chunk_*`` functions run the chunk-parallel form, the
``fused_recurrent_*`` ones the token-by-token form; both differentiate with the op's chunk
backward (the reference backward where an op has no chunk form). float64 inputs run on the fp64
oracle, forward and backward, which is what ``torch.autograd.gradcheck`` sees.

Inputs are CPU tensors of any strides, read in place (a contiguous input is never copied);
outputs are allocated here and written by C++. Bad input raises ``ValueError``/``TypeError``
naming the function, the argument, what was expected and what was given.

``mixer(op, q, k, v, ...)`` is the one generic entry point behind them all, for any op of
``linattn.op_names()``.
"""

from __future__ import annotations

from typing import Any

import torch

from . import _core
from . import conv1d as _conv1d
from .reference import _backward, _forward

__all__ = [
    "mixer",
    "chunk_linear_attn",
    "fused_recurrent_linear_attn",
    "chunk_simple_gla",
    "fused_recurrent_simple_gla",
    "chunk_retention",
    "fused_recurrent_retention",
    "chunk_gla",
    "fused_recurrent_gla",
    "chunk_delta_rule",
    "fused_recurrent_delta_rule",
    "chunk_gated_delta_rule",
    "fused_recurrent_gated_delta_rule",
    "chunk_gated_delta_product",
    "fused_recurrent_gated_delta_product",
    "chunk_kda",
    "fused_recurrent_kda",
    "chunk_dplr_delta_rule",
    "fused_recurrent_dplr_delta_rule",
    "chunk_rwkv7",
    "fused_recurrent_rwkv7",
    "noncausal_linear_attn",
    "causal_conv1d",
]

# The differentiable inputs of an op, in the order the autograd function receives them.
_TENSOR_INPUTS = ("q", "k", "v", "g", "gk", "beta", "initial_state", "a", "b")
_GRAD_NAME = {"q": "dq", "k": "dk", "v": "dv", "g": "dg", "gk": "dgk", "beta": "dbeta",
              "initial_state": "dinitial_state", "a": "da", "b": "db"}


def _backward_form(op: str) -> str:
    """The form whose backward differentiates `op`: the chunk form where it exists (for the
    recurrent forward too: the same function, rounded differently), else the oracle."""
    return "chunk" if _core.has_form(op, "chunk", True) else "reference"


class _Call:
    """The non-tensor arguments of one mixer call, kept on the autograd context."""

    __slots__ = ("op", "form", "options")

    def __init__(self, op: str, form: str, options: dict[str, Any]):
        self.op, self.form, self.options = op, form, options


class _MixerFunction(torch.autograd.Function):
    """o, final_state = op(q, k, v, gates, initial_state) through the C++ forward and backward."""

    @staticmethod
    def forward(ctx, call: _Call, q, k, v, g, gk, beta, initial_state, a, b):
        o, final_state = _forward(call.op, call.form, q, k, v, g=g, gk=gk, beta=beta,
                                  initial_state=initial_state, a=a, b=b, **call.options)
        ctx.call = call
        ctx.save_for_backward(q, k, v, g, gk, beta, initial_state, a, b)
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None: no zero fill
        return o, final_state

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do, dfinal_state):
        saved = dict(zip(_TENSOR_INPUTS, ctx.saved_tensors))
        wanted = {n for n, need in zip(_TENSOR_INPUTS, ctx.needs_input_grad[1:]) if need}
        if not wanted or (do is None and dfinal_state is None):
            return (None,) * (1 + len(_TENSOR_INPUTS))
        q, v = saved["q"], saved["v"]
        if do is None:  # only final_state was used downstream
            do = v.new_zeros((q.shape[0], q.shape[1], v.shape[2], v.shape[3]))
        call = ctx.call
        grads = _backward(call.op, _backward_form(call.op), q, saved["k"], v, do, dfinal_state,
                          wanted=wanted, **{n: saved[n] for n in _TENSOR_INPUTS[3:]},
                          **call.options)
        return (None, *(grads.get(_GRAD_NAME[n]) for n in _TENSOR_INPUTS))


def _check_tensors(fn: str, tensors: dict[str, Any]) -> None:
    """What only the Python side can say clearly: a tensor that is not one, or not on the CPU."""
    for name, x in tensors.items():
        if x is None:
            continue
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor or None, got {type(x).__name__}")
        if x.device.type != "cpu":
            raise ValueError(f"{fn}: {name}: linattn runs on the CPU only; got a tensor on "
                             f"device {x.device}")


def mixer(op: str, q, k, v, *, form: str = "chunk", g=None, gk=None, beta=None, a=None, b=None,
          scale=None, initial_state=None, output_final_state: bool = False, cu_seqlens=None,
          normalize: bool = False, use_qk_l2norm_in_kernel: bool = False,
          num_householder: int = 1, name: str | None = None):
    """Runs `form` ('chunk', 'recurrent' or 'reference') of `op` (a name of
    ``linattn.op_names()``) on torch tensors; differentiable in q, k, v, g, gk, beta,
    initial_state, a and b. Returns ``(o, final_state)``, final_state None unless
    output_final_state. `name` is the function named in error messages (default: the op)."""
    name = name or op
    tensors = dict(q=q, k=k, v=v, g=g, gk=gk, beta=beta, initial_state=initial_state, a=a, b=b)
    _check_tensors(name, {**tensors, "cu_seqlens": cu_seqlens})
    options = dict(scale=scale, output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                   normalize=normalize, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                   num_householder=num_householder)
    needs_graph = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in tensors.values())
    if not needs_graph:  # no_grad, inference_mode or constants: no autograd node, nothing saved
        return _forward(op, form, **tensors, **options)
    return _MixerFunction.apply(_Call(op, form, options), *tensors.values())


# ----------------------------------------------------------------------------------------------
# fla's entry points (flash-linear-attention 0.6.0): fla's parameters in fla's order with fla's
# defaults (tests/python/test_fla_compat.py reads them from fla's released source). Arguments
# linattn cannot honour raise ValueError naming the argument (never a silent different answer);
# arguments that only steer fla's GPU kernels are accepted and have no effect on the CPU.


def _gpu_hints(fn: str, cp_context=None, **hints) -> None:
    """fla's GPU-only arguments: cu_seqlens_cpu (a host copy of cu_seqlens that spares a device
    sync), chunk_indices (precomputed varlen chunk indices), chunk_size, disable_recompute,
    max_num_seqs, safe_gate (kernel choices) change nothing here. cp_context (context
    parallelism across GPUs) has no CPU meaning: only None."""
    del hints
    if cp_context is not None:
        raise ValueError(f"{fn}: cp_context (context parallelism) is not supported: pass None")


def _fla_kwargs(fn: str, kwargs: dict[str, Any], *, state_v_first: bool = False) -> bool:
    """What fla reads from its ``**kwargs``: head_first (removed from fla: only False),
    transpose_state_layout (fla's deprecated name of state_v_first), and the GPU hints of
    _gpu_hints. Anything else is a TypeError, as a misspelt keyword should be. Returns
    state_v_first."""
    if kwargs.pop("head_first", False):
        raise ValueError(f"{fn}: head_first=True is not supported: inputs are [B, T, H, ...] "
                         "(fla's only layout)")
    if "transpose_state_layout" in kwargs:
        if state_v_first:
            raise ValueError(f"{fn}: give state_v_first or transpose_state_layout (its "
                             "deprecated name), not both")
        state_v_first = bool(kwargs.pop("transpose_state_layout"))
    _gpu_hints(fn, **{n: kwargs.pop(n) for n in _GPU_HINTS if n in kwargs})
    if kwargs:
        raise TypeError(f"{fn}: unexpected keyword argument(s) {', '.join(sorted(kwargs))}")
    return state_v_first


_GPU_HINTS = ("cu_seqlens_cpu", "chunk_indices", "chunk_size", "disable_recompute",
              "max_num_seqs", "safe_gate", "cp_context")


def _unsupported(fn: str, name: str, value, why: str) -> None:
    if value is not None and value is not False:
        raise ValueError(f"{fn}: {name} is not supported ({why}); got {_describe(value)}")


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {list(x.shape)}"
    return repr(x)


def _state_v_first(mix, initial_state, state_v_first: bool):
    """fla's state_v_first=True stores states as [N, H, V, K]: run on the transposed views
    (no copy) and hand the final state back transposed."""
    if not state_v_first:
        return mix(initial_state)
    o, final_state = mix(None if initial_state is None else initial_state.transpose(-1, -2))
    return o, None if final_state is None else final_state.transpose(-1, -2)


def _reversed_tokens(cu_seqlens, T: int):
    """The token index that reverses time within every sequence (of [B, T] rows, or of the
    packed sequences of cu_seqlens)."""
    t = torch.arange(T)
    if cu_seqlens is None:
        return T - 1 - t
    cu = cu_seqlens.to(torch.int64)
    seq = torch.searchsorted(cu[1:], t, right=True)
    return cu[seq] + cu[seq + 1] - 1 - t


def _run_reversed(mix, tensors: dict[str, Any], cu_seqlens, reverse: bool):
    """fla's reverse=True runs the recurrence from each sequence's last token to its first.
    That is the forward recurrence on time-reversed inputs with the output reversed back; the
    reversal is an index copy (torch has no negative strides; measured +19% on
    fused_recurrent_gla at T=4096, K=V=128), the recurrence stays in C++."""
    if not reverse:
        return mix(**tensors)
    index = _reversed_tokens(cu_seqlens, tensors["q"].shape[1])
    flipped = {n: None if x is None else x.index_select(1, index) for n, x in tensors.items()}
    o, final_state = mix(**flipped)
    return o.index_select(1, index), final_state


def _head_decay(fn: str, g, g_gamma, q):
    """simple_gla's decay: per token `g` [B, T, H], or a fixed per-head `g_gamma` [H] broadcast
    to [B, T, H] as a stride-0 view (no copy; its gradient sums over B and T)."""
    if g_gamma is None:
        return g
    if g is not None:
        raise ValueError(f"{fn}: give g or g_gamma, not both")
    _check_tensors(fn, {"g_gamma": g_gamma})
    if g_gamma.dim() != 1:
        raise ValueError(f"{fn}: g_gamma must have shape [H], got {list(g_gamma.shape)}")
    return g_gamma.expand(q.shape[0], q.shape[1], g_gamma.shape[0])


def _linear_attn(fn, form, q, k, v, scale, initial_state, output_final_state, reverse,
                 normalize, cu_seqlens):
    """chunk_/fused_recurrent_linear_attn. With normalize, fla's state is the pair
    (kv [N, H, K, V], z [N, 1, H, K]), z the running key sum of the denominator, and fla
    returns that pair whenever normalize (kv None unless output_final_state)."""
    z0 = None
    if isinstance(initial_state, (tuple, list)):
        if not normalize or len(initial_state) != 2:
            raise ValueError(f"{fn}: a tuple initial_state is the (kv, z) state of "
                             "normalize=True; with normalize=False pass the kv tensor")
        initial_state, z0 = initial_state
        _check_tensors(fn, {"initial_state[1]": z0})

    def mix(q, k, v):
        if z0 is not None:  # continue the key sum: one leading key z0 (value 0) per sequence
            q, k, v, drop = _lead_with_key_sum(fn, q, k, v, z0, cu_seqlens)
            cu = None if cu_seqlens is None else cu_seqlens + torch.arange(
                len(cu_seqlens), dtype=cu_seqlens.dtype)
        else:
            drop, cu = None, cu_seqlens
        o, s = mixer("linear_attn", q, k, v, form=form, scale=scale, initial_state=initial_state,
                     output_final_state=output_final_state, normalize=normalize,
                     cu_seqlens=cu, name=fn)
        return (o if drop is None else o.index_select(1, drop)), s

    o, s = _run_reversed(mix, dict(q=q, k=k, v=v), cu_seqlens, reverse)
    if not normalize:
        return o, s
    return o, (s, _key_sum(k, z0, cu_seqlens))


def _lead_with_key_sum(fn, q, k, v, z0, cu_seqlens):
    """q, k, v with one extra leading token per sequence whose key is z0 [N, 1, H, K] (value
    and query 0): the normaliser's key sum then starts at z0 and the kv state is unchanged.
    Returns the longer q, k, v and the index of the original tokens among the rows."""
    if z0.dim() != 4 or z0.shape[1] != 1:
        raise ValueError(f"{fn}: the z state must have shape [N, 1, H, K], got "
                         f"{list(z0.shape)}")
    B, T = q.shape[:2]
    if cu_seqlens is None:
        keep = torch.arange(1, T + 1)
        lead = [torch.zeros_like(q[:, :1]), z0.to(k.dtype), torch.zeros_like(v[:, :1])]
        return (*(torch.cat([a, x], 1) for a, x in zip(lead, (q, k, v))), keep)
    N = len(cu_seqlens) - 1
    cu = cu_seqlens.to(torch.int64)
    seq = torch.searchsorted(cu[1:], torch.arange(T), right=True)
    keep = torch.arange(T) + seq + 1              # token t moves past its sequence's lead
    starts = cu[:-1] + torch.arange(N)           # where each lead goes
    order = torch.empty(T + N, dtype=torch.int64)
    order[keep], order[starts] = torch.arange(T), T + torch.arange(N)
    lead = [q.new_zeros(1, N, *q.shape[2:]), z0.to(k.dtype).transpose(0, 1),
            v.new_zeros(1, N, *v.shape[2:])]
    return (*(torch.cat([x, a], 1).index_select(1, order) for a, x in zip(lead, (q, k, v))),
            keep)


def _key_sum(k, z0, cu_seqlens):
    """fla's z state: z0 plus the sum of each sequence's keys, [N, 1, H, K]."""
    if cu_seqlens is None:
        z = k.sum(1, keepdim=True)
    else:
        cu = cu_seqlens.to(torch.int64)
        seq = torch.searchsorted(cu[1:], torch.arange(k.shape[1]), right=True)
        z = k.new_zeros(len(cu) - 1, *k.shape[2:]).index_add(0, seq, k[0])[:, None]
    return z if z0 is None else z + z0


def chunk_linear_attn(q, k, v, scale=None, initial_state=None, output_final_state=False,
                      normalize=True, cu_seqlens=None):
    """fla.ops.linear_attn.chunk_linear_attn: S_t = S_{t-1} + k_t v_t^T, o_t = scale S_t^T q_t,
    divided by scale q_t . z_t (z_t the running key sum) when normalize (fla's default here);
    then the state is the pair (S, z)."""
    return _linear_attn("chunk_linear_attn", "chunk", q, k, v, scale, initial_state,
                        output_final_state, False, normalize, cu_seqlens)


def fused_recurrent_linear_attn(q, k, v, scale=None, initial_state=None,
                                output_final_state=False, reverse=False, normalize=False,
                                cu_seqlens=None):
    """fla.ops.linear_attn.fused_recurrent_linear_attn (token by token; reverse runs each
    sequence from its end)."""
    return _linear_attn("fused_recurrent_linear_attn", "recurrent", q, k, v, scale,
                        initial_state, output_final_state, reverse, normalize, cu_seqlens)


def _simple_gla(fn, form, q, k, v, g, g_gamma, scale, initial_state, output_final_state,
                reverse, state_v_first, cu_seqlens):
    """chunk_/fused_recurrent_simple_gla: no decay at all (g and g_gamma None) is linear_attn."""
    g = _head_decay(fn, g, g_gamma, q)
    op = "linear_attn" if g is None else "simple_gla"
    return _state_v_first(lambda s0: _run_reversed(
        lambda **x: mixer(op, form=form, scale=scale, initial_state=s0,
                          output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                          name=fn, **x),
        dict(q=q, k=k, v=v, g=g), cu_seqlens, reverse), initial_state, state_v_first)


def chunk_simple_gla(q, k, v, g=None, g_gamma=None, scale=None, initial_state=None,
                     output_final_state=False, state_v_first=False, cu_seqlens=None,
                     cu_seqlens_cpu=None, **kwargs):
    """fla.ops.simple_gla.chunk_simple_gla: S_t = exp(g_t) S_{t-1} + k_t v_t^T, g [B, T, H]
    (or a fixed g_gamma [H])."""
    fn = "chunk_simple_gla"
    state_v_first = _fla_kwargs(fn, kwargs, state_v_first=state_v_first)
    return _simple_gla(fn, "chunk", q, k, v, g, g_gamma, scale, initial_state,
                       output_final_state, False, state_v_first, cu_seqlens)


def fused_recurrent_simple_gla(q, k, v, g=None, g_gamma=None, scale=None, initial_state=None,
                               output_final_state=False, reverse=False, state_v_first=False,
                               cu_seqlens=None, **kwargs):
    """fla.ops.simple_gla.fused_recurrent_simple_gla (token by token)."""
    fn = "fused_recurrent_simple_gla"
    state_v_first = _fla_kwargs(fn, kwargs, state_v_first=state_v_first)
    return _simple_gla(fn, "recurrent", q, k, v, g, g_gamma, scale, initial_state,
                       output_final_state, reverse, state_v_first, cu_seqlens)


def chunk_retention(q, k, v, scale=None, initial_state=None, output_final_state=False,
                    cu_seqlens=None, **kwargs):
    """fla.ops.retention.chunk_retention: RetNet's fixed decay 1 - 2^(-5-h) per head h."""
    fn = "chunk_retention"
    state_v_first = _fla_kwargs(fn, kwargs)
    return _state_v_first(lambda s0: mixer(
        "retention", q, k, v, scale=scale, initial_state=s0,
        output_final_state=output_final_state, cu_seqlens=cu_seqlens, name=fn),
        initial_state, state_v_first)


def fused_recurrent_retention(q, k, v, scale=None, initial_state=None, output_final_state=False,
                              reverse=False, state_v_first=False, cu_seqlens=None, **kwargs):
    """fla.ops.retention.fused_recurrent_retention (token by token)."""
    fn = "fused_recurrent_retention"
    state_v_first = _fla_kwargs(fn, kwargs, state_v_first=state_v_first)
    return _state_v_first(lambda s0: _run_reversed(
        lambda **x: mixer("retention", form="recurrent", scale=scale, initial_state=s0,
                          output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                          name=fn, **x),
        dict(q=q, k=k, v=v), cu_seqlens, reverse), initial_state, state_v_first)


def chunk_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False,
              state_v_first=False, cu_seqlens=None, cu_seqlens_cpu=None):
    """fla.ops.gla.chunk_gla: S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T, g [B, T, H, K]."""
    return _state_v_first(lambda s0: mixer(
        "gla", q, k, v, gk=g, scale=scale, initial_state=s0,
        output_final_state=output_final_state, cu_seqlens=cu_seqlens, name="chunk_gla"),
        initial_state, state_v_first)


def fused_recurrent_gla(q, k, v, gk=None, gv=None, scale=None, initial_state=None,
                        output_final_state=False, reverse=False, state_v_first=False,
                        cu_seqlens=None, **kwargs):
    """fla.ops.gla.fused_recurrent_gla (token by token): per-key decay gk; no gk is
    linear_attn. gv (a per-value decay) is unsupported."""
    fn = "fused_recurrent_gla"
    state_v_first = _fla_kwargs(fn, kwargs, state_v_first=state_v_first)
    _unsupported(fn, "gv", gv, "linattn's gla decays the key channels only: pass gk")
    op = "linear_attn" if gk is None else "gla"
    return _state_v_first(lambda s0: _run_reversed(
        lambda **x: mixer(op, form="recurrent", scale=scale, initial_state=s0,
                          output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                          name=fn, **x),
        dict(q=q, k=k, v=v, gk=gk), cu_seqlens, reverse), initial_state, state_v_first)


def chunk_delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False,
                     use_qk_l2norm_in_kernel=False, cu_seqlens=None, cu_seqlens_cpu=None,
                     **kwargs):
    """fla.ops.delta_rule.chunk_delta_rule: S_t = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T."""
    fn = "chunk_delta_rule"
    state_v_first = _fla_kwargs(fn, kwargs)
    return _state_v_first(lambda s0: mixer(
        "delta_rule", q, k, v, beta=beta, scale=scale, initial_state=s0,
        output_final_state=output_final_state, cu_seqlens=cu_seqlens,
        use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, name=fn), initial_state, state_v_first)


def _ones_beta(beta, v):
    """fla's beta=None: a step of 1 for every token and value head."""
    return v.new_ones(v.shape[:3]) if beta is None else beta


def fused_recurrent_delta_rule(q, k, v, beta=None, scale=None, initial_state=None,
                               output_final_state=False, use_qk_l2norm_in_kernel=False,
                               cu_seqlens=None):
    """fla.ops.delta_rule.fused_recurrent_delta_rule (token by token; beta None means 1)."""
    return mixer("delta_rule", q, k, v, form="recurrent", beta=_ones_beta(beta, v), scale=scale,
                 initial_state=initial_state, output_final_state=output_final_state,
                 cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                 name="fused_recurrent_delta_rule")


def _gate_options(fn: str, g, beta, *, use_gate_in_kernel=False, A_log=None, dt_bias=None,
                  use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False, lower_bound=None):
    """fla's in-kernel gate options, applied with torch's elementwise ops (differentiable by
    autograd) before the C++ op; O(B T H K) elementwise work next to the op's O(B T H K V)
    (measured: 3% of chunk_kda's forward at B=1, T=4096, H=4, K=V=128, 2-core Ice Lake):
    use_gate_in_kernel: g <- -exp(A_log) softplus(g + dt_bias) (Mamba2's decay), or with a
    lower_bound (KDA) g <- lower_bound sigmoid(exp(A_log) (g + dt_bias)), in [lower_bound, 0);
    use_beta_sigmoid_in_kernel: beta <- sigmoid(beta), times 2 with allow_neg_eigval."""
    if use_gate_in_kernel:
        if A_log is None and lower_bound is None:
            raise ValueError(f"{fn}: use_gate_in_kernel=True needs A_log (or lower_bound)")
        _check_tensors(fn, {"A_log": A_log, "dt_bias": dt_bias})
        if g.dim() == 4:  # KDA: per-channel logits [B, T, HV, K], dt_bias [HV * K], A_log [HV]
            A_log = None if A_log is None else A_log.reshape(-1, 1)
            dt_bias = None if dt_bias is None else dt_bias.reshape(g.shape[-2:])
        g = g if dt_bias is None else g + dt_bias
        wide = torch.promote_types(g.dtype, torch.float32)  # bf16 logits: the decay in fp32
        g = g.to(wide)
        if lower_bound is None:
            g = -A_log.to(wide).exp() * torch.nn.functional.softplus(g)
        else:
            g = lower_bound * torch.sigmoid(g if A_log is None else A_log.to(wide).exp() * g)
    elif A_log is not None or dt_bias is not None:
        raise ValueError(f"{fn}: A_log and dt_bias are only used with use_gate_in_kernel=True")
    if use_beta_sigmoid_in_kernel:
        beta = beta.sigmoid() * (2.0 if allow_neg_eigval else 1.0)
    elif allow_neg_eigval:
        raise ValueError(f"{fn}: allow_neg_eigval=True requires use_beta_sigmoid_in_kernel=True "
                         "(otherwise pass beta in [0, 2])")
    return g, beta


def chunk_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None,
                           output_final_state=False, use_qk_l2norm_in_kernel=False,
                           use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False,
                           state_v_first=False, cu_seqlens=None, cu_seqlens_cpu=None,
                           chunk_indices=None, cp_context=None, **kwargs):
    """fla.ops.gated_delta_rule.chunk_gated_delta_rule:
    S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T; v may have HV = m H heads.
    fla's keyword catch-all takes use_gate_in_kernel, A_log [HV] and dt_bias [HV]."""
    fn = "chunk_gated_delta_rule"
    _gpu_hints(fn, cp_context)
    gate = {n: kwargs.pop(n) for n in ("use_gate_in_kernel", "A_log", "dt_bias") if n in kwargs}
    state_v_first = _fla_kwargs(fn, kwargs, state_v_first=state_v_first)
    g, beta = _gate_options(fn, g, beta, use_beta_sigmoid_in_kernel=use_beta_sigmoid_in_kernel,
                            allow_neg_eigval=allow_neg_eigval, **gate)
    return _state_v_first(lambda s0: mixer(
        "gated_delta_rule", q, k, v, g=g, beta=beta, scale=scale, initial_state=s0,
        output_final_state=output_final_state, cu_seqlens=cu_seqlens,
        use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, name=fn), initial_state, state_v_first)


def fused_recurrent_gated_delta_rule(q, k, v, g=None, gk=None, gv=None, beta=None, scale=None,
                                     initial_state=None, output_final_state=False,
                                     use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False,
                                     A_log=None, dt_bias=None, use_beta_sigmoid_in_kernel=False,
                                     allow_neg_eigval=False, state_v_first=False,
                                     cu_seqlens=None, **kwargs):
    """fla.ops.gated_delta_rule.fused_recurrent_gated_delta_rule (token by token): g [B, T, HV]
    a per-head log decay, gk [B, T, HV, K] a per-key-channel one (both: their sum; gk runs
    KDA's op), none the ungated delta rule; beta None means 1. gv (a per-value-channel decay)
    is unsupported."""
    fn = "fused_recurrent_gated_delta_rule"
    state_v_first = _fla_kwargs(fn, kwargs, state_v_first=state_v_first)
    _unsupported(fn, "gv", gv, "linattn's delta rules decay the key channels only: pass g or gk")
    if beta is None and use_beta_sigmoid_in_kernel:
        raise ValueError(f"{fn}: use_beta_sigmoid_in_kernel=True needs beta (logits)")
    if use_gate_in_kernel and gk is not None:
        raise ValueError(f"{fn}: use_gate_in_kernel=True transforms g; with gk pass log decays")
    g, beta = _gate_options(fn, g, _ones_beta(beta, v), use_gate_in_kernel=use_gate_in_kernel,
                            A_log=A_log, dt_bias=dt_bias,
                            use_beta_sigmoid_in_kernel=use_beta_sigmoid_in_kernel,
                            allow_neg_eigval=allow_neg_eigval)
    if gk is not None:  # per-channel decay: KDA's op, the head decay folded into every channel
        op, decay = "kda", dict(gk=gk if g is None else gk + g[..., None])
    else:
        op, decay = ("delta_rule", {}) if g is None else ("gated_delta_rule", dict(g=g))
    return _state_v_first(lambda s0: mixer(
        op, q, k, v, form="recurrent", beta=beta, scale=scale, initial_state=s0,
        output_final_state=output_final_state, cu_seqlens=cu_seqlens,
        use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, name=fn, **decay),
        initial_state, state_v_first)


def chunk_gated_delta_product(q, k, v, g, beta, num_householder, scale=None, initial_state=None,
                              output_final_state=False, use_qk_l2norm_in_kernel=False,
                              cu_seqlens=None, cu_seqlens_cpu=None, cp_context=None):
    """fla.ops.gated_delta_product.chunk_gated_delta_product: num_householder delta steps per
    token (k, v, beta have T * num_householder rows) after the decay g [B, T, H] (None: none)."""
    _gpu_hints("chunk_gated_delta_product", cp_context)
    return mixer("delta_product", q, k, v, g=g, beta=beta, scale=scale,
                 initial_state=initial_state, output_final_state=output_final_state,
                 cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                 num_householder=num_householder, name="chunk_gated_delta_product")


def fused_recurrent_gated_delta_product(q, k, v, g, beta, num_householder, scale=None,
                                        initial_state=None, output_final_state=False,
                                        use_qk_l2norm_in_kernel=False, cu_seqlens=None):
    """DeltaProduct token by token (decode). fla has no such entry point; the arguments are
    chunk_gated_delta_product's."""
    return mixer("delta_product", q, k, v, form="recurrent", g=g, beta=beta, scale=scale,
                 initial_state=initial_state, output_final_state=output_final_state,
                 cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                 num_householder=num_householder, name="fused_recurrent_gated_delta_product")


def _kda(fn, form, q, k, v, g, beta, scale, initial_state, output_final_state,
         use_qk_l2norm_in_kernel, state_v_first, cu_seqlens, gate):
    g, beta = _gate_options(fn, g, beta, **gate)
    return _state_v_first(lambda s0: mixer(
        "kda", q, k, v, form=form, gk=g, beta=beta, scale=scale, initial_state=s0,
        output_final_state=output_final_state, cu_seqlens=cu_seqlens,
        use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, name=fn), initial_state, state_v_first)


def _check_lower_bound(fn: str, lower_bound, safe_gate: bool, use_gate_in_kernel: bool) -> None:
    """fla's rule: safe_gate with the gate in the kernel bounds the gate to [lower_bound, 0),
    lower_bound in [-5, 0)."""
    if safe_gate and use_gate_in_kernel:
        if lower_bound is None:
            raise ValueError(f"{fn}: safe_gate=True with use_gate_in_kernel=True needs "
                             "lower_bound")
        if not -5 <= lower_bound < 0:
            raise ValueError(f"{fn}: lower_bound must be in [-5, 0), got {lower_bound}")


def chunk_kda(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
              use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False,
              use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False, safe_gate=False,
              lower_bound=None, disable_recompute=False, return_intermediate_states=False,
              state_v_first=False, cu_seqlens=None, cu_seqlens_cpu=None, cp_context=None,
              use_graph=False, max_num_seqs=None, **kwargs):
    """fla.ops.kda.chunk_kda (Kimi Delta Attention): the gated delta rule with a per-key-channel
    log decay g [B, T, HV, K]. use_gate_in_kernel takes A_log [HV] and dt_bias [HV * K] as
    keywords (as fla), and lower_bound switches it to the bounded gate;
    return_intermediate_states and use_graph are not supported."""
    fn = "chunk_kda"
    _gpu_hints(fn, cp_context)
    _unsupported(fn, "return_intermediate_states", return_intermediate_states,
                 "the per-chunk states stay inside the C++ op")
    _unsupported(fn, "use_graph", use_graph, "no device graphs on the CPU")
    _check_lower_bound(fn, lower_bound, safe_gate, use_gate_in_kernel)
    gate = {n: kwargs.pop(n) for n in ("A_log", "dt_bias") if n in kwargs}
    state_v_first = _fla_kwargs(fn, kwargs, state_v_first=state_v_first)
    gate.update(use_gate_in_kernel=use_gate_in_kernel,
                use_beta_sigmoid_in_kernel=use_beta_sigmoid_in_kernel,
                allow_neg_eigval=allow_neg_eigval,
                lower_bound=lower_bound if use_gate_in_kernel else None)
    return _kda(fn, "chunk", q, k, v, g, beta, scale, initial_state, output_final_state,
                use_qk_l2norm_in_kernel, state_v_first, cu_seqlens, gate)


def fused_recurrent_kda(q, k, v, g, beta, A_log=None, dt_bias=None, scale=None,
                        initial_state=None, output_final_state=False,
                        use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False,
                        use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False,
                        lower_bound=None, state_v_first=False, cu_seqlens=None, **kwargs):
    """fla.ops.kda.fused_recurrent_kda (token by token)."""
    fn = "fused_recurrent_kda"
    state_v_first = _fla_kwargs(fn, kwargs, state_v_first=state_v_first)
    gate = dict(use_gate_in_kernel=use_gate_in_kernel, A_log=A_log, dt_bias=dt_bias,
                use_beta_sigmoid_in_kernel=use_beta_sigmoid_in_kernel,
                allow_neg_eigval=allow_neg_eigval,
                lower_bound=lower_bound if use_gate_in_kernel else None)
    return _kda(fn, "recurrent", q, k, v, g, beta, scale, initial_state, output_final_state,
                use_qk_l2norm_in_kernel, state_v_first, cu_seqlens, gate)


def _check_decay_bound(fn: str, lower_bound) -> None:
    """dplr's lower_bound promises lower_bound <= gk < 0 to fla's kernel choice (no effect on
    the result); fla refuses a non-negative one."""
    if lower_bound is not None and lower_bound >= 0:
        raise ValueError(f"{fn}: lower_bound must be negative (gk is a log decay < 0), got "
                         f"{lower_bound}")


def chunk_dplr_delta_rule(q, k, v, a, b, gk, scale=None, initial_state=None,
                          output_final_state=False, cu_seqlens=None, cu_seqlens_cpu=None,
                          safe_gate=False, chunk_size=None, disable_recompute=False,
                          cp_context=None, lower_bound=None, **kwargs):
    """fla.ops.generalized_delta_rule.chunk_dplr_delta_rule: S_t = diag(exp(gk_t)) S_{t-1}
    + b_t (S_{t-1}^T a_t)^T + k_t v_t^T (RWKV-7 with q = r, gk = w)."""
    fn = "chunk_dplr_delta_rule"
    _gpu_hints(fn, cp_context)
    _check_decay_bound(fn, lower_bound)
    _fla_kwargs(fn, kwargs)
    return mixer("dplr_delta_rule", q, k, v, a=a, b=b, gk=gk, scale=scale,
                 initial_state=initial_state, output_final_state=output_final_state,
                 cu_seqlens=cu_seqlens, name=fn)


def fused_recurrent_dplr_delta_rule(q, k, v, a, b, gk, scale=None, initial_state=None,
                                    output_final_state=False, reverse=False, cu_seqlens=None):
    """fla.ops.generalized_delta_rule.fused_recurrent_dplr_delta_rule (token by token)."""
    fn = "fused_recurrent_dplr_delta_rule"
    return _run_reversed(
        lambda **x: mixer("dplr_delta_rule", form="recurrent", scale=scale,
                          initial_state=initial_state, output_final_state=output_final_state,
                          cu_seqlens=cu_seqlens, name=fn, **x),
        dict(q=q, k=k, v=v, a=a, b=b, gk=gk), cu_seqlens, reverse)


def chunk_rwkv7(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False,
                cu_seqlens=None, cu_seqlens_cpu=None, safe_gate=False, chunk_size=None,
                disable_recompute=False, cp_context=None, lower_bound=None):
    """fla.ops.rwkv7.chunk_rwkv7: the DPLR rule with q = r (receptance) and gk = w (per-channel
    log decay); scale 1 by default, as fla."""
    fn = "chunk_rwkv7"
    _gpu_hints(fn, cp_context)
    _check_decay_bound(fn, lower_bound)
    return mixer("dplr_delta_rule", r, k, v, a=a, b=b, gk=w, scale=scale,
                 initial_state=initial_state, output_final_state=output_final_state,
                 cu_seqlens=cu_seqlens, name=fn)


def fused_recurrent_rwkv7(r, w, k, v, a, b, scale=None, initial_state=None,
                          output_final_state=True, cu_seqlens=None):
    """fla.ops.rwkv7.fused_recurrent_rwkv7: chunk_rwkv7 token by token (the decode form); unlike
    chunk_rwkv7, fla's defaults here are scale K^-0.5 and output_final_state=True."""
    return mixer("dplr_delta_rule", r, k, v, form="recurrent", a=a, b=b, gk=w, scale=scale,
                 initial_state=initial_state, output_final_state=output_final_state,
                 cu_seqlens=cu_seqlens, name="fused_recurrent_rwkv7")


def noncausal_linear_attn(q, k, v, scale=None, normalize=False, cu_seqlens=None):
    """Bidirectional linear attention (LinFusion, LiT): o_t = scale q_t^T sum_s k_s v_s^T over
    t's whole sequence. No state: returns (o, None). No fla counterpart."""
    return mixer("noncausal_linear_attn", q, k, v, scale=scale, normalize=normalize,
                 cu_seqlens=cu_seqlens, name="noncausal_linear_attn")


# ----------------------------------------------------------------------------------------------
# The short convolution before the mixers.

_CONV_INPUTS = ("x", "weight", "bias", "residual", "initial_state")


class _Conv1dFunction(torch.autograd.Function):
    """y, final_state = causal_conv1d(x, weight, bias, residual, initial_state) through the C++
    forward and backward (linattn.conv1d)."""

    @staticmethod
    def forward(ctx, options: dict, x, weight, bias, residual, initial_state):
        y, final_state = _conv1d.causal_conv1d(x, weight, bias, residual, initial_state,
                                               **options)
        ctx.options = options
        ctx.save_for_backward(x, weight, bias, residual, initial_state)
        ctx.set_materialize_grads(False)
        return y, final_state

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy, dfinal_state):
        saved = dict(zip(_CONV_INPUTS, ctx.saved_tensors))
        if dy is None and dfinal_state is None:
            return (None,) * (1 + len(_CONV_INPUTS))
        x = saved["x"]
        dy = x.new_zeros(x.shape) if dy is None else dy
        options = {n: v for n, v in ctx.options.items() if n != "output_final_state"}
        grads = _conv1d.causal_conv1d_backward(
            x, saved["weight"], dy, dfinal_state, bias=saved["bias"], residual=saved["residual"],
            initial_state=saved["initial_state"], **options)
        return (None, *(grads.get("d" + n) if need else None
                        for n, need in zip(_CONV_INPUTS, ctx.needs_input_grad[1:])))


def causal_conv1d(x, weight=None, bias=None, residual=None, initial_state=None,
                  output_final_state=False, activation=None, backend="triton", cu_seqlens=None,
                  cu_seqlens_cpu=None, chunk_indices=None, cp_context=None, *, form="chunk",
                  **kwargs):
    """fla.modules.convolution.causal_conv1d as a torch autograd function: x [B, T, D],
    weight [D, W] (required), bias [D], residual [B, T, D] (added after the activation),
    initial_state [N, D, W] (fla's cache: the last W inputs); activation None or
    'silu'/'swish'. Returns (y [B, T, D], final_state [N, D, W] or None). Differentiable in x,
    weight, bias, residual and initial_state. fla's backend, cu_seqlens_cpu and chunk_indices
    have no effect. (linattn.causal_conv1d is the same call without autograd.)"""
    _conv1d.check_fla_arguments(weight, backend, cp_context, kwargs)
    tensors = dict(x=x, weight=weight, bias=bias, residual=residual, initial_state=initial_state)
    _check_tensors("causal_conv1d", {**tensors, "cu_seqlens": cu_seqlens})
    options = dict(output_final_state=output_final_state, activation=activation,
                   cu_seqlens=cu_seqlens, form=form)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                       for t in tensors.values()):
        return _Conv1dFunction.apply(options, *tensors.values())
    return _conv1d.causal_conv1d(**tensors, **options)
