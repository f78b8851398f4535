"""Training throughput at fixed memory (Lightning Attention-2's claim: constant forward + backward
speed as T grows at a fixed number of tokens per batch): tokens/s of one forward + backward at
B·T = `tokens` for T from 1K to 64K, with the peak resident memory of each point, for linattn's
chunk kernels, the PyTorch chunked formulation (bench.torch_chunked, autograd backward) and
softmax attention (torch's scaled_dot_product_attention, its own backward).

Every point runs in its own subprocess so that its peak memory (getrusage max RSS: C++
allocations included, unlike tracemalloc) is its own; `idle` is the RSS of a subprocess that
only imports and builds the inputs, the floor under every point.

    .venv/bin/python -m linattn.experiments.throughput_train --full --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

QUICK_T = (1024, 4096, 16384)
FULL_T = (1024, 2048, 4096, 8192, 16384, 32768, 65536)
IMPLS = ("idle", "linattn chunk", "torch chunked", "softmax (torch SDPA)")
SOFTMAX_MAX_T = 16384  # quadratic time: 64K would take tens of minutes per step on 2 cores


def point(impl: str, op: str, B: int, T: int, H: int, K: int, min_seconds: float) -> dict:
    """One measurement, in this process: seconds of one forward + backward and the peak RSS."""
    import torch

    from .. import bench

    x = bench.gated_inputs(op, B, T, H, K, K)
    d_o = torch.randn(B, T, H, K, generator=torch.Generator().manual_seed(1))
    seconds = 0.0
    if impl == "linattn chunk":
        fwd, bwd = bench.linattn_forward_fn(op, "chunk", x), bench.linattn_backward_fn(op, "chunk", x, d_o)
        seconds = bench.time_call(lambda: (fwd(), bwd()), min_seconds, min_reps=2)
    elif impl == "torch chunked":
        seconds = bench.time_call(bench.torch_forward_backward_fn(op, x, d_o, 64), min_seconds,
                                  min_reps=2)
    elif impl == "softmax (torch SDPA)":
        q, k, v = (x[n].transpose(1, 2).detach().requires_grad_(True) for n in ("q", "k", "v"))

        def step():
            o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            o.backward(d_o.transpose(1, 2))

        seconds = bench.time_call(step, min_seconds, min_reps=2)
    elif impl != "idle":
        raise ValueError(f"throughput_train: unknown implementation {impl!r}; known: {IMPLS}")
    return {"impl": impl, "op": op, "B": B, "T": T, "H": H, "K": K, "seconds": seconds,
            "tokens_per_s": B * T / seconds if seconds else None,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run(full: bool = False, threads: int | None = None, json_path: str | None = None,
        op: str = "simple_gla", tokens: int = 65536, H: int = 8, K: int = 64,
        lengths: tuple[int, ...] | None = None) -> str:
    """The sweep: one subprocess per (implementation, T); returns the table's text and writes
    every point to `json_path`."""
    from .._terminal import format_table

    lengths = lengths or (FULL_T if full else QUICK_T)
    rows, points = [], []
    for T in lengths:
        B = max(1, tokens // T)
        row = {"T": str(T), "B": str(B)}
        for impl in IMPLS:
            if impl.startswith("softmax") and T > SOFTMAX_MAX_T:
                row[impl] = "skipped (quadratic)"
                continue
            cmd = [sys.executable, "-m", "linattn.experiments.throughput_train", "--point", impl,
                   "--op", op, "--B", str(B), "--T", str(T), "--H", str(H), "--K", str(K),
                   "--threads", str(threads or 1), "--min-seconds", "1.0" if full else "0.2"]
            p = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True)
                           .stdout.strip().splitlines()[-1])
            points.append(p)
            row[impl] = (f"{p['peak_rss_mib']:.0f} MiB" if impl == "idle" else
                         f"{p['tokens_per_s'] / 1e3:.0f}k tok/s, {p['peak_rss_mib']:.0f} MiB")
        rows.append(row)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(points, f, indent=1)
    return (f"Training throughput at fixed B*T = {tokens} ({op}, H={H}, K=V={K}, fp32, "
            f"{threads or 1} threads): forward + backward tokens/s and peak RSS per point "
            f"(idle: the process without the op)\n" + format_table(rows))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m linattn.experiments.throughput_train",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--point", help="measure one implementation in this process, print JSON")
    ap.add_argument("--op", default="simple_gla")
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--T", type=int, default=1024)
    ap.add_argument("--H", type=int, default=8)
    ap.add_argument("--K", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=65536, help="B*T of every point")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-seconds", type=float, default=0.2)
    ap.add_argument("--full", action="store_true", help="T from 1K to 64K (default 1K, 4K, 16K)")
    ap.add_argument("--json", default=None, help="write every point to this file")
    args = ap.parse_args(argv)
    import torch

    from .. import _core

    torch.set_num_threads(args.threads)
    _core.set_num_threads(args.threads)
    if args.point:
        print(json.dumps(point(args.point, args.op, args.B, args.T, args.H, args.K,
                               args.min_seconds)), flush=True)
        return
    print(run(args.full, args.threads, args.json, args.op, args.tokens, args.H, args.K), flush=True)


if __name__ == "__main__":
    main()
