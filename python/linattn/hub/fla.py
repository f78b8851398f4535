"""flash-linear-attention's entry points that transformers looks up (package ``fla``), on
linattn's C++ ops: the gated delta rule (Qwen3-Next, Qwen3.5, OLMo-hybrid) and KDA
(Kimi-Linear). Arguments, defaults and layouts are fla's (``linattn.ops`` documents them).

One addition: transformers' Kimi-Linear layer hands its packed-sequence offsets to the KDA
kernels only as ``cu_seq_lens_q`` (the flash-attention name), never as ``cu_seqlens``; the KDA
entry points here take it as ``cu_seqlens``, so packed sequences stay apart (fla's kernels
would run them together).
"""

from __future__ import annotations

import functools
import inspect

from .. import ops
from ..ops import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule

__all__ = ["chunk_gated_delta_rule", "chunk_kda", "fused_recurrent_gated_delta_rule",
           "fused_recurrent_kda"]


def _taking_cu_seq_lens_q(op_fn):
    """op_fn with one more keyword, cu_seq_lens_q: packed-sequence offsets used as cu_seqlens."""
    signature = inspect.signature(op_fn)
    name = op_fn.__name__

    @functools.wraps(op_fn)
    def entry(*args, cu_seq_lens_q=None, **kwargs):
        if cu_seq_lens_q is not None:
            bound = signature.bind_partial(*args, **kwargs)
            given = bound.arguments.get("cu_seqlens")
            if given is not None and given is not cu_seq_lens_q:
                raise ValueError(f"{name}: give cu_seqlens or cu_seq_lens_q (the same offsets), "
                                 "not both")
            kwargs["cu_seqlens"] = cu_seq_lens_q
        return op_fn(*args, **kwargs)

    keyword = inspect.Parameter("cu_seq_lens_q", inspect.Parameter.KEYWORD_ONLY, default=None)
    params = list(signature.parameters.values())
    at = next((i for i, p in enumerate(params) if p.kind == p.VAR_KEYWORD), len(params))
    entry.__signature__ = signature.replace(parameters=[*params[:at], keyword, *params[at:]])
    return entry


chunk_kda = _taking_cu_seq_lens_q(ops.chunk_kda)
fused_recurrent_kda = _taking_cu_seq_lens_q(ops.fused_recurrent_kda)
