"""Local Linear Attention (Zuo et al., ICLR 2026), causal: ``lla_attention`` (the authors' name).

Each query's output is the intercept of a softmax-weighted ridge regression of the values on
``k_j - q_i`` (docs/design.md, "Local Linear Attention"); ``ridge_lambda -> inf`` gives softmax
attention. The numeric work is C++ (src/ops/lla/): ``form='chunk'`` is the blockwise FlashLLA
algorithm (query tiles, conjugate gradients), ``'recurrent'`` the decode form (each query alone
against its cache), ``'reference'`` the fp64 oracle (a direct solve per query).

Layout is fla's: q [B, Tq, H, K], k [B, T, H, K], v [B, T, H, V] with Tq <= T; the queries are
the last Tq positions (Tq = 1: one decode step against a KV cache). Arrays are numpy arrays or
CPU torch tensors; with torch tensors that require grad the result is differentiable (the
backward is the exact gradient, including through a per-token ``ridge_lambda``).
"""

from __future__ import annotations

from typing import Any

from . import _core
from ._arrays import as_input, dtype_name, empty_like, is_torch

__all__ = ["lla_attention"]


def _options(ridge_lambda, **options) -> dict[str, Any]:
    """Scalar ridge_lambda as a float, a per-token one ([B, Tq, H]) as an array."""
    if isinstance(ridge_lambda, (int, float)):
        return {"ridge_lambda": float(ridge_lambda), "ridge_lambda_per_token": None, **options}
    return {"ridge_lambda_per_token": as_input(ridge_lambda), **options}


def _forward(form: str, q, k, v, ridge_lambda, options: dict[str, Any]):
    q, k, v = as_input(q), as_input(k), as_input(v)
    o = empty_like(q, (q.shape[0], q.shape[1], q.shape[2], v.shape[3]), dtype_name(v))
    _core.lla_forward(form, q, k, v, o=o, **_options(ridge_lambda, **options))
    return o


def _backward(form: str, q, k, v, ridge_lambda, do, options: dict[str, Any]):
    """(dq, dk, dv, dridge_lambda or None), shaped and typed like their inputs."""
    q, k, v = as_input(q), as_input(k), as_input(v)
    grads = [empty_like(q, tuple(x.shape), dtype_name(x)) for x in (q, k, v)]
    per_token = not isinstance(ridge_lambda, (int, float))
    dlam = empty_like(q, tuple(ridge_lambda.shape), dtype_name(ridge_lambda)) if per_token else None
    _core.lla_backward(form, q, k, v, as_input(do), dq=grads[0], dk=grads[1], dv=grads[2],
                       dridge_lambda=dlam, **_options(ridge_lambda, **options))
    return (*grads, dlam)


def _autograd_function():
    import torch

    class LLAFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, ridge_lambda, form, options):
            ctx.save_for_backward(q, k, v, ridge_lambda)
            ctx.form, ctx.options = form, options
            lam = ridge_lambda if ridge_lambda.ndim == 3 else float(ridge_lambda)
            return _forward(form, q, k, v, lam, options)

        @staticmethod
        def backward(ctx, do):
            q, k, v, ridge_lambda = ctx.saved_tensors
            form = "reference" if ctx.form == "reference" else "chunk"
            lam = ridge_lambda if ridge_lambda.ndim == 3 else float(ridge_lambda)
            dq, dk, dv, dlam = _backward(form, q, k, v, lam, do.contiguous(), ctx.options)
            return dq, dk, dv, dlam, None, None

    return LLAFunction


def lla_attention(
    q,
    k,
    v,
    *,
    ridge_lambda: float | Any = 10.0,
    scale: float | None = None,
    cu_seqlens=None,
    delta_eps: float = 1e-12,
    cg_atol: float = 1e-12,
    cg_rtol: float = 1e-12,
    cg_max_iters: int = 32,
    cg_use_preconditioner: bool = False,
    solver: str = "cg",
    form: str = "chunk",
):
    """Causal Local Linear Attention; returns o [B, Tq, H, V] with v's dtype.

    ridge_lambda: the ridge lambda_i > 0, a float or a [B, Tq, H] array (per query and head).
    scale: score scale, default K**-0.5. cu_seqlens: packed sequences (B = 1, Tq = T).
    delta_eps: delta_i += delta_eps * sign(delta_i). cg_*: the conjugate-gradient solve of the
    chunk and recurrent forms (stop when ||r||^2 <= cg_rtol * max(cg_atol, ||r_0||^2), at most
    cg_max_iters iterations, optional Jacobi preconditioner). Defaults are the authors' (FlashLLA).
    solver: 'cg' (default) or 'direct' (Sigma_i accumulated and Cholesky-factored per query:
    exact whatever lambda, slower for K >= 16; docs/design.md).
    """
    options = dict(cu_seqlens=as_input(cu_seqlens), scale=scale, delta_eps=delta_eps,
                   cg_atol=cg_atol, cg_rtol=cg_rtol, cg_max_iters=cg_max_iters,
                   cg_use_preconditioner=cg_use_preconditioner, solver=solver)
    tensors = [x for x in (q, k, v, ridge_lambda) if is_torch(x)]
    if any(x.requires_grad for x in tensors):
        import torch

        lam = ridge_lambda if is_torch(ridge_lambda) else torch.tensor(float(ridge_lambda), dtype=torch.float64)
        return _autograd_function().apply(q, k, v, lam, form, options)
    return _forward(form, q, k, v, ridge_lambda, options)
