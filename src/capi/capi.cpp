// The C API (include/linattn/linattn.h) over the C++ API (linattn/ops.hpp).
//
// Every entry point runs its body through `guarded`, which turns exceptions into status codes
// and records the message thread-locally, so no exception crosses the C boundary. The C side
// only checks what the C++ API cannot see (null pointers, enum ids and ranks that do not fit a
// TensorView); everything else is validated once, by the C++ API, with its messages.
#include "linattn/linattn.h"

#include <limits>
#include <new>
#include <stdexcept>
#include <string>

#include "linattn/conv1d.hpp"
#include "linattn/attention.hpp"
#include "linattn/error.hpp"
#include "linattn/scan.hpp"
#include "linattn/lla.hpp"
#include "linattn/ops.hpp"

namespace linattn {
namespace {

// The C enums must mirror the C++ ones value for value: ids are cast across the boundary.
static_assert(LINATTN_MAX_DIMS == kMaxDims);
static_assert(LINATTN_DTYPE_F32 == static_cast<int>(DType::f32) &&
              LINATTN_DTYPE_BF16 == static_cast<int>(DType::bf16) &&
              LINATTN_DTYPE_F64 == static_cast<int>(DType::f64) &&
              LINATTN_DTYPE_I32 == static_cast<int>(DType::i32) &&
              LINATTN_DTYPE_I64 == static_cast<int>(DType::i64));
static_assert(LINATTN_OP_LINEAR_ATTN == static_cast<int>(Op::linear_attn) &&
              LINATTN_OP_SIMPLE_GLA == static_cast<int>(Op::simple_gla) &&
              LINATTN_OP_GLA == static_cast<int>(Op::gla) &&
              LINATTN_OP_DELTA_RULE == static_cast<int>(Op::delta_rule) &&
              LINATTN_OP_GATED_DELTA_RULE == static_cast<int>(Op::gated_delta_rule) &&
              LINATTN_OP_DELTA_PRODUCT == static_cast<int>(Op::delta_product) &&
              LINATTN_OP_RETENTION == static_cast<int>(Op::retention) &&
              LINATTN_OP_NONCAUSAL_LINEAR_ATTN == static_cast<int>(Op::noncausal_linear_attn) &&
              LINATTN_OP_KDA == static_cast<int>(Op::kda) &&
              LINATTN_OP_DPLR_DELTA_RULE == static_cast<int>(Op::dplr_delta_rule) &&
              kNumOps == 10);
static_assert(LINATTN_FORM_REFERENCE == static_cast<int>(Form::reference) &&
              LINATTN_FORM_CHUNK == static_cast<int>(Form::chunk) &&
              LINATTN_FORM_RECURRENT == static_cast<int>(Form::recurrent) && kNumForms == 3);
static_assert(LINATTN_ACTIVATION_NONE == static_cast<int>(Activation::none) &&
              LINATTN_ACTIVATION_SILU == static_cast<int>(Activation::silu));
constexpr int kNumDTypes = 5;

// Thrown for a form without an implementation, so that `guarded` can report NOT_IMPLEMENTED
// rather than INVALID_ARGUMENT.
class NotImplemented : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

thread_local std::string t_message;
thread_local const char* t_last_error = "";

void set_last_error(const char* message, const char* prefix = "") noexcept {
  try {
    t_message = std::string(prefix) + message;
    t_last_error = t_message.c_str();
  } catch (...) {  // copying the message needs memory; keep a static one rather than throw
    t_last_error = "linattn: out of memory while recording an error message";
  }
}

// Runs `body`, mapping every exception to a status and recording its message.
template <typename Body>
linattn_status guarded(Body&& body) noexcept {
  try {
    body();
    t_last_error = "";
    return LINATTN_OK;
  } catch (const NotImplemented& e) {
    set_last_error(e.what());
    return LINATTN_ERROR_NOT_IMPLEMENTED;
  } catch (const Error& e) {
    set_last_error(e.what());
    return LINATTN_ERROR_INVALID_ARGUMENT;
  } catch (const std::bad_alloc&) {
    set_last_error("linattn: out of memory");
    return LINATTN_ERROR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    set_last_error(e.what(), "linattn: internal error: ");
    return LINATTN_ERROR_INTERNAL;
  } catch (...) {
    set_last_error("unknown exception", "linattn: internal error: ");
    return LINATTN_ERROR_INTERNAL;
  }
}

// Null pointers are the one input error the C++ API cannot see (it takes references).
template <typename T>
T& require(const char* fn, const char* name, T* pointer) {
  if (pointer == nullptr) fail(fn, ": ", name, " is NULL");
  return *pointer;
}

// Ids arrive as arbitrary int32 values: check them before they index any C++ table.
Op to_op(linattn_op op) {
  op_name(static_cast<Op>(op));  // throws "unknown op id ..." for ids out of range
  return static_cast<Op>(op);
}

Form to_form(linattn_form form) {
  form_name(static_cast<Form>(form));  // throws "unknown form id ..." for ids out of range
  return static_cast<Form>(form);
}

// The rank must be checked here: shape/strides of a TensorView hold only kMaxDims entries.
TensorView to_view(const char* fn, const char* name, const linattn_tensor& t) {
  if (t.ndim < 0 || t.ndim > kMaxDims)
    fail(fn, ": ", name, " has ndim ", t.ndim, ", expected 0 (not given) to ", kMaxDims);
  if (t.ndim == 0) return {};
  if (t.dtype < 0 || t.dtype >= kNumDTypes)
    fail(fn, ": ", name, " has unknown dtype ", t.dtype,
         "; valid dtypes are 0 (float32), 1 (bfloat16), 2 (float64), 3 (int32), 4 (int64)");
  TensorView v;
  v.data = t.data;
  v.dtype = static_cast<DType>(t.dtype);
  v.ndim = t.ndim;
  for (int i = 0; i < t.ndim; ++i) {
    v.shape[i] = t.shape[i];
    v.strides[i] = t.strides[i];
  }
  return v;
}

TensorView optional_view(const char* fn, const char* name, const linattn_tensor* t) {
  return t ? to_view(fn, name, *t) : TensorView{};
}

OpArgs to_args(const char* fn, const linattn_args* args) {
  const linattn_args& a = require(fn, "args", args);
  OpArgs out;
  out.q = to_view(fn, "args->q", a.q);
  out.k = to_view(fn, "args->k", a.k);
  out.v = to_view(fn, "args->v", a.v);
  out.g = to_view(fn, "args->g", a.g);
  out.gk = to_view(fn, "args->gk", a.gk);
  out.beta = to_view(fn, "args->beta", a.beta);
  out.a = to_view(fn, "args->a", a.a);
  out.b = to_view(fn, "args->b", a.b);
  out.initial_state = to_view(fn, "args->initial_state", a.initial_state);
  out.cu_seqlens = to_view(fn, "args->cu_seqlens", a.cu_seqlens);
  out.scale = a.scale;
  out.output_final_state = a.output_final_state != 0;
  out.normalize = a.normalize != 0;
  out.use_qk_l2norm_in_kernel = a.use_qk_l2norm_in_kernel != 0;
  out.num_householder = a.num_householder;
  return out;
}

Conv1dArgs to_conv1d_args(const char* fn, const linattn_conv1d_args* args) {
  const linattn_conv1d_args& a = require(fn, "args", args);
  Conv1dArgs out;
  out.x = to_view(fn, "args->x", a.x);
  out.weight = to_view(fn, "args->weight", a.weight);
  out.bias = to_view(fn, "args->bias", a.bias);
  out.residual = to_view(fn, "args->residual", a.residual);
  out.initial_state = to_view(fn, "args->initial_state", a.initial_state);
  out.cu_seqlens = to_view(fn, "args->cu_seqlens", a.cu_seqlens);
  out.output_final_state = a.output_final_state != 0;
  out.activation = static_cast<Activation>(a.activation);  // validated by the C++ API
  return out;
}

ScanArgs to_scan_args(const char* fn, const linattn_scan_args* args) {
  const linattn_scan_args& a = require(fn, "args", args);
  ScanArgs out;
  out.u = to_view(fn, "args->u", a.u);
  out.delta = to_view(fn, "args->delta", a.delta);
  out.A = to_view(fn, "args->A", a.A);
  out.B = to_view(fn, "args->B", a.B);
  out.C = to_view(fn, "args->C", a.C);
  out.D = to_view(fn, "args->D", a.D);
  out.z = to_view(fn, "args->z", a.z);
  out.delta_bias = to_view(fn, "args->delta_bias", a.delta_bias);
  out.initial_state = to_view(fn, "args->initial_state", a.initial_state);
  out.cu_seqlens = to_view(fn, "args->cu_seqlens", a.cu_seqlens);
  out.delta_softplus = a.delta_softplus != 0;
  out.output_final_state = a.output_final_state != 0;
  return out;
}

// Checked before the inputs so that callers can tell "not yet" from "bad input".
void require_form(Op op, Form form, bool backward_pass) {
  if (!has_form(op, form, backward_pass))
    throw NotImplemented(std::string(op_name(op)) + ": the " + form_name(form) + " form has no " +
                         (backward_pass ? "backward" : "forward") + " implementation yet");
}

lla::Args to_lla_args(const char* fn, const linattn_lla_args* args) {
  const linattn_lla_args& a = require(fn, "args", args);
  lla::Args out;
  out.q = to_view(fn, "args->q", a.q);
  out.k = to_view(fn, "args->k", a.k);
  out.v = to_view(fn, "args->v", a.v);
  out.ridge_lambda = a.ridge_lambda;
  out.ridge_lambda_per_token = to_view(fn, "args->ridge_lambda_per_token", a.ridge_lambda_per_token);
  out.cu_seqlens = to_view(fn, "args->cu_seqlens", a.cu_seqlens);
  out.scale = a.scale;
  out.delta_eps = a.delta_eps;
  out.cg_atol = a.cg_atol;
  out.cg_rtol = a.cg_rtol;
  out.cg_max_iters = a.cg_max_iters;
  out.cg_use_preconditioner = a.cg_use_preconditioner != 0;
  out.solver = a.direct_solve != 0 ? lla::Solver::direct : lla::Solver::cg;
  return out;
}

}  // namespace
}  // namespace linattn

using namespace linattn;

extern "C" {

void linattn_args_init(linattn_args* args) noexcept {
  if (args == nullptr) return;
  *args = linattn_args{};  // every tensor ndim == 0 (not given), every flag 0
  args->scale = std::numeric_limits<double>::quiet_NaN();
  args->num_householder = 1;
}

linattn_tensor linattn_tensor_contiguous(void* data, linattn_dtype dtype, int32_t ndim,
                                         const int64_t* shape) noexcept {
  linattn_tensor t{};
  t.data = data;
  t.dtype = dtype;
  t.ndim = ndim;
  if (shape == nullptr || ndim < 0 || ndim > LINATTN_MAX_DIMS) return t;  // rejected on use
  // Unsigned arithmetic: absurd shapes must not overflow here (UB); validation rejects them.
  uint64_t stride = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    t.shape[i] = shape[i];
    t.strides[i] = static_cast<int64_t>(stride);
    stride *= static_cast<uint64_t>(shape[i]);
  }
  return t;
}

linattn_status linattn_output_shapes(linattn_op op, const linattn_args* args, int64_t o_shape[4],
                                     int64_t final_state_shape[4]) noexcept {
  return guarded([&] {
    const char* fn = "linattn_output_shapes";
    require(fn, "o_shape", o_shape);
    const OutputShapes shapes = output_shapes(to_op(op), to_args(fn, args));
    for (int i = 0; i < 4; ++i) o_shape[i] = shapes.o[i];
    if (final_state_shape != nullptr)
      for (int i = 0; i < 4; ++i)
        final_state_shape[i] = shapes.final_state.empty() ? 0 : shapes.final_state[i];
  });
}

linattn_status linattn_forward(linattn_op op, linattn_form form, const linattn_args* args,
                               linattn_tensor* o, linattn_tensor* final_state) noexcept {
  return guarded([&] {
    const char* fn = "linattn_forward";
    const Op cpp_op = to_op(op);
    const Form cpp_form = to_form(form);
    require_form(cpp_op, cpp_form, false);
    const OpArgs cpp_args = to_args(fn, args);
    OpOutputs out;
    out.o = to_view(fn, "o", require(fn, "o", o));
    out.final_state = optional_view(fn, "final_state", final_state);
    forward(cpp_op, cpp_form, cpp_args, out);
  });
}

linattn_status linattn_backward(linattn_op op, linattn_form form, const linattn_args* args,
                                const linattn_tensor* d_o, const linattn_tensor* dfinal_state,
                                linattn_grads* grads) noexcept {
  return guarded([&] {
    const char* fn = "linattn_backward";
    const Op cpp_op = to_op(op);
    const Form cpp_form = to_form(form);
    require_form(cpp_op, cpp_form, true);
    const OpArgs cpp_args = to_args(fn, args);
    OpGradOutputs grad_out;
    grad_out.d_o = to_view(fn, "d_o", require(fn, "d_o", d_o));
    grad_out.dfinal_state = optional_view(fn, "dfinal_state", dfinal_state);
    const linattn_grads& g = require(fn, "grads", grads);
    OpGrads cpp_grads;
    cpp_grads.dq = to_view(fn, "grads->dq", g.dq);
    cpp_grads.dk = to_view(fn, "grads->dk", g.dk);
    cpp_grads.dv = to_view(fn, "grads->dv", g.dv);
    cpp_grads.dg = to_view(fn, "grads->dg", g.dg);
    cpp_grads.dgk = to_view(fn, "grads->dgk", g.dgk);
    cpp_grads.dbeta = to_view(fn, "grads->dbeta", g.dbeta);
    cpp_grads.dinitial_state = to_view(fn, "grads->dinitial_state", g.dinitial_state);
    cpp_grads.da = to_view(fn, "grads->da", g.da);
    cpp_grads.db = to_view(fn, "grads->db", g.db);
    backward(cpp_op, cpp_form, cpp_args, grad_out, cpp_grads);
  });
}

linattn_status linattn_op_from_name(const char* name, linattn_op* op) noexcept {
  return guarded([&] {
    const char* fn = "linattn_op_from_name";
    require(fn, "name", name);
    linattn_op& result = require(fn, "op", op);
    result = static_cast<linattn_op>(op_from_name(name));
  });
}

const char* linattn_op_name(linattn_op op) noexcept {
  const char* name = nullptr;
  guarded([&] { name = op_name(to_op(op)); });
  return name;
}

int linattn_has_form(linattn_op op, linattn_form form, int backward) noexcept {
  bool found = false;
  guarded([&] { found = has_form(to_op(op), to_form(form), backward != 0); });
  return found ? 1 : 0;
}

const char* linattn_last_error(void) noexcept { return t_last_error; }

const char* linattn_version(void) noexcept { return version(); }

linattn_status linattn_causal_conv1d_forward(linattn_form form, const linattn_conv1d_args* args,
                                             linattn_tensor* y, linattn_tensor* final_state) noexcept {
  return guarded([&] {
    const char* fn = "linattn_causal_conv1d_forward";
    const Conv1dArgs a = to_conv1d_args(fn, args);
    causal_conv1d_forward(to_form(form), a,
                          {to_view(fn, "y", require(fn, "y", y)), optional_view(fn, "final_state", final_state)});
  });
}

linattn_status linattn_causal_conv1d_backward(linattn_form form, const linattn_conv1d_args* args,
                                              const linattn_tensor* dy,
                                              const linattn_tensor* dfinal_state,
                                              linattn_conv1d_grads* grads) noexcept {
  return guarded([&] {
    const char* fn = "linattn_causal_conv1d_backward";
    const Conv1dArgs a = to_conv1d_args(fn, args);
    const linattn_conv1d_grads& g = require(fn, "grads", grads);
    causal_conv1d_backward(
        to_form(form), a,
        {to_view(fn, "dy", require(fn, "dy", dy)), optional_view(fn, "dfinal_state", dfinal_state)},
        {to_view(fn, "grads->dx", g.dx), to_view(fn, "grads->dweight", g.dweight),
         to_view(fn, "grads->dbias", g.dbias), to_view(fn, "grads->dresidual", g.dresidual),
         to_view(fn, "grads->dinitial_state", g.dinitial_state)});
  });
}

linattn_status linattn_causal_conv1d_update(const linattn_tensor* x, linattn_tensor* cache,
                                            const linattn_tensor* weight,
                                            const linattn_tensor* bias,
                                            const linattn_tensor* residual, int32_t activation,
                                            linattn_tensor* y) noexcept {
  return guarded([&] {
    const char* fn = "linattn_causal_conv1d_update";
    Conv1dUpdateArgs a;
    a.x = to_view(fn, "x", require(fn, "x", x));
    a.cache = to_view(fn, "cache", require(fn, "cache", cache));
    a.weight = to_view(fn, "weight", require(fn, "weight", weight));
    a.bias = optional_view(fn, "bias", bias);
    a.residual = optional_view(fn, "residual", residual);
    a.activation = static_cast<Activation>(activation);
    causal_conv1d_update(a, to_view(fn, "y", require(fn, "y", y)));
  });
}

// ---- softmax attention (linattn/attention.hpp)

void linattn_attention_args_init(linattn_attention_args* args) noexcept {
  if (args == nullptr) return;
  *args = linattn_attention_args{};
  args->scale = NAN;
}

void linattn_kvcache_args_init(linattn_kvcache_args* args) noexcept {
  if (args == nullptr) return;
  *args = linattn_kvcache_args{};
  args->scale = NAN;
}

namespace {

AttentionArgs to_attention_args(const char* fn, const linattn_attention_args* args) {
  const linattn_attention_args& a = require(fn, "args", args);
  AttentionArgs out;
  out.q = to_view(fn, "args->q", a.q);
  out.k = to_view(fn, "args->k", a.k);
  out.v = to_view(fn, "args->v", a.v);
  out.cu_seqlens = to_view(fn, "args->cu_seqlens", a.cu_seqlens);
  out.scale = a.scale;
  out.window_size = a.window_size;
  return out;
}

}  // namespace

linattn_status linattn_attention_forward(linattn_form form, const linattn_attention_args* args,
                                         linattn_tensor* o, linattn_tensor* lse) noexcept {
  return guarded([&] {
    const char* fn = "linattn_attention_forward";
    const Form cpp_form = to_form(form);
    const AttentionArgs a = to_attention_args(fn, args);
    attention_forward(cpp_form, a, {to_view(fn, "o", require(fn, "o", o)), optional_view(fn, "lse", lse)});
  });
}

linattn_status linattn_attention_backward(linattn_form form, const linattn_attention_args* args,
                                          const linattn_tensor* o, const linattn_tensor* lse,
                                          const linattn_tensor* d_o, linattn_tensor* dq,
                                          linattn_tensor* dk, linattn_tensor* dv) noexcept {
  return guarded([&] {
    const char* fn = "linattn_attention_backward";
    const Form cpp_form = to_form(form);
    const AttentionArgs a = to_attention_args(fn, args);
    attention_backward(cpp_form, a, optional_view(fn, "o", o), optional_view(fn, "lse", lse),
                       to_view(fn, "d_o", require(fn, "d_o", d_o)),
                       {optional_view(fn, "dq", dq), optional_view(fn, "dk", dk),
                        optional_view(fn, "dv", dv)});
  });
}

linattn_status linattn_attention_decode(linattn_form form, const linattn_kvcache_args* args,
                                        linattn_tensor* o) noexcept {
  return guarded([&] {
    const char* fn = "linattn_attention_decode";
    const Form cpp_form = to_form(form);
    const linattn_kvcache_args& a = require(fn, "args", args);
    AttentionCacheArgs c;
    c.q = to_view(fn, "args->q", a.q);
    c.k_cache = to_view(fn, "args->k_cache", a.k_cache);
    c.v_cache = to_view(fn, "args->v_cache", a.v_cache);
    c.cache_seqlens = to_view(fn, "args->cache_seqlens", a.cache_seqlens);
    c.scale = a.scale;
    c.window_size = a.window_size;
    attention_decode(cpp_form, c, to_view(fn, "o", require(fn, "o", o)));
  });
}

linattn_status linattn_selective_scan_forward(linattn_form form, const linattn_scan_args* args,
                                              linattn_tensor* y, linattn_tensor* final_state) noexcept {
  return guarded([&] {
    const char* fn = "linattn_selective_scan_forward";
    const ScanArgs a = to_scan_args(fn, args);
    selective_scan_forward(to_form(form), a,
                           {to_view(fn, "y", require(fn, "y", y)), optional_view(fn, "final_state", final_state)});
  });
}

linattn_status linattn_selective_scan_backward(linattn_form form, const linattn_scan_args* args,
                                               const linattn_tensor* dy,
                                               const linattn_tensor* dfinal_state,
                                               linattn_scan_grads* grads) noexcept {
  return guarded([&] {
    const char* fn = "linattn_selective_scan_backward";
    const ScanArgs a = to_scan_args(fn, args);
    const linattn_scan_grads& g = require(fn, "grads", grads);
    selective_scan_backward(
        to_form(form), a,
        {to_view(fn, "dy", require(fn, "dy", dy)), optional_view(fn, "dfinal_state", dfinal_state)},
        {to_view(fn, "grads->du", g.du), to_view(fn, "grads->ddelta", g.ddelta),
         to_view(fn, "grads->dA", g.dA), to_view(fn, "grads->dB", g.dB), to_view(fn, "grads->dC", g.dC),
         to_view(fn, "grads->dD", g.dD), to_view(fn, "grads->dz", g.dz),
         to_view(fn, "grads->ddelta_bias", g.ddelta_bias),
         to_view(fn, "grads->dinitial_state", g.dinitial_state)});
  });
}

linattn_status linattn_selective_state_update(const linattn_scan_step_args* args,
                                              linattn_tensor* y) noexcept {
  return guarded([&] {
    const char* fn = "linattn_selective_state_update";
    const linattn_scan_step_args& a = require(fn, "args", args);
    ScanStepArgs s;
    s.state = to_view(fn, "args->state", a.state);
    s.x = to_view(fn, "args->x", a.x);
    s.dt = to_view(fn, "args->dt", a.dt);
    s.A = to_view(fn, "args->A", a.A);
    s.B = to_view(fn, "args->B", a.B);
    s.C = to_view(fn, "args->C", a.C);
    s.D = to_view(fn, "args->D", a.D);
    s.z = to_view(fn, "args->z", a.z);
    s.dt_bias = to_view(fn, "args->dt_bias", a.dt_bias);
    s.dt_softplus = a.dt_softplus != 0;
    selective_state_update(s, to_view(fn, "y", require(fn, "y", y)));
  });
}

void linattn_lla_args_init(linattn_lla_args* args) noexcept {
  if (args == nullptr) return;
  const lla::Args d;
  *args = linattn_lla_args{};
  args->ridge_lambda = d.ridge_lambda;
  args->scale = std::numeric_limits<double>::quiet_NaN();
  args->delta_eps = d.delta_eps;
  args->cg_atol = d.cg_atol;
  args->cg_rtol = d.cg_rtol;
  args->cg_max_iters = d.cg_max_iters;
  args->cg_use_preconditioner = d.cg_use_preconditioner;
}

linattn_status linattn_lla_forward(linattn_form form, const linattn_lla_args* args,
                                   linattn_tensor* o) noexcept {
  return guarded([&] {
    const char* fn = "linattn_lla_forward";
    const Form cpp_form = to_form(form);
    lla::forward(cpp_form, to_lla_args(fn, args), to_view(fn, "o", require(fn, "o", o)));
  });
}

linattn_status linattn_lla_backward(linattn_form form, const linattn_lla_args* args,
                                    const linattn_tensor* d_o, linattn_lla_grads* grads) noexcept {
  return guarded([&] {
    const char* fn = "linattn_lla_backward";
    const Form cpp_form = to_form(form);
    if (!lla::has_form(cpp_form, true))
      throw NotImplemented(std::string("lla_attention: the ") + form_name(cpp_form) +
                           " form has no backward implementation");
    const linattn_lla_grads& g = require(fn, "grads", grads);
    const lla::Grads cpp_grads{to_view(fn, "grads->dq", g.dq), to_view(fn, "grads->dk", g.dk),
                               to_view(fn, "grads->dv", g.dv),
                               to_view(fn, "grads->dridge_lambda_per_token", g.dridge_lambda_per_token)};
    lla::backward(cpp_form, to_lla_args(fn, args), to_view(fn, "d_o", require(fn, "d_o", d_o)), cpp_grads);
  });
}

}  // extern "C"
