// The calls of the op families with an API of their own (softmax attention and its KV-cache
// decode, LLA, causal conv1d and its decode step, selective scan and its decode step) as named
// views, for the tests that build their arguments view by view: the bad-input catalogue driver
// (tests/cpp/bad_inputs_test.cpp) and the C API fuzzer (tests/fuzz/capi_fuzz.cpp). One table per
// call says which tensors it takes, their natural shapes and what their values mean; one runner
// passes them to the C API.
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "linattn/linattn.h"

namespace linattn_test {

// What a tensor's values mean (the valid range the base problem fills it with): data in
// [-1, 1], log decays in [-1.01, -0.01], beta in [0.1, 1], negative (the scan's A) in
// [-1.01, -0.01], positive (ridge lambdas) in [0.5, 1.5], offsets and lengths (set by the
// caller), outputs (NaN before the call, so that a finite result proves it was written).
enum class Fill { data, log_decay, beta, negative, positive, index, output };

struct Slot {
  std::string name;
  linattn_tensor natural{};  // contiguous, its natural shape; data null until backed
  linattn_tensor view{};     // what the call gets (ndim 0: not given)
  Fill fill = Fill::data;
  bool written = false;      // an output, a gradient or a state updated in place
};

// The sizes of a family call. Attention: q has Hq = 2H heads over H key/value heads (GQA);
// decode: Tq = 2 new tokens against caches of S = T rows. Conv1d: D channels, kernel W. Scan:
// D channels in G groups, N states per channel.
struct FamilySizes {
  int64_t B = 2, T = 5, H = 2, K = 4, V = 3, D = 6, W = 3, N = 4, G = 2, Tq = 2;
  std::vector<int64_t> offsets;  // cu_seqlens, or empty
};

// The calls: family:pass, as the catalogue names them.
inline const std::vector<std::string>& family_calls() {
  static const std::vector<std::string> calls = {
      "attention:forward", "attention:backward", "attention:decode", "lla:forward",
      "lla:backward",      "conv1d:forward",     "conv1d:backward",  "conv1d:update",
      "scan:forward",      "scan:backward",      "scan:update"};
  return calls;
}

inline bool is_family(const std::string& name) {
  return name == "attention" || name == "lla" || name == "conv1d" || name == "scan";
}

// The flags of every family, with the values of the base problem.
inline std::map<std::string, double> family_flags() {
  return {{"scale", NAN},         {"window_size", 0},  {"ridge_lambda", 10},
          {"delta_eps", 1e-12},   {"cg_atol", 1e-12},  {"cg_rtol", 1e-12},
          {"cg_max_iters", 32},   {"cg_use_preconditioner", 0}, {"direct_solve", 0},
          {"activation", 1},      {"output_final_state", 1},    {"softplus", 1}};
}

// The tensors of one call with their natural shapes, each given unless optional and off in the
// base problem (ridge_lambda_per_token; cu_seqlens without offsets).
inline std::vector<Slot> family_slots(const std::string& family, const std::string& pass,
                                      const FamilySizes& s) {
  const int64_t B = s.B, T = s.T, Hq = 2 * s.H, H = s.H, K = s.K, V = s.V, D = s.D, W = s.W,
                N = s.N, G = s.G;
  const bool varlen = !s.offsets.empty();
  const int64_t seqs = varlen ? static_cast<int64_t>(s.offsets.size()) - 1 : B;
  const bool backward = pass == "backward";
  std::vector<Slot> slots;
  auto add = [&](const char* name, std::vector<int64_t> shape, Fill fill = Fill::data,
                 bool written = false, bool given = true, int32_t dtype = LINATTN_DTYPE_F32) {
    Slot slot;
    slot.name = name;
    slot.natural = linattn_tensor_contiguous(nullptr, static_cast<linattn_dtype>(dtype),
                                             static_cast<int32_t>(shape.size()), shape.data());
    if (given) slot.view = slot.natural;
    slot.fill = fill;
    slot.written = written;
    slots.push_back(slot);
  };
  auto cu = [&] { add("cu_seqlens", {static_cast<int64_t>(s.offsets.size())}, Fill::index, false,
                      varlen, LINATTN_DTYPE_I64); };
  // The upstream gradients and the gradient of every input given so far (d + its name).
  auto gradients = [&](std::vector<std::pair<const char*, std::vector<int64_t>>> upstream) {
    const size_t inputs = slots.size();
    for (auto& [name, shape] : upstream) add(name, shape);
    for (size_t i = 0; i < inputs; ++i) {
      if (slots[i].fill == Fill::index || slots[i].name == "o" || slots[i].name == "lse") continue;
      Slot grad = slots[i];
      grad.name = "d" + grad.name;
      grad.fill = Fill::output;
      grad.written = true;
      slots.push_back(grad);
    }
  };
  if (family == "attention" && pass == "decode") {
    add("q", {B, s.Tq, Hq, K});
    add("k_cache", {B, T, H, K});
    add("v_cache", {B, T, H, V});
    add("cache_seqlens", {B}, Fill::index, false, true, LINATTN_DTYPE_I64);
    add("o", {B, s.Tq, Hq, V}, Fill::output, true);
  } else if (family == "attention") {
    add("q", {B, T, Hq, K});
    add("k", {B, T, H, K});
    add("v", {B, T, H, V});
    cu();
    // The backward reads the forward's o and lse (the chunk form's recomputation).
    add("o", {B, T, Hq, V}, backward ? Fill::data : Fill::output, !backward);
    add("lse", {B, T, Hq}, backward ? Fill::data : Fill::output, !backward);
    if (backward) gradients({{"do", {B, T, Hq, V}}});
  } else if (family == "lla") {
    add("q", {B, T, H, K});
    add("k", {B, T, H, K});
    add("v", {B, T, H, V});
    add("ridge_lambda_per_token", {B, T, H}, Fill::positive, false, false);
    cu();
    if (backward) {
      gradients({{"do", {B, T, H, V}}});
    } else {
      add("o", {B, T, H, V}, Fill::output, true);
    }
  } else if (family == "conv1d" && pass == "update") {
    add("x", {B, D});
    add("cache", {B, D, W}, Fill::data, true);
    add("weight", {D, W});
    add("bias", {D});
    add("residual", {B, D});
    add("y", {B, D}, Fill::output, true);
  } else if (family == "conv1d") {
    add("x", {B, T, D});
    add("weight", {D, W});
    add("bias", {D});
    add("residual", {B, T, D});
    add("initial_state", {seqs, D, W});
    cu();
    if (backward) {
      gradients({{"dy", {B, T, D}}, {"dfinal_state", {seqs, D, W}}});
    } else {
      add("y", {B, T, D}, Fill::output, true);
      add("final_state", {seqs, D, W}, Fill::output, true);
    }
  } else if (family == "scan" && pass == "update") {
    add("state", {B, D, N}, Fill::data, true);
    add("x", {B, D});
    add("dt", {B, D});
    add("A", {D, N}, Fill::negative);
    add("B", {B, G, N});
    add("C", {B, G, N});
    add("D", {D});
    add("z", {B, D});
    add("dt_bias", {D});
    add("y", {B, D}, Fill::output, true);
  } else if (family == "scan") {
    add("u", {B, T, D});
    add("delta", {B, T, D});
    add("A", {D, N}, Fill::negative);
    add("B", {B, T, G, N});
    add("C", {B, T, G, N});
    add("D", {D});
    add("z", {B, T, D});
    add("delta_bias", {D});
    add("initial_state", {seqs, D, N});
    cu();
    if (backward) {
      gradients({{"dy", {B, T, D}}, {"dfinal_state", {seqs, D, N}}});
    } else {
      add("y", {B, T, D}, Fill::output, true);
      add("final_state", {seqs, D, N}, Fill::output, true);
    }
  } else {
    throw std::runtime_error("families: unknown call " + family + ":" + pass);
  }
  return slots;
}

inline linattn_tensor* slot_view(std::vector<Slot>& slots, const std::string& name) {
  for (Slot& s : slots)
    if (s.name == name) return &s.view;
  throw std::runtime_error("families: the call has no tensor " + name);
}

// Runs a family call through the C API. `null_args` names the pointer arguments passed as NULL
// (args, grads and the output views: o, y, d_o, dy, x, cache, weight).
inline linattn_status run_family_c(const std::string& family, const std::string& pass,
                                   int32_t form_id, std::vector<Slot>& slots,
                                   const std::map<std::string, double>& flags,
                                   const std::set<std::string>& null_args = {}) {
  auto t = [&](const char* name) { return *slot_view(slots, name); };
  auto ptr = [&](const char* name) {
    return null_args.count(name) ? nullptr : slot_view(slots, name);
  };
  // Optional pointer arguments: NULL when the view is not given.
  auto opt = [&](const char* name) {
    linattn_tensor* p = slot_view(slots, name);
    return p->ndim == 0 ? nullptr : p;
  };
  auto flag = [&](const char* name) { return flags.at(name); };
  auto i32 = [&](const char* name) { return static_cast<int32_t>(flag(name)); };
  const auto form = static_cast<linattn_form>(form_id);
  if (family == "attention" && pass == "decode") {
    linattn_kvcache_args a;
    linattn_kvcache_args_init(&a);
    a.q = t("q"); a.k_cache = t("k_cache"); a.v_cache = t("v_cache");
    a.cache_seqlens = t("cache_seqlens");
    a.scale = flag("scale");
    a.window_size = static_cast<int64_t>(flag("window_size"));
    return linattn_attention_decode(form, null_args.count("args") ? nullptr : &a, ptr("o"));
  }
  if (family == "attention") {
    linattn_attention_args a;
    linattn_attention_args_init(&a);
    a.q = t("q"); a.k = t("k"); a.v = t("v"); a.cu_seqlens = t("cu_seqlens");
    a.scale = flag("scale");
    a.window_size = static_cast<int64_t>(flag("window_size"));
    const linattn_attention_args* args = null_args.count("args") ? nullptr : &a;
    if (pass == "forward") return linattn_attention_forward(form, args, ptr("o"), opt("lse"));
    return linattn_attention_backward(form, args, opt("o"), opt("lse"), ptr("do"), opt("dq"),
                                      opt("dk"), opt("dv"));
  }
  if (family == "lla") {
    linattn_lla_args a;
    linattn_lla_args_init(&a);
    a.q = t("q"); a.k = t("k"); a.v = t("v");
    a.ridge_lambda_per_token = t("ridge_lambda_per_token"); a.cu_seqlens = t("cu_seqlens");
    a.ridge_lambda = flag("ridge_lambda");
    a.scale = flag("scale");
    a.delta_eps = flag("delta_eps");
    a.cg_atol = flag("cg_atol");
    a.cg_rtol = flag("cg_rtol");
    a.cg_max_iters = i32("cg_max_iters");
    a.cg_use_preconditioner = i32("cg_use_preconditioner");
    a.direct_solve = i32("direct_solve");
    const linattn_lla_args* args = null_args.count("args") ? nullptr : &a;
    if (pass == "forward") return linattn_lla_forward(form, args, ptr("o"));
    linattn_lla_grads g{t("dq"), t("dk"), t("dv"), t("dridge_lambda_per_token")};
    return linattn_lla_backward(form, args, ptr("do"), null_args.count("grads") ? nullptr : &g);
  }
  if (family == "conv1d" && pass == "update")
    return linattn_causal_conv1d_update(ptr("x"), ptr("cache"), ptr("weight"), opt("bias"),
                                        opt("residual"), i32("activation"), ptr("y"));
  if (family == "conv1d") {
    linattn_conv1d_args a{t("x"), t("weight"), t("bias"), t("residual"), t("initial_state"),
                          t("cu_seqlens"), i32("output_final_state"), i32("activation")};
    const linattn_conv1d_args* args = null_args.count("args") ? nullptr : &a;
    if (pass == "forward")
      return linattn_causal_conv1d_forward(form, args, ptr("y"), opt("final_state"));
    linattn_conv1d_grads g{t("dx"), t("dweight"), t("dbias"), t("dresidual"), t("dinitial_state")};
    return linattn_causal_conv1d_backward(form, args, ptr("dy"), opt("dfinal_state"),
                                          null_args.count("grads") ? nullptr : &g);
  }
  if (family == "scan" && pass == "update") {
    linattn_scan_step_args a{t("state"), t("x"), t("dt"), t("A"), t("B"), t("C"), t("D"),
                             t("z"), t("dt_bias"), i32("softplus")};
    return linattn_selective_state_update(null_args.count("args") ? nullptr : &a, ptr("y"));
  }
  if (family == "scan") {
    linattn_scan_args a{t("u"), t("delta"), t("A"), t("B"), t("C"), t("D"), t("z"),
                        t("delta_bias"), t("initial_state"), t("cu_seqlens"), i32("softplus"),
                        i32("output_final_state")};
    const linattn_scan_args* args = null_args.count("args") ? nullptr : &a;
    if (pass == "forward")
      return linattn_selective_scan_forward(form, args, ptr("y"), opt("final_state"));
    linattn_scan_grads g{t("du"), t("ddelta"), t("dA"), t("dB"), t("dC"), t("dD"), t("dz"),
                         t("ddelta_bias"), t("dinitial_state")};
    return linattn_selective_scan_backward(form, args, ptr("dy"), opt("dfinal_state"),
                                           null_args.count("grads") ? nullptr : &g);
  }
  throw std::runtime_error("families: unknown call " + family + ":" + pass);
}

}  // namespace linattn_test
