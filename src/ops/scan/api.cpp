// The entry points of include/linattn/scan.hpp: validate once, then dispatch to the oracle
// (reference.cpp) or the fast form (chunk_fwd.cpp, chunk_bwd.cpp). Implementations never validate.
#include "core/float_mode.hpp"
#include "ops/common/validator.hpp"
#include "ops/scan/scan.hpp"

namespace linattn {
namespace scan {
namespace {

void check_form(Form form) {
  if (form == Form::recurrent)
    fail(kName, ": the recurrent form is the decode step selective_state_update; the "
         "full-sequence forms are reference and chunk");
  form_name(form);  // throws for an id out of range
}

// Every input view, by name (not given ones included: no_overlaps() skips them).
std::vector<Validator::Named> inputs(const ScanArgs& a) {
  return {{"u", &a.u}, {"delta", &a.delta}, {"A", &a.A}, {"B", &a.B}, {"C", &a.C}, {"D", &a.D},
          {"z", &a.z}, {"delta_bias", &a.delta_bias}, {"initial_state", &a.initial_state},
          {"cu_seqlens", &a.cu_seqlens}};
}

bool fast(Form form, const ScanArgs& a) { return form == Form::chunk && a.u.dtype != DType::f64; }

}  // namespace

Problem make_problem(const ScanArgs& a) {
  Validator check(kName);
  for (auto [name, t] : {std::pair{"u", &a.u}, {"delta", &a.delta}, {"A", &a.A}, {"B", &a.B}, {"C", &a.C}}) {
    check.present(name, *t);
    check.floating_input(name, *t);
  }
  check.rank("u", a.u, 3, "[B, T, D]");
  check.rank("A", a.A, 2, "[D, N]");
  check.rank("B", a.B, 4, "[B, T, G, N]");
  Problem p{a.u.shape[0], a.u.shape[1], a.u.shape[2], a.A.shape[1], a.B.shape[2], {}, a.delta_softplus};
  check.shape("delta", a.delta, {p.B, p.T, p.D}, "[B, T, D] (the shape of u)");
  check.shape("A", a.A, {p.D, p.N}, "[D, N] (D from u)");
  check.shape("B", a.B, {p.B, p.T, p.G, p.N}, "[B, T, G, N] (B, T from u, N from A)");
  check.shape("C", a.C, {p.B, p.T, p.G, p.N}, "[B, T, G, N] (the shape of B)");
  if (p.D % p.G != 0)
    fail(kName, ": the number of groups G = ", p.G, " (B's dimension 2) must divide the number of "
         "channels D = ", p.D);
  check.optional_input("D", a.D, {p.D}, "[D]");
  check.optional_input("delta_bias", a.delta_bias, {p.D}, "[D]");
  check.optional_input("z", a.z, {p.B, p.T, p.D}, "[B, T, D] (the shape of u)");
  p.sequences = check.sequences(a.cu_seqlens, p.B, p.T);
  check.optional_input("initial_state", a.initial_state, {p.num_sequences(), p.D, p.N},
                       "[N_seq, D, N]");
  return p;
}

}  // namespace scan

using scan::kName;

ScanShapes selective_scan_output_shapes(const ScanArgs& args) {
  const scan::Problem p = scan::make_problem(args);
  ScanShapes s{{p.B, p.T, p.D}, {}};
  if (args.output_final_state) s.final_state = {p.num_sequences(), p.D, p.N};
  return s;
}

void selective_scan_forward(Form form, const ScanArgs& args, const ScanOutputs& out) {
  scan::check_form(form);
  const scan::Problem p = scan::make_problem(args);
  Validator check(kName);
  check.output("y", out.y, "u", args.u, {p.B, p.T, p.D}, "[B, T, D]");
  check.state_output("final_state", out.final_state, args.output_final_state,
                     {p.num_sequences(), p.D, p.N}, "[N_seq, D, N]");
  if (args.output_final_state && out.final_state.dtype == DType::bf16)  // states are fp32 or fp64
    fail(kName, ": final_state must be float32 or float64, got bfloat16");
  check.no_overlaps({{"y", &out.y}, {"final_state", &out.final_state}}, scan::inputs(args));
  const FlushDenormals mode(scan::fast(form, args));
  if (scan::fast(form, args))
    scan::fast_forward(p, args, out);
  else
    scan::reference_forward(p, args, out);
}

void selective_scan_backward(Form form, const ScanArgs& args, const ScanGradOutputs& grad_out,
                             const ScanGrads& grads) {
  scan::check_form(form);
  const scan::Problem p = scan::make_problem(args);
  Validator check(kName);
  check.input("dy", grad_out.dy, {p.B, p.T, p.D}, "[B, T, D]");
  check.optional_input("dfinal_state", grad_out.dfinal_state, {p.num_sequences(), p.D, p.N},
                       "[N_seq, D, N]");
  check.gradient("du", grads.du, "u", args.u);
  check.gradient("ddelta", grads.ddelta, "delta", args.delta);
  check.gradient("dA", grads.dA, "A", args.A);
  check.gradient("dB", grads.dB, "B", args.B);
  check.gradient("dC", grads.dC, "C", args.C);
  check.gradient("dD", grads.dD, "D", args.D);
  check.gradient("dz", grads.dz, "z", args.z);
  check.gradient("ddelta_bias", grads.ddelta_bias, "delta_bias", args.delta_bias);
  check.gradient("dinitial_state", grads.dinitial_state, "initial_state", args.initial_state);
  std::vector<Validator::Named> read = scan::inputs(args);
  read.push_back({"dy", &grad_out.dy});
  read.push_back({"dfinal_state", &grad_out.dfinal_state});
  check.no_overlaps({{"du", &grads.du}, {"ddelta", &grads.ddelta}, {"dA", &grads.dA},
                     {"dB", &grads.dB}, {"dC", &grads.dC}, {"dD", &grads.dD}, {"dz", &grads.dz},
                     {"ddelta_bias", &grads.ddelta_bias}, {"dinitial_state", &grads.dinitial_state}},
                    read);
  const FlushDenormals mode(scan::fast(form, args));
  if (scan::fast(form, args))
    scan::fast_backward(p, args, grad_out, grads);
  else
    scan::reference_backward(p, args, grad_out, grads);
}

}  // namespace linattn
