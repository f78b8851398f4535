"""The `linattn` command line: `check` (every form of every op against its fp64 oracle) and
`bench` (throughput against baselines measured in the same run)."""

from __future__ import annotations

import argparse
import sys

from . import _core
from ._terminal import Progress, format_table

DTYPES = ("float64", "float32", "bfloat16")


def cmd_check(args: argparse.Namespace) -> int:
    ops = _core.op_names() if args.op == "all" else [args.op]
    dtypes = DTYPES if args.dtype == "all" else (args.dtype,)
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
    from . import bench  # imports torch lazily: check does not need it

    ops = _core.op_names() if args.op == "all" else [args.op]
    rows = bench.run(ops, threads=args.threads, quick=args.quick)
    print(format_table([r.cells() for r in rows]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="linattn",
        description="Linear-time sequence mixers on the CPU: check every implemented form "
                    "against its fp64 oracle, or benchmark it.")
    parser.add_argument("--version", action="version", version=f"linattn {_core.version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    ops = ["all", *_core.op_names()]

    check = sub.add_parser("check", help="run every form of every op against its fp64 oracle")
    check.add_argument("--op", default="all", choices=ops, help="one op, or all (default)")
    check.add_argument("--dtype", default="all", choices=["all", *DTYPES],
                       help="storage dtype of the inputs (default: all three)")
    check.set_defaults(run=cmd_check)

    bench = sub.add_parser("bench", help="time each form against baselines from the same run")
    bench.add_argument("--op", default="all", choices=ops, help="one op, or all (default)")
    bench.add_argument("--threads", type=int, default=None,
                       help="threads for linattn and PyTorch (default: all cores)")
    bench.add_argument("--quick", action="store_true", help="smaller shapes, shorter timing")
    bench.set_defaults(run=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError) as error:
        print(f"linattn: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
