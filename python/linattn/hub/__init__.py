"""Kernel packages transformers looks up, served by linattn (see linattn.transformers)."""
