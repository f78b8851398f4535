"""mamba_ssm's kernel functions on linattn, for CPU torch tensors: the module transformers finds
in place of ``mamba_ssm`` (``linattn.transformers.apply_linattn``).

Names, argument names, defaults, layouts and return values are mamba_ssm's (2.x):

- ``selective_scan_fn``, ``mamba_inner_fn`` (Mamba-1; ``ops.selective_scan_interface``)
- ``selective_state_update`` (decode step; Mamba-1 3-D state [batch, dim, dstate] and Mamba-2
  4-D multi-head state [batch, nheads, headdim, dstate]; ``ops.triton.selective_state_update``)
- ``mamba_chunk_scan_combined``, ``mamba_split_conv1d_scan_combined`` (Mamba-2 SSD;
  ``ops.triton.ssd_combined``)

Every function is differentiable (torch autograd). The numerics are linattn's C++ ops: the
selective scan (``linattn.scan``), the causal conv1d (``linattn.ops.causal_conv1d``) and, for
SSD, ``linattn.ssd`` (include/linattn/ssd.hpp: simple_gla's chunk kernels with grouped
q/k heads, plus the dt transform, D skip and z gate, forward and backward). What is left here
is argument handling, the packing of seq_idx, and in the fused functions the projections
(torch GEMMs, as in mamba_ssm's own) and the gated RMSNorm.

Packed sequences: ``seq_idx`` [batch, seqlen] (mamba_ssm's way) runs every run of equal
``seq_idx`` within a row as its own sequence; rows are packed into one linattn call with
``cu_seqlens`` (no copies of the large tensors).
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

from .. import ops as _ops
from .. import scan as _scan
from .. import ssd as _ssd

__all__ = ["selective_scan_fn", "mamba_inner_fn", "selective_state_update",
           "mamba_chunk_scan_combined", "mamba_split_conv1d_scan_combined"]


def _check_cpu(fn: str, **tensors) -> None:
    _ops._check_tensors(fn, tensors)


def _check_shape(fn: str, name: str, x, shape) -> None:
    if x is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {list(shape)}, got {list(x.shape)}")


# ----------------------------------------------------------------------------------------------
# Mamba-1


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False):
    """mamba_ssm.ops.selective_scan_interface.selective_scan_fn: u, delta, z [batch, dim, L];
    A [dim, dstate]; B, C [batch, dstate, L] or [batch, G, dstate, L]; D, delta_bias [dim].
    Returns out [batch, dim, L], or (out, last_state [batch, dim, dstate]) with
    return_last_state. Differentiable in every tensor."""
    _check_cpu("selective_scan_fn", u=u, delta=delta, A=A, B=B, C=C, D=D, z=z,
               delta_bias=delta_bias)
    return _scan.selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                   return_last_state)


def _rms(x, weight, eps):
    """mamba_ssm's rms_norm_forward over the last dim (the B, C, dt norms of Falcon-Mamba)."""
    if weight is None:
        return x
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight).to(x.dtype)


def mamba_inner_fn(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight,
                   out_proj_weight, out_proj_bias, A, B=None, C=None, D=None, delta_bias=None,
                   B_proj_bias=None, C_proj_bias=None, delta_softplus=True, checkpoint_lvl=1,
                   b_rms_weight=None, c_rms_weight=None, dt_rms_weight=None,
                   b_c_dt_rms_eps=1e-6):
    """mamba_ssm's fused Mamba-1 mixer after in_proj: xz [batch, 2 dim, L] -> causal conv1d
    (SiLU) of x -> x_proj -> dt_proj -> selective scan gated by z -> out_proj. Returns
    [batch, L, d_model]. ``checkpoint_lvl`` is accepted and ignored (nothing to recompute: the
    C++ backward keeps its own checkpoints)."""
    fn = "mamba_inner_fn"
    _check_cpu(fn, xz=xz, conv1d_weight=conv1d_weight, conv1d_bias=conv1d_bias,
               x_proj_weight=x_proj_weight, delta_proj_weight=delta_proj_weight,
               out_proj_weight=out_proj_weight, out_proj_bias=out_proj_bias, A=A, B=B, C=C, D=D,
               delta_bias=delta_bias)
    if A.is_complex():
        raise ValueError(f"{fn}: complex A is not supported by linattn (real A [dim, dstate])")
    if xz.dim() != 3 or xz.shape[1] % 2:
        raise ValueError(f"{fn}: xz must have shape [batch, 2 * dim, L], got {list(xz.shape)}")
    dim = xz.shape[1] // 2
    rank = delta_proj_weight.shape[1]
    dstate = A.shape[-1]
    x, z = xz[:, :dim], xz[:, dim:]
    weight = conv1d_weight.reshape(conv1d_weight.shape[0], conv1d_weight.shape[-1])
    x, _ = _ops.causal_conv1d(x.transpose(1, 2), weight, conv1d_bias, activation="silu")
    x_dbl = F.linear(x, x_proj_weight)  # [batch, L, rank + 2 dstate]
    # mamba_ssm normalises delta after dt_proj, over dim (transformers' Falcon-Mamba torch path
    # normalises the rank-sized input of dt_proj instead: the two paths differ there).
    delta = _rms(F.linear(x_dbl[..., :rank], delta_proj_weight), dt_rms_weight, b_c_dt_rms_eps)
    if B is None:
        B = x_dbl[..., rank:rank + dstate]
        B = B if B_proj_bias is None else B + B_proj_bias
        B = _rms(B, b_rms_weight, b_c_dt_rms_eps).transpose(1, 2)
    if C is None:
        C = x_dbl[..., -dstate:]
        C = C if C_proj_bias is None else C + C_proj_bias
        C = _rms(C, c_rms_weight, b_c_dt_rms_eps).transpose(1, 2)
    y = _scan.selective_scan_fn(x.transpose(1, 2), delta.transpose(1, 2), A, B, C, D, z,
                                delta_bias, delta_softplus)
    return F.linear(y.transpose(1, 2), out_proj_weight, out_proj_bias)


# ----------------------------------------------------------------------------------------------
# Decode step (Mamba-1 and Mamba-2)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None,
                           dt_softplus=False, state_batch_indices=None):
    """One decode step, state updated in place. Mamba-1: state [batch, dim, dstate], x, dt, z
    [batch, dim], A [dim, dstate], B, C [batch, dstate] or [batch, G, dstate], D, dt_bias [dim].
    Mamba-2: state [batch, nheads, headdim, dstate], x, dt, z [batch, nheads, headdim],
    A [nheads, headdim, dstate], B, C [batch, ngroups, dstate], D, dt_bias [nheads, headdim].
    state_batch_indices [batch]: row i of the batch uses state[state_batch_indices[i]].
    Returns out shaped like x.

    Mamba-2's heads are run as Mamba-1 channels (head h, column p is channel h * headdim + p,
    in group h // (nheads / ngroups), as in the 3-D form), so both go to the same C++ step."""
    fn = "selective_state_update"
    _check_cpu(fn, state=state, x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias,
               state_batch_indices=state_batch_indices)
    if state.dim() not in (3, 4) or x.dim() != state.dim() - 1:
        raise ValueError(f"{fn}: expected state [batch, dim, dstate] with x [batch, dim], or "
                         f"state [batch, nheads, headdim, dstate] with x [batch, nheads, "
                         f"headdim]; got state {list(state.shape)}, x {list(x.shape)}")
    if state_batch_indices is not None:
        rows = state_batch_indices.long()
        step = state.index_select(0, rows)
        out = selective_state_update(step, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
        state.index_copy_(0, rows, step)
        return out
    if state.dim() == 3:
        return _scan.selective_state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
    batch, nheads, headdim, dstate = state.shape
    _check_shape(fn, "x", x, (batch, nheads, headdim))
    for name, t in (("dt", dt), ("z", z)):
        _check_shape(fn, name, t, (batch, nheads, headdim))
    _check_shape(fn, "A", A, (nheads, headdim, dstate))
    for name, t in (("D", D), ("dt_bias", dt_bias)):
        _check_shape(fn, name, t, (nheads, headdim))
    if B.dim() != 3 or B.shape[0] != batch or B.shape[-1] != dstate \
            or nheads % B.shape[1]:
        raise ValueError(f"{fn}: B must have shape [batch={batch}, ngroups, dstate={dstate}] "
                         f"with ngroups dividing nheads={nheads}, got {list(B.shape)}")
    channels = nheads * headdim

    def flat(t, *shape):
        return None if t is None else t.reshape(*shape)

    flat_state = state.view(batch, channels, dstate) if state.is_contiguous() \
        else state.reshape(batch, channels, dstate)
    out = _scan.selective_state_update(
        flat_state, flat(x, batch, channels), flat(dt, batch, channels),
        flat(A, channels, dstate), B, C, flat(D, channels), flat(z, batch, channels),
        flat(dt_bias, channels), dt_softplus)
    if flat_state.data_ptr() != state.data_ptr():
        state.copy_(flat_state.view_as(state))
    return out.view(batch, nheads, headdim)


# ----------------------------------------------------------------------------------------------
# Mamba-2 (SSD)


def _segments(seq_idx, batch: int, seqlen: int):
    """cu_seqlens [S + 1] (int32) of the sequences of the `batch` rows laid end to end: a new
    sequence starts at every row start and wherever seq_idx changes within a row. Also
    returns, per row, the index of its first and last sequence."""
    starts = torch.zeros(batch, seqlen, dtype=torch.bool)
    starts[:, 0] = True
    if seq_idx is not None:
        starts[:, 1:] = seq_idx[:, 1:] != seq_idx[:, :-1]
    flat = starts.reshape(-1)
    begin = torch.nonzero(flat).reshape(-1)
    cu_seqlens = torch.cat([begin, torch.tensor([batch * seqlen])]).to(torch.int32)
    per_row = starts.sum(1)
    last = torch.cumsum(per_row, 0) - 1
    first = last - per_row + 1
    return cu_seqlens, first, last


def _check_seq_idx(fn: str, seq_idx, batch: int, seqlen: int) -> None:
    if seq_idx is None:
        return
    _check_cpu(fn, seq_idx=seq_idx)
    if tuple(seq_idx.shape) != (batch, seqlen) or seq_idx.is_floating_point():
        raise ValueError(f"{fn}: seq_idx must be an integer tensor of shape [batch={batch}, "
                         f"seqlen={seqlen}], got {seq_idx.dtype} {list(seq_idx.shape)}")


def mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None,
                              initial_states=None, seq_idx=None, cu_seqlens=None,
                              dt_softplus=False, dt_limit=(0.0, float("inf")),
                              return_final_states=False, return_varlen_states=False):
    """mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined: x [batch, L, nheads,
    headdim], dt [batch, L, nheads], A [nheads], B, C [batch, L, ngroups, dstate], D [nheads]
    or [nheads, headdim], z like x, dt_bias [nheads], initial_states [batch, nheads, headdim,
    dstate], seq_idx [batch, L]. dt <- softplus(dt + dt_bias) if dt_softplus, clamped to
    dt_limit; y_t = C_t S_t + D x_t, S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T, times silu(z).

    Returns out (like x), or (out, final_states [batch, nheads, headdim, dstate] float32) with
    return_final_states; with return_varlen_states (needs cu_seqlens, batch 1) the states at the
    end of each cu_seqlens sequence [S, nheads, headdim, dstate] come last. ``chunk_size`` only
    has to be positive: linattn's chunk length is its own (same results to rounding)."""
    fn = "mamba_chunk_scan_combined"
    _check_cpu(fn, x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias,
               initial_states=initial_states, cu_seqlens=cu_seqlens)
    if x.dim() != 4:
        raise ValueError(f"{fn}: x must have shape [batch, seqlen, nheads, headdim], got "
                         f"{list(x.shape)}")
    batch, seqlen, nheads, headdim = x.shape
    if not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"{fn}: chunk_size must be a positive int, got {chunk_size!r}")
    _check_shape(fn, "dt", dt, (batch, seqlen, nheads))
    _check_shape(fn, "A", A, (nheads,))
    _check_shape(fn, "z", z, (batch, seqlen, nheads, headdim))
    _check_shape(fn, "dt_bias", dt_bias, (nheads,))
    if B.dim() != 4 or B.shape[:2] != (batch, seqlen) or nheads % B.shape[2]:
        raise ValueError(f"{fn}: B must have shape [batch={batch}, seqlen={seqlen}, ngroups, "
                         f"dstate] with ngroups dividing nheads={nheads}, got {list(B.shape)}")
    _check_shape(fn, "C", C, B.shape)
    dstate = B.shape[-1]
    _check_shape(fn, "initial_states", initial_states, (batch, nheads, headdim, dstate))
    if D is not None and tuple(D.shape) not in ((nheads,), (nheads, headdim)):
        raise ValueError(f"{fn}: D must have shape [{nheads}] or [{nheads}, {headdim}], got "
                         f"{list(D.shape)}")
    _check_seq_idx(fn, seq_idx, batch, seqlen)
    if return_varlen_states and (cu_seqlens is None or batch != 1):
        raise ValueError(f"{fn}: return_varlen_states needs cu_seqlens and batch 1")

    kw = dict(D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=tuple(dt_limit))
    final = None
    if seq_idx is not None:  # the rows laid end to end, split at row starts and seq_idx changes
        cu, first, last = _segments(seq_idx, batch, seqlen)
        s0 = None
        if initial_states is not None:  # a row's initial state enters its first sequence only
            s0 = initial_states.new_zeros((cu.numel() - 1, nheads, headdim, dstate))
            s0 = s0.index_copy(0, first, initial_states)

        def flat(t):
            return None if t is None else t.reshape(1, batch * seqlen, *t.shape[2:])

        out, states = _ssd.ssd_scan(flat(x), flat(dt), A, flat(B), flat(C), **{
            **kw, "z": flat(z)}, initial_state=s0, output_final_state=return_final_states,
            cu_seqlens=cu)
        out = out.reshape(batch, seqlen, nheads, headdim)
        final = None if states is None else states.index_select(0, last)
    else:
        out, final = _ssd.ssd_scan(x, dt, A, B, C, **kw, initial_state=initial_states,
                                   output_final_state=return_final_states)
    result = [out]
    if return_final_states:
        result.append(final)
    if return_varlen_states:
        _, varlen = _ssd.ssd_scan(x, dt, A, B, C, **kw, output_final_state=True,
                                  cu_seqlens=cu_seqlens)
        result.append(varlen)
    return result[0] if len(result) == 1 else tuple(result)


def _gated_rmsnorm(y, z, weight, eps, group_size, norm_before_gate):
    """mamba_ssm's RMSNormGated over groups of `group_size` channels: rmsnorm(y) * silu(z)
    (norm_before_gate) or rmsnorm(y * silu(z)), times weight."""
    y = y.float()
    if z is not None and not norm_before_gate:
        y = y * F.silu(z.float())
    shape = y.shape
    yg = y.reshape(*shape[:-1], shape[-1] // group_size, group_size)
    yg = yg * torch.rsqrt(yg.pow(2).mean(-1, keepdim=True) + eps)
    y = yg.reshape(shape) * weight.float()
    if z is not None and norm_before_gate:
        y = y * F.silu(z.float())
    return y


def mamba_split_conv1d_scan_combined(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D,
                                     chunk_size, initial_states=None, seq_idx=None,
                                     dt_limit=(0.0, float("inf")), return_final_states=False,
                                     activation="silu", rmsnorm_weight=None, rmsnorm_eps=1e-6,
                                     outproj_weight=None, outproj_bias=None, headdim=None,
                                     ngroups=1, norm_before_gate=True):
    """mamba_ssm's fused Mamba-2 mixer after in_proj: zxbcdt [batch, L, 2 d_nonssm + dim +
    (dim + 2 ngroups dstate) + nheads] split into (x0, z0), z, xBC, dt; causal conv1d of xBC
    (conv1d_weight [dim + 2 ngroups dstate, W]); SSD scan with D, dt_bias, softplus, dt_limit;
    then the gated RMSNorm (rmsnorm_weight) or the z gate, x0 * silu(z0) in front for d_nonssm
    > 0, and out_proj. Returns out, or (out, final_states) with return_final_states."""
    fn = "mamba_split_conv1d_scan_combined"
    _check_cpu(fn, zxbcdt=zxbcdt, conv1d_weight=conv1d_weight, conv1d_bias=conv1d_bias,
               dt_bias=dt_bias, A=A, D=D, initial_states=initial_states,
               rmsnorm_weight=rmsnorm_weight, outproj_weight=outproj_weight,
               outproj_bias=outproj_bias)
    if D.dim() == 1:
        if headdim is None:
            raise ValueError(f"{fn}: headdim is required when D has shape [nheads]")
        nheads = D.shape[0]
    else:
        nheads, headdim = D.shape
    if zxbcdt.dim() != 3:
        raise ValueError(f"{fn}: zxbcdt must have shape [batch, seqlen, channels], got "
                         f"{list(zxbcdt.shape)}")
    if activation not in ("silu", "swish", None):
        raise ValueError(f"{fn}: activation must be 'silu', 'swish' or None, got {activation!r}")
    batch, seqlen, width = zxbcdt.shape
    dim = nheads * headdim
    conv_dim = conv1d_weight.shape[0]
    dstate = (conv_dim - dim) // ngroups // 2
    d_nonssm = (width - 2 * dim - 2 * ngroups * dstate - nheads) // 2
    if dstate <= 0 or d_nonssm < 0 or conv_dim != dim + 2 * ngroups * dstate \
            or width != 2 * d_nonssm + 2 * dim + 2 * ngroups * dstate + nheads:
        raise ValueError(f"{fn}: zxbcdt's {width} channels and conv1d_weight's {conv_dim} do "
                         f"not split into z, x, B, C, dt for nheads={nheads}, headdim={headdim}, "
                         f"ngroups={ngroups}")
    zx0, z, xBC, dt = torch.split(zxbcdt, [2 * d_nonssm, dim, conv_dim, nheads], dim=-1)
    weight = conv1d_weight.reshape(conv_dim, conv1d_weight.shape[-1])
    _check_seq_idx(fn, seq_idx, batch, seqlen)
    if seq_idx is not None:
        cu, _, _ = _segments(seq_idx, batch, seqlen)
        xBC, _ = _ops.causal_conv1d(xBC.reshape(1, batch * seqlen, conv_dim), weight,
                                    conv1d_bias, activation=activation, cu_seqlens=cu)
        xBC = xBC.reshape(batch, seqlen, conv_dim)
    else:
        xBC, _ = _ops.causal_conv1d(xBC, weight, conv1d_bias, activation=activation)
    x, B, C = torch.split(xBC, [dim, ngroups * dstate, ngroups * dstate], dim=-1)
    result = mamba_chunk_scan_combined(
        x.reshape(batch, seqlen, nheads, headdim), dt, A,
        B.reshape(batch, seqlen, ngroups, dstate), C.reshape(batch, seqlen, ngroups, dstate),
        chunk_size, D=D, z=None if rmsnorm_weight is not None
        else z.reshape(batch, seqlen, nheads, headdim),
        dt_bias=dt_bias, initial_states=initial_states, seq_idx=seq_idx, dt_softplus=True,
        dt_limit=dt_limit, return_final_states=return_final_states)
    y, final = result if return_final_states else (result, None)
    y = y.reshape(batch, seqlen, dim)
    if rmsnorm_weight is not None:
        y = _gated_rmsnorm(y, z, rmsnorm_weight, rmsnorm_eps, dim // ngroups,
                           norm_before_gate).to(zxbcdt.dtype)
    if d_nonssm > 0:
        x0, z0 = zx0.split(d_nonssm, dim=-1)
        y = torch.cat([F.silu(z0) * x0, y], dim=-1)
    if outproj_weight is not None:
        y = F.linear(y, outproj_weight, outproj_bias)
    return (y, final) if return_final_states else y


# mamba_ssm's module paths (transformers also looks functions up under them).
ops = types.SimpleNamespace(
    selective_scan_interface=types.SimpleNamespace(selective_scan_fn=selective_scan_fn,
                                                   mamba_inner_fn=mamba_inner_fn),
    triton=types.SimpleNamespace(
        selective_state_update=types.SimpleNamespace(
            selective_state_update=selective_state_update),
        ssd_combined=types.SimpleNamespace(
            mamba_chunk_scan_combined=mamba_chunk_scan_combined,
            mamba_split_conv1d_scan_combined=mamba_split_conv1d_scan_combined)))
