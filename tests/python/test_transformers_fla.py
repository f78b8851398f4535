"""linattn as transformers' CPU kernel backend (linattn.transformers.apply_linattn) on the
families whose layers use fla's gated delta rule / KDA and Dao's causal conv1d: each tiny
random model against transformers' own torch fallback in the same process (same weights).

fp32 throughout; the tolerances: logits 1e-5 relative (two fp32 evaluations of the same
function, ~1e-7 apart per op, through a few layers), parameter gradients 1e-3 relative (the
backward sums over every token, and the fallback's chunked form rounds differently).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).parent))
import transformers_models as tm  # noqa: E402

from linattn.transformers import apply_linattn, revert_linattn, runs_on_linattn  # noqa: E402

FAMILIES = list(tm.FAMILIES)


def rel(a, b) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@pytest.fixture(autouse=True)
def fallback_after_each_test():
    yield
    revert_linattn()


def tokens(batch: int, length: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, tm.VOCAB, (batch, length), generator=g)


def loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    out = model(ids, labels=ids)
    out.loss.backward()
    return out.logits.detach(), {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_and_gradients_match_fallback(family):
    model = tm.build(family).train()  # dropout is 0: train() only turns on the training paths
    ids = tokens(2, 77)  # not a multiple of the chunk size
    ref_logits, ref_grads = loss_and_grads(model, ids)
    apply_linattn(model)
    logits, grads = loss_and_grads(model, ids)
    assert rel(logits, ref_logits) <= 1e-5
    for name, ref in ref_grads.items():
        got = grads[name]
        if ref is None:
            assert got is None, name
            continue
        assert got is not None, f"{name}: no gradient through linattn"
        assert rel(got, ref) <= 1e-3, (name, rel(got, ref))


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generation_matches_fallback(family):
    model = tm.build(family)
    prompt = tokens(2, 21, seed=2)
    with torch.no_grad():
        ref = model.generate(prompt, max_new_tokens=32, do_sample=False)
        apply_linattn()
        got = model.generate(prompt, max_new_tokens=32, do_sample=False)
    assert got.shape == ref.shape == (2, 21 + 32)
    assert torch.equal(got, ref)


def packed_kwargs(lengths):
    """What transformers' DataCollatorWithFlattening hands the model for packed sequences."""
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    return dict(
        position_ids=torch.cat([torch.arange(n) for n in lengths])[None],
        seq_idx=torch.cat([torch.full((n,), i, dtype=torch.int32)
                           for i, n in enumerate(lengths)])[None],
        cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=max(lengths),
        max_length_k=max(lengths))


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_sequences_match_one_by_one(family):
    model = tm.build(family).train()
    apply_linattn(model)
    lengths = [23, 5, 40]
    seqs = [tokens(1, n, seed=10 + i) for i, n in enumerate(lengths)]
    packed = torch.cat(seqs, dim=1)
    # No cache: transformers builds the packed (block-diagonal) attention mask only without one.
    logits = model(packed, use_cache=False, **packed_kwargs(lengths)).logits
    logits.square().mean().backward()
    packed_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    one_by_one = [model(s, use_cache=False).logits for s in seqs]
    sum(lg.square().sum() for lg in one_by_one).div(logits.numel()).backward()
    assert rel(logits, torch.cat(one_by_one, dim=1)) <= 1e-5
    for name, ref in packed_grads.items():
        assert rel(ref, dict(model.named_parameters())[name].grad) <= 1e-3, name


def test_apply_switches_an_existing_model_and_revert_restores():
    from transformers.models.qwen3_next import modeling_qwen3_next as modeling

    model = tm.build("qwen3_next")
    assert not hasattr(modeling.torch_chunk_gated_delta_rule, "linattn_kernel")
    assert apply_linattn(model) is model
    assert modeling.torch_chunk_gated_delta_rule.linattn_kernel == ("fla",
                                                                    "chunk_gated_delta_rule")
    assert modeling.causal_conv1d_fn.linattn_kernel == ("causal_conv1d", "causal_conv1d_fn")
    apply_linattn(model)  # twice: no second layer of dispatch
    assert not hasattr(modeling.causal_conv1d_fn.linattn_original, "linattn_kernel")
    revert_linattn()
    assert not hasattr(modeling.torch_chunk_gated_delta_rule, "linattn_kernel")


def test_non_cpu_tensors_go_to_the_fallback():
    cpu, meta = torch.zeros(2), torch.zeros(2, device="meta")
    assert runs_on_linattn(cpu, weight=cpu, bias=None)
    assert not runs_on_linattn(cpu, weight=meta)
    assert not runs_on_linattn([cpu, meta])
    # A model on the meta device runs through transformers' fallback (shapes only), untouched:
    # linattn would refuse meta tensors.
    with torch.device("meta"):
        model = tm.build("qwen3_5")
    apply_linattn(model)
    ids = torch.zeros(1, 9, dtype=torch.long, device="meta")
    assert model(ids).logits.shape == (1, 9, tm.VOCAB)


def test_models_imported_after_apply_use_linattn():
    import importlib

    name = "transformers.models.lfm2.modeling_lfm2"
    apply_linattn()
    module = importlib.reload(importlib.import_module(name))  # as if imported now
    assert module.causal_conv1d_fn.linattn_kernel == ("causal_conv1d", "causal_conv1d_fn")
    revert_linattn()
    module = importlib.reload(module)
    assert not hasattr(module.causal_conv1d_fn, "linattn_kernel")


def test_apply_rejects_a_non_module():
    with pytest.raises(TypeError, match="apply_linattn: model must be a torch.nn.Module"):
        apply_linattn("Qwen/Qwen3-Next")


def test_import_linattn_imports_neither_torch_nor_transformers():
    import subprocess

    code = ("import sys, linattn, linattn.hub; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_bench_models_cli_rejects_unknown_names(capsys):
    from linattn import cli

    assert cli.main(["bench-models", "--columns", "prefill_7"]) == 2
    assert "--columns takes prefill_1024" in capsys.readouterr().err
    assert cli.main(["bench-models", "--models", "gpt2"]) == 2
    assert "--models takes qwen3_next, kimi_linear" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["qwen3_next", "kimi_linear"])
def test_bfloat16_model_is_as_accurate_as_the_fallback(family):
    """A bf16 model: linattn's logits are as close to the fp32 model's as the fallback's (the
    error is bf16 storage of weights and activations, ~1e-2 relative, in both)."""
    ids = tokens(2, 50, seed=4)
    model = tm.build(family).to(torch.bfloat16)
    with torch.no_grad():
        exact = tm.build(family)(ids).logits
        fallback = model(ids).logits.float()
        apply_linattn()
        got = model(ids).logits.float()
    assert rel(got, exact) <= 1.25 * rel(fallback, exact)
