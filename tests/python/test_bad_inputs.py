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
INPUTS = ("q", "k", "v", "g", "gk", "beta", "initial_state")
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


class Call:
    """The base problem of a row with its edits applied, as numpy arrays (see catalogue.txt)."""

    def __init__(self, row):
        self.row = row
        spec_gates = {"simple_gla": ("g",), "gla": ("gk",), "delta_rule": ("beta",),
                      "gated_delta_rule": ("g", "beta"), "delta_product": ("g", "beta"),
                      "kda": ("gk", "beta")}
        causal = row["op"] != "noncausal_linear_attn"
        B, T, offsets = 2, 5, None
        for e in row["edits"]:
            if e[0] == "batch":
                B, T = int(e[1]), int(e[2])
            if e[0] == "cu":
                offsets = [int(x) for x in e[1].split(",")]
        n_h = 2 if row["op"] == "delta_product" else 1
        N = B if offsets is None else len(offsets) - 1
        self.natural = {
            "q": (B, T, H, K), "k": (B, T * n_h, H, K), "v": (B, T * n_h, HV, V),
            "g": (B, T, HV), "gk": (B, T, HV, K), "beta": (B, T * n_h, HV),
            "initial_state": (N, HV, K, V), "o": (B, T, HV, V), "final_state": (N, HV, K, V),
            "do": (B, T, HV, V), "dfinal_state": (N, HV, K, V),
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
        elif name in OUTPUTS:
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
            base = np.full(span, np.nan if name in OUTPUTS else 0, a.dtype)
            view = np.lib.stride_tricks.as_strided(
                base, a.shape, [s * a.itemsize for s in strides])
            view[...] = a
            self.arrays[name] = view
        elif cmd == "drop":
            del self.arrays[name]
        elif cmd == "give":
            self.arrays[name] = self.fresh(name, self.natural[name], np.float32)
        elif cmd == "alias":
            self.arrays[name] = self.arrays[args[1]]
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


def finite_outputs(x):
    """(every output finite, some output NaN/Inf) over the outputs that were passed."""
    values = [np.asarray(_float(x[n])) for n in OUTPUTS if n in x]
    finite = [np.isfinite(v).all() for v in values]
    return all(finite), not all(finite)


def _float(a):
    if hasattr(a, "detach"):
        return a.detach().float().numpy()
    return a.astype(np.float64)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("row", ROWS, ids=[r["name"] for r in ROWS])
def test_bad_input(row, kind):
    call = Call(row)
    to_kind = as_torch if kind == "torch" else as_numpy
    if row["expect"] in ("nan", "finite"):
        _, x = call.call(to_kind)
        all_finite, any_non_finite = finite_outputs(x)
        assert all_finite if row["expect"] == "finite" else any_non_finite
        return
    error = TypeError if row["expect"] == "type" else ValueError
    with pytest.raises(error, match=re.escape(row["message"])):
        call.call(to_kind)


def test_catalogue_has_python_rows():
    assert len(ROWS) >= 30
