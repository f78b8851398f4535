// Binding of include/linattn/conv1d.hpp: the causal depthwise conv1d (fla's causal_conv1d) and
// its decode step (causal_conv1d_update). Zero-copy like bindings.cpp: arrays become views,
// outputs are allocated by python/linattn/conv1d.py and written in place.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <optional>
#include <string>
#include <vector>

#include "linattn/conv1d.hpp"
#include "views.hpp"

using namespace linattn_py;

namespace {

constexpr const char* kName = "causal_conv1d";

// fla's activation names: None, "silu" or its alias "swish".
linattn::Activation activation_of(const char* op, const std::optional<std::string>& name) {
  if (!name) return linattn::Activation::none;
  if (*name == "silu" || *name == "swish") return linattn::Activation::silu;
  linattn::fail(op, ": activation must be None, 'silu' or 'swish', got '", *name, "'");
}

linattn::Conv1dArgs make_args(const Input& x, const Input& weight, const OptInput& bias,
                              const OptInput& residual, const OptInput& initial_state,
                              bool output_final_state, const std::optional<std::string>& activation,
                              const OptInput& cu_seqlens) {
  linattn::Conv1dArgs a;
  a.x = view(kName, "x", x);
  a.weight = view(kName, "weight", weight);
  a.bias = view(kName, "bias", bias);
  a.residual = view(kName, "residual", residual);
  a.initial_state = view(kName, "initial_state", initial_state);
  a.cu_seqlens = view(kName, "cu_seqlens", cu_seqlens);
  a.output_final_state = output_final_state;
  a.activation = activation_of(kName, activation);
  return a;
}

}  // namespace

// fla's argument order: x, weight, bias, residual, initial_state, output_final_state, activation,
// then cu_seqlens (fla has `backend` before it; linattn has one backend).
#define CONV1D_PARAMS                                                                         \
  const Input &x, const Input &weight, const OptInput &bias, const OptInput &residual,       \
      const OptInput &initial_state, bool output_final_state,                                \
      const std::optional<std::string>&activation, const OptInput &cu_seqlens
#define CONV1D_VALUES x, weight, bias, residual, initial_state, output_final_state, activation, cu_seqlens
#define CONV1D_ARGS                                                                           \
  nb::arg("x"), nb::arg("weight"), nb::arg("bias").none() = nb::none(),                      \
      nb::arg("residual").none() = nb::none(), nb::arg("initial_state").none() = nb::none(), \
      nb::arg("output_final_state") = false, nb::arg("activation").none() = nb::none(),      \
      nb::arg("cu_seqlens").none() = nb::none()

void bind_conv1d(nb::module_& m) {
  m.def(
      "causal_conv1d_output_shapes",
      [](CONV1D_PARAMS) {
        const linattn::Conv1dShapes s = linattn::causal_conv1d_output_shapes(make_args(CONV1D_VALUES));
        return nb::make_tuple(shape_or_none(s.y), shape_or_none(s.final_state));
      },
      CONV1D_ARGS, "Validates the inputs; returns (y_shape, final_state_shape or None).");

  m.def(
      "causal_conv1d_forward",
      [](const std::string& form, CONV1D_PARAMS, const Output& y, const OptOutput& final_state) {
        const linattn::Conv1dArgs a = make_args(CONV1D_VALUES);
        const linattn::Form f = linattn::form_from_name(form);
        const linattn::Conv1dOutputs out{view(kName, "y", y), view(kName, "final_state", final_state)};
        nb::gil_scoped_release no_gil;
        linattn::causal_conv1d_forward(f, a, out);
      },
      nb::arg("form"), CONV1D_ARGS, nb::kw_only(), nb::arg("y"),
      nb::arg("final_state").none() = nb::none(),
      "Runs `form` ('reference' or 'chunk') of causal_conv1d, writing y (and final_state) in place.");

  m.def(
      "causal_conv1d_backward",
      [](const std::string& form, CONV1D_PARAMS, const Input& dy, const OptInput& dfinal_state,
         const OptOutput& dx, const OptOutput& dweight, const OptOutput& dbias,
         const OptOutput& dresidual, const OptOutput& dinitial_state) {
        const linattn::Conv1dArgs a = make_args(CONV1D_VALUES);
        const linattn::Form f = linattn::form_from_name(form);
        const linattn::Conv1dGradOutputs go{view(kName, "dy", dy), view(kName, "dfinal_state", dfinal_state)};
        const linattn::Conv1dGrads g{view(kName, "dx", dx), view(kName, "dweight", dweight),
                                     view(kName, "dbias", dbias), view(kName, "dresidual", dresidual),
                                     view(kName, "dinitial_state", dinitial_state)};
        nb::gil_scoped_release no_gil;
        linattn::causal_conv1d_backward(f, a, go, g);
      },
      nb::arg("form"), CONV1D_ARGS, nb::kw_only(), nb::arg("dy"),
      nb::arg("dfinal_state").none() = nb::none(), nb::arg("dx").none() = nb::none(),
      nb::arg("dweight").none() = nb::none(), nb::arg("dbias").none() = nb::none(),
      nb::arg("dresidual").none() = nb::none(), nb::arg("dinitial_state").none() = nb::none(),
      "Gradients of causal_conv1d: writes each given gradient array in place.");

  m.def(
      "causal_conv1d_update",
      [](const Input& x, const Output& cache, const OptInput& residual, const OptInput& weight,
         const OptInput& bias, const std::optional<std::string>& activation, const Output& y) {
        constexpr const char* op = "causal_conv1d_update";
        linattn::Conv1dUpdateArgs a;
        a.x = view(op, "x", x);
        a.cache = view(op, "cache", cache);
        a.residual = view(op, "residual", residual);
        a.weight = view(op, "weight", weight);
        a.bias = view(op, "bias", bias);
        a.activation = activation_of(op, activation);
        const linattn::TensorView out = view(op, "y", y);
        nb::gil_scoped_release no_gil;
        linattn::causal_conv1d_update(a, out);
      },
      nb::arg("x"), nb::arg("cache"), nb::arg("residual").none() = nb::none(),
      nb::arg("weight").none() = nb::none(), nb::arg("bias").none() = nb::none(),
      nb::arg("activation").none() = nb::none(), nb::kw_only(), nb::arg("y"),
      "One decode step: shifts cache [N, D, W] in place and writes y [N, D].");
}

#undef CONV1D_PARAMS
#undef CONV1D_VALUES
#undef CONV1D_ARGS
