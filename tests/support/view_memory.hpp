// Memory behind hand-made linattn_tensor views, for the tests that build views element by
// element (the bad-input catalogue driver and the C API fuzzer): how many elements a view with
// arbitrary strides spans, and element access by dtype id.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "linattn/linattn.h"

namespace linattn_test {

inline size_t element_size(int32_t dtype) {
  switch (dtype) {
    case LINATTN_DTYPE_BF16: return 2;
    case LINATTN_DTYPE_F64: case LINATTN_DTYPE_I64: return 8;
    default: return 4;  // f32, i32, and unknown ids (never read: validation rejects them)
  }
}

// Elements from the lowest to the highest one a view touches (*lowest gets the lowest element's
// offset from data, <= 0 with negative strides), or -1 if a size is outside [1, max_size]: such a
// view cannot be backed, and validation must reject it before reading.
inline int64_t span_elements(const linattn_tensor& t, int64_t* lowest, int64_t max_size = 1 << 20) {
  int64_t lo = 0, hi = 0;
  for (int i = 0; i < t.ndim && i < LINATTN_MAX_DIMS; ++i) {
    if (t.shape[i] < 1 || t.shape[i] > max_size) return -1;
    const int64_t reach = (t.shape[i] - 1) * t.strides[i];
    (reach < 0 ? lo : hi) += reach;
  }
  *lowest = lo;
  return hi - lo + 1;
}

// Element `offset` (in elements from p) stored as / loaded from `dtype`.
inline void store_element(void* p, int32_t dtype, int64_t offset, double x) {
  unsigned char* at = static_cast<unsigned char*>(p) + offset * static_cast<int64_t>(element_size(dtype));
  switch (dtype) {
    case LINATTN_DTYPE_BF16: {  // truncation: bf16 is the top half of an f32
      const float f = static_cast<float>(x);
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      const uint16_t half = static_cast<uint16_t>(bits >> 16);
      std::memcpy(at, &half, 2);
      break;
    }
    case LINATTN_DTYPE_F64: std::memcpy(at, &x, 8); break;
    case LINATTN_DTYPE_I32: {  // values outside the type (NaN, Inf, huge) store 0
      const auto i = std::fabs(x) < 2e9 ? static_cast<int32_t>(x) : 0;
      std::memcpy(at, &i, 4);
      break;
    }
    case LINATTN_DTYPE_I64: {
      const auto i = std::fabs(x) < 9e18 ? static_cast<int64_t>(x) : 0;
      std::memcpy(at, &i, 8);
      break;
    }
    default: { const auto f = static_cast<float>(x); std::memcpy(at, &f, 4); }
  }
}

inline double load_element(const void* p, int32_t dtype, int64_t offset) {
  const unsigned char* at =
      static_cast<const unsigned char*>(p) + offset * static_cast<int64_t>(element_size(dtype));
  switch (dtype) {
    case LINATTN_DTYPE_BF16: {
      uint16_t half;
      std::memcpy(&half, at, 2);
      const uint32_t bits = static_cast<uint32_t>(half) << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
    case LINATTN_DTYPE_F64: { double d; std::memcpy(&d, at, 8); return d; }
    case LINATTN_DTYPE_I32: { int32_t i; std::memcpy(&i, at, 4); return i; }
    case LINATTN_DTYPE_I64: { int64_t i; std::memcpy(&i, at, 8); return static_cast<double>(i); }
    default: { float f; std::memcpy(&f, at, 4); return f; }
  }
}

// Offset (in elements) of the row-major element `flat` of a view, through its strides.
inline int64_t strided_offset(const linattn_tensor& t, int64_t flat) {
  int64_t offset = 0;
  for (int d = t.ndim - 1; d >= 0; --d) {
    offset += (flat % t.shape[d]) * t.strides[d];
    flat /= t.shape[d];
  }
  return offset;
}

}  // namespace linattn_test
