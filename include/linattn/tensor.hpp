// Non-owning tensor views and dtypes: how every linattn entry point receives memory.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

namespace linattn {

enum class DType : int32_t { f32 = 0, bf16 = 1, f64 = 2, i32 = 3, i64 = 4 };

const char* dtype_name(DType dtype);
std::size_t dtype_size(DType dtype);
bool is_floating(DType dtype);

inline constexpr int kMaxDims = 6;

// A view of caller-owned memory: pointer, dtype, shape and strides (in elements, not bytes).
// A default-constructed view (ndim == 0) means "argument not given".
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::f32;
  int32_t ndim = 0;
  std::array<int64_t, kMaxDims> shape{};
  std::array<int64_t, kMaxDims> strides{};

  bool given() const { return ndim > 0; }
  int64_t numel() const;
  bool is_contiguous() const;
  std::string shape_str() const;  // "[2, 100, 4, 64]"

  // A row-major contiguous view over `data`.
  static TensorView contiguous(void* data, DType dtype, std::initializer_list<int64_t> shape);
  template <typename Container>
  static TensorView contiguous_from(void* data, DType dtype, const Container& shape) {
    TensorView t;
    t.data = data;
    t.dtype = dtype;
    t.ndim = static_cast<int32_t>(shape.size());
    int i = 0;
    for (auto s : shape) t.shape[i++] = static_cast<int64_t>(s);
    t.set_contiguous_strides();
    return t;
  }
  void set_contiguous_strides();
};

}  // namespace linattn
