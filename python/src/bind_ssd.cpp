// Mamba-2's SSD scan (include/linattn/ssd.hpp): x [B, T, H, P], dt [B, T, H], A [H],
// B/C [B, T, G, N], states [N_seq, H, P, N] — mamba_ssm's layout, read in place (any strides);
// python/linattn/ssd.py allocates the outputs.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <limits>
#include <string>

#include "linattn/ssd.hpp"
#include "views.hpp"

using namespace linattn_py;

namespace {

constexpr const char* kName = "ssd_scan";

linattn::SsdArgs make_args(const Input& x, const Input& dt, const Input& A, const Input& B,
                           const Input& C, const OptInput& D, const OptInput& z,
                           const OptInput& dt_bias, bool dt_softplus, double dt_min, double dt_max,
                           bool output_final_state, const OptInput& initial_state,
                           const OptInput& cu_seqlens) {
  linattn::SsdArgs a;
  a.x = view(kName, "x", x);
  a.dt = view(kName, "dt", dt);
  a.A = view(kName, "A", A);
  a.B = view(kName, "B", B);
  a.C = view(kName, "C", C);
  a.D = view(kName, "D", D);
  a.z = view(kName, "z", z);
  a.dt_bias = view(kName, "dt_bias", dt_bias);
  a.initial_state = view(kName, "initial_state", initial_state);
  a.cu_seqlens = view(kName, "cu_seqlens", cu_seqlens);
  a.dt_softplus = dt_softplus;
  a.dt_min = dt_min;
  a.dt_max = dt_max;
  a.output_final_state = output_final_state;
  return a;
}

}  // namespace

#define SSD_PARAMS                                                                              \
  const Input &x, const Input &dt, const Input &A, const Input &B, const Input &C,             \
      const OptInput &D, const OptInput &z, const OptInput &dt_bias, bool dt_softplus,         \
      double dt_min, double dt_max, bool output_final_state, const OptInput &initial_state,    \
      const OptInput &cu_seqlens
#define SSD_VALUES                                                                          \
  x, dt, A, B, C, D, z, dt_bias, dt_softplus, dt_min, dt_max, output_final_state,          \
      initial_state, cu_seqlens
#define SSD_ARGS                                                                                \
  nb::arg("x"), nb::arg("dt"), nb::arg("A"), nb::arg("B"), nb::arg("C"),                       \
      nb::arg("D").none() = nb::none(), nb::arg("z").none() = nb::none(),                      \
      nb::arg("dt_bias").none() = nb::none(), nb::arg("dt_softplus") = false,                  \
      nb::arg("dt_min") = 0.0, nb::arg("dt_max") = std::numeric_limits<double>::infinity(),   \
      nb::arg("output_final_state") = false, nb::arg("initial_state").none() = nb::none(),     \
      nb::arg("cu_seqlens").none() = nb::none()

void bind_ssd(nb::module_& m) {
  m.def(
      "ssd_output_shapes",
      [](SSD_PARAMS) {
        const linattn::SsdShapes s = linattn::ssd_output_shapes(make_args(SSD_VALUES));
        return nb::make_tuple(shape_or_none(s.y), shape_or_none(s.final_state));
      },
      SSD_ARGS, "Validates the inputs; returns (y_shape, final_state_shape or None).");

  m.def(
      "ssd_forward",
      [](const std::string& form, SSD_PARAMS, const Output& y, const OptOutput& final_state) {
        const linattn::SsdArgs a = make_args(SSD_VALUES);
        const linattn::Form f = linattn::form_from_name(form);
        const linattn::SsdOutputs out{view(kName, "y", y), view(kName, "final_state", final_state)};
        nb::gil_scoped_release no_gil;
        linattn::ssd_forward(f, a, out);
      },
      nb::arg("form"), SSD_ARGS, nb::kw_only(), nb::arg("y"),
      nb::arg("final_state").none() = nb::none(),
      "Runs `form` ('reference', 'chunk' or 'recurrent') of the SSD scan.");

  m.def(
      "ssd_backward",
      [](const std::string& form, SSD_PARAMS, const Input& dy, const OptInput& dfinal_state,
         const OptOutput& dx, const OptOutput& ddt, const OptOutput& dA, const OptOutput& dB,
         const OptOutput& dC, const OptOutput& dD, const OptOutput& dz, const OptOutput& ddt_bias,
         const OptOutput& dinitial_state) {
        const linattn::SsdArgs a = make_args(SSD_VALUES);
        const linattn::Form f = linattn::form_from_name(form);
        const linattn::SsdGradOutputs go{view(kName, "dy", dy),
                                         view(kName, "dfinal_state", dfinal_state)};
        const linattn::SsdGrads g{view(kName, "dx", dx),       view(kName, "ddt", ddt),
                                  view(kName, "dA", dA),       view(kName, "dB", dB),
                                  view(kName, "dC", dC),       view(kName, "dD", dD),
                                  view(kName, "dz", dz),       view(kName, "ddt_bias", ddt_bias),
                                  view(kName, "dinitial_state", dinitial_state)};
        nb::gil_scoped_release no_gil;
        linattn::ssd_backward(f, a, go, g);
      },
      nb::arg("form"), SSD_ARGS, nb::kw_only(), nb::arg("dy"),
      nb::arg("dfinal_state").none() = nb::none(), nb::arg("dx").none() = nb::none(),
      nb::arg("ddt").none() = nb::none(), nb::arg("dA").none() = nb::none(),
      nb::arg("dB").none() = nb::none(), nb::arg("dC").none() = nb::none(),
      nb::arg("dD").none() = nb::none(), nb::arg("dz").none() = nb::none(),
      nb::arg("ddt_bias").none() = nb::none(), nb::arg("dinitial_state").none() = nb::none(),
      "Gradients of the SSD scan: writes each given gradient array in place.");
}

#undef SSD_PARAMS
#undef SSD_VALUES
#undef SSD_ARGS
