"""The bad-input catalogue (tests/bad_inputs/catalogue.txt) through the Python binding.

The rows marked `py` are run with numpy arrays and with torch tensors: each builds the valid base
problem of its op, applies its edits, calls linattn.forward / backward / output_shapes and checks
the exception type and message fragment (or, for the NaN/Inf policy rows, the outputs). The C++
and C API drivers of the same rows are in tests/cpp/bad_inputs_test.cpp.
"""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

import linattn

CATALOGUE = pathlib.Path(__file__).resolve().parents[1] / "bad_inputs" / "catalogue.txt"
H, HV, K, V = 2, 4, 4, 3
INPUTS = ("q", "k", "v", "g", "gk", "beta", "initial_state", "a", "b")
GRADIENTS = tuple("d" + name for name in INPUTS)
OUTPUTS = ("o", "final_state") + GRADIENTS
DTYPES = {"float32": np.float32, "float64": np.float64, "int32": np.int32, "int64": np.int64,
          "float16": np.float16, "bfloat16": "bfloat16"}


def load_rows():
    rows = []
    for line in CATALOGUE.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        cols = line.split(" | ", 5)
        name, apis, call, edits, expect, message = cols
        op, passname, *form = call.split(":")
        rows.append({
            "name": name, "apis": apis.split(), "op": op, "pass": passname,
            "form": form[0] if form else "reference", "expect": expect, "message": message,
            "edits": [] if edits == "-" else [e.split() for e in edits.split(";") if e.strip()],
        })
    return rows


ROWS = [r for r in load_rows() if "py" in r["apis"]]


def number(text):
    return float(text)  # float() reads nan, inf and -inf


def batch_shape(row):
    """(B, T, cu_seqlens offsets or None) of a row: 2 x 5 unless its edits say otherwise."""
    B, T, offsets = 2, 5, None
    for e in row["edits"]:
        if e[0] == "batch":
            B, T = int(e[1]), int(e[2])
        if e[0] == "cu":
            offsets = [int(x) for x in e[1].split(",")]
    return B, T, offsets


class Call:
    """The base problem of a row with its edits applied, as numpy arrays (see catalogue.txt)."""

    outputs = OUTPUTS

    def __init__(self, row):
        self.row = row
        spec_gates = {"simple_gla": ("g",), "gla": ("gk",), "delta_rule": ("beta",),
                      "gated_delta_rule": ("g", "beta"), "delta_product": ("g", "beta"),
                      "kda": ("gk", "beta"), "dplr_delta_rule": ("gk", "a", "b")}
        causal = row["op"] != "noncausal_linear_attn"
        B, T, offsets = batch_shape(row)
        n_h = 2 if row["op"] == "delta_product" else 1
        N = B if offsets is None else len(offsets) - 1
        self.natural = {
            "q": (B, T, H, K), "k": (B, T * n_h, H, K), "v": (B, T * n_h, HV, V),
            "g": (B, T, HV), "gk": (B, T, HV, K), "beta": (B, T * n_h, HV),
            "initial_state": (N, HV, K, V), "o": (B, T, HV, V), "final_state": (N, HV, K, V),
            "do": (B, T, HV, V), "dfinal_state": (N, HV, K, V), "a": (B, T, H, K),
            "b": (B, T, H, K),
        }
        for name in INPUTS:
            self.natural["d" + name] = self.natural[name]
        self.rng = np.random.default_rng(7)
        backward = row["pass"] == "backward"
        given = ["q", "k", "v", *spec_gates.get(row["op"], ())]
        if causal:
            given += ["initial_state"]
        if row["pass"] == "forward":
            given += ["o"] + (["final_state"] if causal else [])
        if backward:
            given += ["do"] + (["dfinal_state"] if causal else [])
            given += ["d" + name for name in given if name in INPUTS]
        self.arrays = {name: self.fresh(name, self.natural[name], np.float32) for name in given}
        if offsets is not None:
            self.arrays["cu_seqlens"] = np.array(offsets, np.int64)
        self.flags = {"num_householder": n_h, "output_final_state": causal}
        for e in row["edits"]:
            self.edit(e)

    def fresh(self, name, shape, dtype):
        """An array of `shape` with values in the range of input `name` (NaN for outputs)."""
        if name in ("g", "gk"):
            x = -0.01 - self.rng.uniform(0, 1, shape)
        elif name == "beta":
            x = 0.1 + 0.9 * self.rng.uniform(0, 1, shape)
        elif name in self.outputs:
            x = np.full(shape, np.nan)
        else:
            x = self.rng.uniform(-1, 1, shape)
        return x.astype(dtype)

    def edit(self, e):
        cmd, args = e[0], e[1:]
        if cmd in ("batch", "cu"):
            return
        if cmd == "set":
            name = {"l2norm": "use_qk_l2norm_in_kernel"}.get(args[0], args[0])
            self.flags[name] = number(args[1])
            return
        name = args[0]
        a = self.arrays.get(name)
        if cmd == "shape":
            shape = list(a.shape)
            shape[int(args[1])] = int(args[2])
            self.arrays[name] = self.retyped(name, shape, a)
        elif cmd == "rank":
            n = int(args[1])
            shape = (list(a.shape) + [1] * n)[:n]
            self.arrays[name] = self.retyped(name, shape, a)
        elif cmd == "dtype":
            self.arrays[name] = self.cast(a, DTYPES[args[1]])
        elif cmd == "stride":  # a strided view over a larger buffer (strides in elements)
            strides = [s // a.itemsize for s in a.strides]
            strides[int(args[1])] = int(args[2])
            span = 1 + sum((n - 1) * s for n, s in zip(a.shape, strides))
            base = np.full(span, np.nan if name in self.outputs else 0, a.dtype)
            view = np.lib.stride_tricks.as_strided(
                base, a.shape, [s * a.itemsize for s in strides])
            view[...] = a
            self.arrays[name] = view
        elif cmd == "drop":
            del self.arrays[name]
        elif cmd == "give":
            self.arrays[name] = self.fresh(name, self.natural[name], np.float32)
        elif cmd == "alias":  # X's shape over Y's memory (Y at least as large)
            other = self.arrays[args[1]]
            self.arrays[name] = other.reshape(-1)[:a.size].reshape(a.shape)
        elif cmd == "value":
            a.reshape(-1)[int(args[1])] = number(args[2])
        else:
            raise ValueError(f"catalogue edit {cmd} is not expressible in Python")

    def retyped(self, name, shape, like):
        return self.cast(self.fresh(name, tuple(shape), np.float64), like.dtype)

    @staticmethod
    def cast(a, dtype):
        if dtype == "bfloat16":  # numpy has no bfloat16: keep float32, converted by to_kind
            return a.astype(np.float32).view(_Bf16)
        if np.issubdtype(dtype, np.integer):  # the values do not matter, and NaN has no integer
            return np.zeros(a.shape, dtype)
        return a.astype(dtype)

    def call(self, kind):
        """Runs the row through the binding with arrays of `kind` (numpy or torch)."""
        x = {name: kind(a) for name, a in self.arrays.items()}
        inputs = {n: x[n] for n in (*INPUTS, "cu_seqlens") if n in x}
        flags = dict(self.flags)
        flags["output_final_state"] = bool(flags["output_final_state"])
        for name in ("normalize", "use_qk_l2norm_in_kernel"):
            if name in flags:
                flags[name] = bool(flags[name])
        flags["num_householder"] = int(flags["num_householder"])
        row = self.row
        if row["pass"] == "shapes":
            return linattn.output_shapes(row["op"], **inputs, **flags), x
        if row["pass"] == "forward":
            linattn.forward(row["op"], row["form"], **inputs, **flags, o=x.get("o"),
                            final_state=x.get("final_state"))
            return None, x
        grads = {n: x[n] for n in GRADIENTS if n in x}
        linattn.backward(row["op"], row["form"], **inputs, **flags, d_o=x["do"],
                         dfinal_state=x.get("dfinal_state"), **grads)
        return None, x


# The families with an API of their own, through their bindings in linattn._core (which take
# token-major arrays and the outputs to write, as the C++ API does). Tensors, natural shapes and
# values as tests/support/families.hpp: B = 2, T = 5, H = 2 (attention: 4 query heads over 2),
# K = 4, V = 3, D = 6, W = 3, N = 4, G = 2, Tq = 2.
FAMILIES = ("attention", "lla", "conv1d", "scan")


def family_tensors(op, passname, B, T, offsets):
    """{name: (shape, written)} of a family call; `given` lists what the base problem passes."""
    H, Hq, K, V, D, W, N, G, Tq = 2, 4, 4, 3, 6, 3, 4, 2, 2
    seqs = B if offsets is None else len(offsets) - 1
    t = {}
    if op == "attention" and passname == "decode":
        t = {"q": (B, Tq, Hq, K), "k_cache": (B, T, H, K), "v_cache": (B, T, H, V),
             "cache_seqlens": (B,), "o": (B, Tq, Hq, V)}
    elif op == "attention":
        t = {"q": (B, T, Hq, K), "k": (B, T, H, K), "v": (B, T, H, V), "o": (B, T, Hq, V),
             "lse": (B, T, Hq)}
        upstream, grads = {"do": (B, T, Hq, V)}, ("q", "k", "v")
    elif op == "lla":
        t = {"q": (B, T, H, K), "k": (B, T, H, K), "v": (B, T, H, V),
             "ridge_lambda_per_token": (B, T, H), "o": (B, T, H, V)}
        upstream, grads = {"do": (B, T, H, V)}, ("q", "k", "v", "ridge_lambda_per_token")
    elif op == "conv1d" and passname == "update":
        t = {"x": (B, D), "cache": (B, D, W), "weight": (D, W), "bias": (D,), "residual": (B, D),
             "y": (B, D)}
    elif op == "conv1d":
        t = {"x": (B, T, D), "weight": (D, W), "bias": (D,), "residual": (B, T, D),
             "initial_state": (seqs, D, W), "y": (B, T, D), "final_state": (seqs, D, W)}
        upstream = {"dy": (B, T, D), "dfinal_state": (seqs, D, W)}
        grads = ("x", "weight", "bias", "residual", "initial_state")
    elif op == "scan" and passname == "update":
        t = {"state": (B, D, N), "x": (B, D), "dt": (B, D), "A": (D, N), "B": (B, G, N),
             "C": (B, G, N), "D": (D,), "z": (B, D), "dt_bias": (D,), "y": (B, D)}
    elif op == "scan":
        t = {"u": (B, T, D), "delta": (B, T, D), "A": (D, N), "B": (B, T, G, N),
             "C": (B, T, G, N), "D": (D,), "z": (B, T, D), "delta_bias": (D,),
             "initial_state": (seqs, D, N), "y": (B, T, D), "final_state": (seqs, D, N)}
        upstream = {"dy": (B, T, D), "dfinal_state": (seqs, D, N)}
        grads = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
    if passname == "backward":
        if op != "attention":  # the attention backward reads the forward's o and lse
            t = {n: s for n, s in t.items() if n not in ("o", "y", "final_state")}
        t.update(upstream)
        t.update({"d" + n: t[n] for n in grads})
    if offsets is not None:
        t["cu_seqlens"] = (len(offsets),)
    return t


class FamilyCall(Call):
    """A row of a family with an API of its own (see family_tensors)."""

    def __init__(self, row):
        self.row = row
        op, passname = row["op"], row["pass"]
        B, T, offsets = batch_shape(row)
        self.natural = family_tensors(op, passname, B, T, offsets)
        written = {"o", "lse", "y", "final_state", "cache", "state"} if passname != "backward" \
            else set()
        self.outputs = tuple(n for n in self.natural  # outputs, and gradients: d + an input
                             if n in written or (passname == "backward" and n[0] == "d"
                                                 and n[1:] in self.natural
                                                 and n not in ("do", "dfinal_state")))
        self.rng = np.random.default_rng(7)
        optional = {"ridge_lambda_per_token", "dridge_lambda_per_token", "cu_seqlens"}
        self.arrays = {n: self.fresh(n, s, np.float32) for n, s in self.natural.items()
                       if n not in optional}
        if offsets is not None:
            self.arrays["cu_seqlens"] = np.array(offsets, np.int64)
        if "cache_seqlens" in self.arrays:
            self.arrays["cache_seqlens"] = np.array([T - 2 * n for n in range(B)], np.int64)
        self.flags = {"scale": None, "window_size": 0, "ridge_lambda": 10.0, "delta_eps": 1e-12,
                      "cg_atol": 1e-12, "cg_rtol": 1e-12, "cg_max_iters": 32,
                      "cg_use_preconditioner": 0, "direct_solve": 0, "activation": 1,
                      "output_final_state": 1, "softplus": 1}
        for e in row["edits"]:
            self.edit(e)

    def fresh(self, name, shape, dtype):
        if name in ("A",):
            return (-0.01 - self.rng.uniform(0, 1, shape)).astype(dtype)
        if name == "ridge_lambda_per_token":
            return (0.5 + self.rng.uniform(0, 1, shape)).astype(dtype)
        if name in self.outputs and not (name in ("cache", "state")):
            return np.full(shape, np.nan).astype(dtype)
        return self.rng.uniform(-1, 1, shape).astype(dtype)

    def call(self, kind):
        x = {name: kind(a) for name, a in self.arrays.items()}
        f = self.flags
        form, op, passname = self.row["form"], self.row["op"], self.row["pass"]
        scale = None if f["scale"] is None or np.isnan(f["scale"]) else f["scale"]
        window = int(f["window_size"])
        activation = "silu" if f["activation"] else None
        core = linattn._core
        if op == "attention" and passname == "decode":
            core.attention_decode(form, x["q"], x["k_cache"], x["v_cache"],
                                  x.get("cache_seqlens"), scale, window, o=x["o"])
        elif op == "attention" and passname == "forward":
            core.attention_forward(form, x["q"], x["k"], x["v"], x.get("cu_seqlens"), scale,
                                   window, o=x["o"], lse=x.get("lse"))
        elif op == "attention":
            core.attention_backward(form, x["q"], x["k"], x["v"], x.get("cu_seqlens"), scale,
                                    window, o=x.get("o"), lse=x.get("lse"), d_o=x["do"],
                                    dq=x.get("dq"), dk=x.get("dk"), dv=x.get("dv"))
        elif op == "lla":
            options = dict(ridge_lambda=f["ridge_lambda"],
                           ridge_lambda_per_token=x.get("ridge_lambda_per_token"),
                           cu_seqlens=x.get("cu_seqlens"), scale=scale, delta_eps=f["delta_eps"],
                           cg_atol=f["cg_atol"], cg_rtol=f["cg_rtol"],
                           cg_max_iters=int(f["cg_max_iters"]),
                           cg_use_preconditioner=bool(f["cg_use_preconditioner"]),
                           solver="direct" if f["direct_solve"] else "cg")
            if passname == "forward":
                core.lla_forward(form, x["q"], x["k"], x["v"], o=x["o"], **options)
            else:
                core.lla_backward(form, x["q"], x["k"], x["v"], x["do"], dq=x.get("dq"),
                                  dk=x.get("dk"), dv=x.get("dv"),
                                  dridge_lambda=x.get("dridge_lambda_per_token"), **options)
        elif op == "conv1d" and passname == "update":
            core.causal_conv1d_update(x["x"], x["cache"], residual=x.get("residual"),
                                      weight=x.get("weight"), bias=x.get("bias"),
                                      activation=activation, y=x["y"])
        elif op == "conv1d":
            inputs = {n: x.get(n) for n in ("x", "weight", "bias", "residual", "initial_state",
                                            "cu_seqlens")}
            flags = dict(output_final_state=bool(f["output_final_state"]), activation=activation)
            if passname == "forward":
                core.causal_conv1d_forward(form, **inputs, **flags, y=x["y"],
                                           final_state=x.get("final_state"))
            else:
                core.causal_conv1d_backward(form, **inputs, **flags, dy=x["dy"],
                                            dfinal_state=x.get("dfinal_state"),
                                            **{n: x.get(n) for n in ("dx", "dweight", "dbias",
                                                                     "dresidual",
                                                                     "dinitial_state")})
        elif op == "scan" and passname == "update":
            core.selective_state_update(x["state"], x["x"], x["dt"], x["A"], x["B"], x["C"],
                                        D=x.get("D"), z=x.get("z"), dt_bias=x.get("dt_bias"),
                                        dt_softplus=bool(f["softplus"]), y=x["y"])
        else:
            names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state",
                     "cu_seqlens")
            inputs = {n: x.get(n) for n in names}
            flags = dict(delta_softplus=bool(f["softplus"]),
                         output_final_state=bool(f["output_final_state"]))
            if passname == "forward":
                core.selective_scan_forward(form, **inputs, **flags, y=x["y"],
                                            final_state=x.get("final_state"))
            else:
                core.selective_scan_backward(form, **inputs, **flags, dy=x["dy"],
                                             dfinal_state=x.get("dfinal_state"),
                                             **{"d" + n: x.get("d" + n) for n in names[:-1]})
        return None, x


class _Bf16(np.ndarray):
    """Marks a float32 array that the torch driver turns into bfloat16 (numpy has none)."""


def as_numpy(a):
    if isinstance(a, _Bf16):
        pytest.skip("bfloat16 arrays need torch")
    return a


def as_torch(a):
    torch = pytest.importorskip("torch")
    if isinstance(a, _Bf16):
        return torch.from_numpy(a.view(np.ndarray)).to(torch.bfloat16)
    return torch.from_numpy(a)


def finite_outputs(x, outputs):
    """(every output finite, some output NaN/Inf) over the outputs that were passed."""
    values = [np.asarray(_float(x[n])) for n in outputs if n in x]
    finite = [np.isfinite(v).all() for v in values]
    return all(finite), not all(finite)


def _float(a):
    if hasattr(a, "detach"):
        return a.detach().float().numpy()
    return a.astype(np.float64)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("row", ROWS, ids=[r["name"] for r in ROWS])
def test_bad_input(row, kind):
    call = FamilyCall(row) if row["op"] in FAMILIES else Call(row)
    to_kind = as_torch if kind == "torch" else as_numpy
    if row["expect"] in ("nan", "finite"):
        _, x = call.call(to_kind)
        all_finite, any_non_finite = finite_outputs(x, call.outputs)
        assert all_finite if row["expect"] == "finite" else any_non_finite
        return
    error = TypeError if row["expect"] == "type" else ValueError
    with pytest.raises(error, match=re.escape(row["message"])):
        call.call(to_kind)


def test_catalogue_has_python_rows():
    assert len(ROWS) >= 30
