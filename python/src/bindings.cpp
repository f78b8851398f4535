// linattn._core: the nanobind binding of the C++ API (include/linattn/ops.hpp).
//
// Zero-copy: every array argument arrives as an nb::ndarray (numpy, torch or anything else that
// speaks DLPack or the buffer protocol) and becomes a linattn::TensorView over the caller's own
// memory, strides included. Outputs are allocated by the Python side, in the framework of the
// inputs, and written in place here. No numeric work happens in this file: it converts, checks
// what only the binding can check (device, dtype code, rank), releases the GIL and calls C++.
// linattn::Error derives from std::invalid_argument, which nanobind raises as ValueError with
// the message unchanged.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "linattn/error.hpp"
#include "linattn/ops.hpp"
#include "linattn/tensor.hpp"
#include "views.hpp"


namespace nb = nanobind;
using namespace linattn_py;  // Input, Output, view() (views.hpp)

namespace {

// An op and its inputs, converted once for any entry point.
struct Call {
  linattn::Op op;
  const char* name;
  linattn::OpArgs args;
};

Call make_call(const std::string& op_name, const Input& q, const Input& k, const Input& v,
               const OptInput& g, const OptInput& gk, const OptInput& beta,
               const OptInput& initial_state, const OptInput& cu_seqlens,
               std::optional<double> scale, bool output_final_state, bool normalize,
               bool use_qk_l2norm_in_kernel, int32_t num_householder, const OptInput& a_in,
               const OptInput& b_in) {
  Call c{linattn::op_from_name(op_name), nullptr, {}};
  c.name = linattn::op_name(c.op);
  linattn::OpArgs& a = c.args;
  a.q = view(c.name, "q", q);
  a.k = view(c.name, "k", k);
  a.v = view(c.name, "v", v);
  a.g = view(c.name, "g", g);
  a.gk = view(c.name, "gk", gk);
  a.beta = view(c.name, "beta", beta);
  a.a = view(c.name, "a", a_in);
  a.b = view(c.name, "b", b_in);
  a.initial_state = view(c.name, "initial_state", initial_state);
  a.cu_seqlens = view(c.name, "cu_seqlens", cu_seqlens);
  a.scale = scale ? *scale : NAN;
  a.output_final_state = output_final_state;
  a.normalize = normalize;
  a.use_qk_l2norm_in_kernel = use_qk_l2norm_in_kernel;
  a.num_householder = num_householder;
  return c;
}

nb::tuple shape_tuple(const std::vector<int64_t>& dims) {
  nb::list out;
  for (int64_t d : dims) out.append(d);
  return nb::tuple(out);
}

}  // namespace

// The op inputs every entry point takes after `op` (and `form`): written once here as the C++
// parameters, the forwarding list and the Python argument names/defaults, so that forward,
// backward and output_shapes cannot drift apart.
#define LINATTN_INPUT_PARAMS                                                                   \
  const Input &q, const Input &k, const Input &v, const OptInput &g, const OptInput &gk,      \
      const OptInput &beta, const OptInput &initial_state, const OptInput &cu_seqlens,        \
      std::optional<double> scale, bool output_final_state, bool normalize,                   \
      bool use_qk_l2norm_in_kernel, int32_t num_householder, const OptInput &a,               \
      const OptInput &b
#define LINATTN_INPUT_VALUES                                                                   \
  q, k, v, g, gk, beta, initial_state, cu_seqlens, scale, output_final_state, normalize,      \
      use_qk_l2norm_in_kernel, num_householder, a, b
#define LINATTN_INPUT_ARGS                                                                     \
  nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("g").none() = nb::none(),                 \
      nb::arg("gk").none() = nb::none(), nb::arg("beta").none() = nb::none(),                 \
      nb::arg("initial_state").none() = nb::none(),                                           \
      nb::arg("cu_seqlens").none() = nb::none(), nb::arg("scale").none() = nb::none(),        \
      nb::arg("output_final_state") = false, nb::arg("normalize") = false,                    \
      nb::arg("use_qk_l2norm_in_kernel") = false, nb::arg("num_householder") = 1,             \
      nb::arg("a").none() = nb::none(), nb::arg("b").none() = nb::none()

void bind_tools(nb::module_& m);  // bind_tools.cpp: check runner, peak probe, threads
void bind_conv1d(nb::module_& m);  // bind_conv1d.cpp: causal_conv1d and its decode step
void bind_attention(nb::module_& m);  // bind_attention.cpp: softmax attention
void bind_scan(nb::module_& m);    // bind_scan.cpp: the selective scan and its decode step
void bind_lla(nb::module_& m);    // bind_lla.cpp: local linear attention
void bind_ssd(nb::module_& m);    // bind_ssd.cpp: Mamba-2's SSD scan

NB_MODULE(_core, m) {
  m.doc() = "linattn's C++ core (zero-copy over numpy/torch/DLPack CPU arrays)";
  bind_tools(m);
  bind_conv1d(m);
  bind_attention(m);
  bind_scan(m);
  bind_lla(m);
  bind_ssd(m);

  m.def("version", &linattn::version, "The C++ library version, \"major.minor.patch\".");

  m.def(
      "op_names",
      [] {
        nb::list names;
        for (int i = 0; i < linattn::kNumOps; ++i)
          names.append(linattn::op_name(static_cast<linattn::Op>(i)));
        return names;
      },
      "The names of the ops, in the order of linattn::Op.");

  m.def(
      "has_form",
      [](const std::string& op, const std::string& form, bool backward) {
        return linattn::has_form(linattn::op_from_name(op), linattn::form_from_name(form),
                                 backward);
      },
      nb::arg("op"), nb::arg("form"), nb::arg("backward") = false,
      "Whether `form` ('reference', 'chunk', 'recurrent') of `op` is implemented.");

  m.def(
      "output_shapes",
      [](const std::string& op, LINATTN_INPUT_PARAMS) {
        const Call c = make_call(op, LINATTN_INPUT_VALUES);
        const linattn::OutputShapes s = linattn::output_shapes(c.op, c.args);
        return nb::make_tuple(shape_tuple(s.o), s.final_state.empty()
                                                    ? nb::object(nb::none())
                                                    : nb::object(shape_tuple(s.final_state)));
      },
      nb::arg("op"), LINATTN_INPUT_ARGS,
      "Validates the inputs; returns (o_shape, final_state_shape or None).");

  m.def(
      "forward",
      [](const std::string& op, const std::string& form, LINATTN_INPUT_PARAMS, const Output& o,
         const OptOutput& final_state) {
        const Call c = make_call(op, LINATTN_INPUT_VALUES);
        const linattn::Form f = linattn::form_from_name(form);
        const linattn::OpOutputs out{view(c.name, "o", o),
                                     view(c.name, "final_state", final_state)};
        nb::gil_scoped_release no_gil;
        linattn::forward(c.op, f, c.args, out);
      },
      nb::arg("op"), nb::arg("form"), LINATTN_INPUT_ARGS, nb::kw_only(), nb::arg("o"),
      nb::arg("final_state").none() = nb::none(),
      "Runs `form` of `op`, writing o (and final_state) in place; allocate them with "
      "output_shapes().");

  m.def(
      "backward",
      [](const std::string& op, const std::string& form, LINATTN_INPUT_PARAMS,
         const Input& d_o, const OptInput& dfinal_state, const OptOutput& dq,
         const OptOutput& dk, const OptOutput& dv, const OptOutput& dg, const OptOutput& dgk,
         const OptOutput& dbeta, const OptOutput& dinitial_state, const OptOutput& da,
         const OptOutput& db) {
        const Call c = make_call(op, LINATTN_INPUT_VALUES);
        const linattn::Form f = linattn::form_from_name(form);
        const linattn::OpGradOutputs grad_out{view(c.name, "d_o", d_o),
                                              view(c.name, "dfinal_state", dfinal_state)};
        const linattn::OpGrads grads{view(c.name, "dq", dq),
                                     view(c.name, "dk", dk),
                                     view(c.name, "dv", dv),
                                     view(c.name, "dg", dg),
                                     view(c.name, "dgk", dgk),
                                     view(c.name, "dbeta", dbeta),
                                     view(c.name, "dinitial_state", dinitial_state),
                                     view(c.name, "da", da),
                                     view(c.name, "db", db)};
        nb::gil_scoped_release no_gil;
        linattn::backward(c.op, f, c.args, grad_out, grads);
      },
      nb::arg("op"), nb::arg("form"), LINATTN_INPUT_ARGS, nb::kw_only(), nb::arg("d_o"),
      nb::arg("dfinal_state").none() = nb::none(), nb::arg("dq").none() = nb::none(),
      nb::arg("dk").none() = nb::none(), nb::arg("dv").none() = nb::none(),
      nb::arg("dg").none() = nb::none(), nb::arg("dgk").none() = nb::none(),
      nb::arg("dbeta").none() = nb::none(), nb::arg("dinitial_state").none() = nb::none(),
      nb::arg("da").none() = nb::none(), nb::arg("db").none() = nb::none(),
      "Gradients of `form` of `op`: writes each given gradient array (dq, dk, ...) in place.");
}

#undef LINATTN_INPUT_PARAMS
#undef LINATTN_INPUT_VALUES
#undef LINATTN_INPUT_ARGS
