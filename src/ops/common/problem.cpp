#include "ops/common/problem.hpp"

#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <utility>
#include <string>

#include "core/dtype.hpp"
#include "linattn/error.hpp"

namespace linattn {
namespace {

std::string dims_str(const std::vector<int64_t>& dims) {
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
  // another output (no in-place, except the state: check_outputs). Conservative for strided inputs: an output may not lie
  // anywhere within the span of an input's elements.
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
  void floating(const char* name, const TensorView& t) const {
    if (!is_floating(t.dtype))
      fail(op_, ": ", name, " must be float32, bfloat16 or float64, got ", dtype_name(t.dtype));
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
  const char* op() const { return op_; }

 private:
  const char* op_;
};

bool same_view(const TensorView& a, const TensorView& b) {
  if (a.data != b.data || a.dtype != b.dtype || a.ndim != b.ndim) return false;
  for (int i = 0; i < a.ndim; ++i)
    if (a.shape[i] != b.shape[i] || a.strides[i] != b.strides[i]) return false;
  return true;
}

// Every input view of a call, by name (not given ones included: disjoint() skips them).
std::vector<std::pair<const char*, const TensorView*>> inputs(const OpArgs& a) {
  return {{"q", &a.q}, {"k", &a.k}, {"v", &a.v}, {"g", &a.g}, {"gk", &a.gk}, {"beta", &a.beta},
          {"initial_state", &a.initial_state}, {"cu_seqlens", &a.cu_seqlens}};
}

}  // namespace

double retention_log_decay(int64_t head) { return std::log1p(-std::exp2(-5.0 - static_cast<double>(head))); }

Problem make_problem(Op op, const OpArgs& a) {
  const OpSpec& spec = op_spec(op);
  Validator check(spec.name);
  Problem p{};
  p.op = op;
  p.spec = &spec;
  p.delta = spec.takes_beta;

  for (auto [name, t] : {std::pair{"q", &a.q}, {"k", &a.k}, {"v", &a.v}}) {
    check.present(name, *t);
    check.basic(name, *t);
    check.floating(name, *t);
    check.rank(name, *t, 4, name[0] == 'v' ? "[B, T, HV, V]" : "[B, T, H, K]");
  }
  check.same_dtype("k", a.k, "q", a.q);
  check.same_dtype("v", a.v, "q", a.q);

  if (a.num_householder < 1)
    fail(spec.name, ": num_householder must be >= 1, got ", a.num_householder);
  if (!spec.takes_num_householder && a.num_householder != 1)
    fail(spec.name, ": num_householder must be 1 (only delta_product takes several steps), got ",
         a.num_householder);
  if (!spec.takes_normalize && a.normalize)
    fail(spec.name, ": normalize=True is only supported by linear_attn and noncausal_linear_attn");
  if (!spec.takes_l2norm && a.use_qk_l2norm_in_kernel)
    fail(spec.name, ": use_qk_l2norm_in_kernel=True is only supported by the delta-rule ops");

  p.B = a.q.shape[0];
  p.T = a.q.shape[1];
  p.H = a.q.shape[2];
  p.K = a.q.shape[3];
  p.n_h = a.num_householder;
  p.HV = a.v.shape[2];
  p.V = a.v.shape[3];
  int64_t TK = 0;  // key/value tokens
  if (__builtin_mul_overflow(p.T, p.n_h, &TK))
    fail(spec.name, ": T * num_householder = ", p.T, " * ", p.n_h, " overflows 64 bits");
  check.shape("k", a.k, {p.B, TK, p.H, p.K},
              p.n_h > 1 ? "[B, T*num_householder, H, K]" : "[B, T, H, K]");
  if (a.v.shape[0] != p.B || a.v.shape[1] != TK)
    fail(spec.name, ": v must have shape [B, ", p.n_h > 1 ? "T*num_householder" : "T",
         ", HV, V] with B = ", p.B, " and ", p.n_h > 1 ? "T*num_householder" : "T", " = ", TK,
         ", got ", a.v.shape_str());
  if (p.HV % p.H != 0)
    fail(spec.name, ": the number of value heads HV = ", p.HV,
         " must be a multiple of the number of q/k heads H = ", p.H, " (v shape ",
         a.v.shape_str(), ", q shape ", a.q.shape_str(), ")");

  if (std::isnan(a.scale)) {
    p.scale = 1.0 / std::sqrt(static_cast<double>(p.K));
  } else {
    if (!std::isfinite(a.scale)) fail(spec.name, ": scale must be finite, got ", a.scale);
    p.scale = a.scale;
  }

  // Gates: shapes, then the documented ranges (log decays <= 0, beta in [0, 2]).
  if (spec.takes_g) {
    if (spec.requires_g) check.present("g", a.g);
    if (a.g.given()) {
      check.basic("g", a.g);
      check.floating("g", a.g);
      check.shape("g", a.g, {p.B, p.T, p.HV}, "[B, T, HV]");
      check.range("g", a.g, -std::numeric_limits<double>::infinity(), 0.0,
                  "a log decay: the multiplier exp(g) must be in [0, 1]");
    }
  } else {
    check.absent("g", a.g, "this op has no scalar decay");
  }
  if (spec.takes_gk) {
    check.present("gk", a.gk);
    check.basic("gk", a.gk);
    check.floating("gk", a.gk);
    check.shape("gk", a.gk, {p.B, p.T, p.HV, p.K}, "[B, T, HV, K]");
    check.range("gk", a.gk, -std::numeric_limits<double>::infinity(), 0.0,
                "a log decay: the multiplier exp(gk) must be in [0, 1]");
  } else {
    check.absent("gk", a.gk, "this op has no per-channel decay");
  }
  if (spec.takes_beta) {
    check.present("beta", a.beta);
    check.basic("beta", a.beta);
    check.floating("beta", a.beta);
    check.shape("beta", a.beta, {p.B, TK, p.HV},
                p.n_h > 1 ? "[B, T*num_householder, HV]" : "[B, T, HV]");
    check.range("beta", a.beta, 0.0, 2.0,
                "the delta-rule step; (0, 2) keeps the transition's eigenvalues in (-1, 1]");
  } else {
    check.absent("beta", a.beta, "this op has no delta-rule step");
  }

  // Sequences: B rows of T tokens, or one row split by cu_seqlens.
  if (a.cu_seqlens.given()) {
    check.basic("cu_seqlens", a.cu_seqlens);
    if (a.cu_seqlens.dtype != DType::i32 && a.cu_seqlens.dtype != DType::i64)
      fail(spec.name, ": cu_seqlens must be int32 or int64, got ", dtype_name(a.cu_seqlens.dtype));
    check.rank("cu_seqlens", a.cu_seqlens, 1, "[N+1]");
    if (p.B != 1)
      fail(spec.name, ": with cu_seqlens the batch size B must be 1 (flatten the sequences into "
           "one row), got B = ", p.B);
    const int64_t n_offsets = a.cu_seqlens.shape[0];
    if (n_offsets < 2)
      fail(spec.name, ": cu_seqlens must hold N+1 >= 2 offsets, got ", n_offsets);
    if (load_index(a.cu_seqlens, 0) != 0)
      fail(spec.name, ": cu_seqlens must start at 0, got ", load_index(a.cu_seqlens, 0));
    for (int64_t i = 1; i < n_offsets; ++i) {
      const int64_t lo = load_index(a.cu_seqlens, i - 1), hi = load_index(a.cu_seqlens, i);
      if (hi <= lo)
        fail(spec.name, ": cu_seqlens must be strictly increasing, got cu_seqlens[", i - 1,
             "] = ", lo, " and cu_seqlens[", i, "] = ", hi);
      p.sequences.push_back({0, lo, hi - lo});
    }
    const int64_t last = load_index(a.cu_seqlens, n_offsets - 1);
    if (last != p.T)
      fail(spec.name, ": cu_seqlens must end at T = ", p.T, ", got ", last);
  } else {
    for (int64_t b = 0; b < p.B; ++b) p.sequences.push_back({b, 0, p.T});
  }

  if (!spec.causal) {  // every token reads its whole sequence: no state goes in or comes out
    check.absent("initial_state", a.initial_state, "a non-causal op has no recurrent state");
    if (a.output_final_state)
      fail(spec.name, ": output_final_state=True is not supported (a non-causal op has no "
           "recurrent state to return)");
  }
  if (a.initial_state.given()) {
    check.basic("initial_state", a.initial_state);
    check.floating("initial_state", a.initial_state);
    check.shape("initial_state", a.initial_state, {p.N(), p.HV, p.K, p.V}, "[N, HV, K, V]");
  }
  return p;
}

void check_outputs(const Problem& p, const OpArgs& a, const OpOutputs& out) {
  Validator check(p.spec->name);
  check.present("o", out.o);
  check.basic("o", out.o);
  check.same_dtype("o", out.o, "v", a.v);
  check.shape("o", out.o, {p.B, p.T, p.HV, p.V}, "[B, T, HV, V]");
  check.writable("o", out.o);
  if (a.output_final_state) {
    check.present("final_state", out.final_state);
    check.basic("final_state", out.final_state);
    if (out.final_state.dtype != DType::f32 && out.final_state.dtype != DType::f64)
      fail(p.spec->name, ": final_state must be float32 or float64, got ",
           dtype_name(out.final_state.dtype));
    check.shape("final_state", out.final_state, {p.N(), p.HV, p.K, p.V}, "[N, HV, K, V]");
    check.writable("final_state", out.final_state);
  } else {
    check.absent("final_state", out.final_state, "output_final_state is false");
  }
  // The one alias allowed: final_state exactly the initial_state view, an in-place state update
  // (decode), since every work item reads its initial state before it writes its final state.
  const bool in_place = same_view(out.final_state, a.initial_state);
  for (const auto& [name, input] : inputs(a)) {
    check.disjoint("o", out.o, "input", name, *input);
    if (!(in_place && input == &a.initial_state))
      check.disjoint("final_state", out.final_state, "input", name, *input);
  }
  check.disjoint("final_state", out.final_state, "output", "o", out.o);
}

void check_grads(const Problem& p, const OpArgs& a, const OpGradOutputs& go, const OpGrads& gr) {
  Validator check(p.spec->name);
  check.present("do", go.d_o);
  check.basic("do", go.d_o);
  check.floating("do", go.d_o);
  check.shape("do", go.d_o, {p.B, p.T, p.HV, p.V}, "[B, T, HV, V]");
  if (!p.spec->causal) check.absent("dfinal_state", go.dfinal_state, "a non-causal op has no final state");
  if (go.dfinal_state.given()) {
    check.basic("dfinal_state", go.dfinal_state);
    check.floating("dfinal_state", go.dfinal_state);
    check.shape("dfinal_state", go.dfinal_state, {p.N(), p.HV, p.K, p.V}, "[N, HV, K, V]");
  }
  // A gradient view that is not given is not computed; one given for an absent input is an error.
  const std::pair<const char*, std::pair<const TensorView*, const TensorView*>> pairs[] = {
      {"dq", {&gr.dq, &a.q}},       {"dk", {&gr.dk, &a.k}},     {"dv", {&gr.dv, &a.v}},
      {"dg", {&gr.dg, &a.g}},       {"dgk", {&gr.dgk, &a.gk}},  {"dbeta", {&gr.dbeta, &a.beta}},
      {"dinitial_state", {&gr.dinitial_state, &a.initial_state}}};
  for (const auto& [name, views] : pairs) {
    const TensorView& grad = *views.first;
    const TensorView& input = *views.second;
    if (!grad.given()) continue;
    if (!input.given())
      fail(p.spec->name, ": ", name, " was given but its input ", name + 1, " was not");
    check.basic(name, grad);
    check.floating(name, grad);
    std::vector<int64_t> dims(input.shape.begin(), input.shape.begin() + input.ndim);
    check.shape(name, grad, dims, "(the shape of its input)");
    check.writable(name, grad);
  }
  auto read = inputs(a);
  read.push_back({"do", &go.d_o});
  read.push_back({"dfinal_state", &go.dfinal_state});
  for (size_t i = 0; i < std::size(pairs); ++i) {
    const auto& [name, views] = pairs[i];
    for (const auto& [input_name, input] : read) check.disjoint(name, *views.first, "input", input_name, *input);
    for (size_t j = 0; j < i; ++j)
      check.disjoint(name, *views.first, "output", pairs[j].first, *pairs[j].second.first);
  }
}

}  // namespace linattn
