"""transformers' Mamba-1 and Mamba-2 family models on linattn against transformers' own torch
fallback, measured in the same run: prefill (T = 1K / 4K / 16K), generate (prompt 1K + 128 new
tokens, greedy), one training step (forward + backward at T = 1K). Batch 1, fp32, released
models' mixer sizes (head counts, head and state sizes) with 2 layers and a 1K vocabulary, so
that the mixers are a real part of the time. A benchmark, not a test: it prints ratios
(fallback time / linattn time, > 1: linattn faster).

``ROWS`` lists the model rows (``ModelRow``); ``measure(row, column)`` times one cell, the
linattn side under ``linattn.transformers.linattn_kernels`` (apply_linattn, then revert).
"""

from __future__ import annotations

import dataclasses
import time

from .transformers import linattn_kernels

# Columns: (name, what). Prefill columns carry their T.
COLUMNS = ("prefill_1k", "prefill_4k", "prefill_16k", "generate", "train")
_PREFILL_T = {"prefill_1k": 1024, "prefill_4k": 4096, "prefill_16k": 16384}


@dataclasses.dataclass(frozen=True)
class ModelRow:
    """One model: transformers' model_type (modeling module name), its config class and the
    config arguments (released sizes, fewer layers)."""

    name: str
    family: str
    config_class: str
    config: dict


_COMMON = dict(vocab_size=1024, num_hidden_layers=2, pad_token_id=0, tie_word_embeddings=False)

ROWS = [
    # state-spaces/mamba-130m: d_model 768, d_inner 1536, d_state 16, dt_rank 48
    ModelRow("Mamba-1 (mamba-130m)", "mamba", "MambaConfig",
             dict(hidden_size=768, state_size=16, expand=2, time_step_rank=48)),
    # state-spaces/mamba2-130m: d_model 768, 24 heads x 64, d_state 128, 1 group, chunk 256
    ModelRow("Mamba-2 (mamba2-130m)", "mamba2", "Mamba2Config",
             dict(hidden_size=768, num_heads=24, head_dim=64, expand=2, state_size=128,
                  n_groups=1, chunk_size=256)),
    # tiiuae/Falcon-H1-0.5B: d_model 1024, SSM 24 heads x 64, d_state 128; attention 8 / 2 KV
    ModelRow("Falcon-H1 (0.5B)", "falcon_h1", "FalconH1Config",
             dict(hidden_size=1024, intermediate_size=2048, num_attention_heads=8,
                  num_key_value_heads=2, head_dim=64, mamba_d_ssm=1536, mamba_n_heads=24,
                  mamba_d_head=64, mamba_n_groups=1, mamba_d_state=128, mamba_chunk_size=128)),
]


def build_model(row: ModelRow, seed: int = 0):
    import torch
    import transformers

    config = getattr(transformers, row.config_class)(**{**_COMMON, **row.config})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).float()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def _cell(model, column: str):
    """fn() running one cell once."""
    import torch

    ids = lambda T: torch.randint(1, 1024, (1, T), generator=torch.Generator().manual_seed(T))  # noqa: E731
    if column in _PREFILL_T:
        x = ids(_PREFILL_T[column])

        def prefill():
            model.eval()
            with torch.no_grad():
                model(x, use_cache=False)
        return prefill
    if column == "generate":
        x = ids(1024)

        def generate():
            model.eval()
            model.generate(x, max_new_tokens=128, min_new_tokens=128, do_sample=False)
        return generate
    x = ids(1024)

    def train():
        model.train()
        model.zero_grad(set_to_none=True)
        model(x, labels=x, use_cache=False).loss.backward()
    return train


def _best(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(row: ModelRow, column: str, repeats: int = 2, model=None) -> tuple[float, float]:
    """(fallback seconds, linattn seconds) of one cell, best of `repeats` after a warm-up,
    alternating in one process."""
    model = build_model(row) if model is None else model
    fn = _cell(model, column)
    fallback = _best(fn, repeats)
    with linattn_kernels(model):
        linattn = _best(fn, repeats)
    return fallback, linattn


def run(threads: int = 2, columns=COLUMNS, rows=None, repeats: int = 2) -> str:
    """Times every (row, column) and returns the table as text."""
    import os

    import torch

    torch.set_num_threads(threads)
    load = os.getloadavg()[0]
    lines = [f"# transformers models: fallback / linattn, {threads} threads, fp32, batch 1, "
             f"2 layers, vocab 1K (load average at start {load:.2f})",
             "| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    print("\n".join(lines), flush=True)
    for row in rows or ROWS:
        model = build_model(row)
        cells = []
        for column in columns:
            fb, la = measure(row, column, repeats, model)
            cells.append(f"{fb:.3g} s / {la:.3g} s = {fb / la:.2f}x")
            print(f"  {row.name} {column}: {cells[-1]} (load {os.getloadavg()[0]:.1f})",
                  flush=True)
        lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--columns", default=",".join(COLUMNS))
    parser.add_argument("--rows", default=None, help="comma-separated model_types")
    parser.add_argument("--repeats", type=int, default=2)
    a = parser.parse_args()
    chosen = None if a.rows is None else [r for r in ROWS if r.family in a.rows.split(",")]
    print(run(a.threads, tuple(a.columns.split(",")), chosen, a.repeats))
