"""Real models through transformers: linattn as the kernel backend (``apply_linattn``) against
transformers' own pure-torch fallbacks, the same model and weights, measured in the same run.

    python -m linattn.bench_models                # or: linattn bench-models
    python -m linattn.bench_models --quick        # T = 1K / 4K, shorter generation
    python -m linattn.bench_models --models qwen3_next --columns prefill_4096 generate_1024+128

Per model: prefill (one forward with a cache) at T = 1K / 4K / 16K, generate (greedy, prompt 1K,
128 new tokens), a training step (forward + backward + SGD at T = 1K); batch 1, fp32, 2 threads
by default. The two backends alternate round after round (a busy machine slows both alike) and
the fastest round of each counts. Each timing also records the time spent inside the kernel
functions transformers looks up (fla's, causal_conv1d's, mamba_ssm's): "other" is the rest
(projections, MoE, norms, softmax attention, Python), and "bound" is the speed-up linattn would
reach with kernels that took no time at all, the ceiling set by the work outside the kernels
(prefill and generate only: a training step's backward runs after the kernel calls return, so
its kernel column counts the forward only).

Models have the head counts and sizes of the released checkpoints with a few layers (the
released ratio of linear-attention to softmax layers), 8 experts top-2 instead of the released
hundreds (the experts are outside the kernels; hundreds would not fit in memory) and a 4096-word
vocabulary. ``ROWS`` lists them; each family block adds its rows.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import platform
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from . import _core
from . import transformers as lt

VOCAB = 4096


@dataclass(frozen=True)
class ModelRow:
    """One benchmarked model: `build()` returns (CausalLM class, config)."""

    build: Callable[[], tuple[type, Any]]
    shape: str  # what of the released model it keeps, for the report


# ---- the fla families: gated delta rule and KDA hybrids (fla + causal_conv1d kernels) ----

def _qwen3_next():
    import transformers as tf

    return tf.Qwen3NextForCausalLM, tf.Qwen3NextConfig(
        vocab_size=VOCAB, hidden_size=2048, num_hidden_layers=4, num_attention_heads=16,
        num_key_value_heads=2, head_dim=256, intermediate_size=5120, moe_intermediate_size=512,
        shared_expert_intermediate_size=512, num_experts=8, num_experts_per_tok=2,
        linear_num_key_heads=16, linear_num_value_heads=32, linear_key_head_dim=128,
        linear_value_head_dim=128, linear_conv_kernel_dim=4, pad_token_id=0, bos_token_id=1,
        eos_token_id=2,
        layer_types=["linear_attention"] * 3 + ["full_attention"])


def _kimi_linear():
    import transformers as tf

    return tf.KimiLinearForCausalLM, tf.KimiLinearConfig(
        vocab_size=VOCAB, hidden_size=2304, num_hidden_layers=4, num_attention_heads=32,
        num_key_value_heads=32, intermediate_size=9216, moe_intermediate_size=1024,
        num_local_experts=8, num_experts_per_tok=2, n_shared_experts=1, kv_lora_rank=512,
        q_lora_rank=None, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128,
        linear_head_dim=128, linear_num_heads=32, linear_conv_kernel_dim=4, pad_token_id=0,
        bos_token_id=1, eos_token_id=2,
        layer_types=["linear_attention"] * 3 + ["full_attention"],
        mlp_layer_types=["dense"] + ["sparse"] * 3)


ROWS: dict[str, ModelRow] = {
    "qwen3_next": ModelRow(_qwen3_next, "Qwen3-Next-80B-A3B's layers (hidden 2048, GDN 16 qk / "
                           "32 v heads of 128, attention 16 / 2 heads of 256), 3 GDN + 1 "
                           "attention layers"),
    "kimi_linear": ModelRow(_kimi_linear, "Kimi-Linear-48B-A3B's layers (hidden 2304, KDA 32 "
                            "heads of 128, MLA 32 heads), 3 KDA + 1 MLA layers"),
}

# ---- the Mamba families (mamba_ssm + causal_conv1d kernels): their rows go here ----


# ---- columns ----

@dataclass(frozen=True)
class Column:
    name: str
    run: Callable[[Any, torch.Generator], Callable[[], None]]  # (model, rng) -> one timed call
    backward: bool = False  # runs a backward (outside the kernel calls)


def _ids(rng: torch.Generator, T: int) -> torch.Tensor:
    return torch.randint(3, VOCAB, (1, T), generator=rng)


def _prefill(T: int) -> Column:
    def setup(model, rng):
        ids = _ids(rng, T)

        def call():
            with torch.no_grad():
                model(ids, use_cache=True)
        return call
    return Column(f"prefill_{T}", setup)


def _generate(prompt: int, new: int) -> Column:
    def setup(model, rng):
        ids = _ids(rng, prompt)

        def call():
            with torch.no_grad():
                out = model.generate(ids, max_new_tokens=new, min_new_tokens=new,
                                     do_sample=False)
            assert out.shape[1] == prompt + new
        return call
    return Column(f"generate_{prompt}+{new}", setup)


def _train(T: int) -> Column:
    def setup(model, rng):
        ids = _ids(rng, T)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)

        def call():
            model.train()
            optimizer.zero_grad(set_to_none=True)
            model(ids, labels=ids, use_cache=False).loss.backward()
            optimizer.step()
            model.eval()
        return call
    return Column(f"train_{T}", setup, backward=True)


FULL = [_prefill(1024), _prefill(4096), _prefill(16384), _generate(1024, 128), _train(1024)]
QUICK = [_prefill(1024), _prefill(4096), _generate(1024, 32), _train(1024)]


# ---- timing ----

class KernelClock:
    """Time spent inside the kernel functions of the modeling modules (linattn's dispatchers or
    transformers' own wrappers), while installed."""

    def __init__(self):
        self.seconds = 0.0

    @contextlib.contextmanager
    def installed(self):
        import sys

        saved = []
        for name in [n for n in list(sys.modules) if n.startswith(lt._MODELS_PREFIX)]:
            module = sys.modules[name]
            for attr, fn in list(vars(module).items()):
                if lt._is_dispatcher(fn) or lt._kernel_of(fn) is not None:
                    saved.append((module, attr, fn))
                    setattr(module, attr, self._timed(fn))
        try:
            yield self
        finally:
            for module, attr, fn in saved:
                setattr(module, attr, fn)

    def _timed(self, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
        return timed


def _measure(call: Callable[[], None], backend: str) -> tuple[float, float]:
    """(wall seconds, seconds inside the kernels) of one call on `backend`."""
    (lt.apply_linattn if backend == "linattn" else lt.revert_linattn)()
    clock = KernelClock()
    with clock.installed():
        start = time.perf_counter()
        call()
        wall = time.perf_counter() - start
    return wall, clock.seconds


def run(models: list[str], columns: list[Column], threads: int, rounds: int) -> str:
    torch.set_num_threads(threads)
    _core.set_num_threads(threads)
    load = os.getloadavg()[0]
    lines = ["| model | column | fallback s | linattn s | speed-up | kernels s (fallback / "
             "linattn) | other s (fallback / linattn) | bound |", "|---" * 8 + "|"]
    notes = []
    for name in models:
        model_cls, config = ROWS[name].build()
        torch.manual_seed(0)
        model = model_cls(config).float().eval()
        model.generation_config.eos_token_id = None
        model.generation_config.pad_token_id = 0
        notes.append(f"- {name}: {ROWS[name].shape}; "
                     f"{sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters")
        for column in columns:
            call = column.run(model, torch.Generator().manual_seed(1))
            best: dict[str, tuple[float, float]] = {}
            for _ in range(rounds):
                for backend in ("fallback", "linattn"):
                    wall, kernels = _measure(call, backend)
                    if backend not in best or wall < best[backend][0]:
                        best[backend] = (wall, kernels)
            (fb, fb_k), (la, la_k) = best["fallback"], best["linattn"]
            # The backward runs after the kernel calls return (autograd): a training step's
            # kernel time is its forward's only, so no bound for it.
            bound = "n/a" if column.backward else f"{fb / max(fb - fb_k, 1e-9):.2f}x"
            lines.append(f"| {name} | {column.name} | {fb:.2f} | {la:.2f} | {fb / la:.2f}x | "
                         f"{fb_k:.2f} / {la_k:.2f} | {fb - fb_k:.2f} / {la - la_k:.2f} | "
                         f"{bound} |")
            print(lines[-1], flush=True)
        lt.revert_linattn()
        del model
    load = max(load, os.getloadavg()[0])
    header = (f"transformers models, linattn kernels vs transformers' torch fallback: batch 1, "
              f"fp32, {threads} threads, fastest of {rounds} alternating rounds, "
              f"{platform.machine()}, torch {torch.__version__}, load average up to {load:.1f}")
    return "\n".join([header, *notes, "", *lines])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="linattn bench-models",
                                     description=__doc__.splitlines()[0])
    from .cli import add_bench_models_arguments  # one definition, shared with the CLI

    add_bench_models_arguments(parser)
    return run_from_args(parser.parse_args(argv))


def run_from_args(args: argparse.Namespace) -> int:
    columns = QUICK if args.quick else FULL
    if args.columns:
        known = {c.name: c for c in FULL + QUICK}
        unknown = [c for c in args.columns if c not in known]
        if unknown:
            raise ValueError(f"bench-models: --columns takes {', '.join(known)}, got "
                             f"{', '.join(unknown)}")
        columns = [known[c] for c in args.columns]
    models = args.models or list(ROWS)
    unknown = [m for m in models if m not in ROWS]
    if unknown:
        raise ValueError(f"bench-models: --models takes {', '.join(ROWS)}, got "
                         f"{', '.join(unknown)}")
    if args.threads < 1:
        raise ValueError(f"bench-models: --threads must be >= 1, got {args.threads}")
    rounds = args.rounds or (1 if args.quick else 2)
    if rounds < 1:
        raise ValueError(f"bench-models: --rounds must be >= 1, got {rounds}")
    print(run(models, columns, args.threads, rounds))
    return 0


if __name__ == "__main__":
    import sys

    try:
        sys.exit(main())
    except (ValueError, TypeError) as error:
        print(f"linattn bench-models: error: {error}", file=sys.stderr)
        sys.exit(2)
