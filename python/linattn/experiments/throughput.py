"""Experiment 4: throughput against sequence length (Lightning Attention-2's flat-throughput
claim): tokens/s of linattn's chunk forward and of the PyTorch chunked baseline for T from 1K
up, measured by the bench suite's sweep (bench.run_suite) in one run on the same threads."""

from __future__ import annotations

import dataclasses

from .. import bench

QUICK_T = (1024, 2048, 4096, 8192, 16384)
FULL_T = (1024, 2048, 4096, 8192, 16384, 32768, 65536)
OPS = ("linear_attn", "simple_gla", "gla", "gated_delta_rule")


def run(full: bool = False, threads: int | None = None, plot: str | None = None,
        ops: tuple[str, ...] = OPS) -> bench.Report:
    """The sweep section of the bench suite for `ops` (B=1, H=16, K=V=128, fp32); the report's
    notes give each op's flatness (max/min tokens/s over T)."""
    config = dataclasses.replace(bench.FULL, sweep_T=FULL_T if full else QUICK_T,
                                 sections=("sweep",), min_seconds=0.3 if full else 0.05)
    guard = bench.QuietGuard(enabled=full)
    return bench.run(list(ops), threads=threads, forms="fast", plot=plot, config=config,
                     guard=guard)
