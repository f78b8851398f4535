#include "check/harness.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <random>
#include <sstream>

#include "core/dtype.hpp"
#include "linattn/error.hpp"
#include "ops/common/problem.hpp"

namespace linattn::check {

// ---------------------------------------------------------------------------------- buffers

Buffer::Buffer(DType dtype, std::vector<int64_t> shape) : dtype_(dtype), shape_(std::move(shape)) {
  numel_ = 1;
  for (int64_t s : shape_) numel_ *= s;
  const int64_t bytes = numel_ * static_cast<int64_t>(dtype_size(dtype_));
  storage_.assign((bytes + 7) / 8, 0.0);
}

TensorView Buffer::view() const {
  if (!given()) return {};
  return TensorView::contiguous_from(const_cast<double*>(storage_.data()), dtype_, shape_);
}

double Buffer::get(int64_t i) const { return load_as_double(storage_.data(), dtype_, i); }

void Buffer::set(int64_t i, double value) {
  void* data = storage_.data();
  if (dtype_ == DType::i32) {
    static_cast<int32_t*>(data)[i] = static_cast<int32_t>(value);
  } else if (dtype_ == DType::i64) {
    static_cast<int64_t*>(data)[i] = static_cast<int64_t>(value);
  } else {
    store_from_double(data, dtype_, i, value);
  }
}

Buffer Buffer::to(DType dtype) const {
  if (!given()) return {};
  Buffer out(dtype, shape_);
  for (int64_t i = 0; i < numel_; ++i) out.set(i, get(i));
  return out;
}

double rel_error(const Buffer& got, const Buffer& want) {
  if (got.shape() != want.shape()) fail("rel_error: shapes differ");
  double diff = 0, norm = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double d = got.get(i) - want.get(i);
    diff += d * d;
    norm += want.get(i) * want.get(i);
  }
  if (std::isnan(diff)) return INFINITY;
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

bool bitwise_equal(const Buffer& a, const Buffer& b) {
  if (a.numel() != b.numel()) return false;
  for (int64_t i = 0; i < a.numel(); ++i)
    if (std::bit_cast<uint64_t>(a.get(i)) != std::bit_cast<uint64_t>(b.get(i))) return false;
  return true;
}

// ---------------------------------------------------------------------------------- cases

const char* gates_name(Gates gates) {
  switch (gates) {
    case Gates::typical: return "typical";
    case Gates::decay_near_1: return "decay~1";
    case Gates::decay_near_0: return "decay~0";
    case Gates::beta_near_0: return "beta~0";
    case Gates::beta_near_2: return "beta~2";
    case Gates::beta_wide: return "beta[0,2]";
    case Gates::decay_wide: return "decay[-20,-1e-6]";
    case Gates::beta_near_2_decay_near_1: return "beta~2,decay~1";
    case Gates::abar_near_0: return "abar~0";
    case Gates::abar_near_1: return "abar~1";
  }
  return "?";
}

std::string Case::describe() const {
  std::ostringstream s;
  s << "B=" << B << " T=" << T << " H=" << H;
  if (HV != H) s << " HV=" << HV;
  s << " K=" << K << " V=" << V;
  if (n_h != 1) s << " n_h=" << n_h;
  if (!seqlens.empty()) s << " varlen(" << seqlens.size() << ")";
  if (initial_state) s << " h0";
  if (normalize) s << " normalize";
  if (l2norm) s << " l2norm";
  if (op == Op::delta_product && !gated) s << " no-g";
  if (gates != Gates::typical) s << " " << gates_name(gates);
  return s.str();
}

namespace {

const OpSpec& spec_of(const Case& c) { return op_spec(c.op); }
bool has_g(const Case& c) { return spec_of(c).takes_g && (spec_of(c).requires_g || c.gated); }

double log_decay(std::mt19937_64& rng, Gates gates) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  switch (gates) {
    case Gates::decay_near_1:
    case Gates::beta_near_2_decay_near_1: return -1e-6;
    case Gates::decay_near_0: return -10.0 - 20.0 * u(rng);
    case Gates::decay_wide: return -std::exp(std::log(1e-6) + (std::log(20.0) - std::log(1e-6)) * u(rng));
    default: return -0.01 - 0.99 * u(rng);
  }
}

// RWKV-7's log decay w = -e^{-1/2} sigmoid(x) in (-0.607, 0) (algorithms.md §4.8a) for the
// typical regime of dplr_delta_rule; the extreme regimes as for every other op.
double rwkv7_log_decay(std::mt19937_64& rng, Gates gates) {
  if (gates == Gates::decay_near_1 || gates == Gates::decay_near_0 || gates == Gates::decay_wide)
    return log_decay(rng, gates);
  std::normal_distribution<double> normal(0.0, 1.0);
  return -std::exp(-0.5) / (1.0 + std::exp(-normal(rng)));
}

// RWKV-7's in-context learning rate abar = sigmoid(x) in (0, 1), or its extremes.
double learning_rate(std::mt19937_64& rng, Gates gates) {
  if (gates == Gates::abar_near_0) return 1e-6;
  if (gates == Gates::abar_near_1) return 1.0 - 1e-6;
  std::normal_distribution<double> normal(0.0, 1.0);
  return 1.0 / (1.0 + std::exp(-normal(rng)));
}

// dplr_delta_rule's a, b as RWKV-7 forms them from the keys (§4.8a): the removal key
// kappa = normalize(k ⊙ k_k) (k_k a per-channel weight, here uniform in [0.5, 1.5]),
// a = -kappa, b = kappa ⊙ abar. Then diag(e^w) + b a^T has norm <= 1 and the state stays bounded.
void rwkv7_transition(std::mt19937_64& rng, const Case& c, const Buffer& k, Buffer& a, Buffer& b) {
  std::uniform_real_distribution<double> k_k(0.5, 1.5);
  std::vector<double> kappa(c.K);
  for (int64_t row = 0; row < k.numel() / c.K; ++row) {
    double sq = 0;
    for (int64_t d = 0; d < c.K; ++d) sq += (kappa[d] = k.get(row * c.K + d) * k_k(rng)) * kappa[d];
    for (int64_t d = 0; d < c.K; ++d) {
      kappa[d] /= std::sqrt(sq + 1e-12);
      a.set(row * c.K + d, -kappa[d]);
      b.set(row * c.K + d, kappa[d] * learning_rate(rng, c.gates));
    }
  }
}

double beta_value(std::mt19937_64& rng, Gates gates) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  switch (gates) {
    case Gates::beta_near_0: return 1e-6;
    case Gates::beta_near_2:
    case Gates::beta_near_2_decay_near_1: return 2.0 - 1e-6;
    case Gates::beta_wide: return 2.0 * u(rng);
    default: return 0.1 + 0.9 * u(rng);
  }
}

}  // namespace

Inputs make_inputs(const Case& c, DType dtype) {
  const OpSpec& spec = spec_of(c);
  std::mt19937_64 rng(c.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(c.op));
  std::normal_distribution<double> normal(0.0, 1.0);
  const int64_t TK = c.T * c.n_h;
  Inputs in;
  auto fill = [&](Buffer& b, auto&& draw) {
    for (int64_t i = 0; i < b.numel(); ++i) b.set(i, draw());
  };
  // Normalised linear attention needs positive features (as elu+1 would give).
  auto feature = [&] { return c.normalize ? std::abs(normal(rng)) + 0.1 : normal(rng); };
  in.q = Buffer(DType::f64, {c.B, c.T, c.H, c.K});
  in.k = Buffer(DType::f64, {c.B, TK, c.H, c.K});
  in.v = Buffer(DType::f64, {c.B, TK, c.HV, c.V});
  fill(in.q, feature);
  // Delta-rule keys have norm ~1 even without the in-kernel L2 norm (as after a layer's own
  // normalisation): beta |k|^2 in (0, 2) keeps the transition non-expansive (algorithms.md
  // §4.5), so fp32 forms and the oracle solve a well-conditioned problem.
  const double key_scale =
      spec.takes_beta || spec.takes_ab ? 1.0 / std::sqrt(static_cast<double>(c.K)) : 1.0;
  fill(in.k, [&] { return key_scale * feature(); });
  fill(in.v, [&] { return normal(rng); });
  if (has_g(c)) {
    in.g = Buffer(DType::f64, {c.B, c.T, c.HV});
    fill(in.g, [&] { return log_decay(rng, c.gates); });
  }
  if (spec.takes_gk) {
    in.gk = Buffer(DType::f64, {c.B, c.T, c.HV, c.K});
    fill(in.gk, [&] { return spec.takes_ab ? rwkv7_log_decay(rng, c.gates) : log_decay(rng, c.gates); });
  }
  if (spec.takes_beta) {
    in.beta = Buffer(DType::f64, {c.B, TK, c.HV});
    fill(in.beta, [&] { return beta_value(rng, c.gates); });
  }
  const int64_t N = c.seqlens.empty() ? c.B : static_cast<int64_t>(c.seqlens.size());
  if (c.initial_state) {
    in.initial_state = Buffer(DType::f64, {N, c.HV, c.K, c.V});
    fill(in.initial_state, [&] { return normal(rng); });
  }
  if (spec.takes_ab) {
    in.a = Buffer(DType::f64, {c.B, c.T, c.H, c.K});
    in.b = Buffer(DType::f64, {c.B, c.T, c.H, c.K});
    rwkv7_transition(rng, c, in.k, in.a, in.b);
  }
  if (!c.seqlens.empty()) {
    in.cu_seqlens = Buffer(DType::i64, {N + 1});
    int64_t offset = 0;
    in.cu_seqlens.set(0, 0);
    for (int64_t i = 0; i < N; ++i) in.cu_seqlens.set(i + 1, offset += c.seqlens[i]);
  }
  return dtype == DType::f64 ? in : in.to(dtype);
}

Inputs Inputs::to(DType dtype) const {
  Inputs out = *this;
  for (Buffer* b : {&out.q, &out.k, &out.v, &out.g, &out.gk, &out.beta, &out.initial_state, &out.a, &out.b})
    *b = b->to(dtype);
  return out;
}

OpArgs Inputs::args(const Case& c) const {
  OpArgs a;
  a.q = q.view();
  a.k = k.view();
  a.v = v.view();
  a.g = g.view();
  a.gk = gk.view();
  a.beta = beta.view();
  a.a = this->a.view();
  a.b = this->b.view();
  a.initial_state = initial_state.view();
  a.cu_seqlens = cu_seqlens.view();
  a.output_final_state = c.output_final_state;
  a.normalize = c.normalize;
  a.use_qk_l2norm_in_kernel = c.l2norm;
  a.num_householder = c.n_h;
  return a;
}

std::vector<std::pair<const char*, const Buffer*>> Gradients::list() const {
  std::vector<std::pair<const char*, const Buffer*>> out;
  for (auto [name, b] : {std::pair{"dq", &dq}, {"dk", &dk}, {"dv", &dv}, {"dg", &dg},
                         {"dgk", &dgk}, {"dbeta", &dbeta}, {"dinitial_state", &dinitial_state},
                         {"da", &da}, {"db", &db}})
    if (b->given()) out.emplace_back(name, b);
  return out;
}

Outputs run_forward(const Case& c, const Inputs& in, Form form) {
  const OpArgs a = in.args(c);
  const OutputShapes shapes = output_shapes(c.op, a);
  Outputs out;
  out.o = Buffer(in.v.dtype(), shapes.o);
  if (c.output_final_state)
    out.final_state = Buffer(in.q.dtype() == DType::f64 ? DType::f64 : DType::f32, shapes.final_state);
  forward(c.op, form, a, {out.o.view(), out.final_state.view()});
  return out;
}

Gradients run_backward(const Case& c, const Inputs& in, Form form, const Buffer& d_o,
                       const Buffer& dfinal_state) {
  const OpArgs a = in.args(c);
  Gradients gr;
  auto like = [](const Buffer& b) { return b.given() ? Buffer(b.dtype(), b.shape()) : Buffer(); };
  gr.dq = like(in.q);
  gr.dk = like(in.k);
  gr.dv = like(in.v);
  gr.dg = like(in.g);
  gr.dgk = like(in.gk);
  gr.dbeta = like(in.beta);
  gr.dinitial_state = like(in.initial_state);
  gr.da = like(in.a);
  gr.db = like(in.b);
  backward(c.op, form, a, {d_o.view(), dfinal_state.view()},
           {gr.dq.view(), gr.dk.view(), gr.dv.view(), gr.dg.view(), gr.dgk.view(),
            gr.dbeta.view(), gr.dinitial_state.view(), gr.da.view(), gr.db.view()});
  return gr;
}

// --------------------------------------------------------------- independent forms (fp64)

namespace {

// Index of element [i0, i1, i2, i3] of a contiguous 4-D buffer.
int64_t at4(const Buffer& b, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
  const auto& s = b.shape();
  return ((i0 * s[1] + i1) * s[2] + i2) * s[3] + i3;
}
int64_t at3(const Buffer& b, int64_t i0, int64_t i1, int64_t i2) {
  const auto& s = b.shape();
  return (i0 * s[1] + i1) * s[2] + i2;
}

struct Span {
  int64_t batch, start, length;
};
std::vector<Span> spans(const Case& c) {
  std::vector<Span> out;
  if (c.seqlens.empty()) {
    for (int64_t b = 0; b < c.B; ++b) out.push_back({b, 0, c.T});
  } else {
    int64_t start = 0;
    for (int64_t len : c.seqlens) {
      out.push_back({0, start, len});
      start += len;
    }
  }
  return out;
}

// Row of a [B, T', H, D] buffer as a vector, L2-normalised as fla's l2norm when asked.
std::vector<double> row(const Buffer& b, int64_t i0, int64_t i1, int64_t i2, bool l2norm) {
  const int64_t D = b.shape()[3];
  std::vector<double> r(D);
  double sq = 0;
  for (int64_t d = 0; d < D; ++d) sq += (r[d] = b.get(at4(b, i0, i1, i2, d))) * r[d];
  if (l2norm)
    for (double& x : r) x /= std::sqrt(sq + 1e-6);
  return r;
}

// Hebbian ops as attention: o_t = scale sum_{s<=t} (q_t . (k_s * decay(s->t))) v_s
//                                 + scale (q_t * decay(start->t))^T S0 (algorithms.md §4.1-4.4).
void hebbian_attention_form(const Case& c, const Inputs& in, double scale, Outputs& out) {
  const int64_t K = c.K, V = c.V;
  const auto seqs = spans(c);
  for (size_t n = 0; n < seqs.size(); ++n) {
    const Span sp = seqs[n];
    for (int64_t hv = 0; hv < c.HV; ++hv) {
      const int64_t hq = hv / (c.HV / c.H);
      // Cumulative log decay per channel, L[t][d] = sum_{r<=t} gate_r[d].
      std::vector<double> L((sp.length + 1) * K, 0.0);  // L[0] = 0 before the first token
      for (int64_t t = 0; t < sp.length; ++t)
        for (int64_t d = 0; d < K; ++d) {
          double gate = 0;
          if (in.g.given()) gate = in.g.get(at3(in.g, sp.batch, sp.start + t, hv));
          if (in.gk.given()) gate = in.gk.get(at4(in.gk, sp.batch, sp.start + t, hv, d));
          if (op_spec(c.op).fixed_decay) gate = retention_log_decay(hv);
          L[(t + 1) * K + d] = L[t * K + d] + gate;
        }
      std::vector<double> zsum(K, 0.0);
      for (int64_t t = 0; t <= sp.length; ++t) {
        const bool final = t == sp.length;  // the last pass builds the final state
        if (final && !out.final_state.given()) break;
        const int64_t tt = final ? sp.length - 1 : t;
        std::vector<double> q = final ? std::vector<double>(K, 0.0) : row(in.q, sp.batch, sp.start + t, hq, false);
        std::vector<double> o(V, 0.0);
        if (!final)
          for (int64_t d = 0; d < K; ++d) zsum[d] += in.k.get(at4(in.k, sp.batch, sp.start + t, hq, d));
        for (int64_t s = 0; s <= tt; ++s) {
          const auto k = row(in.k, sp.batch, sp.start + s, hq, false);
          if (final) {
            for (int64_t d = 0; d < K; ++d)
              for (int64_t e = 0; e < V; ++e)
                out.final_state.set(at4(out.final_state, n, hv, d, e),
                    out.final_state.get(at4(out.final_state, n, hv, d, e)) +
                    k[d] * std::exp(L[(tt + 1) * K + d] - L[(s + 1) * K + d]) *
                        in.v.get(at4(in.v, sp.batch, sp.start + s, hv, e)));
            continue;
          }
          double w = 0;
          for (int64_t d = 0; d < K; ++d) w += q[d] * k[d] * std::exp(L[(t + 1) * K + d] - L[(s + 1) * K + d]);
          for (int64_t e = 0; e < V; ++e) o[e] += scale * w * in.v.get(at4(in.v, sp.batch, sp.start + s, hv, e));
        }
        if (in.initial_state.given()) {
          for (int64_t d = 0; d < K; ++d)
            for (int64_t e = 0; e < V; ++e) {
              const double s0 = in.initial_state.get(at4(in.initial_state, n, hv, d, e));
              const double decay = std::exp(L[(tt + 1) * K + d]);
              if (final) {
                out.final_state.set(at4(out.final_state, n, hv, d, e),
                                    out.final_state.get(at4(out.final_state, n, hv, d, e)) + decay * s0);
              } else {
                o[e] += scale * q[d] * decay * s0;
              }
            }
        }
        if (final) break;
        double den = 1.0;
        if (c.normalize) {
          den = 1e-10;
          for (int64_t d = 0; d < K; ++d) den += scale * q[d] * zsum[d];
        }
        for (int64_t e = 0; e < V; ++e) out.o.set(at4(out.o, sp.batch, sp.start + t, hv, e), o[e] / den);
      }
    }
  }
}

// Delta ops with explicit K x K transition matrices: S <- diag(a) S (a = exp(g) on every
// channel, or exp(gk) per channel for KDA), then for each step S <- (I - beta k k^T) S +
// beta k v^T (algorithms.md §4.5-4.8 in matrix form); dplr_delta_rule as
// S <- (diag(e^{gk}) + b a^T) S + k v^T (§4.8a, paper orientation transposed).
void delta_matrix_form(const Case& c, const Inputs& in, double scale, Outputs& out) {
  const int64_t K = c.K, V = c.V, n_h = c.n_h;
  const auto seqs = spans(c);
  for (size_t n = 0; n < seqs.size(); ++n) {
    const Span sp = seqs[n];
    for (int64_t hv = 0; hv < c.HV; ++hv) {
      const int64_t hq = hv / (c.HV / c.H);
      std::vector<double> S(K * V, 0.0), M(K * K), next(K * V);
      if (in.initial_state.given())
        for (int64_t i = 0; i < K * V; ++i) S[i] = in.initial_state.get(at4(in.initial_state, n, hv, i / V, i % V));
      auto apply = [&](const std::vector<double>& A) {  // S = A S
        for (int64_t r = 0; r < K; ++r)
          for (int64_t e = 0; e < V; ++e) {
            double acc = 0;
            for (int64_t m = 0; m < K; ++m) acc += A[r * K + m] * S[m * V + e];
            next[r * V + e] = acc;
          }
        S = next;
      };
      for (int64_t t = 0; t < sp.length; ++t) {
        std::fill(M.begin(), M.end(), 0.0);
        const double a = in.g.given() ? std::exp(in.g.get(at3(in.g, sp.batch, sp.start + t, hv))) : 1.0;
        for (int64_t d = 0; d < K; ++d)
          M[d * K + d] = in.gk.given() ? std::exp(in.gk.get(at4(in.gk, sp.batch, sp.start + t, hv, d))) : a;
        if (in.a.given()) {
          const auto ta = row(in.a, sp.batch, sp.start + t, hq, false);
          const auto tb = row(in.b, sp.batch, sp.start + t, hq, false);
          for (int64_t r = 0; r < K; ++r)
            for (int64_t m = 0; m < K; ++m) M[r * K + m] += tb[r] * ta[m];
        }
        apply(M);
        for (int64_t j = 0; j < n_h; ++j) {
          const int64_t idx = (sp.start + t) * n_h + j;
          const auto k = row(in.k, sp.batch, idx, hq, c.l2norm);
          if (!in.beta.given()) {  // dplr: the Hebbian write
            for (int64_t r = 0; r < K; ++r)
              for (int64_t e = 0; e < V; ++e) S[r * V + e] += k[r] * in.v.get(at4(in.v, sp.batch, idx, hv, e));
            continue;
          }
          const double beta = in.beta.get(at3(in.beta, sp.batch, idx, hv));
          for (int64_t r = 0; r < K; ++r)
            for (int64_t m = 0; m < K; ++m) M[r * K + m] = (r == m ? 1.0 : 0.0) - beta * k[r] * k[m];
          apply(M);
          for (int64_t r = 0; r < K; ++r)
            for (int64_t e = 0; e < V; ++e) S[r * V + e] += beta * k[r] * in.v.get(at4(in.v, sp.batch, idx, hv, e));
        }
        const auto q = row(in.q, sp.batch, sp.start + t, hq, c.l2norm);
        for (int64_t e = 0; e < V; ++e) {
          double acc = 0;
          for (int64_t r = 0; r < K; ++r) acc += S[r * V + e] * q[r];
          out.o.set(at4(out.o, sp.batch, sp.start + t, hv, e), scale * acc);
        }
      }
      if (out.final_state.given())
        for (int64_t i = 0; i < K * V; ++i) out.final_state.set(at4(out.final_state, n, hv, i / V, i % V), S[i]);
    }
  }
}

// noncausal_linear_attn as attention without a mask: o_t = sum_s w_ts v_s / den_t with
// w_ts = scale q_t . k_s over every token s of the sequence, den_t = sum_s w_ts + 1e-10 with
// normalize, else 1 (algorithms.md §4.1, all of (Q K^T) kept).
void noncausal_attention_form(const Case& c, const Inputs& in, double scale, Outputs& out) {
  for (const Span& sp : spans(c)) {
    for (int64_t hv = 0; hv < c.HV; ++hv) {
      const int64_t hq = hv / (c.HV / c.H);
      std::vector<std::vector<double>> keys;
      for (int64_t s = 0; s < sp.length; ++s) keys.push_back(row(in.k, sp.batch, sp.start + s, hq, false));
      for (int64_t t = 0; t < sp.length; ++t) {
        const auto q = row(in.q, sp.batch, sp.start + t, hq, false);
        std::vector<double> o(c.V, 0.0);
        double den = c.normalize ? 1e-10 : 1.0;
        for (int64_t s = 0; s < sp.length; ++s) {
          double w = 0;
          for (int64_t d = 0; d < c.K; ++d) w += scale * q[d] * keys[s][d];
          if (c.normalize) den += w;
          for (int64_t e = 0; e < c.V; ++e) o[e] += w * in.v.get(at4(in.v, sp.batch, sp.start + s, hv, e));
        }
        for (int64_t e = 0; e < c.V; ++e) out.o.set(at4(out.o, sp.batch, sp.start + t, hv, e), o[e] / den);
      }
    }
  }
}

double outputs_error(const Outputs& got, const Outputs& want) {
  double err = rel_error(got.o, want.o);
  if (want.final_state.given()) err = std::max(err, rel_error(got.final_state, want.final_state));
  return err;
}

}  // namespace

double independent_form_error(const Case& c) {
  const Inputs in = make_inputs(c, DType::f64);
  const Outputs ref = run_forward(c, in, Form::reference);
  Outputs alt;
  alt.o = Buffer(DType::f64, ref.o.shape());
  if (c.output_final_state) alt.final_state = Buffer(DType::f64, ref.final_state.shape());
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.K));
  if (!op_spec(c.op).causal) {
    noncausal_attention_form(c, in, scale, alt);
  } else if (op_spec(c.op).takes_beta || op_spec(c.op).takes_ab) {
    delta_matrix_form(c, in, scale, alt);
  } else {
    hebbian_attention_form(c, in, scale, alt);
  }
  return outputs_error(ref, alt);
}

// ------------------------------------------------------------------- finite differences

namespace {

// Loss L = <o, W_o> + <final_state, W_f> for fixed random weights.
double loss(const Case& c, const Inputs& in, const Buffer& w_o, const Buffer& w_f) {
  const Outputs out = run_forward(c, in, Form::reference);
  double l = 0;
  for (int64_t i = 0; i < w_o.numel(); ++i) l += out.o.get(i) * w_o.get(i);
  for (int64_t i = 0; i < w_f.numel(); ++i) l += out.final_state.get(i) * w_f.get(i);
  return l;
}

Buffer random_like(const std::vector<int64_t>& shape, std::mt19937_64& rng) {
  Buffer b(DType::f64, shape);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (int64_t i = 0; i < b.numel(); ++i) b.set(i, normal(rng));
  return b;
}

}  // namespace

double finite_difference_error(const Case& c) {
  constexpr int kElementsPerInput = 12;
  // Central differences with h = 1e-5 |x|: truncation O(h^2) ~ 1e-10, rounding O(eps L / h).
  constexpr double kRelativeStep = 1e-5;
  Inputs in = make_inputs(c, DType::f64);
  std::mt19937_64 rng(c.seed + 17);
  const Outputs out = run_forward(c, in, Form::reference);
  const Buffer w_o = random_like(out.o.shape(), rng);
  const Buffer w_f = c.output_final_state ? random_like(out.final_state.shape(), rng) : Buffer();
  const Gradients gr = run_backward(c, in, Form::reference, w_o, w_f);

  const std::pair<Buffer*, const Buffer*> pairs[] = {
      {&in.q, &gr.dq}, {&in.k, &gr.dk}, {&in.v, &gr.dv}, {&in.g, &gr.dg},
      {&in.gk, &gr.dgk}, {&in.beta, &gr.dbeta}, {&in.initial_state, &gr.dinitial_state},
      {&in.a, &gr.da}, {&in.b, &gr.db}};
  struct Sampled {
    double diff2 = 0, norm2 = 0;
  };
  std::vector<Sampled> sampled;
  double largest = 0;
  for (auto [input, grad] : pairs) {
    if (!input->given()) continue;
    std::uniform_int_distribution<int64_t> pick(0, input->numel() - 1);
    Sampled s;
    for (int e = 0; e < kElementsPerInput; ++e) {
      const int64_t i = pick(rng);
      const double x = input->get(i);
      double h = kRelativeStep * std::max(1.0, std::abs(x));
      // Gates stay inside their valid range: log decays <= 0, beta in [0, 2].
      if (input == &in.g || input == &in.gk) h = std::min(h, 0.5 * std::abs(x));
      if (input == &in.beta) h = std::min({h, 0.5 * x, 0.5 * (2.0 - x)});
      if (h <= 0) continue;  // a gate exactly on its bound has no two-sided difference
      input->set(i, x + h);
      const double lp = loss(c, in, w_o, w_f);
      input->set(i, x - h);
      const double lm = loss(c, in, w_o, w_f);
      input->set(i, x);
      const double fd = (lp - lm) / (2 * h);
      s.diff2 += (fd - grad->get(i)) * (fd - grad->get(i));
      s.norm2 += fd * fd;
    }
    largest = std::max(largest, std::sqrt(s.norm2));
    sampled.push_back(s);
  }
  // Relative error per input; an input whose gradient is tiny next to the others (a state
  // decayed by e^-20, say) is measured against 1e-3 of the largest, since differences of the
  // loss cannot resolve it more finely.
  double worst = 0;
  for (const Sampled& s : sampled)
    worst = std::max(worst, std::sqrt(s.diff2) / std::max(std::sqrt(s.norm2), 1e-3 * largest));
  return worst;
}

// --------------------------------------------------------------- consistency of the oracle

// Tokens [start, start + len) of a [B, T*steps, ...] buffer (dimension 1), as batch row 0.
Buffer slice_tokens(const Buffer& b, int64_t batch, int64_t start, int64_t len, int64_t steps) {
  if (!b.given()) return {};
  std::vector<int64_t> shape = b.shape();
  int64_t inner = 1;
  for (size_t d = 2; d < shape.size(); ++d) inner *= shape[d];
  const int64_t rows = shape[1];
  shape[0] = 1;
  shape[1] = len * steps;
  Buffer out(b.dtype(), shape);
  for (int64_t r = 0; r < len * steps; ++r)
    for (int64_t i = 0; i < inner; ++i)
      out.set(r * inner + i, b.get((batch * rows + start * steps + r) * inner + i));
  return out;
}

// Row n of a [N, ...] buffer as a [1, ...] buffer.
Buffer slice_row(const Buffer& b, int64_t n) {
  if (!b.given()) return {};
  std::vector<int64_t> shape = b.shape();
  shape[0] = 1;
  Buffer out(b.dtype(), shape);
  for (int64_t i = 0; i < out.numel(); ++i) out.set(i, b.get(n * out.numel() + i));
  return out;
}

namespace {

// Inputs of tokens [start, start+len) of batch row `batch`, with `state` as the initial state.
Inputs slice_inputs(const Inputs& in, int64_t batch, int64_t start, int64_t len, int64_t n_h,
                    const Buffer& state) {
  Inputs part;
  part.q = slice_tokens(in.q, batch, start, len, 1);
  part.k = slice_tokens(in.k, batch, start, len, n_h);
  part.v = slice_tokens(in.v, batch, start, len, n_h);
  part.g = slice_tokens(in.g, batch, start, len, 1);
  part.gk = slice_tokens(in.gk, batch, start, len, 1);
  part.beta = slice_tokens(in.beta, batch, start, len, n_h);
  part.a = slice_tokens(in.a, batch, start, len, 1);
  part.b = slice_tokens(in.b, batch, start, len, 1);
  part.initial_state = state;
  return part;
}

// Max relative error of a [1, len, ...] piece against the same tokens of a full buffer.
double piece_error(const Buffer& piece, const Buffer& full, int64_t batch, int64_t start) {
  return rel_error(piece, slice_tokens(full, batch, start, piece.shape()[1], 1));
}

}  // namespace

double varlen_error(const Case& c) {
  if (c.seqlens.empty()) fail("varlen_error: the case has no seqlens");
  const Inputs in = make_inputs(c, DType::f64);
  const Outputs full = run_forward(c, in, Form::reference);
  double worst = 0;
  int64_t start = 0;
  for (size_t n = 0; n < c.seqlens.size(); ++n) {
    Case one = c;
    one.seqlens.clear();
    one.B = 1;
    one.T = c.seqlens[n];
    const Inputs part = slice_inputs(in, 0, start, one.T, c.n_h, slice_row(in.initial_state, n));
    const Outputs got = run_forward(one, part, Form::reference);
    worst = std::max(worst, piece_error(got.o, full.o, 0, start));
    if (c.output_final_state)
      worst = std::max(worst, rel_error(got.final_state, slice_row(full.final_state, n)));
    start += one.T;
  }
  return worst;
}

double split_run_error(const Case& c) {
  if (!op_spec(c.op).causal || !c.seqlens.empty() || c.normalize || c.T < 2)
    fail("split_run_error: needs a causal op and a fixed-length case without normalize and T >= 2");
  Case full_case = c;
  full_case.output_final_state = true;
  const Inputs in = make_inputs(full_case, DType::f64);
  const Outputs full = run_forward(full_case, in, Form::reference);
  const int64_t T1 = c.T / 2;
  double worst = 0;
  for (int64_t b = 0; b < c.B; ++b) {
    Case first = full_case;
    first.B = 1;
    first.T = T1;
    const Inputs a = slice_inputs(in, b, 0, T1, c.n_h, slice_row(in.initial_state, b));
    const Outputs out_a = run_forward(first, a, Form::reference);
    Case second = first;
    second.T = c.T - T1;
    second.initial_state = true;
    const Inputs rest = slice_inputs(in, b, T1, second.T, c.n_h, out_a.final_state);
    const Outputs out_b = run_forward(second, rest, Form::reference);
    worst = std::max({worst, piece_error(out_a.o, full.o, b, 0), piece_error(out_b.o, full.o, b, T1),
                      rel_error(out_b.final_state, slice_row(full.final_state, b))});
  }
  return worst;
}

// ------------------------------------------------------------------- fast forms vs oracle

double form_forward_error(const Case& c, DType dtype, Form form) {
  const Inputs low = make_inputs(c, dtype);
  return outputs_error(run_forward(c, low, form), run_forward(c, low.to(DType::f64), Form::reference));
}

double form_backward_error(const Case& c, DType dtype, Form form) {
  const Inputs low = make_inputs(c, dtype);
  const Inputs wide = low.to(DType::f64);
  std::mt19937_64 rng(c.seed + 29);
  const Outputs out = run_forward(c, wide, Form::reference);
  const Buffer d_o = random_like(out.o.shape(), rng);
  const Buffer d_f = c.output_final_state ? random_like(out.final_state.shape(), rng) : Buffer();
  const Gradients want = run_backward(c, wide, Form::reference, d_o, d_f);
  const Gradients got = run_backward(c, low, form, d_o.to(low.v.dtype()), d_f);
  double worst = 0;
  const auto w = want.list(), g = got.list();
  for (size_t i = 0; i < w.size(); ++i) worst = std::max(worst, rel_error(*g[i].second, *w[i].second));
  return worst;
}

// ------------------------------------------------------------------------ built-in cases

std::vector<Case> builtin_cases(Op op) {
  const OpSpec& spec = op_spec(op);
  Case base;
  base.op = op;
  base.B = 2;
  base.T = 37;  // not a multiple of any chunk size
  base.H = 2;
  base.HV = spec.takes_beta ? 4 : 2;  // grouped value heads for the delta family, as fla
  base.K = 8;
  base.V = 6;
  base.n_h = spec.takes_num_householder ? 2 : 1;
  if (!spec.causal) {  // no state in or out; grouped value heads (HV % H == 0) as the delta family
    base.HV = 4;
    base.initial_state = base.output_final_state = false;
  }
  std::vector<Case> cases;
  auto add = [&](auto&& edit) {
    Case c = base;
    edit(c);
    c.seed = cases.size() + 1;
    cases.push_back(c);
  };
  add([](Case&) {});
  if (spec.causal) add([](Case& c) { c.initial_state = false; c.output_final_state = false; });
  add([](Case& c) { c.T = 1; });
  add([](Case& c) { c.B = 1; c.seqlens = {1, 17, 40, 5}; c.T = 63; });
  if (spec.takes_g || spec.takes_gk) {  // (retention's decay is fixed: nothing to vary)
    add([](Case& c) { c.gates = Gates::decay_near_1; });
    add([](Case& c) { c.gates = Gates::decay_near_0; });
  }
  if (spec.takes_normalize) add([](Case& c) { c.normalize = true; });
  if (!spec.causal)  // the key sum of each sequence stays within it
    add([](Case& c) { c.normalize = true; c.B = 1; c.seqlens = {1, 17, 40, 5}; c.T = 63; });
  if (spec.takes_beta) {
    add([](Case& c) { c.gates = Gates::beta_near_0; });
    add([](Case& c) { c.gates = Gates::beta_near_2; c.l2norm = true; });
    add([](Case& c) { c.gates = Gates::beta_wide; c.l2norm = true; });
    add([](Case& c) { c.l2norm = true; });
  }
  if (spec.takes_beta && spec.takes_gk)  // KDA: per-channel decays over every regime at once
    add([](Case& c) { c.gates = Gates::decay_wide; c.l2norm = true; });
  if (spec.takes_ab) {
    add([](Case& c) { c.gates = Gates::abar_near_0; });
    add([](Case& c) { c.gates = Gates::abar_near_1; });
    add([](Case& c) { c.HV = 4; });  // grouped value heads share q, k, a, b
    add([](Case& c) { c.B = 1; c.T = 150; c.K = c.V = 16; });  // several chunks, a partial last one
  }
  if (spec.takes_num_householder) {
    add([](Case& c) { c.n_h = 1; });
    add([](Case& c) { c.n_h = 3; c.l2norm = true; });
    add([](Case& c) { c.n_h = 4; c.gated = false; c.gates = Gates::beta_wide; c.l2norm = true; });
  }
  // One long sequence: checks that nothing drifts over many tokens (strong reflections for the
  // delta family: beta in [0, 2] on unit keys).
  add([&](Case& c) {
    c.B = 1; c.H = 1; c.HV = 1; c.K = 4; c.V = 4; c.T = 4096;
    if (spec.takes_beta) { c.gates = Gates::beta_wide; c.l2norm = true; }
    else if (spec.takes_g || spec.takes_gk) { c.gates = Gates::decay_wide; }
  });
  return cases;
}

// --------------------------------------------------------------------------------- runner

namespace {

bool small_for_fd(const Case& c) { return c.T * c.n_h <= 64; }

// Tolerances as relative errors, justified by the dtype: fp64 recurrences of O(T) steps agree
// to ~1e-13, so 1e-9 leaves room for T = 4096 with reflections; central differences with
// h = 1e-6 carry ~1e-9 truncation + rounding error, hence 1e-6; storing inputs/outputs in
// fp32 rounds at 6e-8 (1e-6 allows growth over T), bf16 at 4e-3 (1e-2 as in conventions.md).
double storage_tolerance(DType dtype) { return dtype == DType::bf16 ? 1e-2 : 1e-6; }
double form_tolerance(DType dtype) {
  return dtype == DType::bf16 ? 1e-2 : dtype == DType::f32 ? 1e-5 : 1e-9;
}

}  // namespace

std::vector<std::string> check_names() {
  std::vector<std::string> names;
  for (int i = 0; i < kNumOps; ++i) names.push_back(op_name(static_cast<Op>(i)));
  for (const CheckFamily& f : check_families()) names.push_back(f.name);
  return names;
}

namespace {

// The jobs of an op of ops.hpp: oracle checks in fp64, every fast form against the oracle else.
std::vector<Job> op_jobs(Op op, DType dtype) {
  std::vector<Job> jobs;
  const std::string name = op_name(op);
  for (const Case& c : builtin_cases(op)) {
    const std::string shape = c.describe();
    if (dtype == DType::f64) {
      jobs.push_back({name, "reference", shape, "fwd vs independent form", 1e-9, [c] { return independent_form_error(c); }});
      if (small_for_fd(c))
        jobs.push_back({name, "reference", shape, "bwd vs finite differences", 1e-6, [c] { return finite_difference_error(c); }});
      if (!c.seqlens.empty())
        jobs.push_back({name, "reference", shape, "varlen = separate runs", 1e-12, [c] { return varlen_error(c); }});
      else if (op_spec(op).causal && !c.normalize && c.T >= 2 && c.T <= 64)  // (no state to carry)
        jobs.push_back({name, "reference", shape, "split run = one run", 1e-12, [c] { return split_run_error(c); }});
    } else {
      // The oracle on inputs stored in `dtype` vs on the same values in fp64.
      jobs.push_back({name, "reference", shape, std::string("fwd ") + dtype_name(dtype) + " storage",
                      storage_tolerance(dtype), [c, dtype] {
                        const Inputs low = make_inputs(c, dtype);
                        const Outputs got = run_forward(c, low, Form::reference);
                        const Outputs want = run_forward(c, low.to(DType::f64), Form::reference);
                        return outputs_error(got, want);
                      }});
    }
    // float64 inputs run every form on the oracle itself (registry.cpp): nothing to compare.
    for (Form form : {Form::chunk, Form::recurrent}) {
      if (dtype == DType::f64 || !has_form(op, form, false)) continue;
      jobs.push_back({name, form_name(form), shape, "fwd vs reference", form_tolerance(dtype),
                      [c, dtype, form] { return form_forward_error(c, dtype, form); }});
      if (!has_form(op, form, true)) continue;
      jobs.push_back({name, form_name(form), shape, "bwd vs reference", form_tolerance(dtype),
                      [c, dtype, form] { return form_backward_error(c, dtype, form); }});
    }
  }
  return jobs;
}

}  // namespace

std::vector<Row> run(const std::vector<std::string>& names, DType dtype,
                     const std::function<void(size_t, size_t)>& progress) {
  std::vector<Job> jobs;
  for (const std::string& name : names) {
    std::vector<Job> more;
    const auto family = std::find_if(check_families().begin(), check_families().end(),
                                     [&](const CheckFamily& f) { return name == f.name; });
    if (family != check_families().end())
      more = family->jobs(dtype);
    else
      more = op_jobs(op_from_name(name), dtype);  // throws for an unknown name, listing the ops
    jobs.insert(jobs.end(), more.begin(), more.end());
  }
  std::vector<Row> rows;
  for (size_t i = 0; i < jobs.size(); ++i) {
    const Job& j = jobs[i];
    Row r{j.op, j.form, dtype_name(dtype), j.shape, j.check, 0, j.tolerance, false};
    r.error = j.measure();
    r.pass = r.error <= r.tolerance;  // NaN fails
    rows.push_back(r);
    if (progress) progress(i + 1, jobs.size());
  }
  return rows;
}

}  // namespace linattn::check
