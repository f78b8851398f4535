"""Benchmark machinery for the `linattn bench` CLI.

Every row reports time, tokens/s, GFLOP/s, % of the peak-FMA probe and the speed ratio against a
baseline measured in the same run on the same thread count (conventions.md, Benchmarks). The
baselines are PyTorch code a user would otherwise write; linattn's own numbers come from the
C++ core through the binding. Rows from different runs are never compared.
"""

from __future__ import annotations

import functools
import math
import os
import resource
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

from . import _core
from ._terminal import Progress, format_table


@dataclass
class Row:
    name: str
    impl: str
    threads: int
    tokens: int
    seconds: float | None  # None: not measured (see note)
    flops: float
    peak_gflops: float
    baseline_seconds: float | None = None  # None: this row is a baseline (or has none)
    note: str = ""  # shown instead of the ratio, e.g. "not implemented yet"
    is_baseline: bool | None = None  # None: a row without baseline_seconds is a baseline

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds

    @property
    def ratio(self) -> float | None:
        if self.seconds is None or self.baseline_seconds is None:
            return None
        return self.baseline_seconds / self.seconds

    def cells(self) -> dict[str, str]:
        if self.seconds is None:
            return {"benchmark": self.name, "impl": self.impl, "threads": str(self.threads),
                    "time": "-", "tokens/s": "-", "GFLOP/s": "-", "% peak": "-",
                    "vs baseline": self.note or "-"}
        if self.baseline_seconds is not None:
            ratio = f"{self.ratio:.2f}x"
        elif self.is_baseline is False:
            ratio = "- (baseline not measured)"
        else:
            ratio = "baseline"
        if self.note:
            ratio += f" ({self.note})"
        return {
            "benchmark": self.name, "impl": self.impl, "threads": str(self.threads),
            "time": f"{self.seconds * 1e3:.3f} ms", "tokens/s": f"{self.tokens / self.seconds:,.0f}",
            "GFLOP/s": f"{self.gflops:.2f}", "% peak": f"{100 * self.gflops / self.peak_gflops:.1f}%",
            "vs baseline": ratio,
        }


def time_call(fn: Callable[[], object], min_seconds: float = 0.3, min_reps: int = 3) -> float:
    """Median wall time of fn() after one warm-up call."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def recurrent_flops_per_token(op: str, K: int, V: int, n_h: int) -> int:
    """FLOPs per token per value head of the recurrent form (algorithms.md §5)."""
    return {
        "linear_attn": 4 * K * V,
        "simple_gla": 5 * K * V,
        "gla": 5 * K * V,
        "delta_rule": 6 * K * V + 2 * V,
        "gated_delta_rule": 7 * K * V + 2 * V,
        "delta_product": (4 * n_h + 2) * K * V,
        "retention": 5 * K * V,
        "kda": 7 * K * V + 2 * V,
    }[op]


# The causal recurrent ops torch_recurrent and recurrent_flops_per_token know.
RECURRENT_OPS = ("linear_attn", "simple_gla", "gla", "delta_rule", "gated_delta_rule",
                 "delta_product", "retention", "kda")


@dataclass
class Shape:
    B: int
    T: int
    H: int
    K: int
    V: int
    n_h: int = 2  # delta_product only


def make_inputs(op: str, shape: Shape, dtype, seed: int = 0) -> dict:
    """Random valid torch inputs of an op: log decays in [-1, -0.01], beta in [0.1, 1], dplr's
    a and b as RWKV-7 forms them."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    B, T, H, K, V = shape.B, shape.T, shape.H, shape.K, shape.V
    n_h = shape.n_h if op == "delta_product" else 1

    def randn(*s):
        return torch.randn(*s, generator=gen, dtype=torch.float64).to(dtype)

    def uniform(lo, hi, *s):
        return (lo + (hi - lo) * torch.rand(*s, generator=gen, dtype=torch.float64)).to(dtype)

    x = {"q": randn(B, T, H, K), "k": torch.nn.functional.normalize(randn(B, T * n_h, H, K), dim=-1),
         "v": randn(B, T * n_h, H, V), "initial_state": randn(B, H, K, V)}
    if op in ("simple_gla", "gated_delta_rule", "delta_product"):
        x["g"] = uniform(-1.0, -0.01, B, T, H)
    if op in ("gla", "kda", "dplr_delta_rule"):
        x["gk"] = uniform(-1.0, -0.01, B, T, H, K)
    if op == "dplr_delta_rule":  # RWKV-7's a = -kappa, b = kappa * alpha (|kappa| = 1, alpha in [0, 1])
        kappa = torch.nn.functional.normalize(randn(B, T, H, K), dim=-1)
        x["a"], x["b"] = -kappa, kappa * uniform(0.0, 1.0, B, T, H, K)
    if op in ("delta_rule", "gated_delta_rule", "delta_product", "kda"):
        x["beta"] = uniform(0.1, 1.0, B, T * n_h, H)
    if op == "delta_product":
        x["num_householder"] = n_h
    return x


def torch_recurrent(op: str, q, k, v, g=None, gk=None, beta=None, initial_state=None,
                    num_householder: int = 1):
    """Baseline: the token loop a PyTorch user writes, batched over (B, H). Returns (o, S)."""
    import torch

    scale = q.shape[-1] ** -0.5
    if op == "retention":  # RetNet's fixed decay 1 - 2^(-5-h) per head
        heads = torch.arange(v.shape[2], dtype=torch.float64)
        g = torch.log1p(-torch.exp2(-5.0 - heads)).to(q.dtype).expand(q.shape[0], q.shape[1], -1)
    S = initial_state.clone()
    outputs = []
    for t in range(q.shape[1]):
        if g is not None:
            S = S * g[:, t].exp()[..., None, None]
        if gk is not None:
            S = S * gk[:, t].exp()[..., None]
        for j in range(num_householder):
            i = t * num_householder + j
            kt, vt = k[:, i], v[:, i]
            if beta is None:
                u = vt
            else:
                u = beta[:, i, :, None] * (vt - torch.einsum("bhkv,bhk->bhv", S, kt))
            S = S + kt[..., None] * u[..., None, :]
        outputs.append(scale * torch.einsum("bhkv,bhk->bhv", S, q[:, t]))
    return torch.stack(outputs, dim=1), S


def _linattn_forward(op: str, x: dict):
    import torch

    o = torch.empty_like(x["v"][:, : x["q"].shape[1]])
    fs = torch.empty_like(x["initial_state"])
    kwargs = {key: val for key, val in x.items() if key not in ("q", "k", "v")}
    return lambda: _core.forward(op, "reference", x["q"], x["k"], x["v"], o=o, final_state=fs,
                                 output_final_state=True, **kwargs)


def _linattn_backward(op: str, x: dict):
    import torch

    d_o = torch.ones_like(x["v"][:, : x["q"].shape[1]])
    grads = {f"d{key}": torch.empty_like(val) for key, val in x.items()
             if key not in ("num_householder",)}
    kwargs = {key: val for key, val in x.items() if key not in ("q", "k", "v")}
    return lambda: _core.backward(op, "reference", x["q"], x["k"], x["v"], d_o=d_o,
                                  output_final_state=True, **kwargs, **grads)


def _torch_forward_backward(op: str, x: dict):
    tensors = {key: val.detach().clone().requires_grad_(True) for key, val in x.items()
               if key != "num_householder"}
    extra = {"num_householder": x["num_householder"]} if "num_householder" in x else {}

    def step():
        for t in tensors.values():
            t.grad = None
        o, S = torch_recurrent(op, **tensors, **extra)
        (o.sum() + S.sum()).backward()

    return step


# ----------------------------------------------------------------------------------------------
# PyTorch baselines of the gated (Hebbian) family: linear_attn, retention, simple_gla, gla.
# The chunked formulation a PyTorch user writes with torch matmuls (algorithms.md §3.2, §3.3
# S1-S3, §4.1-§4.4 (b)); every part that does not depend on the state is batched over all
# chunks and all (batch, head) pairs at once, only the state pass (phase B) loops over chunks.

GATED = ("linear_attn", "retention", "simple_gla", "gla")

# gla without secondary chunking: the intra-chunk scores use one reference row m in the middle
# of the chunk, A_ij = sum_d (q_id e^(G_id - G_md)) (k_jd e^(G_md - G_jd)) (algorithms.md §3.3
# S5 at chunk granularity). Every factor is e^x with |x| <= the chunk's spread
# max(G_0 - G_m, G_m - G_(C-1)) <= (C/2) max|gk|; while that stays <= 80 no factor over- or
# underflows in fp32 (e^80 < 2^127) and the products are exact to rounding. Above it the
# baseline falls back to the exact pairwise form (every exponent <= 0), which is slower.
GLA_SAFE_SPREAD = 80.0


def retention_log_decay(H: int, dtype=None):
    """RetNet's fixed per-head log decay log(1 - 2^(-5-h)), h = 0..H-1 (as the C++ oracle)."""
    import torch

    heads = torch.arange(H, dtype=torch.float64)
    decay = torch.log1p(-torch.exp2(-5.0 - heads))
    return decay if dtype is None else decay.to(dtype)


def _to_chunks(x, N: int, C: int, pad: int):
    """[B, T, H, *D] -> [N, B*H, C, *D], one contiguous copy (`pad` zero rows appended to T).
    Contiguous matters: torch's bmm copies strided operands again, on every use."""
    import torch

    B, T, H = x.shape[:3]
    if pad:
        x = torch.nn.functional.pad(x, (0, 0) * (x.dim() - 3) + (0, 0, 0, pad))
    tail = tuple(x.shape[3:])
    x = x.reshape(B, N, C, H, *tail).permute(1, 0, 3, 2, *range(4, 4 + len(tail)))  # N B H C D
    return x.reshape(N, B * H, C, *tail).contiguous()


@dataclass(frozen=True)
class Chunking:
    """How a chunked baseline cuts q [B, T, H, K], v [B, T, H, V] into N chunks of C rows (the
    last zero-padded by `pad` rows), and puts the chunk outputs back in token order."""
    B: int
    T: int
    H: int
    K: int
    V: int
    C: int

    @property
    def N(self) -> int:
        return -(-self.T // self.C)

    @property
    def pad(self) -> int:
        return self.N * self.C - self.T

    def chunks(self, x):
        """[B, T, H, *D] -> [N, B*H, C, *D]."""
        return _to_chunks(x, self.N, self.C, self.pad)

    def tokens(self, O):
        """[N, B*H, C, V] -> [B, T, H, V]."""
        B, H, C, V, N = self.B, self.H, self.C, self.V, self.N
        return O.view(N, B, H, C, V).permute(1, 0, 3, 2, 4).reshape(B, N * C, H, V)[:, :self.T]


def torch_chunked(op: str, q, k, v, g=None, gk=None, initial_state=None,
                  output_final_state: bool = False, chunk_size: int = 64, scale=None):
    """Baseline: the chunked forward of a gated-family op in PyTorch (differentiable, so
    autograd through it is the forward+backward baseline). Returns (o, final_state or None).

    Per chunk n of C rows (G = chunk-local cumulative log decay, S1):
      A_n     = (Q K^T) ⊙ Γ, Γ_ij = exp(G_i - G_j) for i >= j else 0        (S2, S3)
      O_n     = scale ((Q ⊙ e^G) S_[n] + A_n V)
      S_[n+1] = e^(G_C) S_[n] + (K ⊙ e^(G_C - G))^T V                      (phase B, sequential)
    linear_attn has no decay; retention's Γ is one matrix per head; gla's A uses a mid-chunk
    reference row (see GLA_SAFE_SPREAD). T need not be a multiple of chunk_size (zero padding).
    """
    import torch

    cut = Chunking(*q.shape, v.shape[-1], chunk_size)
    B, T, H, K, V, C, N, pad = cut.B, cut.T, cut.H, cut.K, cut.V, cut.C, cut.N, cut.pad
    BH = B * H
    scale = K ** -0.5 if scale is None else scale
    dt = q.dtype
    tril = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()

    Qc = _to_chunks(q, N, C, pad)  # [N, BH, C, K]
    Kc = _to_chunks(k, N, C, pad)
    Vc = _to_chunks(v, N, C, pad)
    Kt = Kc.transpose(-1, -2)  # a view: bmm takes transposed operands without a copy

    if op == "retention" and pad:  # padded rows must not decay the state: g = 0 there
        op, g = "simple_gla", retention_log_decay(H, dt).expand(B, T, H)
    if op == "linear_attn":
        A = torch.matmul(Qc, Kt).masked_fill_(~tril, 0.0)
        Qg, Kd, decay = Qc, Kc, None
    elif op == "retention":  # fixed decay: one C x C matrix per head, shared by all chunks
        lg = retention_log_decay(H)
        G = torch.arange(1, C + 1, dtype=torch.float64)[None, :] * lg[:, None]  # [H, C]
        Gamma = torch.exp((G[:, :, None] - G[:, None, :]).masked_fill(~tril, -math.inf))
        A = torch.matmul(Qc, Kt) * Gamma.to(dt).repeat(B, 1, 1)
        Qg = Qc * G.exp().to(dt).repeat(B, 1)[:, :, None]
        Kd = Kc * (G[:, -1:] - G).exp().to(dt).repeat(B, 1)[:, :, None]
        decay = (lg * C).exp().to(dt).repeat(B)[None, :, None, None].expand(N, BH, 1, 1)
    elif op == "simple_gla":
        G = _to_chunks(g[..., None], N, C, pad)[..., 0].cumsum(-1)  # [N, BH, C]
        Gamma = torch.exp((G[..., :, None] - G[..., None, :]).masked_fill(~tril, -math.inf))
        A = torch.matmul(Qc, Kt) * Gamma
        G_C = G[..., -1:]
        Qg = Qc * G.exp()[..., None]
        Kd = Kc * (G_C - G).exp()[..., None]
        decay = G_C.exp()[..., None]  # [N, BH, 1, 1]
    elif op == "gla":
        G = _to_chunks(gk, N, C, pad).cumsum(-2)  # [N, BH, C, K]
        G_C = G[..., -1:, :]
        A = _gla_intra(Qc, Kc, G, tril)
        Qg = Qc * G.exp()
        Kd = Kc * (G_C - G).exp()
        decay = G_C.exp().transpose(-1, -2)  # [N, BH, K, 1]
    else:
        raise ValueError(f"torch_chunked: op must be one of {', '.join(GATED)}, got '{op}'")

    H_n = torch.matmul(Kd.transpose(-1, -2), Vc)  # [N, BH, K, V]: each chunk's own contribution to the state
    S0 = (initial_state.reshape(BH, K, V).to(H_n.dtype) if initial_state is not None
          else H_n.new_zeros(BH, K, V))
    states = _state_pass(H_n, decay, S0)  # [N+1, BH, K, V]: S_[0..N]
    inter = torch.matmul(Qg, states[:-1]).view(N * BH, C, V)
    O = torch.baddbmm(inter, A.reshape(N * BH, C, C), Vc.view(N * BH, C, V),
                      beta=scale, alpha=scale)
    o = cut.tokens(O)
    final = states[-1].reshape(B, H, K, V) if output_final_state else None
    return o.contiguous(), final


def _gla_intra(Qc, Kc, G, tril):
    """gla's masked intra-chunk scores A_ij = sum_d q_id k_jd exp(G_id - G_jd), j <= i."""
    import torch

    C = Qc.shape[-2]
    m = (C - 1) // 2
    G_m = G[..., m:m + 1, :]
    with torch.no_grad():
        spread = torch.maximum(G[..., 0, :] - G_m[..., 0, :], G_m[..., 0, :] - G[..., -1, :]).max()
    if float(spread) <= GLA_SAFE_SPREAD:
        A = torch.matmul(Qc * (G - G_m).exp(), (Kc * (G_m - G).exp()).transpose(-1, -2))
        return torch.where(tril, A, A.new_zeros(()))  # where, not *: masked entries may be inf
    # Exact pairwise form (every exponent <= 0), a few chunks at a time to bound the memory.
    parts = []
    step = max(1, (1 << 22) // (Qc.shape[1] * C * C * Qc.shape[-1]))
    for s in range(0, Qc.shape[0], step):
        Gs = G[s:s + step]
        D = (Gs[..., :, None, :] - Gs[..., None, :, :]).masked_fill(~tril[..., None], -math.inf)
        parts.append(torch.einsum("nbid,nbjd,nbijd->nbij", Qc[s:s + step], Kc[s:s + step], D.exp()))
    return torch.cat(parts)


def _state_pass(H_n, decay, S0):
    """Phase B: S_[0] = S0, S_[n+1] = decay_n ⊙ S_[n] + H_n; returns all N+1 states stacked.
    Without autograd it writes into one buffer in place; with autograd it builds a list."""
    import torch

    N = H_n.shape[0]
    if torch.is_grad_enabled() and (H_n.requires_grad or S0.requires_grad
                                    or (decay is not None and decay.requires_grad)):
        S, states = S0, [S0]
        for n in range(N):
            S = S + H_n[n] if decay is None else torch.addcmul(H_n[n], S, decay[n])
            states.append(S)
        return torch.stack(states)
    out = H_n.new_empty((N + 1, *H_n.shape[1:]))
    out[0] = S0
    for n in range(N):
        if decay is None:
            torch.add(out[n], H_n[n], out=out[n + 1])
        else:
            torch.addcmul(H_n[n], out[n], decay[n], out=out[n + 1])
    return out


def torch_decode_step(op: str, q, k, v, state, g=None, gk=None, scale=None):
    """Baseline: one decode step in PyTorch. q, k: [B, 1, H, K], v: [B, 1, H, V], g: [B, 1, H],
    gk: [B, 1, H, K]; `state` [B, H, K, V] is updated in place (decay, then k v^T); returns
    o = scale S^T q as [B, 1, H, V] (the read after the write, as every linattn form)."""
    import torch

    B, _, H, K = q.shape
    V = v.shape[-1]
    scale = K ** -0.5 if scale is None else scale
    S = state.view(B * H, K, V)
    if op == "retention":
        S.mul_(_retention_decay(H, state.dtype).repeat(B)[:, None, None])
    elif op == "simple_gla":
        S.mul_(g.reshape(B * H, 1, 1).exp())
    elif op == "gla":
        S.mul_(gk.reshape(B * H, K, 1).exp())
    elif op != "linear_attn":
        raise ValueError(f"torch_decode_step: op must be one of {', '.join(GATED)}, got '{op}'")
    S.baddbmm_(k.reshape(B * H, K, 1), v.reshape(B * H, 1, V))
    return torch.bmm(q.reshape(B * H, 1, K) * scale, S).view(B, 1, H, V)


@functools.lru_cache(maxsize=8)
def _retention_decay(H: int, dtype):
    """exp(log decay) per head, cached: a model constant, not recomputed per decode step."""
    return retention_log_decay(H).exp().to(dtype)


def chunk_flops_per_token(op: str, K: int, V: int, C: int) -> int:
    """Nominal forward FLOPs per token per head of the chunked form (algorithms.md §5, dense
    intra-chunk block): 2C(K+V) + 4KV, plus C for the scalar decay matrix of simple_gla and
    retention. gla's exponentials and diagonal blocks are not counted."""
    return 2 * C * (K + V) + 4 * K * V + (C if op in ("simple_gla", "retention") else 0)


# ----------------------------------------------------------------------------------------------
# The fast-form suite: chunk forward, forward+backward, decode step, T sweep,
# bf16, and for DeltaProduct the cost against n_h. One suite serves every family with fast forms:
# a Family says how to draw its inputs, its PyTorch baselines, its FLOP model and its targets.

@dataclass(frozen=True)
class Target:
    label: str
    row: str           # which row: "fwd", "peak" (% of peak of the fwd row), "fwdbwd", "decode",
                       # "flat" (the sweep's max/min), "bf16"
    threshold: float
    higher_is_better: bool = True


@dataclass(frozen=True)
class Family:
    name: str
    ops: tuple[str, ...]
    inputs: Callable        # (op, B, T, H, K, V, seed=0) -> dict of torch inputs
    chunked: Callable       # (op, **inputs, chunk_size=C) -> (o, final_state)
    decode: Callable        # (op, **inputs, state=S) -> o, S updated in place
    chunk_flops: Callable   # (op, K, V, C) -> forward FLOPs per token per head
    targets: tuple[Target, ...]


def gated_family() -> Family:
    return Family(
        "gated", GATED, gated_inputs, torch_chunked, torch_decode_step, chunk_flops_per_token,
        (Target("chunk fwd >= 10x torch chunked", "fwd", 10.0),
         Target("chunk fwd >= 50% of peak", "peak", 50.0),
         Target("fwd+bwd >= 5x torch autograd", "fwdbwd", 5.0),
         Target("decode >= 3x torch", "decode", 3.0),
         Target("flat within 15% over the T sweep (max/min <= 1.15)", "flat", 1.15, False),
         Target("bf16 >= 1.3x fp32", "bf16", 1.3)))


def delta_family() -> Family:
    from . import bench_delta as d

    return Family(
        "delta", d.DELTA, d.delta_inputs, d.torch_chunked_delta, d.torch_decode_step_delta,
        d.delta_chunk_flops_per_token,
        (Target("chunk fwd >= 8x torch chunked (UT transform)", "fwd", 8.0),
         Target("chunk fwd >= 40% of peak", "peak", 40.0),
         Target("fwd+bwd >= 4x torch autograd", "fwdbwd", 4.0),
         Target("decode >= 3x torch", "decode", 3.0)))


def family_of(op: str) -> Family | None:
    """The family whose suite benchmarks op, or None (no fast-form suite for it)."""
    for family in (gated_family(), delta_family()):
        if op in family.ops:
            return family
    return None


SUITE_OPS = GATED + ("delta_rule", "gated_delta_rule", "delta_product", "kda")

BACKWARD_FACTOR = 2.5  # backward FLOPs counted as 2.5x the forward (algorithms.md §4.1 (d), §5)
# nh: delta_product only; layouts, gates: the inputs real programs pass (issue 15)
SECTIONS = ("fwd", "fwdbwd", "decode", "sweep", "bf16", "nh", "layouts", "gates")
HOUSEHOLDER_STEPS = (1, 2, 3, 4)


@dataclass
class SuiteConfig:
    B: int = 1
    T: int = 4096
    H: int = 16
    K: int = 128
    V: int = 128
    chunk: int = 64
    decode_B: int = 8
    sweep_T: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384, 32768, 65536)
    min_seconds: float = 0.3
    sections: tuple[str, ...] = SECTIONS

    def label(self) -> str:
        return f"B={self.B} H={self.H} K={self.K} V={self.V}, chunk {self.chunk}"


FULL = SuiteConfig()
QUICK = SuiteConfig(T=1024, sweep_T=(256, 512, 1024, 2048, 4096), min_seconds=0.05)


@dataclass
class Section:
    title: str
    rows: list[Row]
    notes: list[str] = field(default_factory=list)


def gated_inputs(op: str, B: int, T: int, H: int, K: int, V: int, seed: int = 0,
                 dtype=None) -> dict:
    """fp32 torch inputs of a gated-family op, drawn directly in float32: q, v ~ N(0, 1), k
    L2-normalised, and fla-style gates g, gk = logsigmoid(N(0, 1)) / 16 (in about [-0.3, 0])."""
    import torch

    dtype = dtype or torch.float32
    gen = torch.Generator().manual_seed(seed)
    x = {"q": torch.randn(B, T, H, K, generator=gen, dtype=dtype),
         "k": torch.nn.functional.normalize(torch.randn(B, T, H, K, generator=gen, dtype=dtype),
                                            dim=-1),
         "v": torch.randn(B, T, H, V, generator=gen, dtype=dtype)}
    if op == "simple_gla":
        x["g"] = torch.nn.functional.logsigmoid(torch.randn(B, T, H, generator=gen, dtype=dtype)) / 16
    if op == "gla":
        x["gk"] = torch.nn.functional.logsigmoid(
            torch.randn(B, T, H, K, generator=gen, dtype=dtype)) / 16
    return x


def _extra(x: dict) -> dict:
    """Every input of x besides q, k, v: gates, beta, num_householder."""
    return {n: t for n, t in x.items() if n not in ("q", "k", "v")}


def linattn_forward_fn(op: str, form: str, x: dict, initial_state=None, final_state=None):
    """fn() running `form` of op on x through the binding; o (and final_state) preallocated,
    written in place by C++ (as linattn's own Python API does, minus the allocation)."""
    import torch

    o = torch.empty((*x["q"].shape[:-1], x["v"].shape[-1]), dtype=x["v"].dtype)
    return lambda: _core.forward(op, form, x["q"], x["k"], x["v"], **_extra(x),
                                 initial_state=initial_state,
                                 output_final_state=final_state is not None, o=o,
                                 final_state=final_state)


def linattn_backward_fn(op: str, form: str, x: dict, d_o):
    """fn() computing every input gradient (dq, dk, dv, dg/dgk/dbeta) of `form` through the binding."""
    import torch

    # Gradients are outputs: contiguous whatever the inputs' strides (the layouts section).
    grads = {f"d{n}": torch.empty(t.shape, dtype=t.dtype) for n, t in x.items() if torch.is_tensor(t)}
    return lambda: _core.backward(op, form, x["q"], x["k"], x["v"], **_extra(x), d_o=d_o, **grads)


def torch_forward_backward_fn(op: str, x: dict, d_o, chunk: int, chunked=None):
    """fn(): the chunked baseline's forward and autograd backward (gradients of q, k, v, gates,
    beta). chunked: the family's baseline (default: the gated family's torch_chunked)."""
    import torch

    chunked = chunked or torch_chunked
    leaves = {n: t.detach().clone().requires_grad_(True) for n, t in x.items() if torch.is_tensor(t)}
    extra = {n: t for n, t in x.items() if not torch.is_tensor(t)}

    def step():
        for t in leaves.values():
            t.grad = None
        o, _ = chunked(op, **leaves, **extra, chunk_size=chunk)
        o.backward(d_o)

    return step


class QuietGuard:
    """Repeats a measurement that other processes disturbed (this machine is shared: a 2-thread
    row with another process on the second core is meaningless, docs/performance.md).

    A measurement is accepted when other processes used at most `limit` % of the machine's CPU
    time while it ran; otherwise the guard waits (up to `wait` s) for a quiet second and measures
    again, at most `attempts` times in all, and then keeps the least disturbed one with a note."""

    def __init__(self, limit: float = 3.0, attempts: int = 6, wait: float = 120.0,
                 enabled: bool = True):
        self.limit, self.attempts, self.wait, self.enabled = limit, attempts, wait, enabled
        self.repeated = 0
        self.worst = 0.0  # highest share of others among accepted measurements, %

    def measure(self, fn: Callable[[], float]) -> tuple[float, str]:
        best: tuple[float, float] | None = None  # (others %, seconds) of the least disturbed try
        for attempt in range(self.attempts if self.enabled else 1):
            load = MachineLoad()
            seconds = fn()
            others = load.others_percent()
            if others is None or not self.enabled or others <= self.limit:
                self.worst = max(self.worst, others or 0.0)
                return seconds, ""
            if best is None or others < best[0]:
                best = (others, seconds)
            if attempt + 1 < self.attempts:
                self.repeated += 1
                self.wait_for_quiet()
        others, seconds = best
        self.worst = max(self.worst, others)
        return seconds, f"disturbed: other processes used {others:.0f}% of the CPU time"

    def wait_for_quiet(self) -> None:
        deadline = time.monotonic() + self.wait
        while time.monotonic() < deadline:
            load = MachineLoad()
            time.sleep(1.0)
            others = load.others_percent()
            if others is None or others <= self.limit:
                return


class _Timer:
    """Runs one measurement under the guard, turning an error of a linattn call into a note."""

    def __init__(self, min_seconds: float, guard: QuietGuard | None = None):
        self.min_seconds = min_seconds
        self.guard = guard or QuietGuard(enabled=False)

    def __call__(self, fn, min_reps: int = 3) -> tuple[float | None, str]:
        try:
            return self.guard.measure(lambda: time_call(fn, self.min_seconds, min_reps))
        except (ValueError, TypeError, RuntimeError) as error:
            return None, f"failed: {str(error).splitlines()[0][:120]}"


def run_suite(op: str, cfg: SuiteConfig, threads: int, peak: float, sweep_out: dict | None = None,
              progress: Callable[[], None] | None = None,
              guard: QuietGuard | None = None) -> Section:
    """The suite's rows of one op with a Family; sweep points are added to sweep_out[op]."""
    import torch

    family = family_of(op)
    C, K, V, H = cfg.chunk, cfg.K, cfg.V, cfg.H
    timer = _Timer(cfg.min_seconds, guard)
    has_chunk = _core.has_form(op, "chunk", False)
    has_chunk_bwd = _core.has_form(op, "chunk", True)
    has_recurrent = _core.has_form(op, "recurrent", False)
    missing = "not implemented yet"
    rows: list[Row] = []
    notes: list[str] = []
    flops_tok = family.chunk_flops(op, K, V, C) * H
    tick = progress or (lambda: None)

    def add(name, impl, tokens, seconds, flops, baseline=None, note="", compared=None):
        """A row; compared=True marks a row measured against `baseline` (even if that failed)."""
        is_baseline = None if compared is None else not compared
        rows.append(Row(name, impl, threads, tokens, seconds, flops, peak, baseline, note,
                        is_baseline))
        return seconds

    def fwd_pair(x, T, name):
        """torch chunked vs linattn chunk forward on x; returns (torch s, linattn s)."""
        tokens = cfg.B * T
        with torch.no_grad():
            base, note = timer(lambda: family.chunked(op, **x, chunk_size=C))
        add(name, f"torch chunked (C={C})", tokens, base, tokens * flops_tok, note=note)
        if not has_chunk:
            add(name, "linattn chunk", tokens, None, 0, note=missing)
            return base, None
        ours, note = timer(linattn_forward_fn(op, "chunk", x))
        add(name, "linattn chunk", tokens, ours, tokens * flops_tok, base, note, compared=True)
        return base, ours

    x = family.inputs(op, cfg.B, cfg.T, H, K, V)
    tokens = cfg.B * cfg.T
    shape = f"T={cfg.T} fp32"
    if "fwd" in cfg.sections:
        fwd_pair(x, cfg.T, f"fwd {shape}")
        tick()

    if "fwdbwd" in cfg.sections:
        name, flops = f"fwd+bwd {shape}", tokens * flops_tok * (1 + BACKWARD_FACTOR)
        d_o = torch.randn((*x["q"].shape[:-1], V), generator=torch.Generator().manual_seed(1))
        base, note = timer(torch_forward_backward_fn(op, x, d_o, C, family.chunked))
        add(name, "torch autograd (chunked)", tokens, base, flops, note=note)
        if has_chunk and has_chunk_bwd:
            forward, backward = linattn_forward_fn(op, "chunk", x), linattn_backward_fn(op, "chunk", x, d_o)
            ours, note = timer(lambda: (forward(), backward()))
            add(name, "linattn chunk fwd + bwd", tokens, ours, flops, base, note, compared=True)
        else:
            add(name, "linattn chunk fwd + bwd", tokens, None, 0, note=missing)
        tick()

    if "decode" in cfg.sections:
        Bd = cfg.decode_B
        xd = family.inputs(op, Bd, 1, H, K, V, seed=2)
        state = torch.randn(Bd, H, K, V, generator=torch.Generator().manual_seed(3)) * 0.1
        n_h = xd.get("num_householder", 1)
        name, flops = f"decode B={Bd} T=1", Bd * H * recurrent_flops_per_token(op, K, V, n_h)
        torch_state = state.clone()
        base, note = timer(lambda: family.decode(op, **xd, state=torch_state))
        add(name, "torch (state updated in place)", Bd, base, flops, note=note)
        if has_recurrent:
            # Like the baseline (and an inference engine's cache), the state is updated in place:
            # final_state is the initial_state tensor. The second row writes a separate tensor,
            # which costs a third pass of memory traffic (the destination's cache lines are read
            # before they are written).
            own_state = state.clone()
            ours, note = timer(linattn_forward_fn(op, "recurrent", xd, initial_state=own_state,
                                                  final_state=own_state))
            add(name, "linattn recurrent (in place)", Bd, ours, flops, base, note, compared=True)
            final = torch.empty_like(state)
            sep, note = timer(linattn_forward_fn(op, "recurrent", xd, initial_state=state,
                                                 final_state=final))
            add(name, "linattn recurrent (state in -> new tensor)", Bd, sep, flops, base, note,
                compared=True)
        else:
            add(name, "linattn recurrent", Bd, None, 0, note=missing)
        tick()

    if "bf16" in cfg.sections:
        name = f"bf16 fwd {shape.replace(' fp32', '')}"
        if has_chunk:
            fp32, note = timer(linattn_forward_fn(op, "chunk", x))
            add(name, "linattn chunk, fp32 q/k/v", tokens, fp32, tokens * flops_tok, note=note)
            xb = {n: (t.bfloat16() if n in ("q", "k", "v") else t) for n, t in x.items()}
            bf16, note = timer(linattn_forward_fn(op, "chunk", xb))
            add(name, "linattn chunk, bf16 q/k/v", tokens, bf16, tokens * flops_tok, fp32, note,
                compared=True)
        else:
            add(name, "linattn chunk, bf16 q/k/v", tokens, None, 0, note=missing)
        tick()
    if "layouts" in cfg.sections or "gates" in cfg.sections:
        notes += input_rows(op, cfg, x, add, timer, tick, flops_tok)
    del x

    if "nh" in cfg.sections and op == "delta_product":
        notes += householder_rows(cfg, add, timer, tick)

    if "sweep" in cfg.sections:
        points = []
        for T in cfg.sweep_T:
            xs = family.inputs(op, cfg.B, T, H, K, V, seed=4)
            base, ours = fwd_pair(xs, T, f"sweep fwd T={T}")
            del xs
            points.append((T, None if base is None else cfg.B * T / base,
                           None if ours is None else cfg.B * T / ours))
            tick()
        if sweep_out is not None:
            sweep_out[op] = points
        for impl, index in (("linattn chunk", 2), ("torch chunked", 1)):
            values = [p[index] for p in points if p[index] is not None]
            if len(values) == len(points) and values:
                notes.append(f"flatness ({impl}): max/min tokens/s over T = {points[0][0]}..."
                             f"{points[-1][0]} is {max(values) / min(values):.3f}")
    return Section(f"{op}: {cfg.label()}, {threads} threads", rows, notes)


def householder_rows(cfg: SuiteConfig, add, timer, tick) -> list[str]:
    """DeltaProduct's cost against n_h (the goal: no worse than linear in n_h): linattn chunk forward
    and forward+backward for n_h = 1..4 on the suite's shape; returns the notes with
    time(n_h) / time(1) next to n_h."""
    import torch
    from . import bench_delta

    C, K, V, H, tokens = cfg.chunk, cfg.K, cfg.V, cfg.H, cfg.B * cfg.T
    times: dict[str, list[float | None]] = {"fwd": [], "fwd+bwd": []}
    for n_h in HOUSEHOLDER_STEPS:
        x = bench_delta.delta_inputs("delta_product", cfg.B, cfg.T, H, K, V, seed=5, n_h=n_h)
        flops = tokens * H * bench_delta.delta_chunk_flops_per_token("delta_product", K, V, C, n_h)
        d_o = torch.randn((*x["q"].shape[:-1], V), generator=torch.Generator().manual_seed(6))
        forward = linattn_forward_fn("delta_product", "chunk", x)
        backward = linattn_backward_fn("delta_product", "chunk", x, d_o)
        for kind, fn, total in (("fwd", forward, flops),
                                ("fwd+bwd", lambda: (forward(), backward()), flops * (1 + BACKWARD_FACTOR))):
            seconds, note = timer(fn)
            times[kind].append(add(f"n_h={n_h} {kind} T={cfg.T}", "linattn chunk", tokens, seconds,
                                   total, note=note))
        tick()
    notes = []
    for kind, values in times.items():
        if values[0]:
            ratios = ", ".join(f"n_h={n}: {t / values[0]:.2f}" for n, t in zip(HOUSEHOLDER_STEPS, values) if t)
            notes.append(f"delta_product {kind} time(n_h)/time(1) (linear would be n_h): {ratios}")
    return notes


def conv_output_view(x):
    """x [B, T, H, D] as the view of a [B, H*D, T] convolution output transposed to [B, T, H, D]
    (how transformers' layers pass q, k, v: d has stride T)."""
    B, T, H, D = x.shape
    return x.reshape(B, T, H * D).transpose(1, 2).contiguous().transpose(1, 2).unflatten(-1, (H, D))


def head_major_view(x):
    """x [B, T, H, D] as the view of a [B, H, T, D] buffer (attention-style layouts)."""
    return x.transpose(1, 2).contiguous().transpose(1, 2)


LAYOUTS = {"q, k, v from a [B,D,T] conv (transposed)": conv_output_view,
           "q, k, v in [B,H,T,D] storage": head_major_view}
# Log decays of the gate rows: logsigmoid(N(0, 1)) times a strength (fla's GLA divides by 16;
# strong gates, common early in training or with a large A_log, multiply), and -inf resets.
GATE_STRENGTHS = {"logsigmoid(x)": 1.0, "logsigmoid(x) x5": 5.0, "logsigmoid(x) x20": 20.0}
RESET_EVERY = 97  # tokens between -inf log decays in the reset row


def input_rows(op: str, cfg: SuiteConfig, x: dict, add, timer, tick, flops_tok) -> list[str]:
    """The layouts and gates sections: linattn chunk forward and forward + backward on strided
    views of the suite's inputs against the same values contiguous, and on strong gates against
    mild ones (the first row of each group is its baseline). Returns the worst-ratio notes."""
    import torch

    tokens = cfg.B * cfg.T
    gate = next((n for n in ("g", "gk") if n in x), None)
    d_o = torch.randn((*x["q"].shape[:-1], cfg.V), generator=torch.Generator().manual_seed(7))
    groups: list[tuple[str, dict[str, dict]]] = []
    if "layouts" in cfg.sections:
        variants = {"contiguous": x}
        for label, view in LAYOUTS.items():
            variants[label] = {**x, **{n: view(x[n]) for n in ("q", "k", "v")}}
        groups.append(("layout", variants))
    if "gates" in cfg.sections and gate is not None:
        logits = torch.randn(x[gate].shape, generator=torch.Generator().manual_seed(8))
        mild = torch.nn.functional.logsigmoid(logits)
        variants = {label: {**x, gate: mild * m} for label, m in GATE_STRENGTHS.items()}
        resets = mild.clone()
        resets[:, ::RESET_EVERY] = -math.inf
        variants[f"logsigmoid(x), -inf every {RESET_EVERY} tokens"] = {**x, gate: resets}
        groups.append(("gates", variants))
    notes = []
    for group, variants in groups:
        for kind in ("fwd", "fwd+bwd"):
            name = f"{group} {kind} T={cfg.T}"
            flops = tokens * flops_tok * (1 if kind == "fwd" else 1 + BACKWARD_FACTOR)
            base, worst = None, None
            for label, xv in variants.items():
                forward = linattn_forward_fn(op, "chunk", xv)
                backward = linattn_backward_fn(op, "chunk", xv, d_o)
                fn = forward if kind == "fwd" else (lambda f=forward, b=backward: (f(), b()))
                seconds, note = timer(fn)
                add(name, f"linattn chunk, {label}", tokens, seconds, flops, base, note,
                    compared=base is not None or None)
                if base is None:
                    base = seconds
                elif seconds and base:
                    worst = max(worst or 0.0, seconds / base)
            if worst is not None:
                notes.append(f"{group} {kind}: worst time / time({next(iter(variants))}) = "
                             f"{worst:.2f} (target <= {1.25 if group == 'layout' else 1.2})")
            tick()
    return notes


def suite_ticks(cfg: SuiteConfig, op: str = "") -> int:
    """Progress steps of run_suite for one op."""
    return sum(s in cfg.sections for s in ("fwd", "fwdbwd", "decode", "bf16")) + 2 * (
        ("layouts" in cfg.sections) + ("gates" in cfg.sections)) + (
        len(cfg.sweep_T) if "sweep" in cfg.sections else 0) + (
        len(HOUSEHOLDER_STEPS) if "nh" in cfg.sections and op == "delta_product" else 0)


def target_lines(section: Section, family: Family) -> list[str]:
    """The family's targets for the linattn rows of one op section: value, met or missed by how
    much."""
    def find(prefix, impl_prefix):
        for r in section.rows:
            if r.name.startswith(prefix) and r.impl.startswith(impl_prefix) and r.seconds is not None:
                return r
        return None

    fwd = find("fwd T=", "linattn chunk")
    fb = find("fwd+bwd", "linattn")
    dec = find("decode", "linattn")
    bf = find("bf16 fwd", "linattn chunk, bf16")
    flat = None
    for note in section.notes:
        if note.startswith("flatness (linattn"):
            flat = float(note.rsplit(" ", 1)[1])
    values = {  # row -> (value, format, unit of the gap)
        "fwd": (fwd and fwd.ratio, "{:.2f}x", "x"),
        "peak": (fwd and 100 * fwd.gflops / fwd.peak_gflops, "{:.1f}%", " points"),
        "fwdbwd": (fb and fb.ratio, "{:.2f}x", "x"),
        "decode": (dec and dec.ratio, "{:.2f}x", "x"),
        "flat": (flat, "{:.3f}", ""),
        "bf16": (bf and bf.ratio, "{:.2f}x", "x"),
    }
    out = []
    for t in family.targets:
        value, fmt, unit = values[t.row]
        if value is None:
            out.append(f"  {t.label}: not measured")
        elif (value >= t.threshold) if t.higher_is_better else (value <= t.threshold):
            out.append(f"  {t.label}: {fmt.format(value)} - met")
        else:
            gap = t.threshold - value if t.higher_is_better else value - t.threshold
            out.append(f"  {t.label}: {fmt.format(value)} - MISSED by {gap:.2f}{unit}")
    return out


# ----------------------------------------------------------------------------------------------
# The reference rows (fp64 oracle vs the torch token loop).

def run_reference(ops: list[str], threads: int, peak: float, quick: bool = False) -> list[Row]:
    """The fp64 rows: the reference (oracle) form against the PyTorch token loop, both in float64
    on a small shape (the oracle is no fast path; these rows predate the fast forms)."""
    import torch

    rows: list[Row] = []
    shape = Shape(B=1, T=128 if quick else 512, H=2, K=32, V=32)
    min_seconds = 0.1 if quick else 0.3
    progress = Progress("bench reference")
    for index, op in enumerate(ops):
        if op not in RECURRENT_OPS:  # e.g. a non-causal op: the token loop is no baseline for it
            rows.append(Row(f"{op} fp64", "linattn reference", threads, 0, None, 0, peak,
                            note="no benchmark for this op yet", is_baseline=False))
            progress(index + 1, len(ops))
            continue
        x = make_inputs(op, shape, torch.float64)
        n_h = x.get("num_householder", 1)
        tokens = shape.B * shape.T
        flops = tokens * shape.H * recurrent_flops_per_token(op, shape.K, shape.V, n_h)
        label = f"{op} fp64 B={shape.B} T={shape.T} H={shape.H} K={shape.K} V={shape.V}"
        extra = {"num_householder": n_h} if op == "delta_product" else {}
        plain = {key: val for key, val in x.items() if key != "num_householder"}
        base_fwd = time_call(lambda: torch_recurrent(op, **plain, **extra), min_seconds)
        ours_fwd = time_call(_linattn_forward(op, x), min_seconds)
        rows.append(Row(f"{label} fwd", "torch token loop", threads, tokens, base_fwd, flops, peak))
        rows.append(Row(f"{label} fwd", "linattn reference", threads, tokens, ours_fwd, flops, peak, base_fwd))
        forward, backward = _linattn_forward(op, x), _linattn_backward(op, x)
        base_fb = time_call(_torch_forward_backward(op, x), min_seconds)
        ours_fb = time_call(lambda: (forward(), backward()), min_seconds)
        # Forward + backward FLOPs counted as 3x the forward (reverse pass ~2x, algorithms.md §5).
        rows.append(Row(f"{label} fwd+bwd", "torch autograd", threads, tokens, base_fb, 3 * flops, peak))
        rows.append(Row(f"{label} fwd+bwd", "linattn reference", threads, tokens, ours_fb, 3 * flops,
                        peak, base_fb))
        progress(index + 1, len(ops))
    return rows


# ----------------------------------------------------------------------------------------------
# The whole run: forms per op, machine checks, report and plot.

FORMS = ("auto", "fast", "reference", "all")


class MachineLoad:
    """CPU time used by other processes during the run, from /proc/stat (busy time of the whole
    machine minus this process's own user+system time), as a % of the machine's CPU time.
    A 2-thread row with another process on the second core is meaningless (docs/performance.md)."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                ticks = [int(v) for v in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        usage = resource.getrusage(resource.RUSAGE_SELF)
        idle = ticks[3] + ticks[4]
        return sum(ticks), idle, usage.ru_utime + usage.ru_stime

    def others_percent(self) -> float | None:
        end = self._sample()
        if self.start is None or end is None:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        total = (end[0] - self.start[0]) / hz
        busy = total - (end[1] - self.start[1]) / hz
        own = end[2] - self.start[2]
        return 100.0 * max(busy - own, 0.0) / total if total > 0 else None


def tune_malloc() -> bool:
    """Makes glibc keep freed memory for reuse (no mmap for large blocks, no trimming).

    PyTorch's CPU allocator takes every temporary from malloc; with glibc's defaults each block
    above the mmap threshold is a fresh mapping whose pages fault in on first touch, every call.
    On this VM that made the chunked baseline up to 3x slower. Tuning the process (what
    jemalloc/tcmalloc do for PyTorch users) makes the baseline stronger; linattn, which writes
    into preallocated outputs, gets the same allocator. Returns whether it was applied."""
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


@dataclass
class Report:
    threads: int
    peak_start: float
    peak_end: float
    sections: list[Section]
    sweep: dict
    others_percent: float | None
    malloc_tuned: bool
    config: SuiteConfig | None
    legend: list[str] = field(default_factory=list)
    guard: QuietGuard | None = None

    def format(self) -> str:
        lines = [f"peak-FMA probe ({_core.simd_target()}, {self.threads} threads): "
                 f"{self.peak_start:.1f} GFLOP/s at the start, {self.peak_end:.1f} at the end "
                 "(% peak uses the higher)"]
        for s in self.sections:
            lines += ["", f"== {s.title} =="]
            if s.rows:
                lines.append(format_table([r.cells() for r in s.rows]))
            lines += s.notes
            family = family_of(s.title.split(":")[0])
            if family and s.rows and any(r.impl.startswith("linattn") for r in s.rows):
                if any(r.name.startswith(("fwd", "decode", "sweep", "bf16")) for r in s.rows):
                    lines += [f"{family.name} family targets:", *target_lines(s, family)]
        lines.append("")
        if self.others_percent is not None:
            lines.append(f"machine: other processes used {self.others_percent:.1f}% of the CPU "
                         "time during the whole run (waits included)")
        if self.guard is not None and self.guard.enabled:
            g = self.guard
            verdict = "quiet" if g.worst <= g.limit else "NOT quiet: see the 'disturbed' rows"
            lines.append(f"quiet guard: {g.repeated} measurement(s) repeated after other processes "
                         f"used > {g.limit:.0f}% of the CPU time; worst kept suite measurement "
                         f"{g.worst:.1f}% ({verdict})")
        lines += self.legend
        return "\n".join(lines)


def legend(cfg: SuiteConfig, malloc_tuned: bool, reference: bool) -> list[str]:
    C = cfg.chunk
    out = [
        "legend:",
        "  time: median of single calls after one warm-up, >= 3 calls and >= "
        f"{cfg.min_seconds} s; tokens/s = B*T/time; GFLOP/s = nominal FLOPs/time; % peak = "
        "GFLOP/s / the peak-FMA probe of this run; vs baseline = time(baseline)/time(row), "
        "baseline measured in this run on the same threads.",
        f"  FLOPs per token per head: chunk fwd 2C(K+V) + 4KV (+C for simple_gla/retention), "
        f"C = {C}; fwd+bwd = (1 + {BACKWARD_FACTOR}) x fwd (backward counted as "
        f"{BACKWARD_FACTOR}x forward); decode = recurrent 4KV (linear_attn) / 5KV.",
        f"  fwd: linattn form 'chunk' vs torch_chunked (torch matmuls, chunk {C}, all chunks "
        "batched, sequential state pass); gla's intra-chunk scores use a mid-chunk reference "
        f"row (safe while (C/2)*max|gk| <= {GLA_SAFE_SPREAD:.0f}, else an exact pairwise "
        "fallback), no secondary chunking.",
        "  fwd+bwd: linattn chunk forward + chunk backward (dq, dk, dv, dg/dgk) vs torch "
        "autograd through torch_chunked (same gradients).",
        "  decode: one token on a state [B,H,K,V]; torch updates its state in place (mul_, "
        "baddbmm_) and reads out with bmm; linattn recurrent in place (final_state = "
        "initial_state, the target row) and into a separate final_state tensor.",
        "  bf16: linattn chunk forward with q, k, v in bfloat16 (gates float32, o bfloat16) vs "
        "the same call with float32 q, k, v; ratio = bf16 throughput / fp32 throughput.",
        "  inputs: q, v ~ N(0,1), k L2-normalised, g/gk = logsigmoid(N(0,1))/16 (fla's GLA "
        "gate); no initial state except in decode; outputs of linattn preallocated.",
        "  delta family (delta_rule, gated_delta_rule, delta_product, kda): FLOPs per token per "
        "head 6CK + 4CV + C^2/3 + 6KV (+2C gated; DeltaProduct n_h(4CK + 2CV + C^2/3 + 4KV) + "
        "2CK + 2CV + 2KV, n_h = 2 unless stated); baseline torch_chunked_delta: the UT transform "
        "as a batched unit-triangular solve over all chunks, then the sequential state pass; "
        "beta = sigmoid(N(0,1)); decode baseline: n_h delta steps with baddbmm.",
        "  malloc: " + ("glibc tuned to reuse freed blocks (no mmap, no trim) for torch and "
                        "linattn alike" if malloc_tuned else "glibc defaults"),
    ]
    if reference:
        out.append("  reference rows: fp64 oracle vs the torch token loop, small shape; their "
                   "fwd+bwd FLOPs are counted as 3x the recurrent forward.")
    return out


def write_plot(path: str, sweep: dict, threads: int, label: str = "") -> None:
    """tokens/s against T (log2 axis) for linattn chunk (solid) and torch chunked (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, (op, points) in enumerate(sweep.items()):
        color = f"C{index}"
        for slot, style, impl in ((2, "-", "linattn chunk"), (1, "--", "torch chunked")):
            pts = [(p[0], p[slot]) for p in points if p[slot] is not None]
            if pts:
                ax.plot([t for t, _ in pts], [v / 1e3 for _, v in pts], style, marker="o",
                        color=color, label=f"{op} ({impl})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("T (tokens per sequence), B=1")
    ax.set_ylabel("thousand tokens/s")
    ax.set_ylim(bottom=0)
    ax.set_title(f"chunk forward throughput vs T ({label}, fp32, {threads} threads)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(ops: list[str], threads: int | None = None, quick: bool = False, forms: str = "auto",
        plot: str | None = None, config: SuiteConfig | None = None,
        malloc: bool = True, guard: QuietGuard | None = None) -> Report:
    """Runs the benchmark of each op: the fast-form suite and/or the reference rows.

    forms: 'fast' the suite (ops of SUITE_OPS); 'reference' the fp64 oracle rows; 'all' both;
    'auto' the suite for an op that has a fast form, the reference rows otherwise.
    guard: repeats suite measurements disturbed by other processes (default: a QuietGuard)."""
    import torch

    if forms not in FORMS:
        raise ValueError(f"bench: forms must be one of {', '.join(FORMS)}, got '{forms}'")
    malloc_tuned = tune_malloc() if malloc else False
    threads = threads or os.cpu_count() or 1
    _core.set_num_threads(threads)
    torch.set_num_threads(threads)
    cfg = config or (QUICK if quick else FULL)
    guard = guard or QuietGuard()
    load = MachineLoad()
    peak, _ = guard.measure(lambda: _core.peak_fma_gflops(threads))

    def fast_available(op):
        return family_of(op) is not None and any(_core.has_form(op, f, False)
                                                 for f in ("chunk", "recurrent"))

    suite_ops, reference_ops, notes = [], [], []
    for op in ops:
        fast = forms in ("fast", "all") or (forms == "auto" and fast_available(op))
        if fast and family_of(op):
            suite_ops.append(op)
        elif fast:
            notes.append(f"{op}: the fast-form suite covers {', '.join(SUITE_OPS)}")
        if forms in ("reference", "all") or (forms == "auto" and not fast_available(op)):
            reference_ops.append(op)
            if forms == "auto" and family_of(op):
                notes.append(f"{op}: no chunk or recurrent form yet: reference rows only "
                             "(--forms fast runs the torch baselines anyway)")

    sections: list[Section] = []
    sweep: dict = {}
    total = sum(suite_ticks(cfg, op) for op in suite_ops)
    progress = Progress("bench")
    done = [0]

    def tick():
        done[0] += 1
        progress(done[0], total)

    for op in suite_ops:
        sections.append(run_suite(op, cfg, threads, peak, sweep, tick, guard))
    if reference_ops:
        rows = run_reference(reference_ops, threads, peak, quick)
        sections.append(Section(f"reference forms (fp64), {threads} threads", rows, notes))
    elif notes:
        sections.append(Section("notes", [], notes))
    peak_end, _ = guard.measure(lambda: _core.peak_fma_gflops(threads))
    # The probe measures the hardware's FMA peak: a lower reading is a disturbed one, so % peak
    # uses the higher of the two (the conservative choice).
    for section in sections:
        for row in section.rows:
            row.peak_gflops = max(peak, peak_end)
    others = load.others_percent()
    if plot:
        if sweep:
            write_plot(plot, sweep, threads, cfg.label())
        else:
            sections.append(Section("plot", [], [f"no T sweep ran: {plot} not written"]))
    return Report(threads, peak, peak_end, sections, sweep, others, malloc_tuned, cfg,
                  legend(cfg, malloc_tuned, bool(reference_ops)), guard)
