// LLA checks (check.hpp): random cases, the oracle against finite differences and the
// operator's properties (algorithms.md §4.9a), the fast forms against the oracle.
#include "ops/lla/check.hpp"

#include <algorithm>
#include <cmath>
#include <random>
#include <sstream>

#include "core/parallel.hpp"
#include "linattn/error.hpp"

namespace linattn::lla::check {
namespace {

using linattn::check::rel_error;

std::vector<int64_t> q_shape(const Case& c) { return {c.B, c.Tq, c.H, c.K}; }
std::vector<int64_t> o_shape(const Case& c) { return {c.B, c.Tq, c.H, c.V}; }

Buffer normal_buffer(DType dtype, std::vector<int64_t> shape, std::mt19937_64& rng, double shift = 0) {
  Buffer b(DType::f64, std::move(shape));
  std::normal_distribution<double> normal(0.0, 1.0);
  for (int64_t i = 0; i < b.numel(); ++i) b.set(i, normal(rng) + shift);
  return b.to(dtype);
}

// Tokens [t0, t0 + n) of every batch row of a [B, T, ...] buffer.
Buffer slice_tokens(const Buffer& x, int64_t t0, int64_t n) {
  std::vector<int64_t> shape = x.shape();
  const int64_t T = shape[1], inner = x.numel() / (shape[0] * T);
  shape[1] = n;
  Buffer out(x.dtype(), shape);
  for (int64_t b = 0; b < shape[0]; ++b)
    for (int64_t i = 0; i < n * inner; ++i) out.set(b * n * inner + i, x.get((b * T + t0) * inner + i));
  return out;
}

// ||a - b|| (b = 0 when a alone is given).
double distance(const Buffer& a, const Buffer* b = nullptr) {
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = a.get(i) - (b ? b->get(i) : 0.0);
    s += d * d;
  }
  return std::sqrt(s);
}

// The sum over o of o * weight: a scalar loss whose gradient is the backward with d_o = weight.
double loss(const Case& c, const Inputs& in, const Buffer& weight) {
  const Buffer o = run_forward(c, in, Form::reference);
  double l = 0;
  for (int64_t i = 0; i < o.numel(); ++i) l += o.get(i) * weight.get(i);
  return l;
}

}  // namespace

std::string Case::describe() const {
  std::ostringstream s;
  s << "B=" << B << " T=" << T;
  if (Tq != T) s << " Tq=" << Tq;
  s << " H=" << H << " K=" << K << " V=" << V << " lambda=" << lambda << (per_token ? "/token" : "");
  if (key_shift != 0) s << " key_shift=" << key_shift;
  if (solver == Solver::direct) s << " direct";
  if (!seqlens.empty()) {
    s << " seqlens=";
    for (size_t i = 0; i < seqlens.size(); ++i) s << (i ? "," : "") << seqlens[i];
  }
  return s.str();
}

Inputs Inputs::to(DType dtype) const {
  Inputs out = *this;
  out.q = q.to(dtype);
  out.k = k.to(dtype);
  out.v = v.to(dtype);
  if (lambda.given()) out.lambda = lambda.to(dtype);
  return out;
}

Inputs make_inputs(const Case& c, DType dtype) {
  std::mt19937_64 rng(c.seed * 0x9E3779B97F4A7C15ull + 0x11a);
  Inputs in;
  in.q = normal_buffer(dtype, q_shape(c), rng);
  in.k = normal_buffer(dtype, {c.B, c.T, c.H, c.K}, rng, c.key_shift);
  in.v = normal_buffer(dtype, {c.B, c.T, c.H, c.V}, rng);
  if (c.per_token) {
    in.lambda = Buffer(DType::f64, {c.B, c.Tq, c.H});
    std::uniform_real_distribution<double> factor(0.5, 2.0);
    for (int64_t i = 0; i < in.lambda.numel(); ++i) in.lambda.set(i, c.lambda * factor(rng));
    in.lambda = in.lambda.to(dtype);
  }
  if (!c.seqlens.empty()) {
    in.cu_seqlens = Buffer(DType::i64, {static_cast<int64_t>(c.seqlens.size()) + 1});
    int64_t total = 0;
    in.cu_seqlens.set(0, 0);
    for (size_t i = 0; i < c.seqlens.size(); ++i) in.cu_seqlens.set(i + 1, total += c.seqlens[i]);
  }
  return in;
}

Args tight_args(const Case& c, const Inputs& in) {
  Args a;
  a.q = in.q.view();
  a.k = in.k.view();
  a.v = in.v.view();
  if (in.lambda.given()) a.ridge_lambda_per_token = in.lambda.view();
  a.ridge_lambda = c.lambda;
  if (in.cu_seqlens.given()) a.cu_seqlens = in.cu_seqlens.view();
  a.cg_atol = 0;
  a.cg_rtol = 1e-14;  // ||r|| <= 1e-7 ||r_0||: fp32 rounding
  a.cg_max_iters = static_cast<int32_t>(4 * c.K + 32);
  a.solver = c.solver;
  return a;
}

Buffer run_forward(const Args& a) {
  Buffer o(a.v.dtype, {a.q.shape[0], a.q.shape[1], a.q.shape[2], a.v.shape[3]});
  forward(Form::reference, a, o.view());
  return o;
}

Buffer run_forward(const Case& c, const Inputs& in, Form form) {
  const Args a = tight_args(c, in);
  Buffer o(in.v.dtype(), o_shape(c));
  forward(form, a, o.view());
  return o;
}

Grads run_backward(const Case& c, const Inputs& in, Form form, const Buffer& d_o) {
  Grads g{Buffer(in.q.dtype(), in.q.shape()), Buffer(in.k.dtype(), in.k.shape()),
          Buffer(in.v.dtype(), in.v.shape()), {}};
  lla::Grads views{g.dq.view(), g.dk.view(), g.dv.view(), {}};
  if (in.lambda.given()) {
    g.dlambda = Buffer(in.lambda.dtype(), in.lambda.shape());
    views.dridge_lambda_per_token = g.dlambda.view();
  }
  backward(form, tight_args(c, in), d_o.view(), views);
  return g;
}

double finite_difference_error(const Case& c) {
  constexpr int kElementsPerInput = 12;
  constexpr double kRelativeStep = 1e-5;  // truncation O(h^2) ~ 1e-10, rounding O(eps / h)
  Inputs in = make_inputs(c, DType::f64);
  std::mt19937_64 rng(c.seed + 17);
  const Buffer weight = normal_buffer(DType::f64, o_shape(c), rng);
  const Grads gr = run_backward(c, in, Form::reference, weight);
  const std::pair<Buffer*, const Buffer*> pairs[] = {
      {&in.q, &gr.dq}, {&in.k, &gr.dk}, {&in.v, &gr.dv}, {&in.lambda, &gr.dlambda}};
  std::vector<std::pair<double, double>> sampled;
  double largest = 0;
  for (auto [input, grad] : pairs) {
    if (!input->given()) continue;
    std::uniform_int_distribution<int64_t> pick(0, input->numel() - 1);
    double diff2 = 0, norm2 = 0;
    for (int e = 0; e < kElementsPerInput; ++e) {
      const int64_t i = pick(rng);
      const double x = input->get(i);
      double h = kRelativeStep * std::max(1.0, std::abs(x));
      if (input == &in.lambda) h = std::min(h, 0.5 * x);  // lambda stays > 0
      input->set(i, x + h);
      const double lp = loss(c, in, weight);
      input->set(i, x - h);
      const double lm = loss(c, in, weight);
      input->set(i, x);
      const double fd = (lp - lm) / (2 * h);
      diff2 += (fd - grad->get(i)) * (fd - grad->get(i));
      norm2 += fd * fd;
    }
    sampled.push_back({diff2, norm2});
    largest = std::max(largest, norm2);
  }
  // Relative per input; a gradient that vanishes (one key: o = v whatever q and k) is measured
  // against 1e-3 of the largest, the resolution of differences of the loss.
  double worst = 0;
  for (auto [diff2, norm2] : sampled) worst = std::max(worst, std::sqrt(diff2 / std::max(norm2, 1e-6 * largest)));
  return worst;
}

double affine_error(const Case& c) {
  Inputs in = make_inputs(c, DType::f64);
  const Buffer o = run_forward(c, in, Form::reference);
  double worst = 0;
  // (factor, shift) = (0, 1): v = ones gives o = ones (sum_j l_ij = 1); (2.5, b_e): linearity.
  for (const double factor : {0.0, 2.5}) {
    Inputs moved = in;
    Buffer want(DType::f64, o.shape());
    for (int64_t i = 0; i < in.v.numel(); ++i)
      moved.v.set(i, factor * in.v.get(i) + (factor == 0 ? 1.0 : 0.1 * static_cast<double>(i % c.V) - 0.3));
    for (int64_t i = 0; i < o.numel(); ++i)
      want.set(i, factor * o.get(i) + (factor == 0 ? 1.0 : 0.1 * static_cast<double>(i % c.V) - 0.3));
    worst = std::max(worst, rel_error(run_forward(c, moved, Form::reference), want));
  }
  return worst;
}

double shift_invariance_error(const Case& c, DType dtype, Form form) {
  constexpr double kShift = 10;
  Inputs in = make_inputs(c, DType::f64);
  Inputs moved = in;
  for (int64_t i = c.K - 1; i < in.k.numel(); i += c.K) in.k.set(i, 0.0);
  for (int64_t i = c.K - 1; i < in.k.numel(); i += c.K) moved.k.set(i, kShift);
  for (int64_t i = c.K - 1; i < in.q.numel(); i += c.K) moved.q.set(i, in.q.get(i) + kShift);
  return rel_error(run_forward(c, moved.to(dtype), form), run_forward(c, in.to(dtype), form));
}

double softmax_limit_error(const Case& c) {
  if (!c.seqlens.empty()) fail("softmax_limit_error: needs a case without seqlens");
  Case big = c;
  big.lambda = 1e9;
  big.per_token = false;
  const Inputs in = make_inputs(big, DType::f64);
  const Buffer got = run_forward(big, in, Form::reference);
  Buffer want(DType::f64, o_shape(c));
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.K));
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.H; ++h)
      for (int64_t r = 0; r < c.Tq; ++r) {
        const int64_t n = c.T - c.Tq + r + 1;
        std::vector<double> s(n);
        for (int64_t j = 0; j < n; ++j) {
          double d = 0;
          for (int64_t e = 0; e < c.K; ++e)
            d += in.q.get(((b * c.Tq + r) * c.H + h) * c.K + e) * in.k.get(((b * c.T + j) * c.H + h) * c.K + e);
          s[j] = scale * d;
        }
        const double m = *std::max_element(s.begin(), s.end());
        double sum = 0;
        for (double& x : s) sum += (x = std::exp(x - m));
        for (int64_t e = 0; e < c.V; ++e) {
          double acc = 0;
          for (int64_t j = 0; j < n; ++j) acc += s[j] * in.v.get(((b * c.T + j) * c.H + h) * c.V + e);
          want.set(((b * c.Tq + r) * c.H + h) * c.V + e, acc / sum);
        }
      }
  return rel_error(got, want);
}

double varlen_error(const Case& c) {
  if (c.seqlens.empty()) fail("varlen_error: needs a case with seqlens");
  const Inputs in = make_inputs(c, DType::f64);
  const Buffer full = run_forward(c, in, Form::reference);
  double worst = 0;
  int64_t start = 0;
  for (const int64_t len : c.seqlens) {
    Case one = c;
    one.seqlens.clear();
    one.T = one.Tq = len;
    Inputs piece;
    piece.q = slice_tokens(in.q, start, len);
    piece.k = slice_tokens(in.k, start, len);
    piece.v = slice_tokens(in.v, start, len);
    if (in.lambda.given()) piece.lambda = slice_tokens(in.lambda, start, len);
    worst = std::max(worst, rel_error(run_forward(one, piece, Form::reference), slice_tokens(full, start, len)));
    start += len;
  }
  return worst;
}

double form_forward_error(const Case& c, DType dtype, Form form) {
  const Inputs low = make_inputs(c, dtype);
  return rel_error(run_forward(c, low, form), run_forward(c, low.to(DType::f64), Form::reference));
}

double form_backward_error(const Case& c, DType dtype, Form form) {
  const Inputs low = make_inputs(c, dtype);
  std::mt19937_64 rng(c.seed + 23);
  const Buffer d_o = normal_buffer(dtype, o_shape(c), rng);
  const Grads got = run_backward(c, low, form, d_o);
  const Grads want = run_backward(c, low.to(DType::f64), Form::reference, d_o.to(DType::f64));
  const std::pair<const Buffer*, const Buffer*> pairs[] = {
      {&got.dq, &want.dq}, {&got.dk, &want.dk}, {&got.dv, &want.dv}, {&got.dlambda, &want.dlambda}};
  // Relative per gradient. One that vanishes (one key: o = v whatever q and k) holds only
  // rounding noise, eps times 1/delta_i (~80 in the one-key case) times the others: it is
  // measured against 1e-2 of the largest.
  double largest = 0, worst = 0;
  for (auto [g, w] : pairs)
    if (w->given()) largest = std::max(largest, distance(*w));
  for (auto [g, w] : pairs)
    if (w->given()) worst = std::max(worst, distance(*g, w) / std::max(distance(*w), 1e-2 * largest));
  return worst;
}

double decode_error(const Case& c, DType dtype) {
  if (!c.seqlens.empty() || c.Tq != c.T) fail("decode_error: needs a case with Tq = T and no seqlens");
  const Inputs in = make_inputs(c, dtype);
  const Buffer prefill = run_forward(c, in, Form::chunk);
  Buffer steps(prefill.dtype(), prefill.shape());
  for (int64_t t = 0; t < c.T; ++t) {
    Case step = c;
    step.Tq = 1;
    step.T = t + 1;
    Inputs cache;
    cache.q = slice_tokens(in.q, t, 1);
    cache.k = slice_tokens(in.k, 0, t + 1);
    cache.v = slice_tokens(in.v, 0, t + 1);
    if (in.lambda.given()) cache.lambda = slice_tokens(in.lambda, t, 1);
    const Buffer o = run_forward(step, cache, Form::recurrent);
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t i = 0; i < c.H * c.V; ++i)
        steps.set((b * c.T + t) * c.H * c.V + i, o.get(b * c.H * c.V + i));
  }
  return rel_error(steps, prefill);
}

std::vector<Case> builtin_cases() {
  std::vector<Case> cases;
  auto add = [&](Case c) {
    c.seed = cases.size() + 1;
    if (!c.seqlens.empty()) {
      c.T = 0;
      for (int64_t len : c.seqlens) c.T += len;
    }
    if (c.Tq == 0) c.Tq = c.T;  // 0: every position queries
    cases.push_back(c);
  };
  // (B, Tq, T, H, K, V, seqlens, lambda, per_token, key_shift)
  add({2, 0, 37, 2, 8, 6, {}, 1.0, false, 0, 0});    // T not a multiple of the query tile
  add({1, 1, 1, 1, 4, 3, {}, 0.1, false, 0, 0});     // one key: Sigma = z z^T + lambda I, o = v
  add({1, 0, 70, 1, 16, 16, {}, 1.0, true, 0, 0});   // per-token lambda (and dlambda)
  add({2, 5, 50, 1, 8, 8, {}, 1.0, false, 0, 0});    // 5 queries at the end of a 50-key cache
  add({1, 0, 0, 2, 8, 8, {1, 40, 23}, 1.0, false, 0, 0});  // varlen with a length-1 sequence
  add({1, 0, 130, 1, 64, 64, {}, 10.0, false, 0, 0});      // the authors' head dim and lambda
  add({1, 0, 100, 1, 16, 16, {}, 0.1, false, 0, 0});       // small ridge: Sigma ill-conditioned
  add({1, 0, 60, 2, 8, 8, {}, 1.0, false, 3.0, 0});        // keys far from the queries
  return cases;
}

std::vector<linattn::check::Job> jobs(DType dtype) {
  std::vector<linattn::check::Job> out;
  const std::string name = "lla_attention";
  // fp32: the fast forms solve by CG in fp32; the error is fp32 rounding times the condition
  // number of Sigma_i (up to ~1e3 with lambda = 0.1). bf16: the outputs are rounded to bf16.
  const double tol = dtype == DType::bf16 ? 1e-2 : 1e-4;
  for (const Case& c : builtin_cases()) {
    const std::string shape = c.describe();
    if (dtype == DType::f64) {
      if (c.T * c.H * c.B <= 140)
        out.push_back({name, "reference", shape, "bwd vs finite differences", 1e-6, [c] { return finite_difference_error(c); }});
      out.push_back({name, "reference", shape, "o(a v + b) = a o + b", 1e-9, [c] { return affine_error(c); }});
      out.push_back({name, "reference", shape, "shifted logits: same o", 1e-10, [c] { return shift_invariance_error(c, DType::f64, Form::reference); }});
      if (c.seqlens.empty())
        out.push_back({name, "reference", shape, "lambda=1e9 = softmax", 1e-6, [c] { return softmax_limit_error(c); }});
      else
        out.push_back({name, "reference", shape, "varlen = separate runs", 1e-12, [c] { return varlen_error(c); }});
      continue;
    }
    out.push_back({name, "chunk", shape, "fwd vs reference", tol, [c, dtype] { return form_forward_error(c, dtype, Form::chunk); }});
    out.push_back({name, "chunk", shape, "bwd vs reference", tol, [c, dtype] { return form_backward_error(c, dtype, Form::chunk); }});
    out.push_back({name, "recurrent", shape, "fwd vs reference", tol, [c, dtype] { return form_forward_error(c, dtype, Form::recurrent); }});
    if (dtype == DType::f32)  // (bf16 would round q + 10 coarser than q: a different z)
      out.push_back({name, "chunk", shape, "shifted logits: same o", tol, [c, dtype] { return shift_invariance_error(c, dtype, Form::chunk); }});
    if (c.seqlens.empty() && c.Tq == c.T && c.T <= 70)
      out.push_back({name, "recurrent", shape, "decode steps = chunk prefill", tol, [c, dtype] { return decode_error(c, dtype); }});
  }
  return out;
}

}  // namespace linattn::lla::check
