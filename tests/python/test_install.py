"""The package as installed: scripts/test_install runs this file against the manylinux wheel
installed in a fresh venv (LINATTN_EXPECT_INSTALLED_IN names that venv); the ordinary pytest run
checks the development install the same way."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import linattn
from linattn import cli


def test_linattn_is_imported_from_the_install_under_test():
    prefix = os.environ.get("LINATTN_EXPECT_INSTALLED_IN")
    if not prefix:
        pytest.skip("only under scripts/test_install, which sets LINATTN_EXPECT_INSTALLED_IN")
    for module in (linattn, linattn._core):
        assert os.path.realpath(module.__file__).startswith(os.path.realpath(prefix)), (
            f"{module.__name__} imported from {module.__file__}, not from {prefix}")


# Run in a fresh interpreter: which OpenMP runtime serves linattn depends on what was loaded first.
ONE_RUNTIME = """
import os, sys
if sys.argv[1] == "linattn":
    import linattn, torch
else:
    import torch, linattn
x = torch.randn(1, 70, 2, 8)
linattn.chunk_simple_gla(x, x, x, -torch.rand(1, 70, 2))
(x @ x.transpose(-1, -2)).sum()
gomp = sorted({line.split()[-1] for line in open("/proc/self/maps") if "gomp" in line})
linattn._core.set_num_threads(2)
torch.set_num_threads(1)
print(len(gomp), linattn._core.get_num_threads(), *gomp)
"""


@pytest.mark.parametrize("first", ["linattn", "torch"])
def test_one_openmp_runtime_shared_with_torch(first):
    """Whichever is imported first, linattn and torch share one OpenMP runtime (one libgomp in the
    process, and torch.set_num_threads reaches linattn): two runtimes would run two thread pools
    that do not know of each other (docs/install.md)."""
    pytest.importorskip("torch")
    out = subprocess.run([sys.executable, "-c", ONE_RUNTIME, first], capture_output=True,
                         text=True, check=True).stdout.split()
    libraries, linattn_threads, paths = int(out[0]), int(out[1]), out[2:]
    assert libraries == 1, f"{libraries} OpenMP runtimes loaded: {paths}"
    assert linattn_threads == 1, "torch.set_num_threads(1) did not reach linattn's OpenMP runtime"


def test_check_quick_runs_the_fast_dtypes_against_the_oracle(capsys):
    assert cli.main(["check", "--quick", "--op", "retention"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()
            if line.startswith("retention ")]
    assert rows and {"float32", "bfloat16"} == {row[2] for row in rows}
