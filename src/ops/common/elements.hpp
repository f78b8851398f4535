// Element offsets (in elements) into views of any strides, for the ops that address their
// tensors element by element (the oracles, the decode steps, small per-channel parameters).
#pragma once

#include <cstdint>

#include "linattn/tensor.hpp"

namespace linattn {

inline int64_t at2(const TensorView& t, int64_t i0, int64_t i1) {
  return i0 * t.strides[0] + i1 * t.strides[1];
}
inline int64_t at3(const TensorView& t, int64_t i0, int64_t i1, int64_t i2) {
  return i0 * t.strides[0] + i1 * t.strides[1] + i2 * t.strides[2];
}
inline int64_t at4(const TensorView& t, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
  return at3(t, i0, i1, i2) + i3 * t.strides[3];
}

}  // namespace linattn
