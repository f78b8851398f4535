// The public LLA entry points (include/linattn/lla.hpp): validation of every argument, once,
// with messages naming the argument, what was expected and what was given; then dispatch.
#include <cmath>
#include <string>
#include <vector>

#include "core/float_mode.hpp"
#include "linattn/error.hpp"
#include "ops/common/validator.hpp"
#include "ops/lla/lla.hpp"

namespace linattn::lla {
namespace {

constexpr const char* kName = "lla_attention";

void check_tensor(const char* name, const TensorView& t, std::initializer_list<int64_t> shape,
                  const char* layout) {
  if (!t.given()) fail(kName, ": ", name, " is required but was not given");
  // Sizes >= 1 whose element count fits, a non-null and aligned pointer.
  Validator(kName).basic(name, t);
  if (!is_floating(t.dtype))
    fail(kName, ": ", name, " must be float32, bfloat16 or float64, got ", dtype_name(t.dtype));
  bool ok = t.ndim == static_cast<int32_t>(shape.size());
  int i = 0;
  for (int64_t s : shape) ok = ok && (s < 0 ? t.shape[i] >= 1 : t.shape[i] == s), ++i;
  if (!ok) {
    std::string want = "[";
    i = 0;
    for (int64_t s : shape) want += (i++ ? ", " : "") + (s < 0 ? std::string("*") : std::to_string(s));
    fail(kName, ": ", name, " must have shape ", layout, " = ", want, "], got ", t.shape_str());
  }
}

void check_output(const char* name, const TensorView& t) {
  if (!t.is_contiguous())
    fail(kName, ": output ", name, " must be contiguous (row-major), got shape ", t.shape_str());
}

// Every input view, by name (not given ones included: no_overlaps() skips them).
std::vector<Validator::Named> inputs(const Args& a) {
  return {{"q", &a.q}, {"k", &a.k}, {"v", &a.v},
          {"ridge_lambda_per_token", &a.ridge_lambda_per_token}, {"cu_seqlens", &a.cu_seqlens}};
}

void check_positive(const char* name, double x) {
  if (!(x > 0) || !std::isfinite(x)) fail(kName, ": ", name, " must be finite and > 0, got ", x);
}

}  // namespace

Problem make_problem(const Args& a) {
  Problem p{};
  p.a = &a;
  check_tensor("q", a.q, {-1, -1, -1, -1}, "[B, Tq, H, K]");
  p.B = a.q.shape[0];
  p.Tq = a.q.shape[1];
  p.H = a.q.shape[2];
  p.K = a.q.shape[3];
  check_tensor("k", a.k, {p.B, -1, p.H, p.K}, "[B, T, H, K]");
  p.T = a.k.shape[1];
  check_tensor("v", a.v, {p.B, p.T, p.H, -1}, "[B, T, H, V]");
  p.V = a.v.shape[3];
  if (a.k.dtype != a.q.dtype || a.v.dtype != a.q.dtype)
    fail(kName, ": q, k and v must have one dtype, got ", dtype_name(a.q.dtype), ", ",
         dtype_name(a.k.dtype), " and ", dtype_name(a.v.dtype));
  if (p.Tq > p.T)
    fail(kName, ": q may not have more tokens than k (the queries are the last Tq of the T "
         "keys), got Tq = ", p.Tq, " and T = ", p.T);
  if (std::isnan(a.scale)) {
    p.scale = 1.0 / std::sqrt(static_cast<double>(p.K));
  } else if (!std::isfinite(a.scale)) {
    fail(kName, ": scale must be finite, got ", a.scale);
  } else {
    p.scale = a.scale;
  }
  if (a.ridge_lambda_per_token.given()) {
    check_tensor("ridge_lambda_per_token", a.ridge_lambda_per_token, {p.B, p.Tq, p.H}, "[B, Tq, H]");
    for (int64_t b = 0; b < p.B; ++b)
      for (int64_t t = 0; t < p.Tq; ++t)
        for (int64_t h = 0; h < p.H; ++h) {
          const double x = p.lambda(b, t, h);
          if (!(x > 0) || !std::isfinite(x))
            fail(kName, ": ridge_lambda_per_token must be finite and > 0 (the ridge keeps every "
                 "Sigma_i invertible), got ", x, " at [", b, ", ", t, ", ", h, "]");
        }
  } else {
    check_positive("ridge_lambda", a.ridge_lambda);
  }
  if (!(a.delta_eps >= 0) || !std::isfinite(a.delta_eps))
    fail(kName, ": delta_eps must be finite and >= 0, got ", a.delta_eps);
  if (!(a.cg_atol >= 0) || !(a.cg_rtol >= 0))
    fail(kName, ": cg_atol and cg_rtol must be >= 0, got ", a.cg_atol, " and ", a.cg_rtol);
  if (a.cg_max_iters < 1) fail(kName, ": cg_max_iters must be >= 1, got ", a.cg_max_iters);

  if (a.cu_seqlens.given()) {
    const TensorView& cu = a.cu_seqlens;
    Validator(kName).basic("cu_seqlens", cu);
    if ((cu.dtype != DType::i32 && cu.dtype != DType::i64) || cu.ndim != 1 || cu.shape[0] < 2)
      fail(kName, ": cu_seqlens must be an int32 or int64 vector of N+1 >= 2 offsets, got ",
           dtype_name(cu.dtype), " of shape ", cu.shape_str());
    if (p.B != 1) fail(kName, ": with cu_seqlens the batch size B must be 1, got ", p.B);
    if (p.Tq != p.T)
      fail(kName, ": with cu_seqlens q and k must have the same length, got Tq = ", p.Tq,
           " and T = ", p.T);
    if (load_index(cu, 0) != 0) fail(kName, ": cu_seqlens must start at 0, got ", load_index(cu, 0));
    for (int64_t i = 1; i < cu.shape[0]; ++i) {
      const int64_t lo = load_index(cu, i - 1), hi = load_index(cu, i);
      if (hi <= lo)
        fail(kName, ": cu_seqlens must be strictly increasing, got cu_seqlens[", i - 1, "] = ", lo,
             " and cu_seqlens[", i, "] = ", hi);
      p.sequences.push_back({0, lo, hi - lo, lo, hi - lo});
    }
    if (p.sequences.back().key0 + p.sequences.back().keys != p.T)
      fail(kName, ": cu_seqlens must end at T = ", p.T, ", got ",
           p.sequences.back().key0 + p.sequences.back().keys);
  } else {
    for (int64_t b = 0; b < p.B; ++b) p.sequences.push_back({b, 0, p.T, 0, p.Tq});
  }
  return p;
}

bool has_form(Form form, bool backward_pass) {
  return form == Form::reference || form == Form::chunk || !backward_pass;
}

void forward(Form form, const Args& args, const TensorView& o) {
  const Problem p = make_problem(args);
  check_tensor("o", o, {p.B, p.Tq, p.H, p.V}, "[B, Tq, H, V]");
  if (o.dtype != args.v.dtype)
    fail(kName, ": o must have the dtype of v (", dtype_name(args.v.dtype), "), got ",
         dtype_name(o.dtype));
  check_output("o", o);
  Validator(kName).no_overlaps({{"o", &o}}, inputs(args));
  if (form == Form::reference || args.q.dtype == DType::f64) return reference_forward(p, o);
  const FlushDenormals mode;
  if (form == Form::chunk) return chunk_forward(p, o);
  return recurrent_forward(p, o);
}

void backward(Form form, const Args& args, const TensorView& d_o, const Grads& grads) {
  if (!has_form(form, true))
    fail(kName, ": form '", form_name(form), "' has no backward; the forms with one are "
         "reference and chunk");
  const Problem p = make_problem(args);
  check_tensor("do", d_o, {p.B, p.Tq, p.H, p.V}, "[B, Tq, H, V]");
  const std::pair<const char*, std::pair<const TensorView*, const TensorView*>> pairs[] = {
      {"dq", {&grads.dq, &args.q}},
      {"dk", {&grads.dk, &args.k}},
      {"dv", {&grads.dv, &args.v}},
      {"dridge_lambda_per_token", {&grads.dridge_lambda_per_token, &args.ridge_lambda_per_token}}};
  for (const auto& [name, views] : pairs) {
    const TensorView& grad = *views.first;
    const TensorView& input = *views.second;
    if (!grad.given()) continue;
    if (!input.given()) fail(kName, ": ", name, " was given but its input ", name + 1, " was not");
    Validator(kName).basic(name, grad);
    bool same = grad.ndim == input.ndim && grad.data != nullptr && is_floating(grad.dtype);
    for (int i = 0; same && i < input.ndim; ++i) same = grad.shape[i] == input.shape[i];
    if (!same)
      fail(kName, ": ", name, " must be a floating tensor of its input's shape ", input.shape_str(),
           ", got ", dtype_name(grad.dtype), " of shape ", grad.shape_str());
    check_output(name, grad);
  }
  std::vector<Validator::Named> read = inputs(args);
  read.push_back({"do", &d_o});
  Validator(kName).no_overlaps({{"dq", &grads.dq}, {"dk", &grads.dk}, {"dv", &grads.dv},
                                {"dridge_lambda_per_token", &grads.dridge_lambda_per_token}},
                               read);
  if (form == Form::reference || args.q.dtype == DType::f64) return reference_backward(p, d_o, grads);
  const FlushDenormals mode;
  return chunk_backward(p, d_o, grads);
}

}  // namespace linattn::lla
