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
# fla's entry points. Arguments fla has and linattn does not support raise ValueError (never a
# silent different answer); fla's keyword catch-all accepts its deprecated/GPU-only extras.


def _fla_extras(fn: str, kwargs: dict[str, Any]) -> None:
    """fla's ``**kwargs``: head_first (deprecated there; only False here), cu_seqlens_cpu (a
    host copy that saves a GPU synchronisation: nothing to do on the CPU), cp_context (context
    parallelism: only None). Anything else is a TypeError, as a misspelt keyword should be."""
    if kwargs.pop("head_first", False):
        raise ValueError(f"{fn}: head_first=True is not supported: inputs are [B, T, H, ...] "
                         "(fla's default layout)")
    kwargs.pop("cu_seqlens_cpu", None)
    if kwargs.pop("cp_context", None) is not None:
        raise ValueError(f"{fn}: cp_context (context parallelism) is not supported: pass None")
    if kwargs:
        raise TypeError(f"{fn}: unexpected keyword argument(s) {', '.join(sorted(kwargs))}")


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


def chunk_linear_attn(q, k, v, scale=None, initial_state=None, output_final_state=False,
                      normalize=True, *, cu_seqlens=None, **kwargs):
    """fla.ops.linear_attn.chunk_linear_attn: S_t = S_{t-1} + k_t v_t^T, o_t = scale S_t^T q_t,
    divided by scale q_t . sum_{s<=t} k_s when normalize (fla's default here). cu_seqlens is a
    linattn extra (keyword-only)."""
    _fla_extras("chunk_linear_attn", kwargs)
    return mixer("linear_attn", q, k, v, scale=scale, initial_state=initial_state,
                 output_final_state=output_final_state, normalize=normalize,
                 cu_seqlens=cu_seqlens, name="chunk_linear_attn")


def fused_recurrent_linear_attn(q, k, v, scale=None, initial_state=None,
                                output_final_state=False, normalize=False, *, cu_seqlens=None,
                                **kwargs):
    """fla.ops.linear_attn.fused_recurrent_linear_attn (token by token)."""
    _fla_extras("fused_recurrent_linear_attn", kwargs)
    return mixer("linear_attn", q, k, v, form="recurrent", scale=scale,
                 initial_state=initial_state, output_final_state=output_final_state,
                 normalize=normalize, cu_seqlens=cu_seqlens, name="fused_recurrent_linear_attn")


def _simple_gla(fn, form, q, k, v, g, g_gamma, scale, initial_state, output_final_state,
                state_v_first, cu_seqlens):
    """chunk_/fused_recurrent_simple_gla: no decay at all (g and g_gamma None) is linear_attn."""
    g = _head_decay(fn, g, g_gamma, q)
    op = "linear_attn" if g is None else "simple_gla"
    return _state_v_first(lambda s0: mixer(
        op, q, k, v, form=form, g=g, scale=scale, initial_state=s0,
        output_final_state=output_final_state, cu_seqlens=cu_seqlens, name=fn),
        initial_state, state_v_first)


def chunk_simple_gla(q, k, v, g=None, g_gamma=None, scale=None, initial_state=None,
                     output_final_state=False, state_v_first=False, cu_seqlens=None, **kwargs):
    """fla.ops.simple_gla.chunk_simple_gla: S_t = exp(g_t) S_{t-1} + k_t v_t^T, g [B, T, H]
    (or a fixed g_gamma [H])."""
    _fla_extras("chunk_simple_gla", kwargs)
    return _simple_gla("chunk_simple_gla", "chunk", q, k, v, g, g_gamma, scale, initial_state,
                       output_final_state, state_v_first, cu_seqlens)


def fused_recurrent_simple_gla(q, k, v, g=None, g_gamma=None, scale=None, initial_state=None,
                               output_final_state=False, reverse=False, state_v_first=False,
                               cu_seqlens=None, **kwargs):
    """fla.ops.simple_gla.fused_recurrent_simple_gla (token by token; reverse unsupported)."""
    fn = "fused_recurrent_simple_gla"
    _fla_extras(fn, kwargs)
    _unsupported(fn, "reverse", reverse, "linattn's recurrences run forward in time")
    return _simple_gla(fn, "recurrent", q, k, v, g, g_gamma, scale, initial_state,
                       output_final_state, state_v_first, cu_seqlens)


def chunk_retention(q, k, v, scale=None, initial_state=None, output_final_state=False,
                    cu_seqlens=None, **kwargs):
    """fla.ops.retention.chunk_retention: RetNet's fixed decay 1 - 2^(-5-h) per head h."""
    _fla_extras("chunk_retention", kwargs)
    return mixer("retention", q, k, v, scale=scale, initial_state=initial_state,
                 output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                 name="chunk_retention")


def fused_recurrent_retention(q, k, v, scale=None, initial_state=None, output_final_state=False,
                              reverse=False, cu_seqlens=None, **kwargs):
    """fla.ops.retention.fused_recurrent_retention (token by token; reverse unsupported)."""
    fn = "fused_recurrent_retention"
    _fla_extras(fn, kwargs)
    _unsupported(fn, "reverse", reverse, "linattn's recurrences run forward in time")
    return mixer("retention", q, k, v, form="recurrent", scale=scale,
                 initial_state=initial_state, output_final_state=output_final_state,
                 cu_seqlens=cu_seqlens, name=fn)


def chunk_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False,
              cu_seqlens=None, **kwargs):
    """fla.ops.gla.chunk_gla: S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T, g [B, T, H, K]."""
    _fla_extras("chunk_gla", kwargs)
    return mixer("gla", q, k, v, gk=g, scale=scale, initial_state=initial_state,
                 output_final_state=output_final_state, cu_seqlens=cu_seqlens, name="chunk_gla")


def fused_recurrent_gla(q, k, v, gk=None, gv=None, scale=None, initial_state=None,
                        output_final_state=False, reverse=False, state_v_first=False,
                        cu_seqlens=None, **kwargs):
    """fla.ops.gla.fused_recurrent_gla (token by token): per-key decay gk; no gk is
    linear_attn. gv (a per-value decay) and reverse are unsupported."""
    fn = "fused_recurrent_gla"
    _fla_extras(fn, kwargs)
    _unsupported(fn, "gv", gv, "linattn's gla decays the key channels only (gk)")
    _unsupported(fn, "reverse", reverse, "linattn's recurrences run forward in time")
    op = "linear_attn" if gk is None else "gla"
    return _state_v_first(lambda s0: mixer(
        op, q, k, v, form="recurrent", gk=gk, scale=scale, initial_state=s0,
        output_final_state=output_final_state, cu_seqlens=cu_seqlens, name=fn),
        initial_state, state_v_first)


def chunk_delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False,
                     use_qk_l2norm_in_kernel=False, cu_seqlens=None, **kwargs):
    """fla.ops.delta_rule.chunk_delta_rule: S_t = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T."""
    _fla_extras("chunk_delta_rule", kwargs)
    return mixer("delta_rule", q, k, v, beta=beta, scale=scale, initial_state=initial_state,
                 output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                 use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, name="chunk_delta_rule")


def _ones_beta(beta, v):
    """fla's beta=None: a step of 1 for every token and value head."""
    return v.new_ones(v.shape[:3]) if beta is None else beta


def fused_recurrent_delta_rule(q, k, v, beta=None, scale=None, initial_state=None,
                               output_final_state=False, use_qk_l2norm_in_kernel=False,
                               cu_seqlens=None, **kwargs):
    """fla.ops.delta_rule.fused_recurrent_delta_rule (token by token; beta None means 1)."""
    fn = "fused_recurrent_delta_rule"
    _fla_extras(fn, kwargs)
    return mixer("delta_rule", q, k, v, form="recurrent", beta=_ones_beta(beta, v), scale=scale,
                 initial_state=initial_state, output_final_state=output_final_state,
                 cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, name=fn)


def _gate_options(fn: str, g, beta, kwargs: dict[str, Any]):
    """fla's in-kernel gate options of the gated delta rule (newer fla versions), applied here
    with torch's elementwise ops (differentiable by autograd) before the C++ op:
    use_gate_in_kernel: g <- -exp(A_log) softplus(g + dt_bias) (Mamba2's decay, per value head);
    use_beta_sigmoid_in_kernel: beta <- sigmoid(beta), times 2 with allow_neg_eigval."""
    use_gate = kwargs.pop("use_gate_in_kernel", False)
    A_log, dt_bias = kwargs.pop("A_log", None), kwargs.pop("dt_bias", None)
    use_sigmoid = kwargs.pop("use_beta_sigmoid_in_kernel", False)
    allow_neg_eigval = kwargs.pop("allow_neg_eigval", False)
    if use_gate:
        if A_log is None:
            raise ValueError(f"{fn}: use_gate_in_kernel=True needs A_log")
        _check_tensors(fn, {"A_log": A_log, "dt_bias": dt_bias})
        if g.dim() == 4:  # KDA: per-channel logits [B, T, HV, K], dt_bias [HV * K], A_log [HV]
            A_log = A_log.reshape(-1, 1)
            dt_bias = None if dt_bias is None else dt_bias.reshape(g.shape[-2:])
        g = g if dt_bias is None else g + dt_bias
        wide = torch.promote_types(g.dtype, torch.float32)  # bf16 logits: the decay in fp32
        g = -A_log.to(wide).exp() * torch.nn.functional.softplus(g.to(wide))
    elif A_log is not None or dt_bias is not None:
        raise ValueError(f"{fn}: A_log and dt_bias are only used with use_gate_in_kernel=True")
    if use_sigmoid:
        beta = beta.sigmoid() * (2.0 if allow_neg_eigval else 1.0)
    elif allow_neg_eigval:
        raise ValueError(f"{fn}: allow_neg_eigval=True only applies with "
                         "use_beta_sigmoid_in_kernel=True (otherwise pass beta in [0, 2])")
    return g, beta


def chunk_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None,
                           output_final_state=False, use_qk_l2norm_in_kernel=False,
                           cu_seqlens=None, **kwargs):
    """fla.ops.gated_delta_rule.chunk_gated_delta_rule:
    S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T; v may have HV = m H heads.
    Also takes newer fla's keywords use_gate_in_kernel, A_log, dt_bias,
    use_beta_sigmoid_in_kernel, allow_neg_eigval and state_v_first."""
    fn = "chunk_gated_delta_rule"
    g, beta = _gate_options(fn, g, beta, kwargs)
    state_v_first = kwargs.pop("state_v_first", False)
    _fla_extras(fn, kwargs)
    return _state_v_first(lambda s0: mixer(
        "gated_delta_rule", q, k, v, g=g, beta=beta, scale=scale, initial_state=s0,
        output_final_state=output_final_state, cu_seqlens=cu_seqlens,
        use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, name=fn), initial_state, state_v_first)


def fused_recurrent_gated_delta_rule(q, k, v, g=None, gk=None, gv=None, beta=None, scale=None,
                                     initial_state=None, output_final_state=False,
                                     use_qk_l2norm_in_kernel=False, cu_seqlens=None, **kwargs):
    """fla.ops.gated_delta_rule.fused_recurrent_gated_delta_rule (token by token): g None is the
    ungated delta rule, beta None means 1; gk/gv (per-channel decays) are unsupported. Takes the
    gate keywords of chunk_gated_delta_rule too."""
    fn = "fused_recurrent_gated_delta_rule"
    _unsupported(fn, "gk", gk, "per-key decays of the delta rule are KDA's op")
    _unsupported(fn, "gv", gv, "linattn's delta rule has no per-value decay")
    if beta is None and kwargs.get("use_beta_sigmoid_in_kernel"):
        raise ValueError(f"{fn}: use_beta_sigmoid_in_kernel=True needs beta (logits)")
    g, beta = _gate_options(fn, g, _ones_beta(beta, v), kwargs)
    state_v_first = kwargs.pop("state_v_first", False)
    _fla_extras(fn, kwargs)
    op = "delta_rule" if g is None else "gated_delta_rule"
    return _state_v_first(lambda s0: mixer(
        op, q, k, v, form="recurrent", g=g, beta=beta, scale=scale, initial_state=s0,
        output_final_state=output_final_state, cu_seqlens=cu_seqlens,
        use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, name=fn), initial_state, state_v_first)


def chunk_gated_delta_product(q, k, v, g, beta, num_householder, scale=None, initial_state=None,
                              output_final_state=False, cu_seqlens=None,
                              use_qk_l2norm_in_kernel=False, **kwargs):
    """fla.ops.gated_delta_product.chunk_gated_delta_product: num_householder delta steps per
    token (k, v, beta have T * num_householder rows) after the decay g [B, T, H] (None: none)."""
    _fla_extras("chunk_gated_delta_product", kwargs)
    return mixer("delta_product", q, k, v, g=g, beta=beta, scale=scale,
                 initial_state=initial_state, output_final_state=output_final_state,
                 cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                 num_householder=num_householder, name="chunk_gated_delta_product")


def fused_recurrent_gated_delta_product(q, k, v, g, beta, num_householder, scale=None,
                                        initial_state=None, output_final_state=False,
                                        cu_seqlens=None, use_qk_l2norm_in_kernel=False):
    """DeltaProduct token by token (decode). fla has no such entry point; the arguments are
    chunk_gated_delta_product's."""
    return mixer("delta_product", q, k, v, form="recurrent", g=g, beta=beta, scale=scale,
                 initial_state=initial_state, output_final_state=output_final_state,
                 cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                 num_householder=num_householder, name="fused_recurrent_gated_delta_product")


def _kda(fn, form, q, k, v, g, beta, scale, initial_state, output_final_state,
         use_qk_l2norm_in_kernel, cu_seqlens, kwargs):
    if kwargs.pop("lower_bound", None) is not None or kwargs.pop("safe_gate", False):
        raise ValueError(f"{fn}: lower_bound / safe_gate (bounded gates) are not supported")
    _unsupported(fn, "return_intermediate_states", kwargs.pop("return_intermediate_states", None),
                 "the per-chunk states stay inside the C++ op")
    _unsupported(fn, "use_graph", kwargs.pop("use_graph", None), "no device graphs on the CPU")
    # Tuning knobs of fla's kernels that do not change the result: linattn picks its own.
    for knob in ("disable_recompute", "max_num_seqs", "chunk_size"):
        kwargs.pop(knob, None)
    g, beta = _gate_options(fn, g, beta, kwargs)
    state_v_first = kwargs.pop("state_v_first", False)
    _fla_extras(fn, kwargs)
    return _state_v_first(lambda s0: mixer(
        "kda", q, k, v, form=form, gk=g, beta=beta, scale=scale, initial_state=s0,
        output_final_state=output_final_state, cu_seqlens=cu_seqlens,
        use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, name=fn), initial_state, state_v_first)


def chunk_kda(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
              use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False,
              use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False, safe_gate=False,
              lower_bound=None, disable_recompute=False, return_intermediate_states=False,
              state_v_first=False, cu_seqlens=None, cu_seqlens_cpu=None, cp_context=None,
              use_graph=False, max_num_seqs=None, **kwargs):
    """fla.ops.kda.chunk_kda (Kimi Delta Attention): the gated delta rule with a per-key-channel
    log decay g [B, T, HV, K]. use_gate_in_kernel takes A_log [HV] and dt_bias [HV * K] as
    keywords (as fla); safe_gate/lower_bound, return_intermediate_states and use_graph are not
    supported; disable_recompute, max_num_seqs and chunk_size are accepted and have no effect."""
    kwargs.update(use_gate_in_kernel=use_gate_in_kernel,
                  use_beta_sigmoid_in_kernel=use_beta_sigmoid_in_kernel,
                  allow_neg_eigval=allow_neg_eigval, safe_gate=safe_gate, lower_bound=lower_bound,
                  disable_recompute=disable_recompute,
                  return_intermediate_states=return_intermediate_states,
                  state_v_first=state_v_first, cu_seqlens_cpu=cu_seqlens_cpu,
                  cp_context=cp_context, use_graph=use_graph, max_num_seqs=max_num_seqs)
    return _kda("chunk_kda", "chunk", q, k, v, g, beta, scale, initial_state,
                output_final_state, use_qk_l2norm_in_kernel, cu_seqlens, kwargs)


def fused_recurrent_kda(q, k, v, g, beta, A_log=None, dt_bias=None, scale=None,
                        initial_state=None, output_final_state=False,
                        use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False,
                        use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False,
                        lower_bound=None, state_v_first=False, cu_seqlens=None, **kwargs):
    """fla.ops.kda.fused_recurrent_kda (token by token)."""
    kwargs.update(A_log=A_log, dt_bias=dt_bias, use_gate_in_kernel=use_gate_in_kernel,
                  use_beta_sigmoid_in_kernel=use_beta_sigmoid_in_kernel,
                  allow_neg_eigval=allow_neg_eigval, lower_bound=lower_bound,
                  state_v_first=state_v_first)
    return _kda("fused_recurrent_kda", "recurrent", q, k, v, g, beta, scale, initial_state,
                output_final_state, use_qk_l2norm_in_kernel, cu_seqlens, kwargs)


def chunk_dplr_delta_rule(q, k, v, a, b, gk, scale=None, initial_state=None,
                          output_final_state=False, cu_seqlens=None, **kwargs):
    """fla.ops.generalized_delta_rule.chunk_dplr_delta_rule: S_t = diag(exp(gk_t)) S_{t-1}
    + b_t (S_{t-1}^T a_t)^T + k_t v_t^T (RWKV-7 with q = r, gk = w)."""
    _fla_extras("chunk_dplr_delta_rule", kwargs)
    return mixer("dplr_delta_rule", q, k, v, a=a, b=b, gk=gk, scale=scale,
                 initial_state=initial_state, output_final_state=output_final_state,
                 cu_seqlens=cu_seqlens, name="chunk_dplr_delta_rule")


def fused_recurrent_dplr_delta_rule(q, k, v, a, b, gk, scale=None, initial_state=None,
                                    output_final_state=False, reverse=False, cu_seqlens=None,
                                    **kwargs):
    """fla.ops.generalized_delta_rule.fused_recurrent_dplr_delta_rule (token by token)."""
    fn = "fused_recurrent_dplr_delta_rule"
    _fla_extras(fn, kwargs)
    _unsupported(fn, "reverse", reverse, "linattn's recurrences run forward in time")
    return mixer("dplr_delta_rule", q, k, v, form="recurrent", a=a, b=b, gk=gk, scale=scale,
                 initial_state=initial_state, output_final_state=output_final_state,
                 cu_seqlens=cu_seqlens, name=fn)


def _rwkv7(fn: str, form: str, r, w, k, v, a, b, scale, initial_state, output_final_state,
           cu_seqlens, kwargs):
    """RWKV-7 is the DPLR rule with q = r (receptance) and gk = w (per-channel log decay).
    safe_gate, chunk_size and disable_recompute are fla's GPU kernel choices: no effect here."""
    for hint in ("safe_gate", "chunk_size", "disable_recompute"):
        kwargs.pop(hint, None)
    _fla_extras(fn, kwargs)
    return mixer("dplr_delta_rule", r, k, v, form=form, a=a, b=b, gk=w, scale=scale,
                 initial_state=initial_state, output_final_state=output_final_state,
                 cu_seqlens=cu_seqlens, name=fn)


def chunk_rwkv7(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False,
                cu_seqlens=None, **kwargs):
    """fla.ops.rwkv7.chunk_rwkv7 (scale 1 by default, as fla)."""
    return _rwkv7("chunk_rwkv7", "chunk", r, w, k, v, a, b, scale, initial_state,
                  output_final_state, cu_seqlens, kwargs)


def fused_recurrent_rwkv7(r, w, k, v, a, b, scale=1.0, initial_state=None,
                          output_final_state=False, cu_seqlens=None, **kwargs):
    """fla.ops.rwkv7.fused_recurrent_rwkv7: chunk_rwkv7 token by token (the decode form)."""
    return _rwkv7("fused_recurrent_rwkv7", "recurrent", r, w, k, v, a, b, scale, initial_state,
                  output_final_state, cu_seqlens, kwargs)


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


def causal_conv1d(x, weight, bias=None, residual=None, initial_state=None,
                  output_final_state=False, activation=None, cu_seqlens=None, *, form="chunk"):
    """fla.modules.convolution.causal_conv1d as a torch autograd function: x [B, T, D],
    weight [D, W], bias [D], residual [B, T, D] (added after the activation), initial_state
    [N, D, W] (fla's cache: the last W inputs); activation None or 'silu'/'swish'. Returns
    (y [B, T, D], final_state [N, D, W] or None). Differentiable in x, weight, bias, residual
    and initial_state. (linattn.causal_conv1d is the same call without autograd.)"""
    tensors = dict(x=x, weight=weight, bias=bias, residual=residual, initial_state=initial_state)
    _check_tensors("causal_conv1d", {**tensors, "cu_seqlens": cu_seqlens})
    options = dict(output_final_state=output_final_state, activation=activation,
                   cu_seqlens=cu_seqlens, form=form)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                       for t in tensors.values()):
        return _Conv1dFunction.apply(options, *tensors.values())
    return _conv1d.causal_conv1d(**tensors, **options)
