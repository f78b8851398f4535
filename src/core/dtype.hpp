// Element access for the dtypes linattn accepts: bf16 is a storage type, widened on load.
#pragma once

#include <cstdint>
#include <cstring>

#include "linattn/tensor.hpp"

namespace linattn {

inline float bf16_to_f32(uint16_t bits) {
  uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float out;
  std::memcpy(&out, &wide, sizeof out);
  return out;
}

// Round to nearest even; NaN stays NaN (quiet bit forced so truncation cannot make it Inf).
inline uint16_t f32_to_bf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// Reads element `offset` (in elements) of a floating or integer buffer as double.
inline double load_as_double(const void* data, DType dtype, int64_t offset) {
  switch (dtype) {
    case DType::f32: return static_cast<const float*>(data)[offset];
    case DType::bf16: return bf16_to_f32(static_cast<const uint16_t*>(data)[offset]);
    case DType::f64: return static_cast<const double*>(data)[offset];
    case DType::i32: return static_cast<const int32_t*>(data)[offset];
    case DType::i64: return static_cast<double>(static_cast<const int64_t*>(data)[offset]);
  }
  return 0.0;
}

// Element `offset` as float, float32 read directly (per-element loops of small parameters
// and states, where the dtype switch of load_as_double would cost more than the load).
inline float load_as_float(const void* data, DType dtype, int64_t offset) {
  return dtype == DType::f32 ? static_cast<const float*>(data)[offset]
                             : static_cast<float>(load_as_double(data, dtype, offset));
}

// Writes a double into element `offset` of a floating buffer, rounding to its dtype.
inline void store_from_double(void* data, DType dtype, int64_t offset, double value) {
  switch (dtype) {
    case DType::f32: static_cast<float*>(data)[offset] = static_cast<float>(value); break;
    case DType::bf16:
      static_cast<uint16_t*>(data)[offset] = f32_to_bf16(static_cast<float>(value));
      break;
    case DType::f64: static_cast<double*>(data)[offset] = value; break;
    default: break;  // integer outputs do not exist; validation rejects them
  }
}

inline int64_t load_index(const TensorView& t, int64_t i) {
  const int64_t offset = i * t.strides[0];
  return t.dtype == DType::i32 ? static_cast<const int32_t*>(t.data)[offset]
                               : static_cast<const int64_t*>(t.data)[offset];
}

}  // namespace linattn
