// Input validation shared by every op's entry point (ops.hpp's ops and the families with an
// API of their own): each check throws linattn::Error naming the op, the argument, what was
// expected and what was given.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.hpp"
#include "linattn/error.hpp"
#include "linattn/tensor.hpp"
#include "ops/common/problem.hpp"

namespace linattn {

inline std::string dims_str(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

class Validator {
 public:
  explicit Validator(const char* op) : op_(op) {}

  void present(const char* name, const TensorView& t) const {
    if (!t.given()) fail(op_, ": ", name, " is required but was not given");
  }
  void absent(const char* name, const TensorView& t, const char* why) const {
    if (t.given()) fail(op_, ": ", name, " must not be given (", why, ")");
  }
  void basic(const char* name, const TensorView& t) const {
    if (t.ndim < 0 || t.ndim > kMaxDims)
      fail(op_, ": ", name, " has rank ", t.ndim, ", expected 1 to ", kMaxDims);
    int64_t total = 1;
    for (int i = 0; i < t.ndim; ++i) {
      if (t.shape[i] <= 0)
        fail(op_, ": ", name, " has a non-positive size ", t.shape[i], " in dimension ", i,
             " (shape ", t.shape_str(), "); every size must be >= 1");
      if (__builtin_mul_overflow(total, t.shape[i], &total))
        fail(op_, ": ", name, " has more elements than fit in 64 bits (shape ", t.shape_str(), ")");
    }
    int64_t bytes = 0;
    const auto size = static_cast<int64_t>(dtype_size(t.dtype));
    if (__builtin_mul_overflow(total, size, &bytes))
      fail(op_, ": ", name, " is larger than the address space (shape ", t.shape_str(), ")");
    // After the sizes: an empty tensor (a size 0) may come with a null pointer, and its size is
    // the problem to report.
    if (t.data == nullptr) fail(op_, ": ", name, " has a null data pointer");
    // Elements are read as their C++ type: a misaligned pointer would be undefined behaviour.
    if (size > 1 && reinterpret_cast<uintptr_t>(t.data) % size != 0)
      fail(op_, ": ", name, " has a data pointer ", t.data, " that is not aligned to ", size,
           " bytes (the size of a ", dtype_name(t.dtype), ")");
  }
  // Outputs are written while inputs are read, so no output may share memory with an input or
  // another output (no in-place, except the state: check_outputs). Conservative for strided
  // inputs: an output may not lie anywhere within the span of an input's elements.
  void disjoint(const char* name, const TensorView& t, const char* other_kind,
                const char* other_name, const TensorView& other) const {
    if (!t.given() || !other.given()) return;
    const auto [lo, hi] = byte_span(t);
    const auto [other_lo, other_hi] = byte_span(other);
    if (lo < other_hi && other_lo < hi)
      fail(op_, ": output ", name, " overlaps ", other_kind, " ", other_name,
           " in memory; outputs must not share memory with the inputs or with each other "
           "(in-place is not supported)");
  }
  // No output overlaps an input or an earlier output (each through basic() first; views not
  // given are skipped).
  using Named = std::pair<const char*, const TensorView*>;
  void no_overlaps(const std::vector<Named>& outputs, const std::vector<Named>& inputs) const {
    for (auto out = outputs.begin(); out != outputs.end(); ++out) {
      for (const auto& [name, input] : inputs) disjoint(out->first, *out->second, "input", name, *input);
      for (auto earlier = outputs.begin(); earlier != out; ++earlier)
        disjoint(out->first, *out->second, "output", earlier->first, *earlier->second);
    }
  }
  // A state updated in place may have any strides, but no two of its elements may share memory
  // (a stride 0 would make the update read what it just wrote). Sufficient condition checked:
  // ordered by |stride|, each dimension's stride steps past everything the smaller ones reach.
  void distinct_elements(const char* name, const TensorView& t) const {
    std::array<std::pair<__int128, int64_t>, kMaxDims> dims{};
    int n = 0;
    for (int i = 0; i < t.ndim; ++i)
      if (t.shape[i] > 1) dims[n++] = {t.strides[i] < 0 ? -static_cast<__int128>(t.strides[i]) : t.strides[i], t.shape[i]};
    std::sort(dims.begin(), dims.begin() + n);
    __int128 reach = 1;  // elements spanned by the dimensions of smaller stride
    for (int i = 0; i < n; ++i) {
      if (dims[i].first < reach)
        fail(op_, ": output ", name, " has elements that share memory (shape ", t.shape_str(),
             ", strides ", strides_str(t), "); a state updated in place needs distinct elements");
      reach += dims[i].first * (dims[i].second - 1);
    }
  }
  void floating(const char* name, const TensorView& t) const {
    if (!is_floating(t.dtype))
      fail(op_, ": ", name, " must be float32, bfloat16 or float64, got ", dtype_name(t.dtype));
  }
  void floating_input(const char* name, const TensorView& t) const {
    basic(name, t);
    floating(name, t);
  }
  // A required input: given, floating, of the expected shape.
  void input(const char* name, const TensorView& t, const std::vector<int64_t>& dims,
             const char* layout) const {
    present(name, t);
    optional_input(name, t, dims, layout);
  }
  // An optional input: if given, floating and of the expected shape.
  void optional_input(const char* name, const TensorView& t, const std::vector<int64_t>& dims,
                      const char* layout) const {
    if (!t.given()) return;
    floating_input(name, t);
    shape(name, t, dims, layout);
  }
  // A gradient output: optional; if given, its input must be given and it must be floating,
  // shaped like the input and contiguous.
  void gradient(const char* name, const TensorView& grad, const char* input_name,
                const TensorView& input) const {
    if (!grad.given()) return;
    if (!input.given()) fail(op_, ": ", name, " was given but its input ", input_name, " was not");
    floating_input(name, grad);
    shape(name, grad, std::vector<int64_t>(input.shape.begin(), input.shape.begin() + input.ndim),
          "(the shape of its input)");
    writable(name, grad);
  }
  // A required output: given, with the dtype of `like`, the expected shape, contiguous.
  void output(const char* name, const TensorView& t, const char* like_name, const TensorView& like,
              const std::vector<int64_t>& dims, const char* layout) const {
    present(name, t);
    basic(name, t);
    same_dtype(name, t, like_name, like);
    shape(name, t, dims, layout);
    writable(name, t);
  }
  // The final-state output: required (floating, shaped, contiguous) exactly when `wanted`.
  void state_output(const char* name, const TensorView& t, bool wanted,
                    const std::vector<int64_t>& dims, const char* layout) const {
    if (!wanted) return absent(name, t, "output_final_state is false");
    present(name, t);
    floating_input(name, t);
    shape(name, t, dims, layout);
    writable(name, t);
  }
  void same_dtype(const char* name, const TensorView& t, const char* ref_name,
                  const TensorView& ref) const {
    if (t.dtype != ref.dtype)
      fail(op_, ": ", name, " must have the dtype of ", ref_name, " (", dtype_name(ref.dtype),
           "), got ", dtype_name(t.dtype));
  }
  void rank(const char* name, const TensorView& t, int expected, const char* layout) const {
    if (t.ndim != expected)
      fail(op_, ": ", name, " must have rank ", expected, " ", layout, ", got rank ", t.ndim,
           " with shape ", t.shape_str());
  }
  void shape(const char* name, const TensorView& t, const std::vector<int64_t>& expected,
             const char* layout) const {
    bool ok = t.ndim == static_cast<int>(expected.size());
    for (int i = 0; ok && i < t.ndim; ++i) ok = t.shape[i] == expected[i];
    if (!ok)
      fail(op_, ": ", name, " must have shape ", layout, " = ", dims_str(expected), ", got ",
           t.shape_str());
  }
  // Outputs are written, so they must be dense: no overlap between elements.
  void writable(const char* name, const TensorView& t) const {
    if (!t.is_contiguous())
      fail(op_, ": output ", name, " must be contiguous (row-major), got shape ", t.shape_str(),
           " with strides ", strides_str(t));
  }
  // Every element x must satisfy lo <= x <= hi (NaN fails).
  void range(const char* name, const TensorView& t, double lo, double hi,
             const char* meaning) const {
    // Common case first: a contiguous float32 tensor that is in range, checked in one
    // branch-free pass (gates are scanned on every call, so this runs on the hot path).
    if (t.dtype == DType::f32 && t.is_contiguous()) {
      const float* x = static_cast<const float*>(t.data);
      const float flo = static_cast<float>(lo), fhi = static_cast<float>(hi);
      const int64_t n = t.numel();
      int ok = 1;
#pragma omp parallel for reduction(& : ok) schedule(static) if (n > (1 << 16))
      for (int64_t i = 0; i < n; ++i) ok &= static_cast<int>(x[i] >= flo) & static_cast<int>(x[i] <= fhi);
      if (ok) return;
    }
    std::array<int64_t, kMaxDims> index{};
    const int64_t n = t.numel();
    for (int64_t flat = 0; flat < n; ++flat) {
      int64_t offset = 0;
      for (int d = 0; d < t.ndim; ++d) offset += index[d] * t.strides[d];
      const double x = load_as_double(t.data, t.dtype, offset);
      if (!(x >= lo && x <= hi)) {
        std::string where = "[";
        for (int d = 0; d < t.ndim; ++d) where += (d ? ", " : "") + std::to_string(index[d]);
        fail(op_, ": ", name, " must be in [", lo, ", ", hi, "] (", meaning, "), got ", x,
             " at ", where, "]");
      }
      for (int d = t.ndim - 1; d >= 0; --d) {
        if (++index[d] < t.shape[d]) break;
        index[d] = 0;
      }
    }
  }
  // [first byte, one past the last byte] that a view (already through basic()) can touch.
  static std::pair<__int128, __int128> byte_span(const TensorView& t) {
    __int128 lo = 0, hi = 0;
    for (int i = 0; i < t.ndim; ++i) {
      const __int128 reach = static_cast<__int128>(t.shape[i] - 1) * t.strides[i];
      (reach < 0 ? lo : hi) += reach;
    }
    const auto size = static_cast<__int128>(dtype_size(t.dtype));
    const auto base = static_cast<__int128>(reinterpret_cast<uintptr_t>(t.data));
    return {base + lo * size, base + (hi + 1) * size};
  }
  static std::string strides_str(const TensorView& t) {
    std::string s = "[";
    for (int i = 0; i < t.ndim; ++i) s += (i ? ", " : "") + std::to_string(t.strides[i]);
    return s + "]";
  }
  // The sequences of a call: B rows of T tokens, or with cu_seqlens (int32/int64 offsets
  // [N+1], B = 1) one row split into N sequences.
  std::vector<Sequence> sequences(const TensorView& cu_seqlens, int64_t B, int64_t T) const {
    std::vector<Sequence> out;
    if (!cu_seqlens.given()) {
      for (int64_t b = 0; b < B; ++b) out.push_back({b, 0, T});
      return out;
    }
    basic("cu_seqlens", cu_seqlens);
    if (cu_seqlens.dtype != DType::i32 && cu_seqlens.dtype != DType::i64)
      fail(op_, ": cu_seqlens must be int32 or int64, got ", dtype_name(cu_seqlens.dtype));
    rank("cu_seqlens", cu_seqlens, 1, "[N+1]");
    if (B != 1)
      fail(op_, ": with cu_seqlens the batch size B must be 1 (flatten the sequences into "
           "one row), got B = ", B);
    const int64_t n_offsets = cu_seqlens.shape[0];
    if (n_offsets < 2) fail(op_, ": cu_seqlens must hold N+1 >= 2 offsets, got ", n_offsets);
    if (load_index(cu_seqlens, 0) != 0)
      fail(op_, ": cu_seqlens must start at 0, got ", load_index(cu_seqlens, 0));
    for (int64_t i = 1; i < n_offsets; ++i) {
      const int64_t lo = load_index(cu_seqlens, i - 1), hi = load_index(cu_seqlens, i);
      if (hi <= lo)
        fail(op_, ": cu_seqlens must be strictly increasing, got cu_seqlens[", i - 1, "] = ", lo,
             " and cu_seqlens[", i, "] = ", hi);
      out.push_back({0, lo, hi - lo});
    }
    const int64_t last = load_index(cu_seqlens, n_offsets - 1);
    if (last != T) fail(op_, ": cu_seqlens must end at T = ", T, ", got ", last);
    return out;
  }
  const char* op() const { return op_; }

 private:
  const char* op_;
};

}  // namespace linattn
