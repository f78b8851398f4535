"""The `linattn` command line: `check` (every form of every op against its fp64 oracle),
`bench` (throughput against baselines measured in the same run) and `demo` (the experiments)."""

from __future__ import annotations

import argparse
import sys

from . import _core
from ._terminal import Progress, format_table

DTYPES = ("float64", "float32", "bfloat16")
# float64 inputs check the oracle itself (independent forms, finite differences: most of the time
# of a full check); float32 and bfloat16 run the fast kernels this CPU dispatches to against it.
QUICK_DTYPES = ("float32", "bfloat16")


def cmd_check(args: argparse.Namespace) -> int:
    ops = _core.check_names() if args.op == "all" else [args.op]
    dtypes = DTYPES if args.dtype == "all" else (args.dtype,)
    if args.quick and args.dtype == "all":  # the dtypes that run the fast kernels
        dtypes = QUICK_DTYPES
    rows = []
    for dtype in dtypes:
        rows += _core.check_run(ops, dtype, Progress(f"check {dtype:8s}"))
    print(format_table([
        {"op": r["op"], "form": r["form"], "dtype": r["dtype"], "case": r["shape"],
         "check": r["check"], "max rel err": f"{r['error']:.2e}", "tol": f"{r['tolerance']:.0e}",
         "result": "pass" if r["pass"] else "FAIL"} for r in rows]))
    failed = sum(not r["pass"] for r in rows)
    print(f"\n{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


def cmd_bench(args: argparse.Namespace) -> int:
    import dataclasses

    from . import bench  # imports torch lazily: check does not need it

    ops = _core.op_names() if "all" in args.op else list(dict.fromkeys(args.op))
    if "softmax_attention" in ops:  # its own suite (bench_attention.py), before any other op's
        from . import bench_attention

        ops.remove("softmax_attention")
        guard = bench.QuietGuard(enabled=not (args.no_quiet_guard or args.quick))
        only = tuple(s.strip() for s in args.only.split(",")) if args.only else None
        print(bench_attention.run(threads=args.threads, quick=args.quick, guard=guard,
                                  sections=only).format())
        if not ops:
            return 0
    config = bench.QUICK if args.quick else bench.FULL
    if args.only:
        sections = tuple(s.strip() for s in args.only.split(",") if s.strip())
        unknown = [s for s in sections if s not in bench.SECTIONS]
        if unknown:
            raise ValueError(f"bench: --only takes {', '.join(bench.SECTIONS)}, got "
                             f"{', '.join(unknown)}")
        config = dataclasses.replace(config, sections=sections)
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"bench: --threads must be >= 1, got {args.threads}")
    # --quick is a fast look: no waiting for a quiet machine (the report still says how busy it was)
    guard = bench.QuietGuard(enabled=not (args.no_quiet_guard or args.quick))
    report = bench.run(ops, threads=args.threads, quick=args.quick, forms=args.forms,
                       plot=args.plot, config=config, malloc=not args.default_malloc, guard=guard)
    print(report.format())
    if args.plot and report.sweep:
        print(f"plot written to {args.plot}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .experiments import demo  # imports torch lazily

    if args.steps is not None and args.steps < 1:
        raise ValueError(f"demo: --steps must be >= 1, got {args.steps}")
    only = tuple(s.strip() for s in args.only.split(",") if s.strip()) if args.only else demo.EXPERIMENTS
    demo.run(args.out, full=args.full, only=only, steps=args.steps, threads=args.threads,
             labels=args.model, seeds=args.seeds)
    print(f"results and plots written to {args.out}/ (results.md, *.png, runs/*/*.json)")
    return 0


def cmd_bench_scan(args: argparse.Namespace) -> int:
    from . import bench_scan  # imports torch

    if args.threads is not None and args.threads < 1:
        raise ValueError(f"bench-scan: --threads must be >= 1, got {args.threads}")
    print(bench_scan.run(threads=args.threads, quick=args.quick))
    return 0


def cmd_bench_lla(args: argparse.Namespace) -> int:
    from . import bench_lla  # imports torch lazily

    cfg = bench_lla.Config(threads=args.threads, H=args.heads, backward=not args.no_backward)
    if args.T:
        cfg.Ts = tuple(args.T)
    print(bench_lla.run(cfg))
    return 0


def cmd_bench_models(args: argparse.Namespace) -> int:
    from . import bench_models  # imports torch and transformers

    return bench_models.run_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="linattn",
        description="Linear-time sequence mixers on the CPU: check every implemented form "
                    "against its fp64 oracle, or benchmark it.")
    parser.add_argument("--version", action="version", version=f"linattn {_core.version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    ops = ["all", *_core.op_names(), "softmax_attention"]

    check = sub.add_parser("check", help="run every form of every op against its fp64 oracle")
    check.add_argument("--op", default="all", choices=["all", *_core.check_names()],
                       help="one op, or all (default)")
    check.add_argument("--dtype", default="all", choices=["all", *DTYPES],
                       help="storage dtype of the inputs (default: all three)")
    check.add_argument("--quick", action="store_true",
                       help="only float32 and bfloat16 inputs: every fast form against the oracle, "
                            "without the oracle's own checks on float64 (a fifth of the time; the "
                            "check to run after installing)")
    check.set_defaults(run=cmd_check)

    bench = sub.add_parser(
        "bench", help="time each form against baselines from the same run",
        description="Times linattn against PyTorch baselines measured in the same run on the same "
                    "threads. The gated family (linear_attn, retention, simple_gla, gla) and the delta "
                    "family (delta_rule, gated_delta_rule, delta_product, kda) get the "
                    "fast-form suite: chunk forward vs a torch chunked formulation (UT transform "
                    "for the delta family), forward+backward vs torch autograd, a decode step "
                    "(recurrent form) vs torch, a T sweep, bf16 vs fp32, and DeltaProduct's cost "
                    "against n_h (B=1, H=16, T=4096, K=V=128, chunk 64; decode B=8).")
    bench.add_argument("--op", default=["all"], nargs="+", choices=ops, metavar="OP",
                       help="one or more ops (run together: one peak probe, one table each), "
                            "or all (default); choices: " + ", ".join(ops))
    bench.add_argument("--threads", type=int, default=None,
                       help="threads for linattn and PyTorch (default: all cores)")
    bench.add_argument("--quick", action="store_true",
                       help="smaller shapes (T=1024, sweep 256..4096), shorter timing; < 1 min")
    bench.add_argument("--forms", default="auto", choices=["auto", "fast", "reference", "all"],
                       help="fast: the fast-form suite; reference: the fp64 oracle rows; all: "
                            "both; auto (default): the suite where a chunk/recurrent form exists")
    bench.add_argument("--only", default=None, metavar="SECTIONS",
                       help="comma-separated suite sections: fwd,fwdbwd,decode,sweep,bf16,nh,"
                            "layouts,gates (softmax_attention: fwd,decode,sweep)")
    bench.add_argument("--plot", default=None, metavar="PATH",
                       help="write tokens/s vs T of the sweep as a PNG (e.g. "
                            "docs/img/throughput_vs_T.png)")
    bench.add_argument("--no-quiet-guard", action="store_true",
                       help="keep every measurement; by default (not with --quick) one during "
                            "which other processes used > 3%% of the CPU time is repeated (up to "
                            "6 tries)")
    bench.add_argument("--default-malloc", action="store_true",
                       help="keep glibc's malloc defaults (by default freed blocks are reused, "
                            "which spares PyTorch's temporaries fresh page faults)")
    bench.set_defaults(run=cmd_bench)

    demo = sub.add_parser(
        "demo", help="train small models with linattn's kernels and reproduce the papers' claims",
        description="Runs the experiments (quick versions: ~10 min on 2 cores): state tracking "
                    "(parity, mod 3, S3; negative eigenvalues and DeltaProduct), associative "
                    "recall (MQAR), in-context regression, and throughput vs sequence length. "
                    "Prints result tables and writes PNG plots and results.md to --out.")
    demo.add_argument("--full", action="store_true", help="the longer runs of docs/results.md")
    demo.add_argument("--out", default="linattn-demo", help="output folder (default: linattn-demo)")
    demo.add_argument("--only", default=None, metavar="NAMES",
                      help="comma-separated: state_tracking,mqar,regression,throughput "
                           "(the quick demo), or the papers' setups: state_tracking_grazzi,"
                           "state_tracking_deltaproduct,mqar_matched,regression_switch,"
                           "throughput_train")
    demo.add_argument("--seeds", type=int, default=None,
                      help="seeds per model and learning rate (default: 3 with --full, else 1)")
    demo.add_argument("--steps", type=int, default=None,
                      help="override the training steps of every experiment (smoke runs)")
    demo.add_argument("--model", action="append", default=None, metavar="LABEL",
                      help="train only the model with this label (repeatable; needs one "
                           "experiment in --only), e.g. --model 'DeltaProduct n_h=3 [-1,1]'")
    demo.add_argument("--threads", type=int, default=None,
                      help="threads for linattn and PyTorch (default: all cores)")
    demo.set_defaults(run=cmd_demo)

    bench_scan = sub.add_parser(
        "bench-scan", help="time the selective scan and causal conv1d against PyTorch",
        description="Selective scan (Mamba-1 130M-class layer, D=1536, N=16, T=2048) forward and "
                    "forward+backward vs a per-token torch loop, its decode step, and causal_conv1d "
                    "vs torch's depthwise conv1d; same threads, same run (python/linattn/bench_scan.py).")
    bench_scan.add_argument("--threads", type=int, default=None,
                            help="threads for linattn and PyTorch (default: all cores)")
    bench_scan.add_argument("--quick", action="store_true", help="T=256, short timing")
    bench_scan.set_defaults(run=cmd_bench_scan)

    lla = sub.add_parser(
        "bench-lla", help="Local Linear Attention vs torch's causal softmax attention, vs T",
        description="Times lla_attention (chunk form, fp32) against torch's "
                    "scaled_dot_product_attention(is_causal=True) on the same threads in the same "
                    "run, forward and forward+backward, for T = 256..4096 (K = V = 64).")
    lla.add_argument("--threads", type=int, default=2, help="threads for both (default 2)")
    lla.add_argument("--heads", type=int, default=16, help="H (default 16)")
    lla.add_argument("--T", type=int, nargs="+", default=None, help="sequence lengths")
    lla.add_argument("--no-backward", action="store_true", help="forward only")
    lla.set_defaults(run=cmd_bench_lla)

    models = sub.add_parser(
        "bench-models", help="transformers models on linattn's kernels vs their torch fallback",
        description="Qwen3-Next- and Kimi-Linear-shaped transformers models (and the other "
                    "families of python/linattn/bench_models.py): prefill, generate and a "
                    "training step with linattn.transformers.apply_linattn against "
                    "transformers' own torch fallback, same weights, same run; needs "
                    "transformers.")
    add_bench_models_arguments(models)
    models.set_defaults(run=cmd_bench_models)
    return parser


def add_bench_models_arguments(parser: argparse.ArgumentParser) -> None:
    """bench_models' own arguments; its module (torch, transformers) is imported only to run."""
    parser.add_argument("--threads", type=int, default=2, help="threads for both (default 2)")
    parser.add_argument("--quick", action="store_true",
                        help="prefill T = 1K / 4K, generate 1K + 32, one round")
    parser.add_argument("--rounds", type=int, default=None,
                        help="alternating rounds (default 2, --quick 1)")
    parser.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                        help="models to run (default all): qwen3_next, kimi_linear, ...")
    parser.add_argument("--columns", nargs="+", default=None, metavar="COLUMN",
                        help="columns to run (default all): prefill_1024, prefill_4096, "
                             "prefill_16384, generate_1024+128, train_1024")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError) as error:
        print(f"linattn: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
