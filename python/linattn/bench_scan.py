"""`linattn bench-scan`: the selective scan and the causal conv1d against PyTorch baselines
measured in the same run on the same threads.

- selective scan (Mamba-1 130M-class layer: D = 1536, N = 16, B = 1, T = 2048, delta_softplus,
  D skip, z gate, fp32), forward and forward+backward, against the straightforward per-token
  torch loop (mamba's selective_scan_ref written token by token; autograd for the backward);
- the same scan with few channels and a long sequence (B = 1, D = 32, N = 16, T = 65536), which
  runs in time chunks (two-pass scan): forward on 1 thread and on the run's threads;
- one decode step (selective_state_update, B = 8) against the same step in torch;
- causal conv1d (W = 4, SiLU, [B, T, D] in and out) against torch.nn.functional.conv1d with
  groups=D and padding W-1 (plus the transposes between [B, T, D] and conv1d's [B, D, T]),
  forward and forward+backward.
Ratios are torch time / linattn time (> 1: linattn is faster).
"""

from __future__ import annotations

import dataclasses
import math

from . import _core
from ._terminal import format_table
from .bench import MachineLoad, time_call
from .conv1d import causal_conv1d, causal_conv1d_backward
from .scan import selective_scan_backward, selective_scan_fn, selective_state_update


@dataclasses.dataclass
class Config:
    D: int = 1536
    N: int = 16
    T: int = 2048
    T_long: int = 65536  # the time-chunked row (D = 32)
    W: int = 4
    decode_batch: int = 8
    min_seconds: float = 0.5


QUICK = Config(T=256, T_long=8192, min_seconds=0.1)


def scan_inputs(torch, cfg: Config, batch: int = 1, T: int | None = None):
    """Mamba-1-like inputs in mamba's layout: A = -[1..N] (S4D-Real), Δ = softplus(delta +
    bias) in about [1e-3, 0.1]."""
    g = torch.Generator().manual_seed(0)
    T = cfg.T if T is None else T
    r = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    D, N = cfg.D, cfg.N
    return dict(u=r(batch, D, T) * 2 - 1, delta=r(batch, D, T) * 4 - 6,
                A=-torch.arange(1, N + 1, dtype=torch.float32).repeat(D, 1),
                B=r(batch, N, T) * 2 - 1, C=r(batch, N, T) * 2 - 1, D=torch.ones(D),
                z=r(batch, D, T) * 2 - 1, delta_bias=r(D) * 0.1)


def torch_scan_loop(torch, u, delta, A, B, C, D, z, delta_bias):
    """The per-token torch baseline (mamba's selective_scan_ref semantics)."""
    dt = torch.nn.functional.softplus(delta + delta_bias[:, None])
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        dtt = dt[:, :, t, None]
        h = torch.exp(dtt * A) * h + dtt * B[:, None, :, t] * u[:, :, t, None]
        ys.append((h * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=2) + u * D[:, None]
    return y * torch.nn.functional.silu(z)


def torch_conv(torch, x, weight, bias):
    W = weight.shape[1]
    y = torch.nn.functional.conv1d(x.transpose(1, 2), weight[:, None], bias, padding=W - 1,
                                   groups=x.shape[2])[..., : x.shape[1]]
    return torch.nn.functional.silu(y).transpose(1, 2)


def run(threads: int | None = None, quick: bool = False) -> str:
    import torch

    cfg = QUICK if quick else Config()
    threads = threads or _core.get_num_threads()
    _core.set_num_threads(threads)
    torch.set_num_threads(threads)
    load = MachineLoad()
    rows = []

    def row(name, shape, tokens, linattn_fn, torch_fn, row_threads=threads):
        t_lin = time_call(linattn_fn, cfg.min_seconds)
        t_torch = time_call(torch_fn, cfg.min_seconds, min_reps=1)
        rows.append({"benchmark": name, "shape": shape, "threads": str(row_threads),
                     "linattn": f"{t_lin * 1e3:.2f} ms", "tokens/s": f"{tokens / t_lin:,.0f}",
                     "torch": f"{t_torch * 1e3:.2f} ms", "torch / linattn": f"{t_torch / t_lin:.1f}x"})

    x = scan_inputs(torch, cfg)
    shape = f"B=1 T={cfg.T} D={cfg.D} N={cfg.N}"
    kw = dict(D=x["D"], z=x["z"], delta_bias=x["delta_bias"], delta_softplus=True)
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"])
    with torch.no_grad():
        row("selective scan fwd", shape, cfg.T, lambda: selective_scan_fn(*args, **kw),
            lambda: torch_scan_loop(torch, **x))
    dout = torch.randn(1, cfg.D, cfg.T)

    def linattn_fwd_bwd():
        selective_scan_fn(*args, **kw)
        selective_scan_backward(*args, dout, **kw)

    leaves = {k: v.clone().requires_grad_(True) for k, v in x.items()}

    def torch_fwd_bwd():
        for v in leaves.values():
            v.grad = None
        torch_scan_loop(torch, **leaves).backward(dout)

    row("selective scan fwd+bwd", shape, cfg.T, linattn_fwd_bwd, torch_fwd_bwd)

    long_cfg = dataclasses.replace(cfg, D=32)
    xl = scan_inputs(torch, long_cfg, T=cfg.T_long)
    argsl = (xl["u"], xl["delta"], xl["A"], xl["B"], xl["C"])
    kwl = dict(D=xl["D"], z=xl["z"], delta_bias=xl["delta_bias"], delta_softplus=True)
    for t in sorted({1, threads}):
        _core.set_num_threads(t)
        torch.set_num_threads(t)
        with torch.no_grad():
            row("selective scan fwd, time chunks", f"B=1 T={cfg.T_long} D=32 N={cfg.N}", cfg.T_long,
                lambda: selective_scan_fn(*argsl, **kwl), lambda: torch_scan_loop(torch, **xl), t)
    _core.set_num_threads(threads)
    torch.set_num_threads(threads)

    step = scan_inputs(torch, cfg, batch=cfg.decode_batch, T=1)
    state = torch.zeros(cfg.decode_batch, cfg.D, cfg.N)
    s = {k: (v[..., 0] if v.dim() == 3 else v) for k, v in step.items()}
    with torch.no_grad():
        def torch_step():
            dt = torch.nn.functional.softplus(s["delta"] + s["delta_bias"])[..., None]
            h = torch.exp(dt * s["A"]) * state + dt * s["B"][:, None] * s["u"][..., None]
            return ((h * s["C"][:, None]).sum(-1) + s["u"] * s["D"]) * torch.nn.functional.silu(s["z"])

        row("selective_state_update", f"B={cfg.decode_batch} D={cfg.D} N={cfg.N}", cfg.decode_batch,
            lambda: selective_state_update(state, s["u"], s["delta"], s["A"], s["B"], s["C"],
                                           D=s["D"], z=s["z"], dt_bias=s["delta_bias"],
                                           dt_softplus=True),
            torch_step)

    g = torch.Generator().manual_seed(1)
    xc = torch.rand(1, cfg.T, cfg.D, generator=g) * 2 - 1
    w = (torch.rand(cfg.D, cfg.W, generator=g) * 2 - 1) / math.sqrt(cfg.W)
    b = torch.rand(cfg.D, generator=g) - 0.5
    cshape = f"B=1 T={cfg.T} D={cfg.D} W={cfg.W} silu"
    with torch.no_grad():
        row("causal_conv1d fwd", cshape, cfg.T, lambda: causal_conv1d(xc, w, b, activation="silu"),
            lambda: torch_conv(torch, xc, w, b))
    dy = torch.randn_like(xc)
    cl = [t.clone().requires_grad_(True) for t in (xc, w, b)]

    def torch_conv_fwd_bwd():
        for t in cl:
            t.grad = None
        torch_conv(torch, *cl).backward(dy)

    def linattn_conv_fwd_bwd():
        causal_conv1d(xc, w, b, activation="silu")
        causal_conv1d_backward(xc, w, dy, bias=b, activation="silu")

    row("causal_conv1d fwd+bwd", cshape, cfg.T, linattn_conv_fwd_bwd, torch_conv_fwd_bwd)

    others = load.others_percent()
    note = "" if others is None else f"\nother processes used {others:.0f}% of the machine's CPU time during the run"
    return (f"linattn {_core.version()} bench-scan, {threads} thread(s), SIMD {_core.simd_target()}, "
            f"torch {torch.__version__}\n" + format_table(rows) + note)
