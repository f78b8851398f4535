"""`linattn bench --op softmax_attention`: softmax attention against PyTorch, and where the linear
ops overtake it.

Sections (all fp32, causal, measured in one run on the same threads as PyTorch):
- fwd / fwd+bwd at B=1, T=4096, H=16, K=V=128: linattn's tiled form (chunk) vs
  torch.nn.functional.scaled_dot_product_attention(is_causal=True) on contiguous [B, H, T, D]
  tensors (its preferred layout; linattn reads fla's [B, T, H, D]); fwd+bwd is the forward plus
  the gradients of q, k, v (torch: autograd).
- decode: one new token per sequence against a KV cache of T tokens (B = 8): attn_with_kvcache
  vs SDPA of the single query over the cache.
- T sweep: softmax attention forward vs the chunk forward of every linear op with a chunk form
  (linattn.forward(op, 'chunk', ...), B=1 H=16 K=V=128), and the first T at which each op is
  faster than softmax attention.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import _core
from .bench import (MachineLoad, QuietGuard, Report, Row, Section, Shape, chunk_flops_per_token,
                    make_inputs, time_call, tune_malloc)


@dataclass
class AttentionConfig:
    T: int = 4096
    H: int = 16
    D: int = 128
    decode_B: int = 8
    sweep_T: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192, 16384)
    min_seconds: float = 0.3


FULL = AttentionConfig()
QUICK = AttentionConfig(T=1024, sweep_T=(256, 512, 1024), min_seconds=0.05)
BACKWARD_FACTOR = 2.5  # algorithms.md §4.11 (d): five tile products against two


def causal_flops(T: int, H: int, K: int, V: int) -> float:
    """Nominal forward FLOPs: the T(T+1)/2 visible (query, key) pairs of each head cost a K-long
    dot product and a V-long update, 2(K + V) FLOPs (§4.11 d)."""
    return 2.0 * H * (K + V) * T * (T + 1) / 2


def _inputs(B: int, T: int, H: int, D: int, seed: int = 0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(B, T, H, D, generator=gen) for _ in range(3)]


def linattn_forward_fn(q, k, v):
    """fn(): the chunk forward into preallocated o and lse (as parallel_attn, minus allocation)."""
    import torch

    o = torch.empty(*q.shape[:3], v.shape[3])
    lse = torch.empty(q.shape[:3])
    return (lambda: _core.attention_forward("chunk", q, k, v, o=o, lse=lse)), o, lse


def fwd_bwd_sections(cfg: AttentionConfig, threads: int, peak: float, guard: QuietGuard):
    import torch

    T, H, D = cfg.T, cfg.H, cfg.D
    q, k, v = _inputs(1, T, H, D)
    qt, kt, vt = (x.transpose(1, 2).contiguous() for x in (q, k, v))
    flops = causal_flops(T, H, D, D)

    def measure(fn):
        return guard.measure(lambda: time_call(fn, cfg.min_seconds))

    def sdpa():
        return torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=True)

    forward, o, lse = linattn_forward_fn(q, k, v)
    d_o = torch.randn_like(o)
    grads = {name: torch.empty_like(x) for name, x in (("dq", q), ("dk", k), ("dv", v))}

    def linattn_fwd_bwd():
        forward()
        _core.attention_backward("chunk", q, k, v, o=o, lse=lse, d_o=d_o, **grads)

    leaves = [x.clone().requires_grad_(True) for x in (qt, kt, vt)]
    d_ot = d_o.transpose(1, 2).contiguous()

    def torch_fwd_bwd():
        for x in leaves:
            x.grad = None
        torch.nn.functional.scaled_dot_product_attention(*leaves, is_causal=True).backward(d_ot)

    rows = []
    for name, base_fn, fn, f in (("fwd", sdpa, forward, flops),
                                 ("fwd+bwd", torch_fwd_bwd, linattn_fwd_bwd,
                                  flops * (1 + BACKWARD_FACTOR))):
        base, base_note = measure(base_fn)
        mine, note = measure(fn)
        rows.append(Row(name, "torch SDPA (is_causal)", threads, T, base, f, peak, note=base_note))
        rows.append(Row(name, "linattn chunk", threads, T, mine, f, peak, baseline_seconds=base,
                        note=note))
    return Section(f"softmax_attention: fp32 causal B=1 T={T} H={H} K=V={D}, {threads} threads",
                   rows, ["target: linattn >= 1.0x torch SDPA for fwd and fwd+bwd"])


def decode_section(cfg: AttentionConfig, threads: int, peak: float, guard: QuietGuard):
    import torch

    B, T, H, D = cfg.decode_B, cfg.T, cfg.H, cfg.D
    q, k_cache, v_cache = _inputs(B, 1, H, D, seed=1)[0], *_inputs(B, T, H, D, seed=2)[1:]
    lens = torch.full((B,), T, dtype=torch.int64)
    o = torch.empty(B, 1, H, D)
    qt, kt, vt = (x.transpose(1, 2).contiguous() for x in (q, k_cache, v_cache))
    flops = 2.0 * B * H * T * 2 * D

    def mine():
        _core.attention_decode("recurrent", q, k_cache, v_cache, lens, o=o)

    def sdpa():
        return torch.nn.functional.scaled_dot_product_attention(qt, kt, vt)

    base, base_note = guard.measure(lambda: time_call(sdpa, cfg.min_seconds))
    t, note = guard.measure(lambda: time_call(mine, cfg.min_seconds))
    rows = [Row("decode", "torch SDPA (1 query)", threads, B, base, flops, peak, note=base_note),
            Row("decode", "linattn recurrent", threads, B, t, flops, peak, baseline_seconds=base,
                note=note)]
    return Section(f"softmax_attention decode: B={B} one new token, cache {T}, H={H} D={D}",
                   rows)


def linear_ops() -> list[str]:
    """The causal ops with a chunk form (noncausal_linear_attn reads the whole sequence: it does
    not replace causal attention)."""
    return [op for op in _core.op_names()
            if op != "noncausal_linear_attn" and _core.has_form(op, "chunk", False)]


def sweep_section(cfg: AttentionConfig, threads: int, peak: float, guard: QuietGuard):
    import torch

    H, D = cfg.H, cfg.D
    ops = linear_ops()
    rows, times = [], {}
    for T in cfg.sweep_T:
        q, k, v = _inputs(1, T, H, D, seed=T)
        fn, _, _ = linattn_forward_fn(q, k, v)
        # one warm-up and one timed call: at 16K a call takes tens of seconds
        soft, note = guard.measure(lambda: time_call(fn, 0.0, 1))
        times[("softmax", T)] = soft
        rows.append(Row(f"sweep T={T}", "softmax_attention chunk", threads, T, soft,
                        causal_flops(T, H, D, D), peak, note=note))
        for op in ops:
            x = make_inputs(op, Shape(1, T, H, D, D), torch.float32)
            x.pop("initial_state")
            extra = {n: x.pop(n) for n in list(x) if n not in ("q", "k", "v")}
            o = torch.empty(1, T, H, D)
            t, note = guard.measure(lambda: time_call(
                lambda: _core.forward(op, "chunk", x["q"], x["k"], x["v"], **extra, o=o),
                cfg.min_seconds))
            times[(op, T)] = t
            rows.append(Row(f"sweep T={T}", f"{op} chunk", threads, T, t,
                            T * H * chunk_flops_per_token(op, D, D, 64), peak,
                            baseline_seconds=soft, note=note))
            del x, extra, o
    notes = []
    for op in ops:
        faster = [T for T in cfg.sweep_T if times[(op, T)] < times[("softmax", T)]]
        where = f"from T = {faster[0]}" if faster else f"not within T <= {cfg.sweep_T[-1]}"
        notes.append(f"{op} chunk forward is faster than softmax attention {where}")
    return Section(f"T sweep: forward time, B=1 H={H} K=V={D} (vs baseline = softmax time / op "
                   "time)", rows, notes)


SECTIONS = ("fwd", "decode", "sweep")  # fwd: the forward and forward+backward rows


def run(threads: int | None = None, quick: bool = False, guard: QuietGuard | None = None,
        malloc: bool = True, sections: tuple[str, ...] | None = None) -> Report:
    import torch

    sections = sections or SECTIONS
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"bench: softmax_attention's sections are {', '.join(SECTIONS)}, got "
                         f"{', '.join(unknown)}")

    cfg = QUICK if quick else FULL
    malloc_tuned = tune_malloc() if malloc else False
    threads = threads or os.cpu_count() or 1
    _core.set_num_threads(threads)
    torch.set_num_threads(threads)
    guard = guard or QuietGuard()
    load = MachineLoad()
    peak, _ = guard.measure(lambda: _core.peak_fma_gflops(threads))
    out = []
    if "fwd" in sections:
        out.append(fwd_bwd_sections(cfg, threads, peak, guard))
    if "decode" in sections:
        out.append(decode_section(cfg, threads, peak, guard))
    if "sweep" in sections:
        out.append(sweep_section(cfg, threads, peak, guard))
    peak_end, _ = guard.measure(lambda: _core.peak_fma_gflops(threads))
    for section in out:
        for row in section.rows:
            row.peak_gflops = max(peak, peak_end)
    legend = [
        "legend:",
        "  time: median of single calls after one warm-up (>= 3 calls and >= "
        f"{cfg.min_seconds} s; sweep: one call); GFLOP/s = nominal FLOPs / time with "
        "2(K+V) per visible (query, key) pair, fwd+bwd = 3.5x fwd; % peak against the "
        "peak-FMA probe of this run; vs baseline = time(baseline) / time(row), same run, "
        "same threads.",
        "  sweep: the linear ops' GFLOP/s use the gated family's nominal chunk count 2C(K+V) + "
        "4KV per token and head (C = 64), a lower bound for the delta-rule ops; their ratio is "
        "softmax attention's time over theirs (> 1: the linear op is faster).",
        "  malloc: " + ("glibc tuned to reuse freed blocks for torch and linattn alike"
                        if malloc_tuned else "glibc defaults"),
    ]
    return Report(threads, peak, peak_end, out, {}, load.others_percent(), malloc_tuned, None,
                  legend, guard)
