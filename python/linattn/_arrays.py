"""Small helpers over the arrays linattn accepts: numpy arrays and torch tensors.

torch is never imported here. A torch tensor can only exist if the caller already imported
torch, so ``sys.modules`` tells whether an object may be one; numpy-only installs never pay
for (or need) torch. numpy has no bfloat16: bfloat16 works through torch tensors.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np


def _torch():
    """The torch module if the caller has imported it, else None."""
    return sys.modules.get("torch")


def is_torch(x: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def dtype_name(x: Any) -> str:
    """The dtype of a numpy array or torch tensor as a plain name: 'float32', 'bfloat16', ..."""
    if is_torch(x):
        return str(x.dtype).removeprefix("torch.")
    return np.dtype(x.dtype).name


def as_input(x: Any) -> Any:
    """Prepares an argument for the binding without copying array memory.

    None stays None; torch tensors are detached (DLPack refuses tensors that require grad; the
    detached tensor shares the memory); other arrays pass through untouched; Python lists and
    scalars become numpy arrays.
    """
    if x is None or isinstance(x, np.ndarray):
        return x
    if is_torch(x):
        return x.detach()
    if hasattr(x, "__dlpack__") or hasattr(x, "__array_interface__"):
        return x
    return np.asarray(x)


def empty_like(ref: Any, shape: tuple[int, ...], dtype: str) -> Any:
    """An uninitialised array of `shape` and dtype name `dtype`, of the same kind as `ref`
    (a torch tensor on ref's device if ref is one, else a numpy array)."""
    if is_torch(ref):
        torch = _torch()
        return torch.empty(shape, dtype=getattr(torch, dtype), device=ref.device)
    if dtype == "bfloat16":
        raise TypeError("bfloat16 arrays need torch: numpy has no bfloat16 dtype")
    return np.empty(shape, dtype=dtype)
