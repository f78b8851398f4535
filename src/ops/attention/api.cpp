// The public entry points of softmax attention (include/linattn/attention.hpp): validate every
// input and output once (throwing linattn::Error that names the function, the argument, what was
// expected and what was given), build the attention::Problem, and run the form asked for. Float64 inputs run
// the fp64 oracle whatever the form, as the ops of ops.hpp do.
#include <cmath>
#include <tuple>
#include <vector>

#include "core/float_mode.hpp"
#include "linattn/attention.hpp"
#include "linattn/error.hpp"
#include "ops/attention/attention.hpp"
#include "ops/common/validator.hpp"

namespace linattn {
namespace {

using AttnProblem = attention::Problem;

constexpr const char* kForwardName = "parallel_attn";
constexpr const char* kDecodeName = "attn_with_kvcache";

struct Layouts {
  const char *q, *k_name, *k, *v_name, *v;
};

// q [B, T, H, K], k [B, S, Hkv, K], v [B, S, Hkv, V]: the sizes. S = T (same_length) for the
// forward, any for a KV cache.
AttnProblem make_problem(const Validator& check, const TensorView& q, const TensorView& k,
                     const TensorView& v, const Layouts& names, double scale,
                     int64_t window_size, bool same_length) {
  const char *k_name = names.k_name, *v_name = names.v_name;
  for (auto [name, t, layout] : {std::tuple{"q", &q, names.q}, {k_name, &k, names.k},
                                 {v_name, &v, names.v}}) {
    check.present(name, *t);
    check.basic(name, *t);
    check.floating(name, *t);
    check.rank(name, *t, 4, layout);
  }
  check.same_dtype(k_name, k, "q", q);
  check.same_dtype(v_name, v, "q", q);
  AttnProblem p{};
  p.H = q.shape[2];
  p.K = q.shape[3];
  p.Hkv = k.shape[2];
  p.V = v.shape[3];
  const int64_t S = same_length ? q.shape[1] : k.shape[1];
  check.shape(k_name, k, {q.shape[0], S, p.Hkv, p.K}, names.k);
  check.shape(v_name, v, {q.shape[0], S, p.Hkv, p.V}, names.v);
  if (p.H % p.Hkv != 0)
    fail(check.op(), ": the number of query heads H = ", p.H,
         " must be a multiple of the number of key/value heads Hkv = ", p.Hkv, " (q shape ",
         q.shape_str(), ", ", k_name, " shape ", k.shape_str(), ")");
  if (std::isnan(scale)) {
    p.scale = 1.0 / std::sqrt(static_cast<double>(p.K));
  } else {
    if (!std::isfinite(scale)) fail(check.op(), ": scale must be finite, got ", scale);
    p.scale = scale;
  }
  if (window_size < 0)
    fail(check.op(), ": window_size must be >= 1 (or 0/None for full causal attention), got ",
         window_size);
  p.window = window_size;
  return p;
}

AttnProblem forward_problem(const Validator& check, const AttentionArgs& a) {
  AttnProblem p = make_problem(check, a.q, a.k, a.v,
                           {"[B, T, H, K]", "k", "[B, T, Hkv, K]", "v", "[B, T, Hkv, V]"},
                           a.scale, a.window_size, true);
  for (const Sequence& s : check.sequences(a.cu_seqlens, a.q.shape[0], a.q.shape[1]))
    p.spans.push_back({s.batch, s.start, s.length, s.batch, s.start, 0});
  return p;
}

void check_output(const Validator& check, const char* name, const TensorView& t,
                  const std::vector<int64_t>& shape, const char* layout) {
  check.basic(name, t);
  check.floating(name, t);
  check.shape(name, t, shape, layout);
  check.writable(name, t);
}

std::vector<int64_t> dims(const TensorView& t) { return {t.shape.begin(), t.shape.begin() + t.ndim}; }

// [B, T, H, V] of o / d_o and [B, T, H] of lse.
std::vector<int64_t> o_shape(const AttnProblem& p, const TensorView& q) {
  return {q.shape[0], q.shape[1], p.H, p.V};
}

void check_lse(const Validator& check, const TensorView& lse, const TensorView& q) {
  check.basic("lse", lse);
  if (lse.dtype != DType::f32 && lse.dtype != DType::f64)
    fail(check.op(), ": lse must be float32 or float64, got ", dtype_name(lse.dtype));
  check.shape("lse", lse, {q.shape[0], q.shape[1], q.shape[2]}, "[B, T, H]");
}

void check_form(const char* op, Form form, Form fast) {
  if (form != Form::reference && form != fast)
    fail(op, ": form '", form_name(form), "' is not implemented; the forms are 'reference' and '",
         form_name(fast), "'");
}

}  // namespace

void attention_forward(Form form, const AttentionArgs& a, const AttentionOutputs& out) {
  const Validator check(kForwardName);
  check_form(kForwardName, form, Form::chunk);
  const AttnProblem p = forward_problem(check, a);
  check.present("o", out.o);
  check_output(check, "o", out.o, o_shape(p, a.q), "[B, T, H, V]");
  check.same_dtype("o", out.o, "v", a.v);
  if (out.lse.given()) {
    check_lse(check, out.lse, a.q);
    check.writable("lse", out.lse);
  }
  check.no_overlaps({{"o", &out.o}, {"lse", &out.lse}},
                    {{"q", &a.q}, {"k", &a.k}, {"v", &a.v}, {"cu_seqlens", &a.cu_seqlens}});
  if (form == Form::reference || a.q.dtype == DType::f64) {
    attention::reference_forward(p, a.q, a.k, a.v, out.o, out.lse);
  } else {
    const FlushDenormals mode;
    attention::chunk_forward(p, a.q, a.k, a.v, out.o, out.lse);
  }
}

void attention_backward(Form form, const AttentionArgs& a, const TensorView& o,
                        const TensorView& lse, const TensorView& d_o, const AttentionGrads& g) {
  const Validator check(kForwardName);
  check_form(kForwardName, form, Form::chunk);
  const AttnProblem p = forward_problem(check, a);
  check.present("do", d_o);
  check.basic("do", d_o);
  check.floating("do", d_o);
  check.shape("do", d_o, o_shape(p, a.q), "[B, T, H, V]");
  for (auto [name, grad, input] : {std::tuple{"dq", &g.dq, &a.q}, {"dk", &g.dk, &a.k},
                                   {"dv", &g.dv, &a.v}})
    if (grad->given()) check_output(check, name, *grad, dims(*input), "(the shape of its input)");
  const std::vector<Validator::Named> grad_outputs = {
      {"dq", &g.dq}, {"dk", &g.dk}, {"dv", &g.dv}};
  if (form == Form::reference || a.q.dtype == DType::f64) {
    check.no_overlaps(grad_outputs, {{"q", &a.q}, {"k", &a.k}, {"v", &a.v},
                                     {"cu_seqlens", &a.cu_seqlens}, {"do", &d_o}});
    attention::reference_backward(p, a.q, a.k, a.v, d_o, g.dq, g.dk, g.dv);
    return;
  }
  // The chunk backward recomputes the probabilities from the forward's o and lse (§4.11 c).
  check.present("o", o);
  check.basic("o", o);
  check.floating("o", o);
  check.shape("o", o, o_shape(p, a.q), "[B, T, H, V]");
  check.present("lse", lse);
  check_lse(check, lse, a.q);
  check.no_overlaps(grad_outputs, {{"q", &a.q}, {"k", &a.k}, {"v", &a.v},
                                   {"cu_seqlens", &a.cu_seqlens}, {"o", &o}, {"lse", &lse},
                                   {"do", &d_o}});
  const FlushDenormals mode;
  attention::chunk_backward(p, a.q, a.k, a.v, o, lse, d_o, g.dq, g.dk, g.dv);
}

void attention_decode(Form form, const AttentionCacheArgs& a, const TensorView& o) {
  const Validator check(kDecodeName);
  check_form(kDecodeName, form, Form::recurrent);
  AttnProblem p = make_problem(check, a.q, a.k_cache, a.v_cache, {"[N, Tq, H, K]", "k_cache",
                           "[N, S, Hkv, K]", "v_cache", "[N, S, Hkv, V]"}, a.scale,
                           a.window_size, false);
  const int64_t N = a.q.shape[0], Tq = a.q.shape[1], S = a.k_cache.shape[1];
  const TensorView& lens = a.cache_seqlens;
  check.present("cache_seqlens", lens);
  check.basic("cache_seqlens", lens);
  if (lens.dtype != DType::i32 && lens.dtype != DType::i64)
    fail(kDecodeName, ": cache_seqlens must be int32 or int64, got ", dtype_name(lens.dtype));
  check.shape("cache_seqlens", lens, {N}, "[N]");
  for (int64_t n = 0; n < N; ++n) {
    const int64_t len = load_index(lens, n);
    if (len < Tq || len > S)
      fail(kDecodeName, ": cache_seqlens[", n, "] must be in [Tq, S] = [", Tq, ", ", S,
           "] (the cache holds the Tq new tokens), got ", len);
    p.spans.push_back({n, 0, Tq, n, 0, len - Tq});
  }
  check.present("o", o);
  check_output(check, "o", o, o_shape(p, a.q), "[N, Tq, H, V]");
  check.same_dtype("o", o, "v_cache", a.v_cache);
  check.no_overlaps({{"o", &o}}, {{"q", &a.q}, {"k_cache", &a.k_cache}, {"v_cache", &a.v_cache},
                                  {"cache_seqlens", &lens}});
  if (form == Form::reference || a.q.dtype == DType::f64) {
    attention::reference_forward(p, a.q, a.k_cache, a.v_cache, o, {});
  } else {
    const FlushDenormals mode;
    attention::recurrent_decode(p, a.q, a.k_cache, a.v_cache, o);
  }
}

}  // namespace linattn
