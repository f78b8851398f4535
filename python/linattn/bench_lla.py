"""`linattn bench-lla`: the cost of Local Linear Attention relative to softmax attention vs T.

Times linattn's LLA (chunk form, fp32, the authors' solver defaults unless overridden) against
PyTorch's ``scaled_dot_product_attention(is_causal=True)`` on the same threads in the same run,
forward and forward+backward, and reports the ratio per T and the achieved GFLOP/s of both
against the peak-FMA probe. FLOPs are nominal (docs/performance.md): the causal pairs P = B H T (T + 1) / 2 times the
per-pair cost of the algorithm (algorithms.md §4.9d), LLA's with its measured mean number of CG
iterations n (linattn::lla::Stats: cg_pairs / tile_pairs; masked pairs of the diagonal tiles
and rows that converged early are not counted): forward P (6K + 2V + 4K n), backward
P (24K + 6V + 4K n_bwd) (n_bwd: both solves); softmax attention P (2K + 2V) forward and 3.5x
that forward+backward.
A benchmark, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _core
from ._terminal import format_table
from .bench import MachineLoad, time_call


@dataclass
class Config:
    threads: int = 2
    Ts: tuple[int, ...] = (256, 512, 1024, 2048, 4096)
    B: int = 1
    H: int = 16
    K: int = 64
    V: int = 64
    ridge_lambda: float = 10.0
    cg_max_iters: int = 32
    backward: bool = True
    min_seconds: float = 0.5


def lla_flops(pairs: float, stats: dict, K: int, V: int, backward: bool) -> float:
    """Nominal FLOPs (2 per multiply-add) of one LLA call over `pairs` causal query-key pairs:
    per pair 6K + 2V forward (scores, mu~, rho.z, l V); 12K + 2V in the backward's query pass and
    12K + 4V in its key pass; 4K per CG iteration (stats: the mean iterations)."""
    iterations = stats["cg_pairs"] / stats["tile_pairs"]
    per_pair = (24 * K + 6 * V) if backward else (6 * K + 2 * V)
    return pairs * (per_pair + 4 * K * iterations)


def run(cfg: Config) -> str:
    import torch
    import torch.nn.functional as F

    _core.set_num_threads(cfg.threads)
    torch.set_num_threads(cfg.threads)
    load = MachineLoad()
    peak_start = _core.peak_fma_gflops(cfg.threads)
    B, H, K, V = cfg.B, cfg.H, cfg.K, cfg.V
    options = dict(ridge_lambda=cfg.ridge_lambda, cg_max_iters=cfg.cg_max_iters)
    rows = []
    for T in cfg.Ts:
        gen = torch.Generator().manual_seed(T)
        q, k = (torch.randn(B, T, H, K, generator=gen) for _ in range(2))
        v = torch.randn(B, T, H, V, generator=gen)
        do = torch.randn(B, T, H, V, generator=gen)
        o = torch.empty(B, T, H, V)
        grads = {name: torch.empty_like(x) for name, x in (("dq", q), ("dk", k), ("dv", v))}
        fwd_stats: dict = {}
        bwd_stats: dict = {}

        def lla_fwd():
            fwd_stats.update(_core.lla_forward("chunk", q, k, v, o=o, **options))

        def lla_fwdbwd():
            lla_fwd()
            bwd_stats.update(_core.lla_backward("chunk", q, k, v, do, **grads, **options))

        # SDPA's layout is [B, H, T, D]: contiguous copies made outside the timing.
        qt, kt, vt, dot = (x.transpose(1, 2).contiguous() for x in (q, k, v, do))
        qg, kg, vg = (x.clone().requires_grad_() for x in (qt, kt, vt))

        def sdpa_fwd():
            with torch.no_grad():
                F.scaled_dot_product_attention(qt, kt, vt, is_causal=True)

        def sdpa_fwdbwd():
            out = F.scaled_dot_product_attention(qg, kg, vg, is_causal=True)
            torch.autograd.backward(out, dot, inputs=[qg, kg, vg])

        passes = [("fwd", lla_fwd, sdpa_fwd, 1.0)]
        if cfg.backward:
            passes.append(("fwd+bwd", lla_fwdbwd, sdpa_fwdbwd, 3.5))
        for name, lla_fn, sdpa_fn, sdpa_factor in passes:
            t_lla = time_call(lla_fn, cfg.min_seconds)
            t_sdpa = time_call(sdpa_fn, cfg.min_seconds)
            pairs = B * H * T * (T + 1) / 2
            flops = lla_flops(pairs, fwd_stats, K, V, False)
            if name != "fwd":
                flops += lla_flops(pairs, bwd_stats, K, V, True)
            sdpa_flops = pairs * (2 * K + 2 * V) * sdpa_factor
            rows.append({"_flops": (flops / t_lla, sdpa_flops / t_sdpa),
                "T": str(T), "pass": name,
                "LLA ms": f"{t_lla * 1e3:.2f}", "SDPA ms": f"{t_sdpa * 1e3:.2f}",
                "LLA / SDPA": f"{t_lla / t_sdpa:.1f}x",
                "CG iters": f"{fwd_stats['cg_pairs'] / fwd_stats['tile_pairs']:.1f}"
                + (f" + {bwd_stats['cg_pairs'] / bwd_stats['tile_pairs']:.1f}" if name != "fwd" else ""),
            })
    # As `linattn bench`: the probe measures the hardware's FMA peak, so a lower reading is a
    # disturbed one and % peak uses the higher of the two probes.
    peak_end = _core.peak_fma_gflops(cfg.threads)
    peak = max(peak_start, peak_end)
    others = load.others_percent()
    for row in rows:
        lla_rate, sdpa_rate = row.pop("_flops")
        row["LLA GFLOP/s"] = f"{lla_rate / 1e9:.1f}"
        row["LLA % peak"] = f"{100 * lla_rate / 1e9 / peak:.1f}%"
        row["SDPA GFLOP/s"] = f"{sdpa_rate / 1e9:.1f}"
        row["SDPA % peak"] = f"{100 * sdpa_rate / 1e9 / peak:.1f}%"
    header = (f"LLA (chunk form, fp32, lambda={cfg.ridge_lambda}, cg_max_iters={cfg.cg_max_iters}, "
              f"cg_rtol=cg_atol=1e-12) vs torch {torch.__version__} scaled_dot_product_attention"
              f"(is_causal=True); B={B}, H={H}, K={K}, V={V}, {cfg.threads} threads, peak-FMA "
              f"probe {peak_start:.1f} / {peak_end:.1f} GFLOP/s (start / end); other processes used "
              f"{'?' if others is None else f'{others:.0f}'}% of the machine's CPU time; CG iters: mean "
              f"iterations per query tile (forward [+ backward, both solves]); nominal FLOPs "
              f"(module docstring)")
    return header + "\n" + format_table(rows)
