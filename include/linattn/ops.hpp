// The C++ API of linattn's sequence mixers.
//
// Every op is called through one argument struct (OpArgs) whose fields keep fla's names, and
// one of its implemented forms: the fp64 reference recurrence (the oracle every fast path is
// tested against), the chunk-parallel form (prefill/training) and the fused recurrent form
// (decode). Layout follows fla: q, k [B, T, H, K]; v [B, T, HV, V]; scalar gates [B, T, HV];
// per-channel gates [B, T, HV, K]; states [N, HV, K, V]. Outputs are caller-allocated views;
// output_shapes() says what to allocate.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "linattn/tensor.hpp"

namespace linattn {

enum class Op : int32_t {
  linear_attn = 0,       // S_t = S_{t-1} + k v^T                        (algorithms.md §4.1)
  simple_gla = 1,        // S_t = exp(g_t) S_{t-1} + k v^T, g [B,T,HV]     (§4.3)
  gla = 2,               // S_t = diag(exp(gk_t)) S_{t-1} + k v^T          (§4.4)
  delta_rule = 3,        // S_t = (I - b k k^T) S_{t-1} + b k v^T          (§4.5)
  gated_delta_rule = 4,  // S_t = exp(g_t)(I - b k k^T) S_{t-1} + b k v^T  (§4.6)
  delta_product = 5,     // n_h Householder steps per token, optional g    (§4.7)
  retention = 6,         // S_t = gamma_h S_{t-1} + k v^T, gamma_h = 1 - 2^(-5-h) (§4.2)
  // Bidirectional (LinFusion, LiT, LION): o_t = scale q_t^T (sum_s k_s v_s^T) over every token s
  // of the sequence (§4.1 without the mask), optionally normalised. It has no recurrence and no
  // state, so its fast form, KV = K^T V then O = Q KV, is registered as the chunk form.
  noncausal_linear_attn = 7,
  kda = 8,               // S_t = (I - b k k^T) diag(exp(gk_t)) S_{t-1} + b k v^T (§4.8, KDA)
  // Generalized delta rule with a diagonal-plus-low-rank transition (RWKV-7, §4.8):
  // sa_t = S_{t-1}^T a_t,  S_t = diag(exp(gk_t)) S_{t-1} + b_t sa_t^T + k_t v_t^T.
  // a, b [B,T,H,K] (RWKV-7: a = -kappa, b = kappa * abar); q is RWKV-7's r.
  dplr_delta_rule = 9,
};
inline constexpr int kNumOps = 10;

enum class Form : int32_t { reference = 0, chunk = 1, recurrent = 2 };
inline constexpr int kNumForms = 3;

const char* op_name(Op op);
const char* form_name(Form form);
Op op_from_name(const std::string& name);      // throws Error listing the known names
Form form_from_name(const std::string& name);  // throws Error listing the known names

// Which inputs and flags an op takes; used by validation, bindings, the CLI and the tests.
struct OpSpec {
  Op op;
  const char* name;
  bool takes_g;       // scalar log decay g [B, T, HV]
  bool requires_g;
  bool takes_gk;      // per-key-channel log decay gk [B, T, HV, K]
  bool takes_beta;    // delta step sizes beta, in [0, 2]
  bool takes_normalize;
  bool takes_l2norm;  // use_qk_l2norm_in_kernel
  bool takes_num_householder;
  bool fixed_decay;   // retention: log decay log(1 - 2^(-5-h)) of value head h, no gate input
  bool causal;        // false: every token reads its whole sequence; no initial/final state
  bool takes_ab = false;  // low-rank transition vectors a, b [B, T, H, K] (dplr_delta_rule)
};
const OpSpec& op_spec(Op op);

struct OpArgs {
  TensorView q, k, v;          // q [B,T,H,K]; k [B,T*n_h,H,K]; v [B,T*n_h,HV,V]
  TensorView g;                // scalar log decay, <= 0
  TensorView gk;               // per-key-channel log decay, <= 0
  TensorView beta;             // [B, T*n_h, HV], in [0, 2]
  TensorView a, b;             // dplr_delta_rule: [B, T, H, K], dtype of q
  TensorView initial_state;    // [N, HV, K, V]
  TensorView cu_seqlens;       // [N+1] int32/int64 token offsets; requires B == 1
  double scale = NAN;          // NaN means the default K^-0.5
  bool output_final_state = false;
  bool normalize = false;               // linear_attn: divide by scale*q.cumsum(k) (fla);
                                        // noncausal_linear_attn: by scale*q.sum(k)
  bool use_qk_l2norm_in_kernel = false; // delta family: L2-normalise q and k rows first
  int32_t num_householder = 1;          // delta_product: n_h
};

struct OpOutputs {
  TensorView o;            // [B, T, HV, V], dtype of v
  TensorView final_state;  // [N, HV, K, V] when output_final_state, f32 or f64
};

// Upstream gradients.
struct OpGradOutputs {
  TensorView d_o;            // [B, T, HV, V]
  TensorView dfinal_state;   // optional [N, HV, K, V]
};

// Gradients, one for each input that was given (dg only if g given, and so on).
struct OpGrads {
  TensorView dq, dk, dv, dg, dgk, dbeta, dinitial_state;
  TensorView da, db;
};

struct OutputShapes {
  std::vector<int64_t> o;
  std::vector<int64_t> final_state;  // empty unless output_final_state
};

// Validates the inputs (throws Error) and returns the shapes of the outputs to allocate.
OutputShapes output_shapes(Op op, const OpArgs& args);

// Runs one form of an op. Throws Error on bad input, or if the form is not implemented.
void forward(Op op, Form form, const OpArgs& args, const OpOutputs& out);
void backward(Op op, Form form, const OpArgs& args, const OpGradOutputs& grad_out,
              const OpGrads& grads);

bool has_form(Op op, Form form, bool backward_pass);

// Library version "major.minor.patch".
const char* version();

}  // namespace linattn
