"""The diagonal SSM selective scan (Mamba-1, S4D) with mamba_ssm's names: ``selective_scan_fn``
and its decode step ``selective_state_update``, plus ``selective_scan_backward``.

All numeric work is C++ (include/linattn/scan.hpp). The functions take mamba's channel-first
layout: u, delta, z [B, D, L]; A [D, N]; B, C [B, N, L] or grouped [B, G, N, L]; D,
delta_bias [D]. The C++ core is token-major ([B, L, D], [B, L, G, N]) and reads any strides, so
these arrays are handed over as transposed views, never copied; outputs are allocated
token-major and returned as channel-first views (out [B, D, L] has strides (L*D, 1, D)).
Arrays are numpy arrays or torch tensors on the CPU. With torch tensors that require grad (and
grad mode on) ``selective_scan_fn`` records an autograd node whose backward is the C++ backward,
so it is a drop-in for mamba_ssm's; ``selective_scan_backward`` is the same backward as a call. Extras over mamba, keyword-only: initial_state [N_seq, D, N],
cu_seqlens (B = 1, offsets along L), form ('chunk', the fast form, or 'reference', the fp64
oracle). Not supported: time-invariant (D, N) or complex B and C.
"""

from __future__ import annotations

from typing import Any

from . import _core
from ._arrays import as_input, dtype_name, empty_like, is_torch

__all__ = ["selective_scan_fn", "selective_scan_backward", "selective_state_update"]


def _permuted(x, axes):
    """A permuted view (no copy) of a numpy array or torch tensor."""
    return x.permute(*axes) if is_torch(x) else x.transpose(axes)


def _token_major(u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens):
    """The binding's inputs: channel-first arrays as token-major views."""
    def seq(x):  # [B, D, L] -> [B, L, D]
        return None if x is None else _permuted(as_input(x), (0, 2, 1))

    def groups(x):  # [B, N, L] or [B, G, N, L] -> [B, L, G, N]
        x = as_input(x)
        if len(x.shape) == 3:
            x = x[:, None]
        return _permuted(x, (0, 3, 1, 2))

    return {"u": seq(u), "delta": seq(delta), "A": as_input(A), "B": groups(B), "C": groups(C),
            "D": as_input(D), "z": seq(z), "delta_bias": as_input(delta_bias),
            "initial_state": as_input(initial_state), "cu_seqlens": as_input(cu_seqlens)}


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False, *, initial_state=None, cu_seqlens=None,
                      form="chunk"):
    """h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t, y_t = (C_t·h_t + D u_t) · silu(z_t) per channel,
    Δ = softplus(delta + delta_bias) if delta_softplus else delta + delta_bias.

    Returns out [B, D, L] (u's dtype), or (out, last_state [N_seq, D, N], float32 or float64 for
    float64 u) with return_last_state, as mamba's selective_scan_fn.
    """
    tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    if any(is_torch(x) and x.requires_grad for x in tensors):
        import torch

        if torch.is_grad_enabled():
            if not _AUTOGRAD:
                _AUTOGRAD.append(_autograd_function())
            options = (delta_softplus, return_last_state, cu_seqlens, form)
            out, last_state = _AUTOGRAD[0].apply(options, *tensors)
            return (out, last_state) if return_last_state else out
    return _selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                           return_last_state, initial_state, cu_seqlens, form)


def _selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                    initial_state, cu_seqlens, form):
    inputs = _token_major(u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens)
    y_shape, state_shape = _core.selective_scan_output_shapes(
        **inputs, delta_softplus=delta_softplus, output_final_state=return_last_state)
    ref = inputs["u"]
    y = empty_like(ref, y_shape, dtype_name(ref))
    last_state = None
    if state_shape is not None:
        last_state = empty_like(ref, state_shape,
                                "float64" if dtype_name(ref) == "float64" else "float32")
    _core.selective_scan_forward(form, **inputs, delta_softplus=delta_softplus,
                                 output_final_state=return_last_state, y=y,
                                 final_state=last_state)
    out = _permuted(y, (0, 2, 1))
    return (out, last_state) if return_last_state else out


_SCAN_INPUTS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
_AUTOGRAD = []


def _autograd_function():
    """torch.autograd.Function over the C++ forward and backward (built on first use, so that
    numpy-only installs never import torch)."""
    import torch

    class SelectiveScanFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, options, *tensors):
            delta_softplus, return_last_state, cu_seqlens, form = options
            result = _selective_scan(*tensors[:8], delta_softplus, return_last_state,
                                     tensors[8], cu_seqlens, form)
            out, last_state = result if return_last_state else (result, None)
            ctx.options = options
            ctx.save_for_backward(*tensors)
            ctx.set_materialize_grads(False)
            return out, last_state

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, dout, dlast_state):
            if dout is None and dlast_state is None:
                return (None,) * (1 + len(_SCAN_INPUTS))
            delta_softplus, _, cu_seqlens, form = ctx.options
            saved = dict(zip(_SCAN_INPUTS, ctx.saved_tensors))
            if dout is None:  # only last_state was used downstream
                dout = torch.zeros_like(saved["u"])
            grads = selective_scan_backward(
                saved["u"], saved["delta"], saved["A"], saved["B"], saved["C"], dout,
                saved["D"], saved["z"], saved["delta_bias"], delta_softplus,
                dlast_state=dlast_state, initial_state=saved["initial_state"],
                cu_seqlens=cu_seqlens, form=form)
            return (None, *(grads.get("d" + n) if need else None
                            for n, need in zip(_SCAN_INPUTS, ctx.needs_input_grad[1:])))

    return SelectiveScanFunction


def selective_scan_backward(u, delta, A, B, C, dout, D=None, z=None, delta_bias=None,
                            delta_softplus=False, *, dlast_state=None, initial_state=None,
                            cu_seqlens=None, form="chunk") -> dict[str, Any]:
    """Gradients of selective_scan_fn given dout (of out, [B, D, L]) and optionally dlast_state.

    Returns {"du", "ddelta", "dA", "dB", "dC"} plus "dD", "dz", "ddelta_bias",
    "dinitial_state" for each of those inputs that was given, each shaped like its input (in
    mamba's layout, as views of token-major memory) with its input's dtype.
    """
    inputs = _token_major(u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens)
    ref = inputs["u"]
    grads = {"d" + name: empty_like(ref, tuple(x.shape), dtype_name(x))
             for name in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
             if (x := inputs[name]) is not None}
    _core.selective_scan_backward(form, **inputs, delta_softplus=delta_softplus,
                                  dy=_permuted(as_input(dout), (0, 2, 1)),
                                  dfinal_state=as_input(dlast_state), **grads)
    for name in ("du", "ddelta", "dz"):
        if name in grads:
            grads[name] = _permuted(grads[name], (0, 2, 1))
    for name, given in (("dB", B), ("dC", C)):
        g = _permuted(grads[name], (0, 2, 3, 1))  # [B, G, N, L]
        grads[name] = g[:, 0] if len(given.shape) == 3 else g
    return grads


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None,
                           dt_softplus=False):
    """One decode step (mamba's selective_state_update): state [N, D, N_state] is updated in
    place; x, dt, z [N, D]; B, C [N, N_state] or [N, G, N_state]. Returns out [N, D]."""
    x = as_input(x)

    def groups(b):
        b = as_input(b)
        return b[:, None] if len(b.shape) == 2 else b

    y = empty_like(x, tuple(x.shape), dtype_name(x))
    _core.selective_state_update(as_input(state), x, as_input(dt), as_input(A), groups(B),
                                 groups(C), D=as_input(D), z=as_input(z),
                                 dt_bias=as_input(dt_bias), dt_softplus=dt_softplus, y=y)
    return y
