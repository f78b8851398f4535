"""The binding layer: zero-copy inputs, in-place outputs, output kinds, device checks, the API."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import linattn
from conftest import STATELESS
from linattn import _arrays, reference

OPS = linattn.op_names()


def data_ptr(x) -> int:
    return x.data_ptr() if _arrays.is_torch(x) else x.__array_interface__["data"][0]


def strided_views(inputs, kind):
    """Non-contiguous views with the inputs' values: each array is written into every other
    row of a larger buffer (whose other slots are garbage), then viewed back with strides
    (for 4-d arrays also through a transposed [B, H, T, D] buffer, so no axis is innermost)."""
    views = {}
    for name, x in inputs.items():
        if not isinstance(x, np.ndarray):
            views[name] = x
            continue
        if x.ndim == 4:
            buf = np.full((x.shape[0], x.shape[2], x.shape[1], 2 * x.shape[3]), np.nan, x.dtype)
            buf[..., ::2] = x.transpose(0, 2, 1, 3)
            view = buf.transpose(0, 2, 1, 3)[..., ::2]
        else:
            buf = np.full((2 * x.shape[0], *x.shape[1:]), np.nan, x.dtype)
            buf[::2] = x
            view = buf[::2]
        if kind == "torch":
            import torch  # the caller skipped the test already if torch is missing

            view = torch.from_numpy(buf)
            view = view.permute(0, 2, 1, 3)[..., ::2] if x.ndim == 4 else view[::2]
        assert not (view.is_contiguous() if kind == "torch" else view.flags.c_contiguous)
        views[name] = view
    return views


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("op", OPS)
def test_strided_inputs_are_read_in_place(op, kind, make_inputs, as_torch):
    state = {} if op in STATELESS else {"output_final_state": True}
    inputs = make_inputs(op, initial_state=bool(state), dtype=np.float32)
    contiguous = as_torch(inputs) if kind == "torch" else inputs
    fn = getattr(reference, op)
    o_ref, s_ref = fn(**contiguous, **state)
    o, s = fn(**strided_views(inputs, kind), **state)
    np.testing.assert_array_equal(np.asarray(o), np.asarray(o_ref))
    np.testing.assert_array_equal(np.asarray(s), np.asarray(s_ref))


def test_inputs_are_not_copied_by_the_python_layer(make_inputs, as_torch):
    x = make_inputs("gla")["q"]
    assert _arrays.as_input(x) is x
    t = as_torch({"q": x})["q"].requires_grad_()
    assert data_ptr(_arrays.as_input(t)) == data_ptr(t)  # detached, same memory


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_outputs_are_written_in_place(kind, make_inputs, as_torch):
    inputs = make_inputs("gated_delta_rule", initial_state=True, dtype=np.float32)
    if kind == "torch":
        inputs = as_torch(inputs)
    o_shape, s_shape = linattn.output_shapes("gated_delta_rule", **inputs, output_final_state=True)
    o = _arrays.empty_like(inputs["q"], o_shape, "float32")
    s = _arrays.empty_like(inputs["q"], s_shape, "float32")
    pointers = (data_ptr(o), data_ptr(s))
    result = linattn.forward("gated_delta_rule", "reference", **inputs, output_final_state=True,
                             o=o, final_state=s)
    assert result is None
    assert (data_ptr(o), data_ptr(s)) == pointers
    o_ref, s_ref = reference.gated_delta_rule(**inputs, output_final_state=True)
    np.testing.assert_array_equal(np.asarray(o), np.asarray(o_ref))
    np.testing.assert_array_equal(np.asarray(s), np.asarray(s_ref))


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_outputs_have_the_kind_of_the_inputs(kind, make_inputs, as_torch):
    inputs = make_inputs("gla", initial_state=True, dtype=np.float32)
    if kind == "torch":
        inputs = as_torch(inputs)
    o, s = reference.gla(**inputs, output_final_state=True)
    grads = reference.backward("gla", **inputs, do=o, dfinal_state=s)
    assert sorted(grads) == ["dgk", "dinitial_state", "dk", "dq", "dv"]
    for x in (o, s, *grads.values()):
        assert _arrays.is_torch(x) == (kind == "torch")
        assert _arrays.is_torch(x) or isinstance(x, np.ndarray)
    for name, x in inputs.items():
        assert _arrays.dtype_name(grads["d" + name]) == _arrays.dtype_name(x)
        assert tuple(grads["d" + name].shape) == tuple(x.shape)
    assert reference.gla(**inputs)[1] is None  # no final state unless asked


def fake_device_capsule(array: np.ndarray, device_type: int, device_id: int):
    """A DLPack capsule over `array`'s memory that claims to live on another device (this
    machine has no GPU; the binding must refuse it before reading anything)."""

    class DLTensor(ctypes.Structure):
        _fields_ = [("data", ctypes.c_void_p), ("device_type", ctypes.c_int32),
                    ("device_id", ctypes.c_int32), ("ndim", ctypes.c_int32),
                    ("code", ctypes.c_uint8), ("bits", ctypes.c_uint8),
                    ("lanes", ctypes.c_uint16), ("shape", ctypes.POINTER(ctypes.c_int64)),
                    ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]

    class DLManagedTensor(ctypes.Structure):
        _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p),
                    ("deleter", ctypes.c_void_p)]  # NULL: nothing to free

    shape = (ctypes.c_int64 * array.ndim)(*array.shape)
    managed = DLManagedTensor(DLTensor(array.ctypes.data, device_type, device_id, array.ndim,
                                       2, 32, 1, shape, None, 0), None, None)
    new_capsule = ctypes.pythonapi.PyCapsule_New
    new_capsule.restype = ctypes.py_object
    new_capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    capsule = new_capsule(ctypes.addressof(managed), b"dltensor", None)
    return capsule, (managed, shape, array)  # the second item keeps the memory alive


def test_non_cpu_tensor_is_refused_with_its_device(make_inputs):
    inputs = make_inputs("linear_attn", dtype=np.float32)
    capsule, keep_alive = fake_device_capsule(inputs["q"], device_type=2, device_id=1)
    with pytest.raises(ValueError, match=r"q: linattn runs on the CPU only; got a tensor on "
                                         r"device cuda:1"):
        linattn.output_shapes("linear_attn", **{**inputs, "q": capsule})
    del keep_alive


def test_module_api():
    assert linattn.__version__ == linattn.version() == "0.1.0"
    assert OPS == ["linear_attn", "simple_gla", "gla", "delta_rule", "gated_delta_rule",
                   "delta_product", "retention", "noncausal_linear_attn", "kda"]
    assert all(linattn.has_form(op, "reference", backward=b) for op in OPS for b in (False, True))
    q = np.zeros((1, 3, 2, 4), np.float32)
    v = np.zeros((1, 3, 4, 5), np.float32)
    assert linattn.output_shapes("linear_attn", q, q, v) == ((1, 3, 4, 5), None)
    assert linattn.output_shapes("linear_attn", q, q, v, output_final_state=True) == (
        (1, 3, 4, 5), (1, 4, 4, 5))
