"""PyTorch baselines of the delta-rule family for `linattn bench`: the chunked
UT-transform formulation a PyTorch user writes with torch matmuls and triangular solves
(algorithms.md §3.5, §4.5-§4.7 (b)), its autograd as the forward+backward baseline, and the
decode step. Like the gated family's baseline (bench.torch_chunked), every part that does not
depend on the state is batched over all chunks and all (batch, head) pairs; only the chunk-to-
chunk state pass loops.
"""

from __future__ import annotations

DELTA = ("delta_rule", "gated_delta_rule", "delta_product", "kda")
GATED_DELTA = ("gated_delta_rule", "delta_product")  # scalar log decay g


def delta_inputs(op: str, B: int, T: int, H: int, K: int, V: int, seed: int = 0,
                 dtype=None, n_h: int = 2) -> dict:
    """fp32 torch inputs of a delta-family op as fla's layers feed it: q, v ~ N(0, 1), k
    L2-normalised, beta = sigmoid(N(0, 1)), log decays logsigmoid(N(0, 1)) / 16 (scalar g, or
    per-channel gk for kda). delta_product gets n_h keys, values and betas per token."""
    import torch
    import torch.nn.functional as F

    dtype = dtype or torch.float32
    gen = torch.Generator().manual_seed(seed)
    steps = n_h if op == "delta_product" else 1

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    x = {"q": randn(B, T, H, K), "k": F.normalize(randn(B, T * steps, H, K), dim=-1),
         "v": randn(B, T * steps, H, V), "beta": torch.sigmoid(randn(B, T * steps, H))}
    if op in GATED_DELTA:
        x["g"] = F.logsigmoid(randn(B, T, H)) / 16
    if op == "kda":
        x["gk"] = F.logsigmoid(randn(B, T, H, K)) / 16
    if op == "delta_product":
        x["num_householder"] = n_h
    return x


def _expand_delta_product(q, g, n_h: int):
    """DeltaProduct as a gated delta rule over n_h*T positions (algorithms.md §4.7b): the query
    sits at each token's last position, the gate at its first; zeros elsewhere."""
    import torch

    B, T, H, K = q.shape
    qe = q.new_zeros(B, T, n_h, H, K)
    qe[:, :, -1] = q
    ge = None
    if g is not None:
        ge = g.new_zeros(B, T, n_h, H)
        ge[:, :, 0] = g
        ge = ge.reshape(B, T * n_h, H)
    return qe.reshape(B, T * n_h, H, K), ge


def torch_chunked_delta(op: str, q, k, v, beta, g=None, gk=None, initial_state=None,
                        output_final_state: bool = False, chunk_size: int = 64, scale=None,
                        num_householder: int = 1):
    """Baseline: the chunked forward of a delta-family op in PyTorch (differentiable, so autograd
    through it is the forward+backward baseline). Returns (o, final_state or None).

    Per chunk of C rows (G = chunk-local cumulative log decay, per channel for kda):
      L = strict_lower(diag(beta) (K ⊙ e^G)(K ⊙ e^-G)^T),  T0 = (I + L)^-1   (a unit-triangular solve)
      W = T0 (beta ⊙ K ⊙ e^G),  U = T0 (beta ⊙ V)                           (all chunks at once)
      V~ = U - W S;  O = scale((Q ⊙ e^G) S + lower((Q ⊙ e^G)(K ⊙ e^-G)^T) V~)
      S' = e^(G_C) S + (K ⊙ e^(G_C - G))^T V~                                (sequential)
    The factored e^G / e^-G form is exact while the chunk's cumulative decay stays within fp32's
    range, as for these benchmark gates (|G| <= C * max|g| ~ 20 here).
    DeltaProduct runs as the gated delta rule over its n_h*T interleaved positions (§4.7b).
    """
    import torch
    from .bench import Chunking

    from_product = op == "delta_product"
    if from_product:
        q, g = _expand_delta_product(q, g, num_householder)
    elif op not in DELTA:
        raise ValueError(f"torch_chunked_delta: op must be one of {', '.join(DELTA)}, got '{op}'")
    cut = Chunking(*q.shape, v.shape[-1], chunk_size)
    B, H, K, V, C, N = cut.B, cut.H, cut.K, cut.V, cut.C, cut.N
    scale = K ** -0.5 if scale is None else scale

    Qc, Kc, Vc = (cut.chunks(t) for t in (q, k, v))  # [N, BH, C, *]
    bc = cut.chunks(beta[..., None])  # [N, BH, C, 1]
    if gk is not None:
        G = cut.chunks(gk).cumsum(-2)  # [N, BH, C, K]
    elif g is not None:
        G = cut.chunks(g[..., None]).cumsum(-2)  # [N, BH, C, 1]
    else:
        G = None
    if G is None:
        Kg = Kn = Kd = Kc
        Qg = Qc
        decay = None
    else:
        eG = G.exp()
        Kg, Kn, Qg = Kc * eG, Kc * (-G).exp(), Qc * eG
        Kd = Kc * (G[..., -1:, :] - G).exp()
        decay = G[..., -1:, :].exp().transpose(-1, -2)  # [N, BH, K or 1, 1]
    strict = torch.ones(C, C, dtype=torch.bool).tril(-1)
    L = torch.matmul(bc * Kg, Kn.transpose(-1, -2)).masked_fill(~strict, 0.0)
    # unitriangular: the solve takes I + L's unit diagonal as given (L's own is zero).
    W = torch.linalg.solve_triangular(L, bc * Kg, upper=False, unitriangular=True)
    U = torch.linalg.solve_triangular(L, bc * Vc, upper=False, unitriangular=True)
    causal = torch.ones(C, C, dtype=torch.bool).tril()
    P = torch.matmul(Qg, Kn.transpose(-1, -2)).masked_fill(~causal, 0.0)

    S = (initial_state.reshape(B * H, K, V).to(q.dtype) if initial_state is not None
         else q.new_zeros(B * H, K, V))
    outputs = []
    for n in range(N):
        Vt = U[n] - torch.bmm(W[n], S)
        outputs.append(torch.bmm(Qg[n], S) + torch.bmm(P[n], Vt))
        S = torch.bmm(Kd[n].transpose(-1, -2), Vt) + (S if decay is None else S * decay[n])
    o = cut.tokens(torch.stack(outputs) * scale)
    if from_product:
        o = o[:, num_householder - 1::num_householder]
    return o.contiguous(), (S.reshape(B, H, K, V) if output_final_state else None)


def torch_decode_step_delta(op: str, q, k, v, beta, state, g=None, gk=None, scale=None,
                            num_householder: int = 1):
    """Baseline: one decode step of a delta-family op in PyTorch. q: [B, 1, H, K]; k, v, beta:
    n_h rows per token; `state` [B, H, K, V] is updated in place (decay, then n_h delta steps
    u = beta (v - S^T k), S += k u^T); returns o = scale S^T q as [B, 1, H, V]."""
    import torch

    B, _, H, K = q.shape
    V = v.shape[-1]
    scale = K ** -0.5 if scale is None else scale
    S = state.view(B * H, K, V)
    if g is not None:
        S.mul_(g.reshape(B * H, 1, 1).exp())
    if gk is not None:
        S.mul_(gk.reshape(B * H, K, 1).exp())
    for j in range(num_householder):
        kj = k[:, j].reshape(B * H, K, 1)
        u = torch.baddbmm(v[:, j].reshape(B * H, 1, V), kj.transpose(1, 2), S, alpha=-1.0)
        S.baddbmm_(kj, u * beta[:, j].reshape(B * H, 1, 1))
    return torch.bmm(q.reshape(B * H, 1, K) * scale, S).view(B, 1, H, V)


def delta_chunk_flops_per_token(op: str, K: int, V: int, C: int, n_h: int = 2) -> int:
    """Nominal forward FLOPs per token per head of the chunked form (algorithms.md §5):
    DeltaNet 6CK + 4CV + C²/3 + 6KV, Gated DeltaNet + 2C, KDA + 3(c+1)K with c = 16,
    DeltaProduct n_h(4CK + 2CV + C²/3 + 4KV) + 2CK + 2CV + 2KV."""
    base = 6 * C * K + 4 * C * V + C * C // 3 + 6 * K * V
    if op == "delta_rule":
        return base
    if op == "gated_delta_rule":
        return base + 2 * C
    if op == "kda":
        return base + 2 * C + 3 * 17 * K
    if op == "delta_product":
        return n_h * (4 * C * K + 2 * C * V + C * C // 3 + 4 * K * V) + 2 * C * K + 2 * C * V + 2 * K * V
    raise ValueError(f"delta_chunk_flops_per_token: unknown op '{op}'")
