"""fp64 oracles with fla's op names and arguments.

Every function runs the C++ reference form (src/ops/common/reference.cpp: a token-by-token
recurrence; src/ops/noncausal/reference.cpp for the stateless noncausal_linear_attn) computed in
float64 whatever the storage dtype, forward and backward. Inputs are numpy arrays or torch
tensors (CPU), read in place; outputs are allocated here in the kind of ``q`` and written in
place by C++. Each op returns ``(o, final_state)``: ``o`` has v's dtype,
``final_state`` is float32 (float64 when q is float64) and None unless ``output_final_state``.
Layout and meaning follow fla: q, k [B, T, H, K]; v [B, T, HV, V]; g, beta [B, T, HV];
gk [B, T, HV, K]; a, b [B, T, H, K] (dplr_delta_rule); states [N, HV, K, V]; decays in log space
(g, gk <= 0); beta in [0, 2].
"""

from __future__ import annotations

from typing import Any

from . import _core
from ._arrays import as_input, dtype_name, empty_like

__all__ = [
    "linear_attn",
    "simple_gla",
    "retention",
    "gla",
    "delta_rule",
    "gated_delta_rule",
    "delta_product",
    "noncausal_linear_attn",
    "dplr_delta_rule",
    "backward",
]

# The gradient of each input, by the input's name; only given inputs get one.
_GRAD_OF = {
    "q": "dq",
    "k": "dk",
    "v": "dv",
    "g": "dg",
    "gk": "dgk",
    "beta": "dbeta",
    "initial_state": "dinitial_state",
    "a": "da",
    "b": "db",
}


def _inputs(q, k, v, **options) -> dict[str, Any]:
    """The binding's keyword arguments: arrays prepared for zero-copy, flags as given."""
    arrays = {"q": q, "k": k, "v": v}
    for name in ("g", "gk", "beta", "initial_state", "cu_seqlens", "a", "b"):
        arrays[name] = options.pop(name, None)
    return {**{n: as_input(x) for n, x in arrays.items()}, **options}


def _forward(op: str, form: str, q, k, v, **options):
    """Runs one form of an op: validates and sizes the outputs in C++, allocates them like q,
    and lets C++ write them. The one code path behind every op function below."""
    inputs = _inputs(q, k, v, **options)
    o_shape, state_shape = _core.output_shapes(op, **inputs)
    q = inputs["q"]
    o = empty_like(q, o_shape, dtype_name(inputs["v"]))
    final_state = None
    if state_shape is not None:
        state_dtype = "float64" if dtype_name(q) == "float64" else "float32"
        final_state = empty_like(q, state_shape, state_dtype)
    _core.forward(op, form, **inputs, o=o, final_state=final_state)
    return o, final_state


def _backward(op: str, form: str, q, k, v, do, dfinal_state=None, wanted=None,
              **options) -> dict[str, Any]:
    """Gradients of one form of an op for every given input (or only the inputs named in
    `wanted`), each shaped and typed like its input."""
    inputs = _inputs(q, k, v, **options)
    grads = {
        _GRAD_OF[name]: empty_like(inputs["q"], tuple(x.shape), dtype_name(x))
        for name, x in inputs.items()
        if name in _GRAD_OF and x is not None and (wanted is None or name in wanted)
    }
    _core.backward(
        op, form, **inputs, d_o=as_input(do), dfinal_state=as_input(dfinal_state), **grads
    )
    return grads


def linear_attn(q, k, v, scale=None, initial_state=None, output_final_state=False,
                normalize=False, cu_seqlens=None):
    """S_t = S_{t-1} + k_t v_t^T; o_t = scale S_t^T q_t (divided by scale q_t.sum(k_<=t) when
    normalize)."""
    return _forward("linear_attn", "reference", q, k, v, scale=scale,
                    initial_state=initial_state, output_final_state=output_final_state,
                    normalize=normalize, cu_seqlens=cu_seqlens)


def simple_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False,
               cu_seqlens=None):
    """S_t = exp(g_t) S_{t-1} + k_t v_t^T with a scalar log decay g per head."""
    return _forward("simple_gla", "reference", q, k, v, g=g, scale=scale,
                    initial_state=initial_state, output_final_state=output_final_state,
                    cu_seqlens=cu_seqlens)


def retention(q, k, v, scale=None, initial_state=None, output_final_state=False,
              cu_seqlens=None):
    """S_t = gamma_h S_{t-1} + k_t v_t^T with RetNet's fixed decay gamma_h = 1 - 2^(-5-h)."""
    return _forward("retention", "reference", q, k, v, scale=scale,
                    initial_state=initial_state, output_final_state=output_final_state,
                    cu_seqlens=cu_seqlens)


def gla(q, k, v, gk, scale=None, initial_state=None, output_final_state=False,
        cu_seqlens=None):
    """S_t = diag(exp(gk_t)) S_{t-1} + k_t v_t^T with a per-key-channel log decay gk."""
    return _forward("gla", "reference", q, k, v, gk=gk, scale=scale,
                    initial_state=initial_state, output_final_state=output_final_state,
                    cu_seqlens=cu_seqlens)


def delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False,
               cu_seqlens=None, use_qk_l2norm_in_kernel=False):
    """S_t = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T (DeltaNet)."""
    return _forward("delta_rule", "reference", q, k, v, beta=beta, scale=scale,
                    initial_state=initial_state, output_final_state=output_final_state,
                    cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel)


def gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None,
                     output_final_state=False, cu_seqlens=None, use_qk_l2norm_in_kernel=False):
    """S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T (Gated DeltaNet)."""
    return _forward("gated_delta_rule", "reference", q, k, v, g=g, beta=beta, scale=scale,
                    initial_state=initial_state, output_final_state=output_final_state,
                    cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel)


def delta_product(q, k, v, beta, num_householder, g=None, scale=None, initial_state=None,
                  output_final_state=False, cu_seqlens=None, use_qk_l2norm_in_kernel=False):
    """DeltaProduct: num_householder delta-rule writes per token (k, v, beta have
    T * num_householder rows), after an optional scalar log decay g."""
    return _forward("delta_product", "reference", q, k, v, g=g, beta=beta, scale=scale,
                    initial_state=initial_state, output_final_state=output_final_state,
                    cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                    num_householder=num_householder)


def noncausal_linear_attn(q, k, v, scale=None, normalize=False, cu_seqlens=None):
    """Bidirectional linear attention (LinFusion, LiT, LION): o_t = scale q_t^T sum_s k_s v_s^T
    over every token s of t's sequence (divided by scale q_t.sum(k) + 1e-10 when normalize).
    No state: returns (o, None)."""
    return _forward("noncausal_linear_attn", "reference", q, k, v, scale=scale,
                    normalize=normalize, cu_seqlens=cu_seqlens)


def kda(q, k, v, gk, beta, scale=None, initial_state=None, output_final_state=False,
        cu_seqlens=None, use_qk_l2norm_in_kernel=False):
    """Kimi Delta Attention: S_t = (I - beta_t k_t k_t^T) diag(exp(gk_t)) S_{t-1} + beta_t k_t
    v_t^T, a per-channel log decay gk [B, T, HV, K] (fla's chunk_kda calls it g)."""
    return _forward("kda", "reference", q, k, v, gk=gk, beta=beta, scale=scale,
                    initial_state=initial_state, output_final_state=output_final_state,
                    cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel)


def dplr_delta_rule(q, k, v, a, b, gk, scale=None, initial_state=None, output_final_state=False,
                    cu_seqlens=None):
    """Generalized delta rule with a diagonal-plus-low-rank transition (fla's
    chunk_dplr_delta_rule; RWKV-7 with q = r, gk = w, scale = 1): sa_t = S_{t-1}^T a_t,
    S_t = diag(exp(gk_t)) S_{t-1} + b_t sa_t^T + k_t v_t^T; a, b [B, T, H, K]."""
    return _forward("dplr_delta_rule", "reference", q, k, v, a=a, b=b, gk=gk, scale=scale,
                    initial_state=initial_state, output_final_state=output_final_state,
                    cu_seqlens=cu_seqlens)


def backward(op: str, q, k, v, do, dfinal_state=None, *, g=None, gk=None, beta=None,
             scale=None, initial_state=None, cu_seqlens=None, normalize=False,
             use_qk_l2norm_in_kernel=False, num_householder=1, a=None,
             b=None) -> dict[str, Any]:
    """The fp64 reference gradients of `op` (a name from op_names()) given the upstream
    gradients do (of o) and optionally dfinal_state (of final_state).

    Returns {"dq", "dk", "dv"} plus "dg", "dgk", "dbeta", "dinitial_state", "da", "db" for
    each of those inputs that was given; each gradient has its input's shape, dtype and kind.
    """
    if op == "kda" and g is not None:
        grads = _backward(op, "reference", q, k, v, do, dfinal_state, gk=g, beta=beta,
                          scale=scale, initial_state=initial_state, cu_seqlens=cu_seqlens,
                          use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel)
        grads["dg"] = grads.pop("dgk")
        return grads
    return _backward(op, "reference", q, k, v, do, dfinal_state, g=g, gk=gk, beta=beta,
                     scale=scale, initial_state=initial_state, cu_seqlens=cu_seqlens,
                     normalize=normalize, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                     num_householder=num_householder, a=a, b=b)
