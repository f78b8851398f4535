"""linattn's fla-named functions next to fla's, as fla's released source declares them: the
comparison tests/python/test_fla_compat.py asserts, and the generator of docs/fla-compat.md
(``python tests/python/fla_compat.py`` rewrites it; a test checks that it is current).

Signatures on both sides are computed (fla's by fla_source from its installed .py files,
linattn's by inspect); only the NOTES below (what linattn does with fla's arguments) are prose.
"""

from __future__ import annotations

import inspect
import pathlib
import sys

import fla_source
from fla_source import MISSING, Param

DOC = fla_source.ROOT / "docs" / "fla-compat.md"

# linattn's own keyword-only extras (never positional, so fla's positional calls bind the same).
LINATTN_EXTRAS = {"form"}


def linattn_functions(name: str) -> list:
    """The linattn callables that stand for fla's `name` (two for causal_conv1d: the autograd
    one in linattn.ops and the array one in linattn.conv1d)."""
    import linattn
    from linattn import attention, conv1d, ops

    if name == "parallel_attn":
        return [attention.parallel_attn]
    if name == "causal_conv1d":
        return [ops.causal_conv1d, conv1d.causal_conv1d]
    if name == "causal_conv1d_update":
        return [conv1d.causal_conv1d_update]
    return [getattr(linattn, name)]


def linattn_signature(fn) -> list[Param]:
    kinds = {inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
             inspect.Parameter.POSITIONAL_ONLY: "positional",
             inspect.Parameter.KEYWORD_ONLY: "keyword",
             inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
    return [Param(p.name, kinds[p.kind], MISSING if p.default is inspect.Parameter.empty
                  else p.default) for p in inspect.signature(fn).parameters.values()]


def differences(fla: list[Param], ours: list[Param]) -> list[str]:
    """Every way `ours` does not take exactly fla's parameters (names, order, kinds, defaults,
    a keyword catch-all where fla has one); linattn's keyword-only extras are allowed."""
    out = []
    extras = [p for p in ours if p.name not in {f.name for f in fla}]
    for p in extras:
        if p.kind == "**":
            out.append("has **kwargs where fla has none")
        elif p.kind != "keyword" or p.name not in LINATTN_EXTRAS:
            out.append(f"extra parameter {p.text()} ({p.kind})")
    common = [p for p in ours if p not in extras]
    if [p.name for p in common] != [p.name for p in fla]:
        missing = [p.name for p in fla if p.name not in {c.name for c in common}]
        out.append(f"missing {missing}" if missing else
                   f"order {[p.name for p in common]} instead of fla's {[p.name for p in fla]}")
    for f, p in zip(fla, common):
        if f.name == p.name and (f.kind, _norm(f.default)) != (p.kind, _norm(p.default)):
            out.append(f"{p.text()} ({p.kind}) instead of fla's {f.text()} ({f.kind})")
    return out


def _norm(default):
    return ("missing",) if default is MISSING else (type(default) is bool, default)


def all_functions():
    """(fla module, name) of every fla function linattn provides, in fla_source's order."""
    return [(m, n) for m, names in fla_source.FLA_FUNCTIONS.items() for n in names]


# What linattn does with fla's arguments, per function (prose; the signatures are generated).
NOTES = {
    "chunk_linear_attn": "With `normalize=True` (fla's default here) the state is fla's pair "
    "`(kv, z)`, `z` `[N, 1, H, K]` the running key sum of the denominator: returned whenever "
    "`normalize` (kv `None` unless `output_final_state`) and taken back as `initial_state` to "
    "continue a sequence.",
    "fused_recurrent_linear_attn": "As `chunk_linear_attn`; `reverse=True` runs each sequence "
    "from its last token (the recurrence on time-reversed inputs, output reversed back).",
    "chunk_simple_gla": "`g_gamma` (a fixed decay per head) becomes a stride-0 view of `g`; its "
    "gradient is returned (fla returns none). `g` and `g_gamma` both `None` is linear attention.",
    "fused_recurrent_simple_gla": "As `chunk_simple_gla`; `reverse=True` supported.",
    "chunk_retention": "Decay `1 - 2^(-5-h)` of head `h`.",
    "fused_recurrent_retention": "`reverse=True` and `state_v_first=True` supported.",
    "chunk_gla": "fla asserts a float32 `initial_state`; linattn takes any floating dtype.",
    "fused_recurrent_gla": "`gv` (a decay of the value channels) raises `ValueError` (linattn's "
    "gla decays key channels only). `gk=None` is linear attention; `reverse=True` supported.",
    "chunk_delta_rule": "beta may be in `[0, 2]` (negative eigenvalues).",
    "fused_recurrent_delta_rule": "`beta=None` means 1, as fla. fla's per-value-channel beta "
    "`[B, T, H, V]` is not supported (beta is `[B, T, HV]`).",
    "chunk_gated_delta_rule": "Grouped value heads (`HV = m H`) as fla's GVA. fla's `**kwargs` "
    "`use_gate_in_kernel`, `A_log`, `dt_bias` (`g <- -exp(A_log) softplus(g + dt_bias)`) work; "
    "the gate transforms run as torch elementwise ops before the C++ op.",
    "fused_recurrent_gated_delta_rule": "`gk` (per-key-channel log decay `[B, T, HV, K]`) runs "
    "KDA's op (with `g` too: their sum); `gv` raises `ValueError`. `g=None` and `gk=None` is "
    "the ungated delta rule, `beta=None` means 1.",
    "chunk_gated_delta_product": "`g=None` runs DeltaProduct without a decay; k, v, beta have "
    "`T * num_householder` rows (a token's steps consecutive), as fla.",
    "chunk_kda": "`g` is the per-key-channel log decay `[B, T, HV, K]`. `use_gate_in_kernel` "
    "(keywords `A_log` `[HV]`, `dt_bias` `[HV * K]`), its bounded form with `lower_bound` "
    "(`g <- lower_bound sigmoid(exp(A_log) (g + dt_bias))`), `use_beta_sigmoid_in_kernel`, "
    "`allow_neg_eigval` and `state_v_first` work (torch elementwise gate transforms before the "
    "C++ op); `return_intermediate_states` and `use_graph` raise `ValueError`.",
    "fused_recurrent_kda": "As `chunk_kda`; fla's decode-serving extras of newer kernels are "
    "not part of 0.6.0's signature.",
    "chunk_dplr_delta_rule": "`lower_bound` (a promise `lower_bound <= gk < 0` for fla's kernel "
    "choice) is checked to be negative and has no other effect.",
    "fused_recurrent_dplr_delta_rule": "`reverse=True` supported.",
    "chunk_rwkv7": "The DPLR rule with `q = r`, `gk = w`; scale 1 by default, as fla.",
    "fused_recurrent_rwkv7": "fla's defaults here differ from `chunk_rwkv7`'s: `scale=None` "
    "(K^-0.5) and `output_final_state=True`; linattn follows them.",
    "parallel_attn": "`sink_bias` `[H]` (torch tensors) works, forward and backward (the "
    "sink folded into the C++ forward's `lse`; its gradients need float32/bfloat16: the fp64 "
    "reference backward has no sink and raises). `g` (forgetting gate) raises `ValueError`. "
    "Keyword-only `form` is linattn's (`'chunk'` or `'reference'`).",
    "causal_conv1d": "`weight` is required (`None` raises; fla's kernels read its width too); "
    "`backend` may be any of fla's (`'triton'`, `'cuda'`, `'mix'`: all run linattn's C++); "
    "`seq_idx` (the `mix` backend's) raises. Exists as `linattn.ops.causal_conv1d` (autograd) "
    "and `linattn.conv1d.causal_conv1d` (numpy or torch, no autograd).",
    "causal_conv1d_update": "One decode step; the cache is updated in place, as fla.",
}

# fla's GPU-only arguments: accepted wherever fla has them, no effect on the CPU.
GPU_HINTS = {
    "cu_seqlens_cpu": "a host copy of `cu_seqlens` that spares a GPU synchronisation",
    "chunk_indices": "precomputed varlen chunk indices",
    "chunk_size": "the kernel's chunk length (linattn picks its own)",
    "disable_recompute": "a memory/recompute trade-off of the backward kernel",
    "max_num_seqs": "a CUDA-graph capacity",
    "safe_gate": "a kernel choice for bounded gates (KDA: with `use_gate_in_kernel`, requires "
    "`lower_bound`, as fla)",
    "backend": "causal_conv1d's GPU implementation",
}

HEADER = """\
# fla compatibility

<!-- Generated by `python tests/python/fla_compat.py` from fla's released source; do not edit:
tests/python/test_fla_compat.py fails when this file is stale. -->

`linattn.ops` (also exported from `linattn`, e.g. `linattn.chunk_gla`) keeps
[flash-linear-attention](https://github.com/fla-org/flash-linear-attention)'s entry points for
the ops linattn has. The fla release followed is pinned once, in `requirements-dev.txt`
(`fla-core=={version}`); `tests/python/fla_source.py` parses that release's installed source
(no import of fla or triton) and `tests/python/test_fla_compat.py` asserts that every function
below takes exactly fla's parameters: names, order, kinds and defaults, and a keyword
catch-all only where fla has one. Bumping the pin (and re-running `scripts/setup`) makes that
test list every difference.

Common to all functions: `[B, T, H, K]` layout, CPU tensors, return values as fla
(`(o, final_state)`, `final_state` float32 and `None` unless `output_final_state=True`), each a
`torch.autograd.Function` over linattn's C++ forward and backward; float32, bfloat16 and
float64 (float64 runs the fp64 oracle). Arguments linattn cannot honour raise `ValueError`
naming the argument; unknown keywords in a `**kwargs` raise `TypeError` (fla ignores them);
`head_first=True` and a non-`None` `cp_context` (context parallelism) raise `ValueError`;
`transpose_state_layout` is accepted as fla's deprecated name of `state_v_first`.
fla's GPU-only arguments are accepted and have no effect on the CPU:

{hints}

| fla {version} | linattn | notes |
|---|---|---|
"""

# fla layer class -> linattn.layers class that loads its state_dict as it is and gives its
# output (tests/python/test_fla_checkpoints.py), with the fla options linattn does not take.
FLA_LAYERS = {
    "GatedDeltaNet": ("GatedDeltaNet", ""),
    "DeltaNet": ("DeltaNet", "`qk_activation` other than `silu`, `qk_norm='sum'`"),
    "GatedLinearAttention": ("GatedLinearAttention",
                             "`num_kv_heads`, `feature_map`, `gate_fn` other than swish"),
    "HGRN2Attention": ("HGRN2", "the model's per-layer `lower_bound`"),
    "LinearAttention": ("LinearAttention", "`num_kv_heads`"),
    "GatedDeltaProduct": ("GatedDeltaProduct", "`num_v_heads`"),
    "KimiDeltaAttention": ("KimiDeltaAttention", ""),
    "Mamba2": ("Mamba2", "`D_has_hdim`, `rmsnorm=False`, `norm_before_gate=True`"),
}

LAYERS_TEXT = """
## Layers and checkpoints

`linattn.layers` classes load the `state_dict` of fla's layer of the same model as it is
(same parameter names and shapes) and give fla's output on the same input (fla run on the CPU
with its Triton-only functions replaced by fla's own pure-torch references;
`tests/python/test_fla_checkpoints.py`):

| fla layer | linattn layer | fla options not taken |
|---|---|---|
{layers}

fla's `RWKV7Attention` of a model's first layer loads through a one-call conversion,
`layer.load_state_dict(linattn.layers.RWKV7.state_dict_from_fla(fla_state_dict))` (linattn
keeps the token-shift mixes as the rows of one `x_mix` and names the LoRAs' halves `down` /
`up`), and gives fla's output. Later layers do not load: their value residual across layers
(`v_first`, `v_lora`) is not implemented, and there is no RWKV-7 model loader.
fla's Mamba2 on the CPU (its `torch_forward`) gives head h the B/C group `h % n_groups`,
while Mamba-2's kernels (and linattn) give it `h // (heads / n_groups)`; the two agree for
`n_groups=1`, which is what the test compares.

`linattn.models.from_fla(path)` builds a `CausalLM` from a checkpoint directory written by
fla's `<Model>ForCausalLM.save_pretrained` (`config.json` + safetensors, sharded or not) and
loads it strictly; `generate` then runs on it. Model types: {models}. Configurations that
linattn's blocks do not build (hybrid `attn` layers, `attnres_block_size`, another
`hidden_act`, and the per-model options in `linattn.models.FLA_MODELS`) raise `ValueError`.

Layers keep linattn's interface, not fla's cache objects: `forward(hidden_states, state=None,
output_state=False, form="chunk")` returns `(o, LayerState or None)` and `step(x, state)`
decodes one token. `LocalLinearAttention` (mixer name `"lla"`) has no fla counterpart.
"""

FOOTER = """
`linattn.ops.fused_recurrent_gated_delta_product` (DeltaProduct token by token, with
`chunk_gated_delta_product`'s arguments), `linattn.ops.noncausal_linear_attn(q, k, v,
scale=None, normalize=False, cu_seqlens=None)` (bidirectional linear attention) and
`linattn.ops.mixer(op, q, k, v, *, form=...)` (the generic entry point behind all of the above)
have no fla counterpart.

fla's own pure-torch references (its `naive` modules, loaded by path so that no Triton kernel
is imported) are a second oracle in `tests/python/test_fla_compat.py`, on fla's test recipes
(log-sigmoid gates with a normaliser, l2-normalised keys, odd lengths, varlen).
"""


def _signature_text(params: list[Param]) -> str:
    parts, star = [], False
    for p in params:
        if p.kind == "keyword" and not star:
            parts.append("*")
            star = True
        star = star or p.kind == "*"
        parts.append(p.text())
    return ", ".join(parts)


def render() -> str:
    version = fla_source.installed_version()
    hints = "\n".join(f"- `{n}`: {why}" for n, why in GPU_HINTS.items())
    rows = []
    for module, name in all_functions():
        fla = fla_source.signature(module, name)
        keys = fla_source.kwargs_keys(module, name)
        ours = ", ".join(f"`{f.__module__}.{f.__name__}`" for f in linattn_functions(name))
        kw = f" fla's `**kwargs` reads: {', '.join(f'`{k}`' for k in keys)}." if keys else ""
        rows.append(f"| `{module}.{name}({_signature_text(fla)})` | {ours} | "
                    f"{NOTES[name]}{kw} |")
    from linattn import models

    layer_rows = "\n".join(f"| `fla.layers.{fla}` | `linattn.layers.{ours}` | {missing or '-'} |"
                           for fla, (ours, missing) in FLA_LAYERS.items())
    model_types = ", ".join(f"`{m}`" for m in models.FLA_MODELS)
    return (HEADER.format(version=version, hints=hints) + "\n".join(rows) + "\n" + FOOTER
            + LAYERS_TEXT.format(layers=layer_rows, models=model_types))


if __name__ == "__main__":
    problem = fla_source.check_installed()
    if problem:
        sys.exit(problem)
    pathlib.Path(DOC).write_text(render())
    print(f"wrote {DOC}")
