"""Mamba-2's SSD scan (state space duality) in mamba_ssm's layout: ``ssd_scan`` and its
backward ``ssd_scan_backward``.

All numeric work is C++ (include/linattn/ssd.hpp): simple_gla's chunk form with grouped q/k
heads (q = C, k = B, v = dt x, g = dt A) and, around it, the dt transform, the D skip and the
z gate, forward and backward. Arrays (numpy arrays or torch tensors on the CPU, any strides,
read in place): x [B, T, H, P], dt [B, T, H], A [H], B and C [B, T, G, N], D [H] or [H, P],
z [B, T, H, P], dt_bias [H], initial_state [N_seq, H, P, N], cu_seqlens [N_seq + 1] (B = 1).
With torch tensors that require grad (and grad mode on) ``ssd_scan`` records an autograd node
whose backward is the C++ backward. ``linattn.hub.mamba_ssm.mamba_chunk_scan_combined`` is
mamba_ssm's interface on top of it.
"""

from __future__ import annotations

import math
from typing import Any

from . import _core
from ._arrays import as_input, dtype_name, empty_like, is_torch

__all__ = ["ssd_scan", "ssd_scan_backward"]

_INPUTS = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_state")


def _inputs(x, dt, A, B, C, D, z, dt_bias, initial_state, cu_seqlens, dt_softplus, dt_limit):
    return {"x": as_input(x), "dt": as_input(dt), "A": as_input(A), "B": as_input(B),
            "C": as_input(C), "D": as_input(D), "z": as_input(z), "dt_bias": as_input(dt_bias),
            "initial_state": as_input(initial_state), "cu_seqlens": as_input(cu_seqlens),
            "dt_softplus": dt_softplus, "dt_min": float(dt_limit[0]),
            "dt_max": float(dt_limit[1])}


def _forward(x, dt, A, B, C, D, z, dt_bias, initial_state, cu_seqlens, dt_softplus, dt_limit,
             output_final_state, form):
    inputs = _inputs(x, dt, A, B, C, D, z, dt_bias, initial_state, cu_seqlens, dt_softplus,
                     dt_limit)
    y_shape, state_shape = _core.ssd_output_shapes(**inputs,
                                                   output_final_state=output_final_state)
    ref = inputs["x"]
    y = empty_like(ref, y_shape, dtype_name(ref))
    final_state = None
    if state_shape is not None:
        final_state = empty_like(ref, state_shape,
                                 "float64" if dtype_name(ref) == "float64" else "float32")
    _core.ssd_forward(form, **inputs, output_final_state=output_final_state, y=y,
                      final_state=final_state)
    return y, final_state


def ssd_scan(x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
             dt_limit=(0.0, math.inf), initial_state=None, output_final_state=False,
             cu_seqlens=None, *, form="chunk"):
    """y_t = (C_t S_t + D x_t) silu(z_t), S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T per head,
    dt = clamp(softplus(dt + dt_bias) if dt_softplus else dt + dt_bias, *dt_limit).

    Returns (y like x, final_state [N_seq, H, P, N] float32 (float64 for float64 x) or None).
    form: 'chunk' (default), 'recurrent' (token by token: decode) or 'reference' (fp64 oracle).
    """
    tensors = (x, dt, A, B, C, D, z, dt_bias, initial_state)
    options = (cu_seqlens, dt_softplus, tuple(dt_limit), output_final_state, form)
    if any(is_torch(t) and t.requires_grad for t in tensors):
        import torch

        if torch.is_grad_enabled():
            if not _AUTOGRAD:
                _AUTOGRAD.append(_autograd_function())
            return _AUTOGRAD[0].apply(options, *tensors)
    return _forward(*tensors, *options)


def ssd_scan_backward(x, dt, A, B, C, dy, D=None, z=None, dt_bias=None, dt_softplus=False,
                      dt_limit=(0.0, math.inf), initial_state=None, dfinal_state=None,
                      cu_seqlens=None, *, form="chunk") -> dict[str, Any]:
    """Gradients of ssd_scan given dy (of y) and optionally dfinal_state: {"dx", "ddt", "dA",
    "dB", "dC"} plus "dD", "dz", "ddt_bias", "dinitial_state" for the inputs given, each shaped
    and typed like its input."""
    inputs = _inputs(x, dt, A, B, C, D, z, dt_bias, initial_state, cu_seqlens, dt_softplus,
                     dt_limit)
    ref = inputs["x"]
    grads = {"d" + name: empty_like(ref, tuple(t.shape), dtype_name(t))
             for name in _INPUTS if (t := inputs[name]) is not None}
    _core.ssd_backward(form, **inputs, dy=as_input(dy), dfinal_state=as_input(dfinal_state),
                       **grads)
    return grads


_AUTOGRAD = []


def _autograd_function():
    """torch.autograd.Function over the C++ forward and backward (built on first use, so that
    numpy-only installs never import torch)."""
    import torch

    class SsdScanFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, options, *tensors):
            y, final_state = _forward(*tensors, *options)
            ctx.options = options
            ctx.save_for_backward(*tensors)
            ctx.set_materialize_grads(False)
            return y, final_state

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, dy, dfinal_state):
            if dy is None and dfinal_state is None:
                return (None,) * (1 + len(_INPUTS))
            cu_seqlens, dt_softplus, dt_limit, _, form = ctx.options
            saved = dict(zip(_INPUTS, ctx.saved_tensors))
            if dy is None:  # only final_state was used downstream
                dy = torch.zeros_like(saved["x"])
            grads = ssd_scan_backward(
                saved["x"], saved["dt"], saved["A"], saved["B"], saved["C"], dy, saved["D"],
                saved["z"], saved["dt_bias"], dt_softplus, dt_limit, saved["initial_state"],
                dfinal_state, cu_seqlens, form="reference" if form == "reference" else "chunk")
            return (None, *(grads.get("d" + n) if need else None
                            for n, need in zip(_INPUTS, ctx.needs_input_grad[1:])))

    return SsdScanFunction
