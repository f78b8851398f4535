"""Softmax attention on the CPU with fla's names: the baseline of every benchmark and the
full-attention layer of hybrid models (C++: src/ops/attention/, algorithms.md §4.11).

- ``parallel_attn(q, k, v, g=None, scale=None, window_size=None, cu_seqlens=None, ...)``: fla's
  ``fla.ops.attn.parallel_attn`` (same argument names and order, causal, returns ``o``).
  q [B, T, H, K], k [B, T, Hkv, K], v [B, T, Hkv, V] with H % Hkv == 0 (GQA); ``window_size`` W
  makes token i read keys [i - W + 1, i]; ``cu_seqlens`` (B = 1) packs sequences. Torch tensors
  that require grad get gradients through the C++ tiled backward.
- ``attn_with_kvcache(q, k_cache, v_cache, cache_seqlens, scale=None, window_size=None)``: a
  decode step (fla's decoding op takes a packed cache; this one takes flash-attn's
  ``flash_attn_with_kvcache`` layout): q [N, Tq, H, K] are the newest Tq tokens of each sequence,
  already written to the caches [N, S, Hkv, K/V], which hold ``cache_seqlens[n]`` valid rows.
- ``parallel_attn_backward``: the gradients without autograd (numpy, or for tools).

``form`` (keyword-only, linattn's own) picks the implementation: 'chunk' (tiled flash-style) or
'recurrent' (decode) by default, 'reference' for the fp64 oracle. float64 inputs always run the
oracle.
"""

from __future__ import annotations

from typing import Any

from . import _core
from ._arrays import as_input, dtype_name, empty_like, is_torch

__all__ = ["parallel_attn", "parallel_attn_backward", "attn_with_kvcache"]


def _check_rank(name: str, arg: str, x, layout: str) -> None:
    """The rank check the output allocation below needs before C++ sees the arrays."""
    if len(x.shape) != 4:
        raise ValueError(f"{name}: {arg} must have rank 4 {layout}, got shape {list(x.shape)}")


def _lse_dtype(q) -> str:
    return "float64" if dtype_name(q) == "float64" else "float32"


def _forward(q, k, v, scale, window_size, cu_seqlens, form):
    """(o, lse) of the forward, allocated like q and written by C++."""
    q, k, v, cu = (as_input(x) for x in (q, k, v, cu_seqlens))
    _check_rank("parallel_attn", "q", q, "[B, T, H, K]")
    _check_rank("parallel_attn", "v", v, "[B, T, Hkv, V]")
    B, T, H = q.shape[0], q.shape[1], q.shape[2]
    o = empty_like(q, (B, T, H, v.shape[-1]), dtype_name(v))
    lse = empty_like(q, (B, T, H), _lse_dtype(q))
    _core.attention_forward(form, q, k, v, cu, scale, window_size or 0, o=o, lse=lse)
    return o, lse


def parallel_attn_backward(q, k, v, do, scale=None, window_size=None, cu_seqlens=None, *,
                           o=None, lse=None, form: str = "chunk") -> dict[str, Any]:
    """Gradients {"dq", "dk", "dv"} of parallel_attn for the upstream gradient ``do``, each
    shaped and typed like its input. The chunk form uses the forward's ``o`` and ``lse`` when
    given, else runs the forward first."""
    if form == "chunk" and (o is None or lse is None):
        o, lse = _forward(q, k, v, scale, window_size, cu_seqlens, form)
    q, k, v = as_input(q), as_input(k), as_input(v)
    grads = {name: empty_like(q, tuple(x.shape), dtype_name(x))
             for name, x in (("dq", q), ("dk", k), ("dv", v))}
    _core.attention_backward(form, q, k, v, as_input(cu_seqlens), scale, window_size or 0,
                             o=as_input(o), lse=as_input(lse), d_o=as_input(do), **grads)
    return grads


def _sink(o, lse, sink_bias):
    """fla's attention sink: a per-head logit s_h that joins every row's softmax denominator
    and adds no value: lse' = log(e^lse + e^s), o' = o e^(lse - lse'). Torch elementwise glue
    on [B, T, H] (the attention itself stays in C++); returns (o', lse')."""
    import torch

    wide = torch.promote_types(lse.dtype, torch.float32)
    lse_sink = torch.logaddexp(lse.to(wide), sink_bias.to(wide))
    return (o * (lse.to(wide) - lse_sink).exp()[..., None].to(o.dtype)), lse_sink.to(lse.dtype)


def _autograd_function():
    """torch.autograd.Function over the C++ forward and backward (built on first use, so that
    numpy-only installs never import torch)."""
    import torch

    class ParallelAttnFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, sink_bias, scale, window_size, cu_seqlens, form):
            o, lse = _forward(q, k, v, scale, window_size, cu_seqlens, form)
            if sink_bias is not None:
                o, lse = _sink(o, lse, sink_bias)
            ctx.save_for_backward(q, k, v, o, lse, sink_bias)
            ctx.options = (scale, window_size, cu_seqlens, form)
            return o

        @staticmethod
        def backward(ctx, do):
            q, k, v, o, lse, sink_bias = ctx.saved_tensors
            scale, window_size, cu_seqlens, form = ctx.options
            # The tiled backward from the sink's o and lse is exact: dS = P (dO V^T - D) with
            # P = e^(S - lse') and D = rowsum(dO o'), the sink only lowering P.
            g = parallel_attn_backward(q, k, v, do.contiguous(), scale, window_size, cu_seqlens,
                                       o=o, lse=lse, form=form)
            dsink = None
            if sink_bias is not None and ctx.needs_input_grad[3]:
                weight = (sink_bias.float() - lse.float()).exp()  # the sink's probability
                dsink = -(weight * (do.float() * o.float()).sum(-1)).sum((0, 1))
                dsink = dsink.to(sink_bias.dtype)
            return g["dq"], g["dk"], g["dv"], dsink, None, None, None, None

    return ParallelAttnFunction


_AUTOGRAD = []


def parallel_attn(q, k, v, g=None, scale=None, window_size=None, cu_seqlens=None,
                  chunk_indices=None, *, sink_bias=None, form: str = "chunk"):
    """Causal softmax attention, o [B, T, H, V]: o_i = sum_{j in window(i)} softmax_j(scale q_i.k_j) v_j.

    ``sink_bias`` [H] (fla's attention sink, torch only) adds e^(sink_bias[h]) to every
    softmax denominator of head h. ``g`` (fla's optional forgetting-gate log decay) is not
    supported: passing one raises. ``chunk_indices`` (fla's precomputed varlen tiles for its
    GPU kernel) has no effect."""
    if g is not None:
        raise ValueError("parallel_attn: g (the forgetting-transformer gate) is not supported by "
                         "linattn; pass g=None")
    tensors = (q, k, v) if sink_bias is None else (q, k, v, sink_bias)
    if sink_bias is not None:
        _check_sink(q, sink_bias)
    if any(is_torch(x) and x.requires_grad for x in tensors):
        import torch

        if torch.is_grad_enabled():
            if sink_bias is not None and (form == "reference" or q.dtype == torch.float64):
                raise ValueError("parallel_attn: gradients with sink_bias need the chunk form "
                                 "(float32 or bfloat16 inputs); the fp64 reference backward "
                                 "has no sink")
            if not _AUTOGRAD:
                _AUTOGRAD.append(_autograd_function())
            return _AUTOGRAD[0].apply(q, k, v, sink_bias, scale, window_size, cu_seqlens, form)
    o, lse = _forward(q, k, v, scale, window_size, cu_seqlens, form)
    return o if sink_bias is None else _sink(o, lse, sink_bias)[0]


def _check_sink(q, sink_bias) -> None:
    if not (is_torch(sink_bias) and is_torch(q)):
        raise TypeError("parallel_attn: sink_bias needs torch tensors (q and sink_bias)")
    if tuple(sink_bias.shape) != (q.shape[2],):
        raise ValueError(f"parallel_attn: sink_bias must have shape [H] = [{q.shape[2]}], got "
                         f"{list(sink_bias.shape)}")


def attn_with_kvcache(q, k_cache, v_cache, cache_seqlens, scale=None, window_size=None, *,
                      form: str = "recurrent"):
    """Decode step: o [N, Tq, H, V] of the newest Tq tokens of each sequence, whose query t sits
    at position cache_seqlens[n] - Tq + t of its cache (causal within the new tokens)."""
    q, k_cache, v_cache, cache_seqlens = (as_input(x) for x in (q, k_cache, v_cache, cache_seqlens))
    _check_rank("attn_with_kvcache", "q", q, "[N, Tq, H, K]")
    _check_rank("attn_with_kvcache", "v_cache", v_cache, "[N, S, Hkv, V]")
    o = empty_like(q, (*q.shape[:3], v_cache.shape[-1]), dtype_name(v_cache))
    _core.attention_decode(form, q, k_cache, v_cache, cache_seqlens, scale, window_size or 0, o=o)
    return o
