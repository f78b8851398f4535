// Binding of include/linattn/scan.hpp: the selective scan (mamba's selective_scan_fn) and its
// decode step (selective_state_update). Zero-copy like bindings.cpp: python/linattn/scan.py
// passes mamba's channel-first arrays as token-major views (strides), allocates the outputs.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <optional>
#include <string>
#include <vector>

#include "linattn/scan.hpp"
#include "views.hpp"

using namespace linattn_py;

namespace {

constexpr const char* kName = "selective_scan";

linattn::ScanArgs make_args(const Input& u, const Input& delta, const Input& A, const Input& B,
                            const Input& C, const OptInput& D, const OptInput& z,
                            const OptInput& delta_bias, bool delta_softplus,
                            bool output_final_state, const OptInput& initial_state,
                            const OptInput& cu_seqlens) {
  linattn::ScanArgs a;
  a.u = view(kName, "u", u);
  a.delta = view(kName, "delta", delta);
  a.A = view(kName, "A", A);
  a.B = view(kName, "B", B);
  a.C = view(kName, "C", C);
  a.D = view(kName, "D", D);
  a.z = view(kName, "z", z);
  a.delta_bias = view(kName, "delta_bias", delta_bias);
  a.initial_state = view(kName, "initial_state", initial_state);
  a.cu_seqlens = view(kName, "cu_seqlens", cu_seqlens);
  a.delta_softplus = delta_softplus;
  a.output_final_state = output_final_state;
  return a;
}

}  // namespace

// mamba's order (u, delta, A, B, C, D, z, delta_bias, delta_softplus; return_last_state is
// output_final_state), then linattn's initial_state and cu_seqlens.
#define SCAN_PARAMS                                                                            \
  const Input &u, const Input &delta, const Input &A, const Input &B, const Input &C,         \
      const OptInput &D, const OptInput &z, const OptInput &delta_bias, bool delta_softplus,  \
      bool output_final_state, const OptInput &initial_state, const OptInput &cu_seqlens
#define SCAN_VALUES \
  u, delta, A, B, C, D, z, delta_bias, delta_softplus, output_final_state, initial_state, cu_seqlens
#define SCAN_ARGS                                                                              \
  nb::arg("u"), nb::arg("delta"), nb::arg("A"), nb::arg("B"), nb::arg("C"),                   \
      nb::arg("D").none() = nb::none(), nb::arg("z").none() = nb::none(),                     \
      nb::arg("delta_bias").none() = nb::none(), nb::arg("delta_softplus") = false,           \
      nb::arg("output_final_state") = false, nb::arg("initial_state").none() = nb::none(),    \
      nb::arg("cu_seqlens").none() = nb::none()

void bind_scan(nb::module_& m) {
  m.def(
      "selective_scan_output_shapes",
      [](SCAN_PARAMS) {
        const linattn::ScanShapes s = linattn::selective_scan_output_shapes(make_args(SCAN_VALUES));
        return nb::make_tuple(shape_or_none(s.y), shape_or_none(s.final_state));
      },
      SCAN_ARGS, "Validates the token-major inputs; returns (y_shape, final_state_shape or None).");

  m.def(
      "selective_scan_forward",
      [](const std::string& form, SCAN_PARAMS, const Output& y, const OptOutput& final_state) {
        const linattn::ScanArgs a = make_args(SCAN_VALUES);
        const linattn::Form f = linattn::form_from_name(form);
        const linattn::ScanOutputs out{view(kName, "y", y), view(kName, "final_state", final_state)};
        nb::gil_scoped_release no_gil;
        linattn::selective_scan_forward(f, a, out);
      },
      nb::arg("form"), SCAN_ARGS, nb::kw_only(), nb::arg("y"),
      nb::arg("final_state").none() = nb::none(),
      "Runs `form` ('reference' or 'chunk') of the selective scan on token-major views.");

  m.def(
      "selective_scan_backward",
      [](const std::string& form, SCAN_PARAMS, const Input& dy, const OptInput& dfinal_state,
         const OptOutput& du, const OptOutput& ddelta, const OptOutput& dA, const OptOutput& dB,
         const OptOutput& dC, const OptOutput& dD, const OptOutput& dz,
         const OptOutput& ddelta_bias, const OptOutput& dinitial_state) {
        const linattn::ScanArgs a = make_args(SCAN_VALUES);
        const linattn::Form f = linattn::form_from_name(form);
        const linattn::ScanGradOutputs go{view(kName, "dy", dy), view(kName, "dfinal_state", dfinal_state)};
        const linattn::ScanGrads g{view(kName, "du", du),       view(kName, "ddelta", ddelta),
                                   view(kName, "dA", dA),       view(kName, "dB", dB),
                                   view(kName, "dC", dC),       view(kName, "dD", dD),
                                   view(kName, "dz", dz),       view(kName, "ddelta_bias", ddelta_bias),
                                   view(kName, "dinitial_state", dinitial_state)};
        nb::gil_scoped_release no_gil;
        linattn::selective_scan_backward(f, a, go, g);
      },
      nb::arg("form"), SCAN_ARGS, nb::kw_only(), nb::arg("dy"),
      nb::arg("dfinal_state").none() = nb::none(), nb::arg("du").none() = nb::none(),
      nb::arg("ddelta").none() = nb::none(), nb::arg("dA").none() = nb::none(),
      nb::arg("dB").none() = nb::none(), nb::arg("dC").none() = nb::none(),
      nb::arg("dD").none() = nb::none(), nb::arg("dz").none() = nb::none(),
      nb::arg("ddelta_bias").none() = nb::none(), nb::arg("dinitial_state").none() = nb::none(),
      "Gradients of the selective scan: writes each given gradient array in place.");

  m.def(
      "selective_state_update",
      [](const Output& state, const Input& x, const Input& dt, const Input& A, const Input& B,
         const Input& C, const OptInput& D, const OptInput& z, const OptInput& dt_bias,
         bool dt_softplus, const Output& y) {
        constexpr const char* op = "selective_state_update";
        linattn::ScanStepArgs a;
        a.state = view(op, "state", state);
        a.x = view(op, "x", x);
        a.dt = view(op, "dt", dt);
        a.A = view(op, "A", A);
        a.B = view(op, "B", B);
        a.C = view(op, "C", C);
        a.D = view(op, "D", D);
        a.z = view(op, "z", z);
        a.dt_bias = view(op, "dt_bias", dt_bias);
        a.dt_softplus = dt_softplus;
        const linattn::TensorView out = view(op, "y", y);
        nb::gil_scoped_release no_gil;
        linattn::selective_state_update(a, out);
      },
      nb::arg("state"), nb::arg("x"), nb::arg("dt"), nb::arg("A"), nb::arg("B"), nb::arg("C"),
      nb::arg("D").none() = nb::none(), nb::arg("z").none() = nb::none(),
      nb::arg("dt_bias").none() = nb::none(), nb::arg("dt_softplus") = false, nb::kw_only(),
      nb::arg("y"), "One decode step: updates state [N, D, N_state] in place, writes y [N, D].");
}

#undef SCAN_PARAMS
#undef SCAN_VALUES
#undef SCAN_ARGS
