#include "ops/common/problem.hpp"

#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <utility>
#include <string>

#include "core/dtype.hpp"
#include "linattn/error.hpp"
#include "ops/common/validator.hpp"

namespace linattn {
namespace {

bool same_view(const TensorView& a, const TensorView& b) {
  if (a.data != b.data || a.dtype != b.dtype || a.ndim != b.ndim) return false;
  for (int i = 0; i < a.ndim; ++i)
    if (a.shape[i] != b.shape[i] || a.strides[i] != b.strides[i]) return false;
  return true;
}

// Every input view of a call, by name (not given ones included: disjoint() skips them).
std::vector<std::pair<const char*, const TensorView*>> inputs(const OpArgs& a) {
  return {{"q", &a.q}, {"k", &a.k}, {"v", &a.v}, {"g", &a.g}, {"gk", &a.gk}, {"beta", &a.beta},
          {"a", &a.a}, {"b", &a.b}, {"initial_state", &a.initial_state},
          {"cu_seqlens", &a.cu_seqlens}};
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
    check.absent("g", a.g, spec.takes_gk ? "this op has no scalar decay; its per-key-channel log "
                                           "decay, which fla calls g, is gk [B, T, HV, K]"
                                         : "this op has no scalar decay");
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

  if (spec.takes_ab) {  // the low-rank transition vectors, key-side like k
    for (auto [name, t] : {std::pair{"a", &a.a}, {"b", &a.b}}) {
      check.present(name, *t);
      check.basic(name, *t);
      check.same_dtype(name, *t, "q", a.q);
      check.shape(name, *t, {p.B, p.T, p.H, p.K}, "[B, T, H, K]");
    }
  } else {
    check.absent("a", a.a, "only dplr_delta_rule takes a low-rank transition");
    check.absent("b", a.b, "only dplr_delta_rule takes a low-rank transition");
  }

  p.sequences = check.sequences(a.cu_seqlens, p.B, p.T);

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
      {"dinitial_state", {&gr.dinitial_state, &a.initial_state}},
      {"da", {&gr.da, &a.a}},       {"db", {&gr.db, &a.b}}};
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
