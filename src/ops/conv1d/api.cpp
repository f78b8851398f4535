// The entry points of include/linattn/conv1d.hpp: validate once, then dispatch to the oracle
// (reference.cpp) or the fast form (forward.cpp, backward.cpp). Implementations never validate.
#include "core/float_mode.hpp"
#include "ops/conv1d/conv1d.hpp"

#include "ops/common/validator.hpp"

namespace linattn {
namespace conv1d {
namespace {

void check_form(Form form) {
  if (form == Form::recurrent)
    fail(kName, ": the recurrent form is the decode step causal_conv1d_update; the full-sequence "
         "forms are reference and chunk");
  form_name(form);  // throws for an id out of range
}

}  // namespace

Problem make_problem(const Conv1dArgs& a) {
  Validator check(kName);
  check.present("x", a.x);
  check.floating_input("x", a.x);
  check.rank("x", a.x, 3, "[B, T, D]");
  check.present("weight", a.weight);
  check.floating_input("weight", a.weight);
  check.rank("weight", a.weight, 2, "[D, W]");
  Problem p{a.x.shape[0], a.x.shape[1], a.x.shape[2], a.weight.shape[1], {}, a.activation};
  check.shape("weight", a.weight, {p.D, p.W}, "[D, W] (D from x)");
  if (a.activation != Activation::none && a.activation != Activation::silu)
    fail(kName, ": activation must be none (0) or silu (1), got ", static_cast<int>(a.activation));
  check.optional_input("bias", a.bias, {p.D}, "[D]");
  check.optional_input("residual", a.residual, {p.B, p.T, p.D}, "[B, T, D] (the shape of x)");
  p.sequences = check.sequences(a.cu_seqlens, p.B, p.T);
  check.optional_input("initial_state", a.initial_state, {p.N(), p.D, p.W}, "[N, D, W]");
  return p;
}

}  // namespace conv1d

using conv1d::kName;

Conv1dShapes causal_conv1d_output_shapes(const Conv1dArgs& args) {
  const conv1d::Problem p = conv1d::make_problem(args);
  Conv1dShapes s{{p.B, p.T, p.D}, {}};
  if (args.output_final_state) s.final_state = {p.N(), p.D, p.W};
  return s;
}

void causal_conv1d_forward(Form form, const Conv1dArgs& args, const Conv1dOutputs& out) {
  conv1d::check_form(form);
  const conv1d::Problem p = conv1d::make_problem(args);
  Validator check(kName);
  check.output("y", out.y, "x", args.x, {p.B, p.T, p.D}, "[B, T, D]");
  check.state_output("final_state", out.final_state, args.output_final_state, {p.N(), p.D, p.W}, "[N, D, W]");
  check.no_overlaps({{"y", &out.y}, {"final_state", &out.final_state}},
                    {{"x", &args.x}, {"weight", &args.weight}, {"bias", &args.bias},
                     {"residual", &args.residual}, {"initial_state", &args.initial_state},
                     {"cu_seqlens", &args.cu_seqlens}});
  if (form == Form::reference || args.x.dtype == DType::f64) {
    conv1d::reference_forward(p, args, out);
  } else {
    const FlushDenormals mode;
    conv1d::fast_forward(p, args, out);
  }
}

void causal_conv1d_backward(Form form, const Conv1dArgs& args, const Conv1dGradOutputs& grad_out,
                            const Conv1dGrads& grads) {
  conv1d::check_form(form);
  const conv1d::Problem p = conv1d::make_problem(args);
  Validator check(kName);
  check.input("dy", grad_out.dy, {p.B, p.T, p.D}, "[B, T, D]");
  check.optional_input("dfinal_state", grad_out.dfinal_state, {p.N(), p.D, p.W}, "[N, D, W]");
  check.gradient("dx", grads.dx, "x", args.x);
  check.gradient("dweight", grads.dweight, "weight", args.weight);
  check.gradient("dbias", grads.dbias, "bias", args.bias);
  check.gradient("dresidual", grads.dresidual, "residual", args.residual);
  check.gradient("dinitial_state", grads.dinitial_state, "initial_state",
                     args.initial_state);
  check.no_overlaps({{"dx", &grads.dx}, {"dweight", &grads.dweight}, {"dbias", &grads.dbias},
                     {"dresidual", &grads.dresidual}, {"dinitial_state", &grads.dinitial_state}},
                    {{"x", &args.x}, {"weight", &args.weight}, {"bias", &args.bias},
                     {"residual", &args.residual}, {"initial_state", &args.initial_state},
                     {"cu_seqlens", &args.cu_seqlens}, {"dy", &grad_out.dy},
                     {"dfinal_state", &grad_out.dfinal_state}});
  if (form == Form::reference || args.x.dtype == DType::f64) {
    conv1d::reference_backward(p, args, grad_out, grads);
  } else {
    const FlushDenormals mode;
    conv1d::fast_backward(p, args, grad_out, grads);
  }
}

}  // namespace linattn
