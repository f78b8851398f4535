"""transformers' modeling modules imported so that their kernel look-ups resolve to the torch
fallbacks, whatever else is installed.

transformers picks a kernel once, when a modeling module is imported: the original package (fla,
mamba_ssm, causal_conv1d) if it imports, else its own torch function. fla is a test dependency
(tests/python/test_fla_*), and its functions are Triton kernels that cannot run on a CPU; the tests
compare linattn with transformers' torch fallback, so these modules must be imported with the
original packages hidden.
"""

from __future__ import annotations

import importlib
import sys

ORIGINAL_PACKAGES = ("fla", "mamba_ssm", "causal_conv1d")


def modeling_module(family: str) -> str:
    return f"transformers.models.{family}.modeling_{family}"


def import_with_torch_fallbacks(families) -> None:
    names = [modeling_module(f) for f in families]
    already = [n for n in names if n in sys.modules]
    if already:
        raise RuntimeError(f"{already} were imported before their kernels could be pinned to the torch "
                           "fallbacks; import this helper's caller earlier")
    saved = {p: sys.modules.get(p, ...) for p in ORIGINAL_PACKAGES}
    try:
        for p in ORIGINAL_PACKAGES:
            sys.modules[p] = None  # makes `import p` raise ImportError
        for n in names:
            importlib.import_module(n)
    finally:
        for p, module in saved.items():
            if module is ...:
                del sys.modules[p]
            else:
                sys.modules[p] = module
