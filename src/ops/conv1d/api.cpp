// The entry points of include/linattn/conv1d.hpp: validate once, then dispatch to the oracle
// (reference.cpp) or the fast form (forward.cpp, backward.cpp). Implementations never validate.
#include "ops/conv1d/conv1d.hpp"

#include "ops/common/validator.hpp"

namespace linattn {
namespace conv1d {
namespace {

void check_floating_input(const Validator& check, const char* name, const TensorView& t) {
  check.basic(name, t);
  check.floating(name, t);
}

// A gradient view: optional; if given, its input must be given and it must be shaped like it.
void check_grad(const Validator& check, const char* name, const TensorView& grad,
                const char* input_name, const TensorView& input) {
  if (!grad.given()) return;
  if (!input.given()) fail(kName, ": ", name, " was given but its input ", input_name, " was not");
  check_floating_input(check, name, grad);
  check.shape(name, grad, std::vector<int64_t>(input.shape.begin(), input.shape.begin() + input.ndim),
              "(the shape of its input)");
  check.writable(name, grad);
}

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
  check_floating_input(check, "x", a.x);
  check.rank("x", a.x, 3, "[B, T, D]");
  check.present("weight", a.weight);
  check_floating_input(check, "weight", a.weight);
  check.rank("weight", a.weight, 2, "[D, W]");
  Problem p{a.x.shape[0], a.x.shape[1], a.x.shape[2], a.weight.shape[1], {}, a.activation};
  check.shape("weight", a.weight, {p.D, p.W}, "[D, W] (D from x)");
  if (a.activation != Activation::none && a.activation != Activation::silu)
    fail(kName, ": activation must be none (0) or silu (1), got ", static_cast<int>(a.activation));
  if (a.bias.given()) {
    check_floating_input(check, "bias", a.bias);
    check.shape("bias", a.bias, {p.D}, "[D]");
  }
  if (a.residual.given()) {
    check_floating_input(check, "residual", a.residual);
    check.shape("residual", a.residual, {p.B, p.T, p.D}, "[B, T, D] (the shape of x)");
  }
  p.sequences = check.sequences(a.cu_seqlens, p.B, p.T);
  if (a.initial_state.given()) {
    check_floating_input(check, "initial_state", a.initial_state);
    check.shape("initial_state", a.initial_state, {p.N(), p.D, p.W}, "[N, D, W]");
  }
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
  check.present("y", out.y);
  check.basic("y", out.y);
  check.same_dtype("y", out.y, "x", args.x);
  check.shape("y", out.y, {p.B, p.T, p.D}, "[B, T, D]");
  check.writable("y", out.y);
  if (args.output_final_state) {
    check.present("final_state", out.final_state);
    conv1d::check_floating_input(check, "final_state", out.final_state);
    check.shape("final_state", out.final_state, {p.N(), p.D, p.W}, "[N, D, W]");
    check.writable("final_state", out.final_state);
  } else {
    check.absent("final_state", out.final_state, "output_final_state is false");
  }
  if (form == Form::reference || args.x.dtype == DType::f64)
    conv1d::reference_forward(p, args, out);
  else
    conv1d::fast_forward(p, args, out);
}

void causal_conv1d_backward(Form form, const Conv1dArgs& args, const Conv1dGradOutputs& grad_out,
                            const Conv1dGrads& grads) {
  conv1d::check_form(form);
  const conv1d::Problem p = conv1d::make_problem(args);
  Validator check(kName);
  check.present("dy", grad_out.dy);
  conv1d::check_floating_input(check, "dy", grad_out.dy);
  check.shape("dy", grad_out.dy, {p.B, p.T, p.D}, "[B, T, D]");
  if (grad_out.dfinal_state.given()) {
    conv1d::check_floating_input(check, "dfinal_state", grad_out.dfinal_state);
    check.shape("dfinal_state", grad_out.dfinal_state, {p.N(), p.D, p.W}, "[N, D, W]");
  }
  conv1d::check_grad(check, "dx", grads.dx, "x", args.x);
  conv1d::check_grad(check, "dweight", grads.dweight, "weight", args.weight);
  conv1d::check_grad(check, "dbias", grads.dbias, "bias", args.bias);
  conv1d::check_grad(check, "dresidual", grads.dresidual, "residual", args.residual);
  conv1d::check_grad(check, "dinitial_state", grads.dinitial_state, "initial_state",
                     args.initial_state);
  if (form == Form::reference || args.x.dtype == DType::f64)
    conv1d::reference_backward(p, args, grad_out, grads);
  else
    conv1d::fast_backward(p, args, grad_out, grads);
}

}  // namespace linattn
