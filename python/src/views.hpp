// Arrays -> linattn::TensorView for every binding file: zero-copy views over numpy, torch or
// any DLPack/buffer-protocol CPU array, strides included; wrong devices and dtypes raise errors
// that name the op and the argument.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <optional>
#include <string>
#include <vector>

#include "linattn/error.hpp"
#include "linattn/tensor.hpp"

namespace nb = nanobind;

namespace linattn_py {

using Input = nb::ndarray<nb::ro>;  // read-only inputs: read-only numpy views are accepted
using Output = nb::ndarray<>;       // outputs must be writable
using OptInput = std::optional<Input>;
using OptOutput = std::optional<Output>;

inline std::string device_str(int type, int id) {
  const char* name = "unknown";
  switch (type) {
    case nb::device::cpu::value: name = "cpu"; break;
    case nb::device::cuda::value: name = "cuda"; break;
    case nb::device::cuda_host::value: name = "cuda_host"; break;
    case nb::device::cuda_managed::value: name = "cuda_managed"; break;
    case nb::device::rocm::value: name = "rocm"; break;
    case nb::device::rocm_host::value: name = "rocm_host"; break;
    case nb::device::metal::value: name = "mps"; break;
    case nb::device::opencl::value: name = "opencl"; break;
    case nb::device::vulkan::value: name = "vulkan"; break;
    case nb::device::oneapi::value: name = "xpu"; break;
    default: return "dlpack device type " + std::to_string(type) + ":" + std::to_string(id);
  }
  return std::string(name) + ":" + std::to_string(id);
}

inline std::string dtype_str(nb::dlpack::dtype dt) {
  using Code = nb::dlpack::dtype_code;
  std::string name;
  switch (static_cast<Code>(dt.code)) {
    case Code::Int: name = "int"; break;
    case Code::UInt: name = "uint"; break;
    case Code::Float: name = "float"; break;
    case Code::Bfloat: name = "bfloat"; break;
    case Code::Complex: name = "complex"; break;
    case Code::Bool: return "bool";
    default: name = "dlpack type code " + std::to_string(dt.code) + " of "; break;
  }
  name += std::to_string(dt.bits);
  if (dt.lanes != 1) name += " x" + std::to_string(dt.lanes) + " lanes";
  return name;
}

// The linattn dtype of an array, or TypeError naming the argument, the accepted and given dtypes.
inline linattn::DType to_dtype(const char* op, const char* name, nb::dlpack::dtype dt) {
  using Code = nb::dlpack::dtype_code;
  const auto code = static_cast<Code>(dt.code);
  if (dt.lanes == 1) {
    if (code == Code::Float && dt.bits == 32) return linattn::DType::f32;
    if (code == Code::Float && dt.bits == 64) return linattn::DType::f64;
    if (code == Code::Bfloat && dt.bits == 16) return linattn::DType::bf16;
    if (code == Code::Int && dt.bits == 32) return linattn::DType::i32;
    if (code == Code::Int && dt.bits == 64) return linattn::DType::i64;
  }
  // A floating or complex array where linattn takes one of its floating dtypes (float16 among
  // them): name exactly those. Integer arguments (cu_seqlens) are checked, with their dtypes
  // named, in C++; any other kind here is named against both.
  const bool floating = code == Code::Float || code == Code::Bfloat || code == Code::Complex;
  throw nb::type_error((std::string(op) + ": " + name + " must have dtype " +
                        (floating ? "float32, bfloat16 or float64"
                                  : "float32, bfloat16 or float64 (index arrays: int32 or int64)") +
                        ", got " + dtype_str(dt))
                           .c_str());
}

// A TensorView over the array's memory (nanobind strides are in elements, like TensorView's).
template <typename Array>
linattn::TensorView view(const char* op, const char* name, const Array& a) {
  if (a.device_type() != nb::device::cpu::value)
    linattn::fail(op, ": ", name, ": linattn runs on the CPU only; got a tensor on device ",
                  device_str(a.device_type(), a.device_id()));
  const int ndim = static_cast<int>(a.ndim());
  if (ndim < 1 || ndim > linattn::kMaxDims)
    linattn::fail(op, ": ", name, " must have 1 to ", linattn::kMaxDims,
                  " dimensions, got ", ndim);
  linattn::TensorView t;
  t.data = const_cast<void*>(static_cast<const void*>(a.data()));
  t.dtype = to_dtype(op, name, a.dtype());
  t.ndim = ndim;
  for (int i = 0; i < ndim; ++i) {
    t.shape[i] = static_cast<int64_t>(a.shape(i));
    t.strides[i] = a.stride(i);
  }
  return t;
}

template <typename Array>
linattn::TensorView view(const char* op, const char* name, const std::optional<Array>& a) {
  return a ? view(op, name, *a) : linattn::TensorView{};  // not given: an empty view
}

// A shape as a Python tuple, or None for an empty one (an output that is not produced).
inline nb::object shape_or_none(const std::vector<int64_t>& dims) {
  if (dims.empty()) return nb::none();
  nb::list out;
  for (int64_t d : dims) out.append(d);
  return nb::tuple(out);
}

}  // namespace linattn_py
