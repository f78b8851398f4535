"""linattn: linear-attention sequence mixers on the CPU, with fla's names and layout.

The numeric work is all C++ (the extension module ``linattn._core``); this package only binds
it. Arrays are numpy arrays or torch tensors on the CPU, read and written in place.

- ``linattn.attention``: softmax attention (fla's ``parallel_attn``, a KV-cache decode step).
- ``linattn.reference``: the fp64 oracles (``gla``, ``gated_delta_rule``, ... and ``backward``).
- ``forward``/``backward``/``output_shapes``/``has_form``/``op_names``: the raw binding, for
  tools that drive a given form ('reference', 'chunk', 'recurrent') of an op by name.
"""

from . import attention, reference
from .attention import attn_with_kvcache, parallel_attn
from ._core import backward, forward, has_form, op_names, output_shapes, version

__version__ = version()

__all__ = [
    "__version__",
    "attention",
    "attn_with_kvcache",
    "backward",
    "forward",
    "has_form",
    "op_names",
    "output_shapes",
    "parallel_attn",
    "reference",
    "version",
]
