"""linattn: linear-attention sequence mixers on the CPU, with fla's names and layout.

The numeric work is all C++ (the extension module ``linattn._core``); this package only binds
it. Arrays are numpy arrays or torch tensors on the CPU, read and written in place.

- ``linattn.reference``: the fp64 oracles (``gla``, ``gated_delta_rule``, ... and ``backward``).
- ``lla_attention``: Local Linear Attention (its own API: a KV cache, a ridge, a CG solve).
- ``forward``/``backward``/``output_shapes``/``has_form``/``op_names``: the raw binding, for
  tools that drive a given form ('reference', 'chunk', 'recurrent') of an op by name.
"""

from . import reference
from .lla import lla_attention
from ._core import backward, forward, has_form, op_names, output_shapes, version

__version__ = version()

__all__ = [
    "__version__",
    "backward",
    "forward",
    "has_form",
    "lla_attention",
    "op_names",
    "output_shapes",
    "reference",
    "version",
]
