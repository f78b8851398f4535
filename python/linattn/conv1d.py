"""The causal depthwise conv1d with fla's names: ``causal_conv1d`` and its decode step
``causal_conv1d_update`` (fla/modules/convolution.py), plus ``causal_conv1d_backward``.

All numeric work is C++ (include/linattn/conv1d.hpp); arrays are numpy arrays or torch tensors
on the CPU, read in place (any strides), outputs allocated here like ``x``. Layout is fla's:
x [B, T, D], weight [D, W], bias [D], residual [B, T, D], states [N, D, W] (the last W inputs
of each sequence, oldest first; N = B, or the number of sequences with cu_seqlens and B = 1).
``activation`` is None, 'silu' or 'swish'. These functions do not record autograd graphs; the
backward is a separate call.
"""

from __future__ import annotations

from typing import Any

from . import _core
from ._arrays import as_input, dtype_name, empty_like

__all__ = ["causal_conv1d", "causal_conv1d_backward", "causal_conv1d_update"]


def _inputs(x, weight, bias, residual, initial_state, activation, cu_seqlens) -> dict[str, Any]:
    arrays = {"x": x, "weight": weight, "bias": bias, "residual": residual,
              "initial_state": initial_state, "cu_seqlens": cu_seqlens}
    return {**{n: as_input(a) for n, a in arrays.items()}, "activation": activation}


_BACKENDS = ("triton", "cuda", "mix")  # fla's GPU implementations: all are linattn's C++ here


def check_fla_arguments(weight, backend, cp_context, kwargs) -> None:
    """fla's causal_conv1d arguments that linattn's one CPU implementation cannot honour or
    does not need: weight is required (fla's kernels read its width too), backend picks one of
    fla's GPU implementations (no effect here), cu_seqlens_cpu / chunk_indices are GPU hints
    (the callers drop them), cp_context (context parallelism) and the 'mix' backend's seq_idx
    are refused."""
    if weight is None:
        raise ValueError("causal_conv1d: weight [D, W] is required (its width W is the "
                         "window), got None")
    if backend not in _BACKENDS:
        raise ValueError(f"causal_conv1d: backend must be one of {', '.join(_BACKENDS)} (all run "
                         f"linattn's C++ on the CPU), got {backend!r}")
    if cp_context is not None:
        raise ValueError("causal_conv1d: cp_context (context parallelism) is not supported: "
                         "pass None")
    if kwargs.pop("seq_idx", None) is not None:
        raise ValueError("causal_conv1d: seq_idx is not supported: give the sequences as "
                         "cu_seqlens")
    if kwargs:
        raise TypeError(f"causal_conv1d: unexpected keyword argument(s) "
                        f"{', '.join(sorted(kwargs))}")


def causal_conv1d(x, weight=None, bias=None, residual=None, initial_state=None,
                  output_final_state=False, activation=None, backend="triton", cu_seqlens=None,
                  cu_seqlens_cpu=None, chunk_indices=None, cp_context=None, *, form="chunk",
                  **kwargs):
    """y = act(bias + Σ_j weight[:, j] x[t-(W-1)+j]) + residual per channel, causal, with the
    W-1 inputs before each sequence taken from initial_state (zeros without one).

    Returns (y, final_state): y like x; final_state [N, D, W] in x's dtype, or None unless
    output_final_state. form: 'chunk' (the fast form, default) or 'reference' (fp64 oracle).
    fla's backend, cu_seqlens_cpu and chunk_indices have no effect (one CPU implementation).
    """
    check_fla_arguments(weight, backend, cp_context, kwargs)
    inputs = _inputs(x, weight, bias, residual, initial_state, activation, cu_seqlens)
    y_shape, state_shape = _core.causal_conv1d_output_shapes(
        **inputs, output_final_state=output_final_state)
    x = inputs["x"]
    y = empty_like(x, y_shape, dtype_name(x))
    final_state = None if state_shape is None else empty_like(x, state_shape, dtype_name(x))
    _core.causal_conv1d_forward(form, **inputs, output_final_state=output_final_state, y=y,
                                final_state=final_state)
    return y, final_state


def causal_conv1d_backward(x, weight, dy, dfinal_state=None, *, bias=None, residual=None,
                           initial_state=None, activation=None, cu_seqlens=None,
                           form="chunk") -> dict[str, Any]:
    """Gradients of causal_conv1d given dy (of y) and optionally dfinal_state (of final_state).

    Returns {"dx", "dweight"} plus "dbias", "dresidual", "dinitial_state" for each of those
    inputs that was given, each shaped and typed like its input.
    """
    inputs = _inputs(x, weight, bias, residual, initial_state, activation, cu_seqlens)
    grads = {"d" + name: empty_like(inputs["x"], tuple(a.shape), dtype_name(a))
             for name in ("x", "weight", "bias", "residual", "initial_state")
             if (a := inputs[name]) is not None}
    _core.causal_conv1d_backward(form, **inputs, dy=as_input(dy),
                                 dfinal_state=as_input(dfinal_state), **grads)
    return grads


def causal_conv1d_update(x, cache, residual=None, weight=None, bias=None, activation=None):
    """One decode step (fla's causal_conv1d_update): x [N, D] or [N, 1, D] holds one token of
    each sequence; cache [N, D, W] is shifted by one token and takes x, in place.

    Returns (y, cache): y shaped like x, act(Σ_j weight[:, j] cache[:, :, j] + bias) + residual.
    """
    x, residual = as_input(x), as_input(residual)
    y = empty_like(x, tuple(x.shape), dtype_name(x))
    if len(x.shape) == 3:  # [N, 1, D]: the token row as an [N, D] view (no copy)
        if x.shape[1] != 1:
            raise ValueError(f"causal_conv1d_update: x must have shape [N, D] or [N, 1, D], "
                             f"got {list(x.shape)}")
        x, y_step = x[:, 0], y[:, 0]
        residual = None if residual is None else residual[:, 0]
    else:
        y_step = y
    _core.causal_conv1d_update(x, as_input(cache), residual=residual, weight=as_input(weight),
                               bias=as_input(bias), activation=activation, y=y_step)
    return y, cache
