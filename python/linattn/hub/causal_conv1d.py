"""Tri Dao's causal-conv1d package (``causal_conv1d``: ``causal_conv1d_fn``,
``causal_conv1d_update``) on linattn's C++ depthwise conv (``linattn.ops.causal_conv1d``).

Dao's layout is channel-first: x [B, D, T], weight [D, W], states [B, D, W-1] (the W-1 inputs
before a sequence) and, for the decode step, conv_state [B, D, W] (transformers' cache: the last
W inputs). The C++ conv reads x through its strides, so x.transpose(1, 2) (a [B, T, D] view)
goes in without a copy; the output comes back as the [B, D, T] view of a token-major tensor,
which is the layout transformers' layers transpose it to next. Packed sequences: seq_idx [B, T]
(the index of each token's sequence) becomes the C++ op's cu_seqlens per batch row.
Differentiable in x, weight, bias and initial_states.
"""

from __future__ import annotations

import torch

from .. import conv1d as _conv1d
from .. import ops

__all__ = ["causal_conv1d_fn", "causal_conv1d_update"]


def _check(fn: str, x, weight, ndims: tuple[int, ...], x_shape: str) -> None:
    for name, t in (("x", x), ("weight", weight)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if x.dim() not in ndims:
        raise ValueError(f"{fn}: x must have shape {x_shape}, got {list(x.shape)}")
    if weight.dim() != 2 or weight.shape[0] != x.shape[1]:
        raise ValueError(f"{fn}: weight must have shape [D, W] = [{x.shape[1]}, W] (D from x "
                         f"{list(x.shape)}), got {list(weight.shape)}")


def _cu_seqlens(seq_idx: torch.Tensor) -> torch.Tensor:
    """Offsets [N+1] of the runs of equal values in seq_idx [T] (the packed sequences)."""
    starts = torch.nonzero(seq_idx[1:] != seq_idx[:-1]).flatten() + 1
    ends = torch.tensor([0, seq_idx.shape[0]], dtype=starts.dtype)
    return torch.cat([ends[:1], starts, ends[1:]]).to(torch.int32)


def causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None,
                     return_final_states=False, final_states_out=None, activation=None):
    """out[b, d, t] = act(bias[d] + Σ_j weight[d, j] x[b, d, t-(W-1)+j]), causal per channel;
    the inputs before t = 0 are initial_states [B, D, W-1] (zeros without). seq_idx [B, T]
    (int) restarts the convolution where its value changes (packed sequences; no
    initial_states then). Returns out [B, D, T], or (out, final_states [B, D, W-1]) with
    return_final_states (written into final_states_out if given). activation: None, 'silu' or
    'swish'."""
    fn = "causal_conv1d_fn"
    _check(fn, x, weight, (3,), "[B, D, T]")
    if seq_idx is not None:
        if initial_states is not None or return_final_states:
            raise ValueError(f"{fn}: seq_idx (packed sequences) cannot be combined with "
                             "initial_states or return_final_states")
        if not isinstance(seq_idx, torch.Tensor) or seq_idx.shape != (x.shape[0], x.shape[2]):
            raise ValueError(f"{fn}: seq_idx must be a tensor of shape [B, T] = "
                             f"{[x.shape[0], x.shape[2]]}, got "
                             f"{list(getattr(seq_idx, 'shape', [type(seq_idx).__name__]))}")
        if seq_idx.dtype.is_floating_point or seq_idx.dtype == torch.bool:
            raise ValueError(f"{fn}: seq_idx must hold integers, got {seq_idx.dtype}")
        rows = [ops.causal_conv1d(x[b:b + 1].transpose(1, 2), weight, bias,
                                  activation=activation, cu_seqlens=_cu_seqlens(seq_idx[b]))[0]
                for b in range(x.shape[0])]
        return (rows[0] if len(rows) == 1 else torch.cat(rows)).transpose(1, 2)
    if initial_states is not None:
        width = weight.shape[1]
        if (not isinstance(initial_states, torch.Tensor)
                or initial_states.shape != (x.shape[0], x.shape[1], width - 1)):
            raise ValueError(f"{fn}: initial_states must have shape [B, D, W-1] = "
                             f"{[x.shape[0], x.shape[1], width - 1]}, got "
                             f"{list(getattr(initial_states, 'shape', []))}")
        # linattn's state holds the last W inputs (one more column, never read): pad it on.
        initial_states = torch.nn.functional.pad(initial_states, (1, 0))
    y, final_state = ops.causal_conv1d(x.transpose(1, 2), weight, bias,
                                       initial_state=initial_states,
                                       output_final_state=return_final_states,
                                       activation=activation)
    out = y.transpose(1, 2)
    if not return_final_states:
        return out
    final_states = final_state[..., 1:]
    if final_states_out is not None:
        final_states_out.copy_(final_states)
        final_states = final_states_out
    return out, final_states


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None, cache_seqlens=None,
                         conv_state_indices=None):
    """Decode step: x [B, D] or [B, D, T] holds the next token(s) of each sequence; conv_state
    [B, D, W] (the last W inputs) is shifted by them in place. Returns out shaped like x.
    cache_seqlens (circular states) and conv_state_indices are not supported."""
    fn = "causal_conv1d_update"
    _check(fn, x, weight, (2, 3), "[B, D] or [B, D, T]")
    if cache_seqlens is not None or conv_state_indices is not None:
        raise ValueError(f"{fn}: cache_seqlens / conv_state_indices are not supported: pass a "
                         "conv_state with one [D, W] row per batch row")
    width = weight.shape[1]
    if (not isinstance(conv_state, torch.Tensor)
            or conv_state.shape != (x.shape[0], x.shape[1], width)):
        raise ValueError(f"{fn}: conv_state must have shape [B, D, W] = "
                         f"{[x.shape[0], x.shape[1], width]}, got "
                         f"{list(getattr(conv_state, 'shape', [type(conv_state).__name__]))}")
    tokens = x if x.dim() == 3 else x.unsqueeze(2)
    needs_graph = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias))
    if tokens.shape[2] == 1 and not needs_graph:
        y, _ = _conv1d.causal_conv1d_update(tokens[:, :, 0], conv_state, weight=weight,
                                            bias=bias, activation=activation)
        return y.view(x.shape)
    # Several tokens, or a graph to record: the differentiable forward from the cached state.
    y, final_state = ops.causal_conv1d(tokens.transpose(1, 2), weight, bias,
                                       initial_state=conv_state.detach(), output_final_state=True,
                                       activation=activation)
    conv_state.copy_(final_state)
    return y.transpose(1, 2).reshape(x.shape)
