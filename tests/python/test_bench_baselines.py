"""The PyTorch baselines of `linattn bench` compute the same op as linattn's oracle, and the
bench suite runs end to end on a tiny shape. Smoke tests only: nothing here is timed."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from linattn import bench, reference  # noqa: E402

GATED = bench.GATED
TOL = 1e-4  # relative; the baselines agree with the fp64 oracle to ~1e-15 (fp64), ~1e-6 (fp32)


def gated_inputs(op, *, B=2, T=100, H=3, K=8, V=6, dtype=torch.float64, gate_scale=1.0, seed=0):
    """q, k, v, the op's gate (log decays in gate_scale * [log 0.4, log 0.99]) and a state."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    def log_decay(*shape):
        u = 0.4 + 0.59 * torch.rand(*shape, generator=gen, dtype=torch.float64)
        return (gate_scale * u.log()).to(dtype)

    x = {"q": randn(B, T, H, K), "k": randn(B, T, H, K) / K**0.5, "v": randn(B, T, H, V),
         "initial_state": randn(B, H, K, V) * 0.5}
    if op == "simple_gla":
        x["g"] = log_decay(B, T, H)
    if op == "gla":
        x["gk"] = log_decay(B, T, H, K)
    return x


def rel_err(a, b) -> float:
    a, b = (np.asarray(t.detach().double()) for t in (a, b))
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("T, chunk", [(100, 64), (128, 64), (37, 16), (130, 16)])
@pytest.mark.parametrize("op", GATED)
def test_torch_chunked_matches_reference(op, T, chunk, dtype):
    x = gated_inputs(op, T=T, dtype=dtype)
    o, s = bench.torch_chunked(op, **x, output_final_state=True, chunk_size=chunk)
    o_ref, s_ref = getattr(reference, op)(**x, output_final_state=True)
    assert o.shape == o_ref.shape and o.dtype == dtype
    assert rel_err(o, o_ref) <= TOL
    assert rel_err(s, s_ref) <= TOL


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("op", ["simple_gla", "gla"])
def test_torch_chunked_strong_decays(op, dtype):
    # gate_scale 8: log decays down to -7.3 per step; for gla with chunk 64 the mid-chunk
    # reference row would need factors up to e^234, so the exact pairwise fallback runs.
    x = gated_inputs(op, T=150, dtype=dtype, gate_scale=8.0)
    o, s = bench.torch_chunked(op, **x, output_final_state=True)
    o_ref, s_ref = getattr(reference, op)(**x, output_final_state=True)
    assert torch.isfinite(o).all()
    assert rel_err(o, o_ref) <= TOL
    assert rel_err(s, s_ref) <= TOL


def test_gla_fallback_agrees_with_the_fast_path():
    x = gated_inputs("gla", T=64, H=2, dtype=torch.float64)
    fast, _ = bench.torch_chunked("gla", **x)
    spread, bench.GLA_SAFE_SPREAD = bench.GLA_SAFE_SPREAD, -1.0  # force the pairwise form
    try:
        exact, _ = bench.torch_chunked("gla", **x)
    finally:
        bench.GLA_SAFE_SPREAD = spread
    assert rel_err(fast, exact) <= 1e-12


@pytest.mark.parametrize("op", GATED)
def test_autograd_through_torch_chunked_matches_reference_backward(op):
    x = gated_inputs(op, T=70, dtype=torch.float64)
    leaves = {n: t.clone().requires_grad_(True) for n, t in x.items()}
    o, s = bench.torch_chunked(op, **leaves, output_final_state=True, chunk_size=16)
    gen = torch.Generator().manual_seed(5)
    do = torch.randn(o.shape, generator=gen, dtype=o.dtype)
    ds = torch.randn(s.shape, generator=gen, dtype=s.dtype)
    torch.autograd.backward([o, s], [do, ds])
    grads = reference.backward(op, **x, do=do, dfinal_state=ds)
    for name, grad in grads.items():
        assert rel_err(leaves[name[1:]].grad, grad) <= TOL, name


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("op", GATED)
def test_torch_decode_step_matches_reference(op, dtype):
    x = gated_inputs(op, B=3, T=1, H=4, dtype=dtype)
    state = x.pop("initial_state")
    o_ref, s_ref = getattr(reference, op)(**x, initial_state=state, output_final_state=True)
    s = state.clone()
    o = bench.torch_decode_step(op, **x, state=s)
    assert rel_err(o, o_ref) <= TOL
    assert rel_err(s, s_ref) <= TOL


NO_GUARD = bench.QuietGuard(enabled=False)  # no waiting for a quiet machine in tests
TINY = bench.SuiteConfig(B=1, T=64, H=2, K=16, V=16, chunk=16, decode_B=2, sweep_T=(32, 64),
                         min_seconds=0.0)


def measured(row) -> bool:
    """The row holds a measurement (no check is made on its value: speed is not tested)."""
    return row.seconds is not None


def test_suite_runs_and_plots(tmp_path):
    plot = tmp_path / "img" / "sweep.png"
    report = bench.run(["linear_attn", "gla"], threads=1, forms="fast", plot=str(plot),
                       config=TINY, malloc=False, guard=NO_GUARD)
    assert [s.title.split(":")[0] for s in report.sections] == ["linear_attn", "gla"]
    for section in report.sections:
        names = {r.name.split(" ")[0] for r in section.rows}
        # gates rows only for ops with a gate (linear_attn has none)
        gated = {"gates"} if section.title.startswith("gla") else set()
        assert names == {"fwd", "fwd+bwd", "decode", "bf16", "sweep", "layout"} | gated
        for row in section.rows:
            assert measured(row) or row.note == "not implemented yet", row.note
    assert set(report.sweep) == {"linear_attn", "gla"}
    assert plot.stat().st_size > 0
    text = report.format()
    assert "gated family targets" in text and "backward counted as 2.5x forward" in text


def test_missing_forms_become_rows(monkeypatch):
    monkeypatch.setattr(bench._core, "has_form", lambda op, form, backward=False: False)
    config = bench.SuiteConfig(**{**TINY.__dict__, "sections": ("fwd", "fwdbwd", "decode", "bf16")})
    report = bench.run(["simple_gla"], threads=1, forms="fast", config=config, malloc=False,
                       guard=NO_GUARD)
    (section,) = report.sections
    missing = [r for r in section.rows if r.impl.startswith("linattn")]
    assert len(missing) == 4 and all(r.note == "not implemented yet" for r in missing)
    assert all(measured(r) for r in section.rows if r.impl.startswith("torch"))
    assert "not implemented yet" in report.format()


def test_reference_rows_stay_available():
    config = bench.SuiteConfig(**{**TINY.__dict__, "sections": ()})
    report = bench.run(["delta_rule"], threads=1, quick=True, forms="reference", config=config,
                       malloc=False, guard=NO_GUARD)
    (section,) = report.sections
    assert {r.impl for r in section.rows} >= {"torch token loop", "linattn reference"}


def test_quiet_guard_keeps_a_quiet_measurement():
    guard = bench.QuietGuard(limit=100.0)  # every measurement counts as quiet
    assert guard.measure(lambda: 1.5) == (1.5, "")
    assert guard.repeated == 0


# ---------------------------------------------------------------------- delta family

from linattn import bench_delta  # noqa: E402

DELTA = [op for op in bench_delta.DELTA if op in reference.__dict__]  # ops linattn has


def delta_inputs(op, *, B=2, T=100, H=3, K=8, V=6, dtype=torch.float64, seed=0):
    x = bench_delta.delta_inputs(op, B, T, H, K, V, seed=seed, dtype=dtype)
    x["initial_state"] = torch.randn(B, H, K, V, generator=torch.Generator().manual_seed(seed),
                                     dtype=dtype)
    return x


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("T, chunk", [(100, 64), (128, 64), (37, 16)])
@pytest.mark.parametrize("op", DELTA)
def test_torch_chunked_delta_matches_reference(op, T, chunk, dtype):
    x = delta_inputs(op, T=T, dtype=dtype)
    o, s = bench_delta.torch_chunked_delta(op, **x, output_final_state=True, chunk_size=chunk)
    o_ref, s_ref = getattr(reference, op)(**x, output_final_state=True)
    assert o.shape == o_ref.shape and o.dtype == dtype
    assert rel_err(o, o_ref) <= TOL
    assert rel_err(s, s_ref) <= TOL


@pytest.mark.parametrize("op", DELTA)
def test_autograd_through_torch_chunked_delta_matches_reference_backward(op):
    x = delta_inputs(op, T=45, dtype=torch.float64)
    leaves = {n: (t.clone().requires_grad_(True) if torch.is_tensor(t) else t) for n, t in x.items()}
    o, s = bench_delta.torch_chunked_delta(op, **leaves, output_final_state=True, chunk_size=16)
    gen = torch.Generator().manual_seed(5)
    do = torch.randn(o.shape, generator=gen, dtype=o.dtype)
    ds = torch.randn(s.shape, generator=gen, dtype=s.dtype)
    torch.autograd.backward([o, s], [do, ds])
    grads = reference.backward(op, **x, do=do, dfinal_state=ds)
    for name, grad in grads.items():
        assert rel_err(leaves[name[1:]].grad, grad) <= TOL, name


@pytest.mark.parametrize("op", DELTA)
def test_torch_decode_step_delta_matches_reference(op):
    x = delta_inputs(op, B=3, T=1, H=4)
    state = x.pop("initial_state")
    o_ref, s_ref = getattr(reference, op)(**x, initial_state=state, output_final_state=True)
    s = state.clone()
    o = bench_delta.torch_decode_step_delta(op, **x, state=s)
    assert rel_err(o, o_ref) <= TOL
    assert rel_err(s, s_ref) <= TOL


def test_delta_suite_runs_with_householder_scaling():
    report = bench.run(["gated_delta_rule", "delta_product"], threads=1, forms="fast",
                       config=TINY, malloc=False, guard=NO_GUARD)
    assert [s.title.split(":")[0] for s in report.sections] == ["gated_delta_rule", "delta_product"]
    for section in report.sections:
        for row in section.rows:
            assert measured(row) or row.note == "not implemented yet", row.note
    nh_rows = [r for r in report.sections[1].rows if r.name.startswith("n_h=")]
    assert len(nh_rows) == 2 * len(bench.HOUSEHOLDER_STEPS) and all(map(measured, nh_rows))
    text = report.format()
    assert "delta family targets" in text and "time(n_h)/time(1)" in text
