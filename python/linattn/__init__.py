"""linattn: linear-attention sequence mixers on the CPU, with fla's names and layout.

The numeric work is all C++ (the extension module ``linattn._core``); this package only binds
it. Arrays are numpy arrays or torch tensors on the CPU, read and written in place.

- ``linattn.reference``: the fp64 oracles (``gla``, ``gated_delta_rule``, ... and ``backward``).
- ``forward``/``backward``/``output_shapes``/``has_form``/``op_names``: the raw binding, for
  tools that drive a given form ('reference', 'chunk', 'recurrent') of an op by name.
- ``causal_conv1d``/``causal_conv1d_update`` (fla's names) and ``causal_conv1d_backward``: the
  short causal depthwise convolution before the mixers (``linattn.conv1d``).
- ``selective_scan_fn``/``selective_state_update`` (mamba_ssm's names) and
  ``selective_scan_backward``: the Mamba-1 / S4D diagonal SSM scan (``linattn.scan``).
"""

from . import reference
from ._core import backward, forward, has_form, op_names, output_shapes, version

from .conv1d import causal_conv1d, causal_conv1d_backward, causal_conv1d_update
from .scan import selective_scan_backward, selective_scan_fn, selective_state_update

__version__ = version()

__all__ = [
    "__version__",
    "backward",
    "causal_conv1d",
    "causal_conv1d_backward",
    "causal_conv1d_update",
    "forward",
    "has_form",
    "op_names",
    "output_shapes",
    "reference",
    "selective_scan_backward",
    "selective_scan_fn",
    "selective_state_update",
    "version",
]
