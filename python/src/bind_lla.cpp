// Binding of Local Linear Attention (include/linattn/lla.hpp): forward and backward of a form,
// writing caller-allocated outputs in place (python/linattn/lla.py allocates them). No numeric
// work here: views, then C++ with the GIL released.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <cmath>
#include <optional>
#include <string>

#include "views.hpp"
#include "linattn/lla.hpp"

namespace nb = nanobind;
using namespace linattn_py;

namespace {

constexpr const char* kName = "lla_attention";

linattn::lla::Args lla_args(const Input& q, const Input& k, const Input& v, double ridge_lambda,
                            const OptInput& ridge_lambda_per_token, const OptInput& cu_seqlens,
                            std::optional<double> scale, double delta_eps, double cg_atol,
                            double cg_rtol, int32_t cg_max_iters, bool cg_use_preconditioner,
                            const std::string& solver) {
  linattn::lla::Args a;
  a.q = view(kName, "q", q);
  a.k = view(kName, "k", k);
  a.v = view(kName, "v", v);
  a.ridge_lambda = ridge_lambda;
  a.ridge_lambda_per_token = view(kName, "ridge_lambda", ridge_lambda_per_token);
  a.cu_seqlens = view(kName, "cu_seqlens", cu_seqlens);
  a.scale = scale ? *scale : NAN;
  a.delta_eps = delta_eps;
  a.cg_atol = cg_atol;
  a.cg_rtol = cg_rtol;
  a.cg_max_iters = cg_max_iters;
  a.cg_use_preconditioner = cg_use_preconditioner;
  if (solver == "direct") {
    a.solver = linattn::lla::Solver::direct;
  } else if (solver != "cg") {
    linattn::fail(kName, ": solver must be 'cg' or 'direct', got '", solver, "'");
  }
  return a;
}

// Runs call(a) without the GIL, counting its work; returns the counters (linattn::lla::Stats).
template <typename Call>
nb::dict counted(linattn::lla::Args& a, Call&& call) {
  linattn::lla::Stats s;
  a.stats = &s;
  {
    nb::gil_scoped_release no_gil;
    call(a);
  }
  nb::dict d;
  d["tile_pairs"] = s.tile_pairs;
  d["cg_pairs"] = s.cg_pairs;
  d["key_pairs"] = s.key_pairs;
  return d;
}

}  // namespace

// The options every entry point takes after q, k, v: one list for parameters, values and names.
#define LLA_PARAMS                                                                             \
  double ridge_lambda, const OptInput &ridge_lambda_per_token, const OptInput &cu_seqlens,    \
      std::optional<double> scale, double delta_eps, double cg_atol, double cg_rtol,          \
      int32_t cg_max_iters, bool cg_use_preconditioner, const std::string &solver
#define LLA_VALUES                                                                             \
  ridge_lambda, ridge_lambda_per_token, cu_seqlens, scale, delta_eps, cg_atol, cg_rtol,       \
      cg_max_iters, cg_use_preconditioner, solver
#define LLA_ARGS                                                                               \
  nb::arg("ridge_lambda") = 10.0, nb::arg("ridge_lambda_per_token").none() = nb::none(),      \
      nb::arg("cu_seqlens").none() = nb::none(), nb::arg("scale").none() = nb::none(),        \
      nb::arg("delta_eps") = 1e-12, nb::arg("cg_atol") = 1e-12, nb::arg("cg_rtol") = 1e-12,   \
      nb::arg("cg_max_iters") = 32, nb::arg("cg_use_preconditioner") = false,                 \
      nb::arg("solver") = "cg"

void bind_lla(nb::module_& m) {
  m.def(
      "lla_forward",
      [](const std::string& form, const Input& q, const Input& k, const Input& v,
         const Output& o, LLA_PARAMS) {
        linattn::lla::Args a = lla_args(q, k, v, LLA_VALUES);
        const linattn::Form f = linattn::form_from_name(form);
        const linattn::TensorView out = view(kName, "o", o);
        return counted(a, [&](const linattn::lla::Args& args) { linattn::lla::forward(f, args, out); });
      },
      nb::arg("form"), nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::kw_only(), nb::arg("o"),
      LLA_ARGS,
      "LLA forward of `form` ('reference', 'chunk', 'recurrent'), writing o [B, Tq, H, V] in "
      "place; returns the work counters (linattn::lla::Stats; zero for the reference).");
  m.def(
      "lla_backward",
      [](const std::string& form, const Input& q, const Input& k, const Input& v,
         const Input& d_o, const OptOutput& dq, const OptOutput& dk, const OptOutput& dv,
         const OptOutput& dridge_lambda, LLA_PARAMS) {
        linattn::lla::Args a = lla_args(q, k, v, LLA_VALUES);
        const linattn::Form f = linattn::form_from_name(form);
        const linattn::TensorView g = view(kName, "do", d_o);
        const linattn::lla::Grads grads{view(kName, "dq", dq), view(kName, "dk", dk),
                                        view(kName, "dv", dv),
                                        view(kName, "dridge_lambda", dridge_lambda)};
        return counted(a, [&](const linattn::lla::Args& args) { linattn::lla::backward(f, args, g, grads); });
      },
      nb::arg("form"), nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("d_o"), nb::kw_only(),
      nb::arg("dq").none() = nb::none(), nb::arg("dk").none() = nb::none(),
      nb::arg("dv").none() = nb::none(), nb::arg("dridge_lambda").none() = nb::none(), LLA_ARGS,
      "LLA gradients of `form` ('reference', 'chunk'): writes each given gradient in place; "
      "returns the work counters.");
}

#undef LLA_PARAMS
#undef LLA_VALUES
#undef LLA_ARGS
