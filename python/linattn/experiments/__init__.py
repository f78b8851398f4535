"""The experiments: small models trained with linattn's kernels that reproduce, on a
CPU, the qualitative claims behind the architectures (state tracking, associative recall,
in-context regression, flat throughput). ``linattn demo`` runs them; see docs/results.md."""
