"""linattn: linear-attention sequence mixers on the CPU, with fla's names and layout.

The numeric work is all C++ (the extension module ``linattn._core``); this package only binds
it. Arrays are numpy arrays or torch tensors on the CPU, read and written in place.

- ``linattn.attention``: softmax attention (fla's ``parallel_attn``, a KV-cache decode step).
- ``linattn.reference``: the fp64 oracles (``gla``, ``gated_delta_rule``, ... and ``backward``).
- ``lla_attention``: Local Linear Attention (its own API: a KV cache, a ridge, a CG solve).
- ``forward``/``backward``/``output_shapes``/``has_form``/``op_names``: the raw binding, for
  tools that drive a given form ('reference', 'chunk', 'recurrent') of an op by name.
- ``causal_conv1d``/``causal_conv1d_update`` (fla's names) and ``causal_conv1d_backward``: the
  short causal depthwise convolution before the mixers (``linattn.conv1d``).
- ``linattn.ops`` (needs torch): fla's ``chunk_*`` / ``fused_recurrent_*`` functions as torch
  autograd functions, also reachable here (``linattn.chunk_gla``); ``linattn.layers`` and
  ``linattn.models``: torch modules built on them. torch is imported on first use only.
- ``selective_scan_fn``/``selective_state_update`` (mamba_ssm's names) and
  ``selective_scan_backward``: the Mamba-1 / S4D diagonal SSM scan (``linattn.scan``).
"""

import importlib

from . import attention, reference
from .attention import attn_with_kvcache, parallel_attn
from .lla import lla_attention
from ._core import backward, forward, has_form, op_names, output_shapes, version

from .conv1d import causal_conv1d, causal_conv1d_backward, causal_conv1d_update
from .scan import selective_scan_backward, selective_scan_fn, selective_state_update

__version__ = version()

_TORCH_MODULES = ("ops", "layers", "models")


def __getattr__(name: str):
    """linattn.ops / layers / models and the fla-named functions, imported (with torch) on
    first access, so that numpy-only users never import torch."""
    if name in _TORCH_MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name.startswith(("chunk_", "fused_recurrent_")) or name == "mixer":
        ops = importlib.import_module(".ops", __name__)
        if name in ops.__all__:
            return getattr(ops, name)
    raise AttributeError(f"module 'linattn' has no attribute '{name}'")


__all__ = [
    "__version__",
    "attention",
    "attn_with_kvcache",
    "backward",
    "causal_conv1d",
    "causal_conv1d_backward",
    "causal_conv1d_update",
    "forward",
    "has_form",
    "lla_attention",
    "op_names",
    "output_shapes",
    "parallel_attn",
    "reference",
    "selective_scan_backward",
    "selective_scan_fn",
    "selective_state_update",
    "version",
]
