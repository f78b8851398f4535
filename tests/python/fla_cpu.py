"""fla's layers and models on the CPU, for comparing linattn's with them: the ``fla_cpu`` fixture
imports fla (its Triton kernels are never launched) and swaps every Triton-only function that
fla's layers call (short convolution, RMS norms, the mixer ops) for a pure-torch reference made
of fla's own naive functions where fla has them (gates, recurrences, norms) and of torch's
conv1d for the convolution. The swap replaces the function in every fla module that imported
it, so layer code runs unchanged around it."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

import fla_source

L2NORM_EPS = 1e-6  # fla's l2norm: x / sqrt(sum x^2 + eps)


def l2norm(x):
    return x * torch.rsqrt(x.float().square().sum(-1, keepdim=True) + L2NORM_EPS).to(x.dtype)


def causal_conv1d(x, weight=None, bias=None, residual=None, initial_state=None,
                  output_final_state=False, activation=None, backend=None, cu_seqlens=None,
                  **_):
    """fla's causal_conv1d by torch's conv1d: cache [N, D, W] = the last W inputs."""
    if cu_seqlens is not None:
        raise NotImplementedError("the CPU stand-in of fla's causal_conv1d takes no cu_seqlens")
    B, T, D = x.shape
    W = weight.shape[-1]
    past = (x.new_zeros(B, D, W) if initial_state is None else initial_state).transpose(1, 2)
    xx = torch.cat([past.to(x.dtype), x], 1)
    y = F.conv1d(xx[:, 1:].transpose(1, 2), weight[:, None], bias, groups=D).transpose(1, 2)
    if activation in ("silu", "swish"):
        y = F.silu(y)
    if residual is not None:
        y = y + residual
    return y, (xx[:, -W:].transpose(1, 2).contiguous() if output_final_state else None)


def causal_conv1d_update(x, cache, residual=None, weight=None, bias=None, activation=None):
    """fla's decode step: shift the cache by one token in place, convolve it."""
    step = x.reshape(cache.shape[0], -1)
    cache.copy_(torch.cat([cache[..., 1:], step[..., None].to(cache.dtype)], -1))
    y = (cache * weight).sum(-1) + (0 if bias is None else bias)
    if activation in ("silu", "swish"):
        y = F.silu(y)
    y = y.reshape(x.shape).to(x.dtype)
    return (y if residual is None else y + residual), cache


def rms_norm(x, weight, bias, residual=None, eps=1e-5, prenorm=False, residual_in_fp32=False,
             **_):
    from fla.modules.norm.layernorm import rms_norm_ref

    return rms_norm_ref(x, weight, bias, residual=residual, eps=eps, prenorm=prenorm,
                        upcast=True)


def rms_norm_linear(x, norm_weight, norm_bias, linear_weight, linear_bias, residual=None,
                    eps=1e-5, prenorm=False, residual_in_fp32=False):
    """fla's fused RMSNorm + linear."""
    if residual is not None or prenorm:
        raise NotImplementedError("the CPU stand-in of rms_norm_linear takes no residual")
    return F.linear(rms_norm(x, norm_weight, norm_bias, eps=eps), linear_weight, linear_bias)


def rms_norm_gated(x, g, weight, bias, activation="swish", residual=None, prenorm=False,
                   residual_in_fp32=False, eps=1e-5, **_):
    """fla's FusedRMSNormGated: rmsnorm(x) * weight, then times act(g)."""
    if residual is not None or prenorm:
        raise NotImplementedError("the CPU stand-in of rms_norm_gated takes no residual")
    y = rms_norm(x, weight, bias, eps=eps).float()
    gate = g.float().sigmoid() if activation == "sigmoid" else F.silu(g.float())
    return (y * gate).to(x.dtype)


def rmsnorm_fn(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True):
    """fla's gated (and grouped) RMSNorm of layernorm_gated, by fla's own reference."""
    from fla.modules.norm.layernorm_gated import rms_norm_ref

    return rms_norm_ref(x, weight, bias, z=z, eps=eps, group_size=group_size,
                        norm_before_gate=norm_before_gate)


def swish_fwd(x):
    return F.silu(x.float()).to(x.dtype)


def swish_bwd(x, dy):
    s = x.float().sigmoid()
    return (dy.float() * s * (1 + x.float() * (1 - s))).to(x.dtype)


def swiglu_fwd(x, y, output_contiguous=False):
    return (F.silu(x.float()) * y.float()).to(x.dtype)


def _naive(path: str, name: str):
    return getattr(fla_source.load_file(path), name)


def gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                     use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False, A_log=None,
                     dt_bias=None, use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False,
                     state_v_first=False, cu_seqlens=None, **_):
    """fla's chunk/fused_recurrent_gated_delta_rule from its naive gate and recurrence."""
    from fla.ops.gated_delta_rule.gate import naive_gdn_gate

    if cu_seqlens is not None:
        raise NotImplementedError("the CPU stand-in of the gated delta rule takes no cu_seqlens")
    if use_gate_in_kernel:
        g = naive_gdn_gate(g, A_log, dt_bias)
    g = v.new_zeros(v.shape[:3]) if g is None else g  # fla's g=None: no decay
    beta = v.new_ones(v.shape[:3]) if beta is None else beta
    q, k, beta = _in_kernel_qk_beta(q, k, beta, use_qk_l2norm_in_kernel,
                                    use_beta_sigmoid_in_kernel, allow_neg_eigval)
    group = v.shape[2] // q.shape[2]  # grouped value heads: each q/k head serves `group`
    q, k = (x.repeat_interleave(group, dim=2) for x in (q, k))
    recurrence = _naive("fla/ops/gated_delta_rule/naive.py", "naive_recurrent_gated_delta_rule")
    return _state_layout(lambda s0: recurrence(q, k, v, beta, g, scale=scale, initial_state=s0,
                                               output_final_state=output_final_state),
                         initial_state, state_v_first, v.dtype)


def _in_kernel_qk_beta(q, k, beta, l2norm_qk, beta_sigmoid, allow_neg_eigval):
    """fla's in-kernel l2 norm of q, k and sigmoid of beta (x2 with allow_neg_eigval)."""
    if beta_sigmoid:
        beta = beta.float().sigmoid() * (2.0 if allow_neg_eigval else 1.0)
    if l2norm_qk:
        q, k = l2norm(q), l2norm(k)
    return q, k, beta


def _state_layout(run, initial_state, state_v_first, dtype):
    """A naive recurrence (states [N, H, K, V]) behind fla's state_v_first ([N, H, V, K])."""
    if state_v_first and initial_state is not None:
        initial_state = initial_state.transpose(-1, -2)
    o, s = run(initial_state)
    if state_v_first and s is not None:
        s = s.transpose(-1, -2)
    return o.to(dtype), s


def delta_rule(q, k, v, beta=None, scale=None, initial_state=None, output_final_state=False,
               use_qk_l2norm_in_kernel=False, cu_seqlens=None, **_):
    """fla's chunk/fused_recurrent_delta_rule from its naive recurrence ([B, H, T, ...])."""
    if cu_seqlens is not None:
        raise NotImplementedError("the CPU stand-in of the delta rule takes no cu_seqlens")
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q), l2norm(k)
    beta = v.new_ones(v.shape[:3]) if beta is None else beta
    if scale is not None:  # the naive recurrence scales by K^-0.5 itself
        q = q * (scale * q.shape[-1] ** 0.5)
    recurrence = _naive("fla/ops/delta_rule/naive.py", "delta_rule_recurrence")
    o, s = recurrence(*(x.transpose(1, 2) for x in (q, k, v, beta)), initial_state=initial_state,
                      output_final_state=output_final_state)
    return o.transpose(1, 2).to(v.dtype), s


def gla(q, k, v, g=None, gk=None, scale=None, initial_state=None, output_final_state=False,
        cu_seqlens=None, **_):
    """fla's chunk/fused_recurrent_gla from its naive recurrence (its scale is K^-0.5)."""
    if cu_seqlens is not None:
        raise NotImplementedError("the CPU stand-in of GLA takes no cu_seqlens")
    if scale is not None:
        q = q * (scale * q.shape[-1] ** 0.5)
    recurrence = _naive("fla/ops/gla/naive.py", "naive_recurrent_gla")
    o, s = recurrence(q, k, v, gk if gk is not None else g, initial_state=initial_state,
                      output_final_state=output_final_state)
    return o.to(v.dtype), s


def gated_delta_product(q, k, v, g, beta, num_householder, scale=None, initial_state=None,
                        output_final_state=False, use_qk_l2norm_in_kernel=False,
                        cu_seqlens=None, **_):
    """fla's chunk_gated_delta_product from its naive recurrence."""
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q), l2norm(k)
    recurrence = _naive("fla/ops/gated_delta_product/naive.py",
                        "naive_recurrent_gated_delta_product")
    o, s = recurrence(q, k, v, g, beta, q.shape[-1] ** -0.5 if scale is None else scale,
                      cu_seqlens=cu_seqlens, initial_state=initial_state,
                      output_final_state=output_final_state, num_householder=num_householder)
    return o.to(v.dtype), s


def kda(q, k, v, g, beta, A_log=None, dt_bias=None, scale=None, initial_state=None,
        output_final_state=False, use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False,
        use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False, lower_bound=None,
        state_v_first=False, cu_seqlens=None, **kwargs):
    """fla's chunk/fused_recurrent_kda from its naive gates and recurrence."""
    from fla.ops.kda.gate import naive_kda_gate, naive_kda_lowerbound_gate

    if cu_seqlens is not None:
        raise NotImplementedError("the CPU stand-in of KDA takes no cu_seqlens")
    A_log, dt_bias = kwargs.get("A_log", A_log), kwargs.get("dt_bias", dt_bias)
    if use_gate_in_kernel:
        g = (naive_kda_gate(g, A_log, dt_bias) if lower_bound is None else
             naive_kda_lowerbound_gate(g, A_log, dt_bias, lower_bound))
    q, k, beta = _in_kernel_qk_beta(q, k, beta, use_qk_l2norm_in_kernel,
                                    use_beta_sigmoid_in_kernel, allow_neg_eigval)
    recurrence = _naive("fla/ops/kda/naive.py", "naive_recurrent_kda")
    return _state_layout(lambda s0: recurrence(q, k, v, g, beta, scale=scale, initial_state=s0,
                                               output_final_state=output_final_state),
                         initial_state, state_v_first, v.dtype)


def linear_attn(q, k, v, scale=None, initial_state=None, output_final_state=False,
                normalize=False, cu_seqlens=None, **_):
    """fla's chunk/fused_recurrent_linear_attn from its naive recurrence."""
    if cu_seqlens is not None:
        raise NotImplementedError("the CPU stand-in of linear attention takes no cu_seqlens")
    recurrence = _naive("fla/ops/linear_attn/naive.py", "naive_recurrent_linear_attn")
    return recurrence(q, k, v, scale=scale, initial_state=initial_state,
                      output_final_state=output_final_state, normalize=normalize)


def dplr_delta_rule(q, k, v, a, b, gk, scale=None, initial_state=None, output_final_state=False,
                    cu_seqlens=None, **_):
    """fla's chunk_dplr_delta_rule / chunk_rwkv7 (q = r, gk = w) from its naive recurrence."""
    if cu_seqlens is not None:
        raise NotImplementedError("the CPU stand-in of the DPLR rule takes no cu_seqlens")
    if scale is not None:  # the naive recurrence scales by K^-0.5 itself
        q = q * (scale * q.shape[-1] ** 0.5)
    recurrence = _naive("fla/ops/generalized_delta_rule/dplr/naive.py", "dplr_recurrence")
    o, s = recurrence(*(x.transpose(1, 2) for x in (q, k, v, a, b, gk)),
                      initial_state=initial_state, output_final_state=output_final_state)
    return o.transpose(1, 2).to(v.dtype), s


def chunk_rwkv7(r, w, k, v, a, b, scale=1.0, **kwargs):
    return dplr_delta_rule(r, k, v, a, b, w, scale=scale, **kwargs)


def fused_mul_recurrent_rwkv7(r, w, k, v, kk, a, scale=1.0, **kwargs):
    return dplr_delta_rule(r, k, v, -kk, kk * a, w, scale=scale, **kwargs)


def token_shift(x, cu_seqlens=None, cache=None, output_cache=False, chunk_indices=None):
    """fla's token shift: delta = x_{t-1} - x_t (the cache [N, D] is the token before)."""
    if cu_seqlens is not None:
        raise NotImplementedError("the CPU stand-in of token_shift takes no cu_seqlens")
    before = x.new_zeros(x.shape[0], 1, x.shape[2]) if cache is None else cache[:, None]
    delta = torch.cat([before, x[:, :-1]], 1) - x
    return (delta, x[:, -1]) if output_cache else delta


def addcmul_rwkv7(*args, **kwargs):
    from fla.ops.rwkv7.fused_addcmul import torch_addcmul_rwkv7  # fla's own reference

    return torch_addcmul_rwkv7(*args, **kwargs)


def k_update_rwkv7(k, a, ka, **_):
    from fla.ops.rwkv7.fused_k_update import k_update_ref  # fla's own reference

    return k_update_ref(k, a, ka)


def gate_output_correction(*args, **kwargs):
    from fla.ops.rwkv7.gate_output_correction import gate_output_correction_ref

    return gate_output_correction_ref(*args, **kwargs)


_REPLACEMENTS = {
    "fla.modules.causal_conv1d.ops": {"causal_conv1d": causal_conv1d,
                                      "causal_conv1d_update": causal_conv1d_update},
    "fla.modules.norm.layernorm": {"rms_norm": rms_norm, "rms_norm_linear": rms_norm_linear},
    "fla.modules.norm.fused_norm_gate": {"rms_norm_gated": rms_norm_gated},
    "fla.modules.norm.layernorm_gated": {"rmsnorm_fn": rmsnorm_fn},
    "fla.modules.activations.ops": {"swish_fwd": swish_fwd, "swish_bwd": swish_bwd,
                                    "swiglu_fwd": swiglu_fwd},
    "fla.ops.delta_rule": {"chunk_delta_rule": delta_rule,
                           "fused_recurrent_delta_rule": delta_rule},
    "fla.ops.gated_delta_product": {"chunk_gated_delta_product": gated_delta_product},
    "fla.ops.kda": {"chunk_kda": kda, "fused_recurrent_kda": kda},
    "fla.ops.linear_attn": {"chunk_linear_attn": linear_attn,
                            "fused_recurrent_linear_attn": linear_attn,
                            "fused_chunk_linear_attn": linear_attn},
    "fla.ops.rwkv7": {"chunk_rwkv7": chunk_rwkv7,
                      "fused_mul_recurrent_rwkv7": fused_mul_recurrent_rwkv7},
    "fla.modules.token_shift": {"token_shift": token_shift},
    "fla.ops.rwkv7.fused_addcmul": {"fused_addcmul_rwkv7": addcmul_rwkv7},
    "fla.ops.rwkv7.fused_k_update": {"fused_k_rwkv7": k_update_rwkv7},
    "fla.ops.rwkv7.gate_output_correction": {"gate_output_correction": gate_output_correction},
    "fla.ops.gla": {"chunk_gla": gla, "fused_recurrent_gla": gla},
    "fla.ops.gated_delta_rule": {"chunk_gated_delta_rule": gated_delta_rule,
                                 "fused_recurrent_gated_delta_rule": gated_delta_rule},
}


@pytest.fixture
def fla_cpu(monkeypatch):
    """fla imported, its Triton-only functions replaced by the references above everywhere
    fla's modules refer to them."""
    problem = fla_source.check_installed()
    if problem:
        pytest.fail(problem)
    import importlib

    import fla.layers  # noqa: F401  (imports every layer module)
    import fla.models  # noqa: F401

    for module_name, swaps in _REPLACEMENTS.items():
        module = importlib.import_module(module_name)
        for name, replacement in swaps.items():
            original = getattr(module, name)
            for loaded in list(sys.modules.values()):
                if getattr(loaded, "__name__", "").startswith("fla") and \
                        getattr(loaded, name, None) is original:
                    monkeypatch.setattr(loaded, name, replacement)
    import fla

    return fla
