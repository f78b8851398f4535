// `linattn check` jobs of softmax attention (harness.hpp CheckFamily "softmax_attention"):
// the fp64 oracle against a dense T x T form written apart from it, its backward against central
// differences, cu_seqlens against separate runs and the decode step against the full forward;
// then the chunk forward/backward and the recurrent decode against the oracle, in every dtype.
// Cases are adversarial: very large and very small logits, T not a multiple of the tile, T = 1,
// window 1 and window >= T, varlen with length-1 sequences, GQA, real head dims.
#include "ops/attention/check.hpp"

#include <algorithm>
#include <cmath>
#include <random>
#include <sstream>

#include "linattn/attention.hpp"

namespace linattn::check {
namespace {

// ----------------------------------------------------------------------------------- inputs

Buffer random_buffer(std::vector<int64_t> shape, double stddev, std::mt19937_64& rng) {
  Buffer b(DType::f64, std::move(shape));
  std::normal_distribution<double> normal(0.0, stddev);
  for (int64_t i = 0; i < b.numel(); ++i) b.set(i, normal(rng));
  return b;
}

Buffer index_buffer(const std::vector<int64_t>& values) {
  Buffer b(DType::i64, {static_cast<int64_t>(values.size())});
  for (size_t i = 0; i < values.size(); ++i) b.set(static_cast<int64_t>(i), static_cast<double>(values[i]));
  return b;
}

}  // namespace

// q and k entries have standard deviation sqrt(logit_std) * K^-1/4, so that the scaled logits
// scale q.k have standard deviation ~logit_std.
AttnInputs make_attn_inputs(const AttnCase& c) {
  std::mt19937_64 rng(c.seed * 0x9E3779B97F4A7C15ull + 7);
  const int64_t T = c.T();
  const double qk_std = std::sqrt(c.logit_std) * std::pow(static_cast<double>(c.K), 0.25);
  AttnInputs in;
  in.q = random_buffer({c.B, T, c.H, c.K}, qk_std, rng);
  in.k = random_buffer({c.B, T, c.Hkv, c.K}, qk_std, rng);
  in.v = random_buffer({c.B, T, c.Hkv, c.V}, 1.0, rng);
  if (!c.seqlens.empty()) {
    std::vector<int64_t> offsets{0};
    for (int64_t len : c.seqlens) offsets.push_back(offsets.back() + len);
    in.cu_seqlens = index_buffer(offsets);
  }
  return in;
}

AttnInputs AttnInputs::to(DType dtype) const {
  return {q.to(dtype), k.to(dtype), v.to(dtype), cu_seqlens};
}

AttentionArgs args_of(const AttnCase& c, const AttnInputs& in) {
  AttentionArgs a;
  a.q = in.q.view();
  a.k = in.k.view();
  a.v = in.v.view();
  a.cu_seqlens = in.cu_seqlens.view();
  a.window_size = c.window;
  return a;
}

AttnForward attn_forward(const AttnCase& c, const AttnInputs& in, Form form) {
  const DType dt = in.q.dtype();
  AttnForward f{Buffer(dt, {c.B, c.T(), c.H, c.V}),
            Buffer(dt == DType::f64 ? DType::f64 : DType::f32, {c.B, c.T(), c.H})};
  attention_forward(form, args_of(c, in), {f.o.view(), f.lse.view()});
  return f;
}

AttnGrads attn_backward(const AttnCase& c, const AttnInputs& in, Form form, const Buffer& d_o) {
  const DType dt = in.q.dtype();
  AttnGrads g{Buffer(dt, in.q.shape()), Buffer(dt, in.k.shape()), Buffer(dt, in.v.shape())};
  const AttnForward f = attn_forward(c, in, form);
  attention_backward(form, args_of(c, in), f.o.view(), f.lse.view(), d_o.view(),
                     {g.dq.view(), g.dk.view(), g.dv.view()});
  return g;
}

namespace {

double norm(const Buffer& b) {
  double sum = 0;
  for (int64_t i = 0; i < b.numel(); ++i) sum += b.get(i) * b.get(i);
  return std::sqrt(sum);
}

// The largest relative error over dq, dk, dv. A gradient that vanishes identically (dq and dk
// with window 1: every token reads only itself, so dS = P (dP - D) = 0) has only rounding noise
// to compare, measured against the largest gradient of the same pass rather than against 0.
double max_error(const AttnGrads& got, const AttnGrads& want) {
  const double largest = std::max({norm(want.dq), norm(want.dk), norm(want.dv)});
  double err = 0;
  for (auto [g, w] : {std::pair{&got.dq, &want.dq}, {&got.dk, &want.dk}, {&got.dv, &want.dv}})
    err = std::max(err, norm(*w) > 0 ? rel_error(*g, *w) : rel_error(*g, *w) / largest);
  return err;
}

// ------------------------------------------------------------------- checks of the oracle

// Per (sequence, head): the full masked logit matrix, row softmax, O = P V, written apart from
// reference.cpp (which works query by query). Returns o and lse in fp64.
AttnForward dense_form(const AttnCase& c, const AttnInputs& in) {
  AttnForward f{Buffer(DType::f64, {c.B, c.T(), c.H, c.V}), Buffer(DType::f64, {c.B, c.T(), c.H})};
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.K));
  const auto at = [](const Buffer& b, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
    const auto& s = b.shape();
    return b.get(((i0 * s[1] + i1) * s[2] + i2) * s[3] + i3);
  };
  std::vector<std::pair<int64_t, int64_t>> seqs;  // (batch, start) of each sequence, length below
  std::vector<int64_t> lens;
  if (c.seqlens.empty()) {
    for (int64_t b = 0; b < c.B; ++b) seqs.push_back({b, 0}), lens.push_back(c.T());
  } else {
    int64_t start = 0;
    for (int64_t len : c.seqlens) seqs.push_back({0, start}), lens.push_back(len), start += len;
  }
  for (size_t n = 0; n < seqs.size(); ++n) {
    const auto [b, t0] = seqs[n];
    const int64_t L = lens[n];
    for (int64_t h = 0; h < c.H; ++h) {
      const int64_t hk = h / (c.H / c.Hkv);
      std::vector<double> S(L * L, -INFINITY);
      for (int64_t i = 0; i < L; ++i)
        for (int64_t j = 0; j < L; ++j) {
          const bool visible = j <= i && (c.window == 0 || i - j < c.window);
          if (!visible) continue;
          double s = 0;
          for (int64_t d = 0; d < c.K; ++d) s += at(in.q, b, t0 + i, h, d) * at(in.k, b, t0 + j, hk, d);
          S[i * L + j] = scale * s;
        }
      for (int64_t i = 0; i < L; ++i) {
        const double m = *std::max_element(&S[i * L], &S[i * L] + L);
        double l = 0;
        for (int64_t j = 0; j < L; ++j) l += std::exp(S[i * L + j] - m);
        f.lse.set((b * c.T() + t0 + i) * c.H + h, m + std::log(l));
        for (int64_t e = 0; e < c.V; ++e) {
          double o = 0;
          for (int64_t j = 0; j < L; ++j) o += std::exp(S[i * L + j] - m) / l * at(in.v, b, t0 + j, hk, e);
          f.o.set(((b * c.T() + t0 + i) * c.H + h) * c.V + e, o);
        }
      }
    }
  }
  return f;
}

double dense_form_error(const AttnCase& c) {
  const AttnInputs in = make_attn_inputs(c);
  const AttnForward want = dense_form(c, in), got = attn_forward(c, in, Form::reference);
  return std::max(rel_error(got.o, want.o), rel_error(got.lse, want.lse));
}

// The oracle's gradients against central differences of L = sum(o ⊙ w) in fp64.
double finite_difference_error(const AttnCase& c) {
  AttnInputs in = make_attn_inputs(c);
  std::mt19937_64 rng(c.seed + 99);
  const Buffer w = random_buffer({c.B, c.T(), c.H, c.V}, 1.0, rng);
  const auto loss = [&] {
    const AttnForward f = attn_forward(c, in, Form::reference);
    double sum = 0;
    for (int64_t i = 0; i < w.numel(); ++i) sum += f.o.get(i) * w.get(i);
    return sum;
  };
  const AttnGrads g = attn_backward(c, in, Form::reference, w);
  constexpr double h = 1e-6;
  AttnGrads fd{Buffer(DType::f64, in.q.shape()), Buffer(DType::f64, in.k.shape()),
           Buffer(DType::f64, in.v.shape())};
  for (auto [x, dx] : {std::pair{&in.q, &fd.dq}, {&in.k, &fd.dk}, {&in.v, &fd.dv}})
    for (int64_t i = 0; i < x->numel(); ++i) {
      const double x0 = x->get(i);
      x->set(i, x0 + h);
      const double up = loss();
      x->set(i, x0 - h);
      const double down = loss();
      x->set(i, x0);
      dx->set(i, (up - down) / (2 * h));
    }
  return max_error(g, fd);
}

// A cu_seqlens run against one run per sequence (B = 1 each), outputs and lse.
double varlen_error(const AttnCase& c) {
  const AttnInputs in = make_attn_inputs(c);
  const AttnForward packed = attn_forward(c, in, Form::reference);
  double err = 0;
  int64_t start = 0;
  for (int64_t len : c.seqlens) {
    AttnCase one = c;
    one.seqlens.clear();
    one.B = 1;
    one.T_ = len;
    AttnInputs part;
    const auto slice = [&](const Buffer& b) {
      std::vector<int64_t> shape = b.shape();
      const int64_t row = shape[2] * shape[3];
      shape[1] = len;
      Buffer out(DType::f64, shape);
      for (int64_t i = 0; i < out.numel(); ++i) out.set(i, b.get(start * row + i));
      return out;
    };
    part.q = slice(in.q);
    part.k = slice(in.k);
    part.v = slice(in.v);
    const AttnForward alone = attn_forward(one, part, Form::reference);
    err = std::max(err, rel_error(alone.o, slice(packed.o)));
    start += len;
  }
  return err;
}

// ---------------------------------------------------------------------- decode (KV cache)

// The decode problem of a case: sequence n has seqlens[n] tokens and its last Tq queries are new.
// The cache is S = max length rows (padding rows random: they must never be read).
struct DecodeInputs {
  Buffer q, k_cache, v_cache, cache_seqlens;
  AttnInputs full;  // the same sequences packed for the forward: cu_seqlens, q of every token
};
DecodeInputs make_decode_inputs(const DecodeCase& c) {
  AttnCase packed{1, 0, c.H, c.Hkv, c.K, c.V, c.window, c.lens, c.logit_std, c.seed};
  DecodeInputs d;
  d.full = make_attn_inputs(packed);
  const int64_t N = static_cast<int64_t>(c.lens.size());
  const int64_t S = *std::max_element(c.lens.begin(), c.lens.end()) + 3;
  std::mt19937_64 rng(c.seed + 5);
  d.q = Buffer(DType::f64, {N, c.Tq, c.H, c.K});
  d.k_cache = random_buffer({N, S, c.Hkv, c.K}, 1.0, rng);
  d.v_cache = random_buffer({N, S, c.Hkv, c.V}, 1.0, rng);
  d.cache_seqlens = index_buffer(c.lens);
  int64_t start = 0;
  for (int64_t n = 0; n < N; ++n) {
    const int64_t len = c.lens[n];
    for (int64_t t = 0; t < len; ++t) {
      for (int64_t i = 0; i < c.Hkv * c.K; ++i)
        d.k_cache.set((n * S + t) * c.Hkv * c.K + i, d.full.k.get((start + t) * c.Hkv * c.K + i));
      for (int64_t i = 0; i < c.Hkv * c.V; ++i)
        d.v_cache.set((n * S + t) * c.Hkv * c.V + i, d.full.v.get((start + t) * c.Hkv * c.V + i));
    }
    for (int64_t t = 0; t < c.Tq; ++t)
      for (int64_t i = 0; i < c.H * c.K; ++i)
        d.q.set((n * c.Tq + t) * c.H * c.K + i, d.full.q.get((start + len - c.Tq + t) * c.H * c.K + i));
    start += len;
  }
  return d;
}

// The decode output of `form` on inputs stored as `dtype` against the rows of the fp64 packed
// forward (oracle) on the same rounded values.
double decode_error(const DecodeCase& c, DType dtype, Form form) {
  const DecodeInputs d = make_decode_inputs(c);
  AttentionCacheArgs a;
  const Buffer q = d.q.to(dtype), kc = d.k_cache.to(dtype), vc = d.v_cache.to(dtype);
  a.q = q.view();
  a.k_cache = kc.view();
  a.v_cache = vc.view();
  a.cache_seqlens = d.cache_seqlens.view();
  a.window_size = c.window;
  const int64_t N = static_cast<int64_t>(c.lens.size());
  Buffer o(dtype, {N, c.Tq, c.H, c.V});
  attention_decode(form, a, o.view());

  AttnCase packed{1, 0, c.H, c.Hkv, c.K, c.V, c.window, c.lens, c.logit_std, c.seed};
  const AttnForward full = attn_forward(packed, d.full.to(dtype).to(DType::f64), Form::reference);
  Buffer want(DType::f64, o.shape());
  int64_t start = 0;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t t = 0; t < c.Tq; ++t)
      for (int64_t i = 0; i < c.H * c.V; ++i)
        want.set((n * c.Tq + t) * c.H * c.V + i,
                 full.o.get((start + c.lens[n] - c.Tq + t) * c.H * c.V + i));
    start += c.lens[n];
  }
  return rel_error(o, want);
}

// ---------------------------------------------------------------------- fast forms

double chunk_forward_error(const AttnCase& c, DType dtype) {
  const AttnInputs low = make_attn_inputs(c).to(dtype);
  const AttnForward got = attn_forward(c, low, Form::chunk);
  const AttnForward want = attn_forward(c, low.to(DType::f64), Form::reference);
  return std::max(rel_error(got.o, want.o), rel_error(got.lse, want.lse));
}

double chunk_backward_error(const AttnCase& c, DType dtype) {
  const AttnInputs low = make_attn_inputs(c).to(dtype);
  std::mt19937_64 rng(c.seed + 17);
  const Buffer d_o = random_buffer({c.B, c.T(), c.H, c.V}, 1.0, rng).to(dtype);
  const AttnGrads got = attn_backward(c, low, Form::chunk, d_o);
  const AttnGrads want = attn_backward(c, low.to(DType::f64), Form::reference, d_o.to(DType::f64));
  return max_error(got, want);
}

// fp32 keeps ~1e-5 relative error while the logits are O(10); with logits in the hundreds each
// fp32 logit carries an absolute error ~|s| * 6e-8 * sqrt(K), which moves the probabilities of a
// peaked softmax by that much relatively: the tolerance grows with the largest logit. In bf16 the
// backward's D = rowsum(dO ⊙ o) reads o rounded to bf16 (flash attention keeps no fp32 copy); a
// peaked softmax makes dP - D cancel (o ~ one value row), so that rounding is amplified in dq and
// dk: 2e-2 there, fla's bound for its most sensitive gradients.
double fast_tolerance(DType dtype, double logit_std) {
  if (dtype == DType::bf16) return logit_std > 10.0 ? 2e-2 : 1e-2;
  return 1e-5 * std::max(1.0, logit_std / 10.0);
}

}  // namespace

std::string AttnCase::describe() const {
  std::ostringstream s;
  s << "B=" << B << " T=" << T() << " H=" << H;
  if (Hkv != H) s << " Hkv=" << Hkv;
  s << " K=" << K << " V=" << V;
  if (window) s << " window=" << window;
  if (!seqlens.empty()) {
    s << " seqlens=";
    for (size_t i = 0; i < seqlens.size(); ++i) s << (i ? "," : "") << seqlens[i];
  }
  if (logit_std != 1.0) s << " logits~" << logit_std;
  return s.str();
}

std::string DecodeCase::describe() const {
  std::ostringstream s;
  s << "decode Tq=" << Tq << " H=" << H;
  if (Hkv != H) s << " Hkv=" << Hkv;
  s << " K=" << K << " V=" << V;
  if (window) s << " window=" << window;
  s << " cache_seqlens=";
  for (size_t i = 0; i < lens.size(); ++i) s << (i ? "," : "") << lens[i];
  return s.str();
}

std::vector<AttnCase> attention_cases() {
  return {
      {2, 150, 2, 2, 8, 6, 0, {}, 1.0, 1},          // T not a multiple of the tile
      {1, 1, 2, 1, 8, 8, 0, {}, 1.0, 2},            // T = 1
      {1, 130, 4, 2, 16, 8, 1, {}, 1.0, 3},         // window 1: each token reads itself
      {1, 70, 2, 2, 8, 8, 200, {}, 1.0, 4},         // window >= T: full causal
      {2, 200, 2, 1, 16, 16, 37, {}, 1.0, 5},       // window crossing tile edges, GQA 2:1
      {1, 100, 2, 2, 8, 8, 0, {}, 150.0, 6},        // very large logits (hundreds): peaked softmax
      {1, 100, 2, 2, 8, 8, 0, {}, 1e-4, 7},         // very small logits: near-uniform
      {1, 0, 6, 2, 8, 4, 0, {1, 70, 1, 64, 13}, 1.0, 8},    // varlen with length-1 sequences, GQA 3:1
      {1, 0, 4, 1, 8, 8, 20, {50, 1, 90}, 1.0, 9},  // varlen + window + GQA 4:1
      {1, 300, 4, 4, 32, 32, 0, {}, 3.0, 10},       // longer, sharper
      {1, 300, 2, 1, 128, 128, 0, {}, 1.0, 11},     // real head dim, several tiles
      {1, 0, 2, 1, 4, 3, 3, {5, 1, 6}, 1.0, 12},    // small enough for finite differences:
      {1, 9, 2, 2, 4, 3, 0, {}, 8.0, 13},           //   varlen + window + GQA, sharp logits
  };
}

std::vector<DecodeCase> decode_cases() {
  return {
      {1, 2, 2, 8, 8, 0, {1, 50, 80}, 1.0, 21},      // one new token, cache of length 1
      {3, 4, 2, 16, 8, 0, {3, 40, 130}, 1.0, 22},    // three new tokens, GQA 2:1
      {1, 8, 1, 8, 8, 16, {5, 100}, 1.0, 23},        // window, GQA 8:1 (8 stacked rows)
      {70, 4, 2, 8, 8, 0, {70, 90}, 1.0, 24},        // 140 stacked rows: more than one tile
      {2, 2, 2, 8, 8, 1, {2, 33}, 50.0, 25},         // window 1, large logits
  };
}

bool small_for_fd(const AttnCase& c) { return c.B * c.T() * (c.H + c.Hkv) * c.K <= 2000; }

std::vector<Job> attention_jobs(DType dtype) {
  std::vector<Job> jobs;
  const std::string name = "softmax_attention";
  for (const AttnCase& c : attention_cases()) {
    const std::string shape = c.describe();
    if (dtype == DType::f64) {
      jobs.push_back({name, "reference", shape, "fwd vs dense T x T form", 1e-12, [c] { return dense_form_error(c); }});
      if (small_for_fd(c))
        jobs.push_back({name, "reference", shape, "bwd vs finite differences", 1e-6, [c] { return finite_difference_error(c); }});
      if (!c.seqlens.empty())
        jobs.push_back({name, "reference", shape, "varlen = separate runs", 1e-12, [c] { return varlen_error(c); }});
      continue;
    }
    const double tol = fast_tolerance(dtype, c.logit_std);
    jobs.push_back({name, "chunk", shape, "fwd vs reference", tol, [c, dtype] { return chunk_forward_error(c, dtype); }});
    jobs.push_back({name, "chunk", shape, "bwd vs reference", tol, [c, dtype] { return chunk_backward_error(c, dtype); }});
  }
  for (const DecodeCase& c : decode_cases()) {
    const Form form = dtype == DType::f64 ? Form::reference : Form::recurrent;
    const double tol = dtype == DType::f64 ? 1e-12 : fast_tolerance(dtype, c.logit_std);
    jobs.push_back({name, form_name(form), c.describe(), "decode vs forward rows", tol,
                    [c, dtype, form] { return decode_error(c, dtype, form); }});
  }
  return jobs;
}

}  // namespace linattn::check
