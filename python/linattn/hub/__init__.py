"""Stand-ins for the kernel packages transformers looks up, on linattn's C++ ops (CPU tensors).

Each module carries one package's names, arguments and layouts, so that code written against
that package runs on linattn unchanged:

- ``linattn.hub.fla``: flash-linear-attention's ``chunk_gated_delta_rule``,
  ``fused_recurrent_gated_delta_rule``, ``chunk_kda``, ``fused_recurrent_kda``.
- ``linattn.hub.causal_conv1d``: Dao's ``causal_conv1d_fn`` / ``causal_conv1d_update``
  (channel-first ``[B, D, T]`` layout).
- ``linattn.hub.mamba_ssm``: mamba_ssm's ``selective_scan_fn``, ``mamba_inner_fn``,
  ``selective_state_update``, ``mamba_chunk_scan_combined``, ``mamba_split_conv1d_scan_combined``.

They import torch; nothing imports them unless asked (``linattn.transformers.apply_linattn``
routes transformers' kernel look-ups here).
"""
