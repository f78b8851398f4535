// Op names, specs and the dispatch from (op, form) to an implementation.
#include <string>

#include "core/float_mode.hpp"
#include "linattn/error.hpp"
#include "linattn/ops.hpp"
#include "ops/common/forms.hpp"

#ifndef LINATTN_VERSION
#define LINATTN_VERSION "0.0.0"
#endif

namespace linattn {
namespace {

//                 op                     name                     g      req_g  gk     beta   norm   l2     n_h    fixed  causal
const OpSpec kSpecs[kNumOps] = {
    {Op::linear_attn,           "linear_attn",           false, false, false, false, true,  false, false, false, true},
    {Op::simple_gla,            "simple_gla",            true,  true,  false, false, false, false, false, false, true},
    {Op::gla,                   "gla",                   false, false, true,  false, false, false, false, false, true},
    {Op::delta_rule,            "delta_rule",            false, false, false, true,  false, true,  false, false, true},
    {Op::gated_delta_rule,      "gated_delta_rule",      true,  true,  false, true,  false, true,  false, false, true},
    {Op::delta_product,         "delta_product",         true,  false, false, true,  false, true,  true,  false, true},
    {Op::retention,             "retention",             false, false, false, false, false, false, false, true,  true},
    {Op::noncausal_linear_attn, "noncausal_linear_attn", false, false, false, false, true,  false, false, false, false},
    {Op::kda,                   "kda",                   false, false, true,  true,  false, true,  false, false, true},
    {Op::dplr_delta_rule,       "dplr_delta_rule",       false, false, true,  false, false, false, false, false, true,  /*takes_ab=*/true},
};

const char* const kFormNames[kNumForms] = {"reference", "chunk", "recurrent"};

struct FormImpl {
  ForwardFn forward = nullptr;
  BackwardFn backward = nullptr;
};

FormImpl lookup(Op op, Form form) {
  if (!op_spec(op).causal) {  // src/ops/noncausal/: no recurrence, so no recurrent form
    if (form == Form::reference) return {noncausal_reference_forward, noncausal_reference_backward};
    if (form == Form::chunk) return {noncausal_chunk_forward, noncausal_chunk_backward};
    return {};
  }
  if (op_spec(op).takes_ab) {  // src/ops/dplr/ (the oracle is the shared engine)
    if (form == Form::reference) return {reference_forward, reference_backward};
    if (form == Form::chunk) return {dplr_chunk_forward, dplr_chunk_backward};
    if (form == Form::recurrent) return {dplr_recurrent_forward, nullptr};
    return {};
  }
  const bool hebbian = !op_spec(op).takes_beta;  // src/ops/gla/, else src/ops/delta/
  switch (form) {
    case Form::reference: return {reference_forward, reference_backward};
    case Form::chunk:
      return hebbian ? FormImpl{gla_chunk_forward, gla_chunk_backward}
                     : FormImpl{delta_chunk_forward, delta_chunk_backward};
    case Form::recurrent:
      return hebbian ? FormImpl{gla_recurrent_forward, nullptr}
                     : FormImpl{delta_recurrent_forward, nullptr};
  }
  return {};
}

// float64 inputs run every implemented form on the fp64 oracle: the fast forms compute in
// fp32, which would throw away the precision the caller asked for (and autograd's gradcheck).
FormImpl lookup_for(Op op, Form form, const OpArgs& args) {
  FormImpl impl = lookup(op, form);
  if (args.q.dtype == DType::f64 && form != Form::reference) {
    const FormImpl ref = lookup(op, Form::reference);
    if (impl.forward) impl.forward = ref.forward;
    if (impl.backward) impl.backward = ref.backward;
  }
  return impl;
}

int op_index(Op op) {
  const int i = static_cast<int>(op);
  if (i < 0 || i >= kNumOps) fail("unknown op id ", i, "; valid ids are 0 to ", kNumOps - 1);
  return i;
}

[[noreturn]] void not_implemented(Op op, Form form, const char* pass) {
  const bool backward_pass = std::string(pass) == "backward";
  std::string available;
  for (int f = 0; f < kNumForms; ++f) {
    const FormImpl impl = lookup(op, static_cast<Form>(f));
    if (backward_pass ? impl.backward != nullptr : impl.forward != nullptr)
      available += (available.empty() ? "" : ", ") + std::string(kFormNames[f]);
  }
  fail(op_name(op), ": the ", form_name(form), " form has no ", pass,
       " implementation; forms with one: ", available);
}

}  // namespace

const OpSpec& op_spec(Op op) { return kSpecs[op_index(op)]; }
const char* op_name(Op op) { return kSpecs[op_index(op)].name; }

const char* form_name(Form form) {
  const int i = static_cast<int>(form);
  if (i < 0 || i >= kNumForms) fail("unknown form id ", i, "; valid ids are 0 to ", kNumForms - 1);
  return kFormNames[i];
}

Op op_from_name(const std::string& name) {
  std::string known;
  for (const OpSpec& s : kSpecs) {
    if (name == s.name) return s.op;
    known += known.empty() ? s.name : std::string(", ") + s.name;
  }
  fail("unknown op '", name, "'; known ops: ", known);
}

Form form_from_name(const std::string& name) {
  for (int i = 0; i < kNumForms; ++i)
    if (name == kFormNames[i]) return static_cast<Form>(i);
  fail("unknown form '", name, "'; known forms: reference, chunk, recurrent");
}

bool has_form(Op op, Form form, bool backward_pass) {
  op_index(op);     // rejects an unknown op id
  form_name(form);  // rejects an unknown form id
  const FormImpl impl = lookup(op, form);
  return backward_pass ? impl.backward != nullptr : impl.forward != nullptr;
}

OutputShapes output_shapes(Op op, const OpArgs& args) {
  const Problem p = make_problem(op, args);
  OutputShapes shapes;
  shapes.o = {p.B, p.T, p.HV, p.V};
  if (args.output_final_state) shapes.final_state = {p.N(), p.HV, p.K, p.V};
  return shapes;
}

void forward(Op op, Form form, const OpArgs& args, const OpOutputs& out) {
  const Problem p = make_problem(op, args);
  check_outputs(p, args, out);
  form_name(form);  // rejects an unknown form id
  const FormImpl impl = lookup_for(op, form, args);
  if (!impl.forward) not_implemented(op, form, "forward");
  const FlushDenormals mode(form != Form::reference && args.q.dtype != DType::f64);
  impl.forward(p, args, out);
}

void backward(Op op, Form form, const OpArgs& args, const OpGradOutputs& grad_out,
              const OpGrads& grads) {
  const Problem p = make_problem(op, args);
  check_grads(p, args, grad_out, grads);
  form_name(form);  // rejects an unknown form id
  const FormImpl impl = lookup_for(op, form, args);
  if (!impl.backward) not_implemented(op, form, "backward");
  const FlushDenormals mode(form != Form::reference && args.q.dtype != DType::f64);
  impl.backward(p, args, grad_out, grads);
}

const char* version() { return LINATTN_VERSION; }

}  // namespace linattn
