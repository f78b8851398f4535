"""Benchmark machinery for the `linattn bench` CLI.

Every row reports time, tokens/s, GFLOP/s, % of the peak-FMA probe and the speed ratio against a
baseline measured in the same run on the same thread count (conventions.md, Benchmarks). The
baselines are PyTorch code a user would otherwise write; linattn's own numbers come from the
C++ core through the binding. Rows from different runs are never compared.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from typing import Callable


from . import _core
from ._terminal import Progress


@dataclass
class Row:
    name: str
    impl: str
    threads: int
    tokens: int
    seconds: float
    flops: float
    peak_gflops: float
    baseline_seconds: float | None = None  # None: this row is a baseline

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9

    def cells(self) -> dict[str, str]:
        ratio = "baseline" if self.baseline_seconds is None else f"{self.baseline_seconds / self.seconds:.2f}x"
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
    }[op]


@dataclass
class Shape:
    B: int
    T: int
    H: int
    K: int
    V: int
    n_h: int = 2  # delta_product only


def make_inputs(op: str, shape: Shape, dtype, seed: int = 0) -> dict:
    """Random valid torch inputs of an op: log decays in [-1, -0.01], beta in [0.1, 1]."""
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
    if op == "gla":
        x["gk"] = uniform(-1.0, -0.01, B, T, H, K)
    if op in ("delta_rule", "gated_delta_rule", "delta_product"):
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


def run(ops: list[str], threads: int | None = None, quick: bool = False) -> list[Row]:
    import torch

    threads = threads or os.cpu_count() or 1
    _core.set_num_threads(threads)
    torch.set_num_threads(threads)
    peak = _core.peak_fma_gflops(threads)
    rows = [Row(f"peak FMA probe ({_core.simd_target()})", "linattn", threads, 0, 1.0, peak * 1e9, peak)]
    shape = Shape(B=1, T=128 if quick else 512, H=2, K=32, V=32)
    min_seconds = 0.1 if quick else 0.3
    progress = Progress("bench")
    for index, op in enumerate(ops):
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
