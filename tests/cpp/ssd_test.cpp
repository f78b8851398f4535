// ssd_scan (Mamba-2's SSD, include/linattn/ssd.hpp): the fp64 oracle against a token-by-token
// recurrence written here in mamba's own terms (independent of simple_gla), its backward
// against central finite differences, the chunk and recurrent forms against the oracle
// (lengths off the chunk size, grouped B/C, every flag, decays near 0 and near 1, varlen), and
// the inputs it must reject.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "check/harness.hpp"
#include "linattn/error.hpp"
#include "linattn/ssd.hpp"

namespace linattn {
namespace {

using check::Buffer;

struct Case {
  int64_t B = 2, T = 37, H = 4, P = 3, G = 2, N = 5;
  bool D = true, D_per_channel = false, z = true, bias = true, softplus = true;
  bool limit = false, initial = true;
  std::vector<int64_t> seqlens;  // varlen (B = 1)
  double dt_scale = 1.0;         // dt's spread: large values decay the state to ~0 per token
  double a_scale = 1.0;          // |A|: tiny values keep decays near 1
  unsigned seed = 1;
  std::string describe() const {
    return "B=" + std::to_string(B) + " T=" + std::to_string(T) + " H=" + std::to_string(H) +
           " P=" + std::to_string(P) + " G=" + std::to_string(G) + " N=" + std::to_string(N) +
           " D=" + std::to_string(D) + (D_per_channel ? "(HP)" : "") + " z=" + std::to_string(z) +
           " bias=" + std::to_string(bias) + " softplus=" + std::to_string(softplus) +
           " limit=" + std::to_string(limit) + " init=" + std::to_string(initial) +
           " varlen=" + std::to_string(seqlens.size()) + " dt_scale=" + std::to_string(dt_scale) +
           " a_scale=" + std::to_string(a_scale);
  }
  int64_t num_sequences() const { return seqlens.empty() ? B : static_cast<int64_t>(seqlens.size()); }
};

struct Inputs {
  Buffer x, dt, A, Bm, Cm, D, z, dt_bias, s0, cu;
  SsdArgs args(const Case& c, bool final_state) const {
    SsdArgs a;
    a.x = x.view();
    a.dt = dt.view();
    a.A = A.view();
    a.B = Bm.view();
    a.C = Cm.view();
    if (D.given()) a.D = D.view();
    if (z.given()) a.z = z.view();
    if (dt_bias.given()) a.dt_bias = dt_bias.view();
    if (s0.given()) a.initial_state = s0.view();
    if (cu.given()) a.cu_seqlens = cu.view();
    a.dt_softplus = c.softplus;
    if (c.limit) {
      a.dt_min = 0.05;
      a.dt_max = 0.8;
    }
    a.output_final_state = final_state;
    return a;
  }
  std::vector<Buffer*> differentiable() { return {&x, &dt, &A, &Bm, &Cm, &D, &z, &dt_bias, &s0}; }
};

Inputs make_inputs(const Case& c, DType dtype) {
  std::mt19937 rng(c.seed);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  auto fill = [&](std::vector<int64_t> shape, double scale, double shift = 0.0) {
    Buffer b(dtype, std::move(shape));
    for (int64_t i = 0; i < b.numel(); ++i) b.set(i, shift + scale * normal(rng));
    return b;
  };
  Inputs in;
  in.x = fill({c.B, c.T, c.H, c.P}, 1.0);
  // Without softplus dt is used as given: keep it positive (a step size).
  if (c.softplus) {
    in.dt = fill({c.B, c.T, c.H}, c.dt_scale);
  } else {
    in.dt = Buffer(dtype, {c.B, c.T, c.H});
    for (int64_t i = 0; i < in.dt.numel(); ++i) in.dt.set(i, 0.01 + c.dt_scale * uniform(rng));
  }
  in.A = Buffer(dtype, {c.H});
  for (int64_t h = 0; h < c.H; ++h) in.A.set(h, -c.a_scale * (0.1 + 2.0 * uniform(rng)));
  in.Bm = fill({c.B, c.T, c.G, c.N}, 0.7);
  in.Cm = fill({c.B, c.T, c.G, c.N}, 0.7);
  if (c.D) in.D = c.D_per_channel ? fill({c.H, c.P}, 1.0) : fill({c.H}, 1.0);
  if (c.z) in.z = fill({c.B, c.T, c.H, c.P}, 1.0);
  if (c.bias) in.dt_bias = fill({c.H}, 0.3, c.softplus ? -1.0 : 0.0);
  if (!c.softplus && c.bias)  // keep dt + dt_bias positive
    for (int64_t h = 0; h < c.H; ++h) in.dt_bias.set(h, std::fabs(in.dt_bias.get(h)));
  if (c.initial) in.s0 = fill({c.num_sequences(), c.H, c.P, c.N}, 0.5);
  if (!c.seqlens.empty()) {
    in.cu = Buffer(DType::i32, {static_cast<int64_t>(c.seqlens.size()) + 1});
    int64_t total = 0;
    in.cu.set(0, 0);
    for (size_t i = 0; i < c.seqlens.size(); ++i) in.cu.set(static_cast<int64_t>(i) + 1, total += c.seqlens[i]);
  }
  return in;
}

// The SSD in mamba's terms, token by token in double: an independent form of the oracle.
std::pair<Buffer, Buffer> naive(const Case& c, const Inputs& in) {
  Buffer y(DType::f64, {c.B, c.T, c.H, c.P}), fin(DType::f64, {c.num_sequences(), c.H, c.P, c.N});
  std::vector<std::pair<int64_t, int64_t>> seqs;  // (row, start) with lengths
  std::vector<int64_t> lens;
  if (c.seqlens.empty()) {
    for (int64_t b = 0; b < c.B; ++b) seqs.push_back({b, 0}), lens.push_back(c.T);
  } else {
    int64_t start = 0;
    for (int64_t n : c.seqlens) seqs.push_back({0, start}), lens.push_back(n), start += n;
  }
  const int64_t hg = c.H / c.G;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const auto [b, start] = seqs[s];
    for (int64_t h = 0; h < c.H; ++h) {
      std::vector<double> S(static_cast<size_t>(c.P * c.N), 0.0);
      if (c.initial)
        for (int64_t i = 0; i < c.P * c.N; ++i) S[i] = in.s0.get((static_cast<int64_t>(s) * c.H + h) * c.P * c.N + i);
      for (int64_t t = start; t < start + lens[s]; ++t) {
        const int64_t bt = b * c.T + t;
        double d = in.dt.get(bt * c.H + h) + (c.bias ? in.dt_bias.get(h) : 0.0);
        if (c.softplus) d = d > 20 ? d : std::log1p(std::exp(d));
        if (c.limit) d = std::fmin(std::fmax(d, 0.05), 0.8);
        const double decay = std::exp(d * in.A.get(h));
        const int64_t g = h / hg;
        for (int64_t p = 0; p < c.P; ++p) {
          const double x = in.x.get((bt * c.H + h) * c.P + p);
          double o = 0.0;
          for (int64_t n = 0; n < c.N; ++n) {
            double& st = S[p * c.N + n];
            st = decay * st + d * x * in.Bm.get((bt * c.G + g) * c.N + n);
            o += in.Cm.get((bt * c.G + g) * c.N + n) * st;
          }
          if (c.D) o += x * (c.D_per_channel ? in.D.get(h * c.P + p) : in.D.get(h));
          if (c.z) {
            const double z = in.z.get((bt * c.H + h) * c.P + p);
            o *= z / (1.0 + std::exp(-z));
          }
          y.set((bt * c.H + h) * c.P + p, o);
        }
      }
      for (int64_t i = 0; i < c.P * c.N; ++i) fin.set((static_cast<int64_t>(s) * c.H + h) * c.P * c.N + i, S[i]);
    }
  }
  return {y, fin};
}

std::pair<Buffer, Buffer> run(Form form, const Case& c, const Inputs& in, DType out_dtype) {
  Buffer y(out_dtype, {c.B, c.T, c.H, c.P});
  Buffer fin(out_dtype == DType::f64 ? DType::f64 : DType::f32, {c.num_sequences(), c.H, c.P, c.N});
  ssd_forward(form, in.args(c, true), {y.view(), fin.view()});
  return {y, fin};
}

// The loss sum(W .* y) + sum(V .* final_state) and its gradients by `form`'s backward.
struct Loss {
  Buffer wy, wf;
  Loss(const Case& c, DType dtype) : wy(dtype, {c.B, c.T, c.H, c.P}), wf(dtype, {c.num_sequences(), c.H, c.P, c.N}) {
    std::mt19937 rng(c.seed + 100);
    std::normal_distribution<double> normal;
    for (int64_t i = 0; i < wy.numel(); ++i) wy.set(i, normal(rng));
    for (int64_t i = 0; i < wf.numel(); ++i) wf.set(i, normal(rng));
  }
  double value(const Case& c, const Inputs& in) const {
    auto [y, f] = run(Form::reference, c, in, DType::f64);
    double s = 0.0;
    for (int64_t i = 0; i < y.numel(); ++i) s += wy.get(i) * y.get(i);
    for (int64_t i = 0; i < f.numel(); ++i) s += wf.get(i) * f.get(i);
    return s;
  }
  std::vector<Buffer> gradients(Form form, const Case& c, Inputs& in) const {
    std::vector<Buffer> g;
    for (Buffer* b : in.differentiable()) g.push_back(b->given() ? Buffer(b->dtype(), b->shape()) : Buffer());
    auto v = [&](size_t i) { return g[i].given() ? g[i].view() : TensorView{}; };
    const SsdGrads grads{v(0), v(1), v(2), v(3), v(4), v(5), v(6), v(7), v(8)};
    ssd_backward(form, in.args(c, false), {wy.view(), wf.view()}, grads);
    return g;
  }
};

std::vector<Case> cases() {
  std::vector<Case> out;
  out.push_back(Case{});
  Case c;
  c.T = 130, c.B = 1, c.H = 6, c.G = 3, c.P = 8, c.N = 16, c.seed = 2;  // past two 64-token chunks
  out.push_back(c);
  c = Case{};
  c.D_per_channel = true, c.softplus = false, c.bias = false, c.z = false, c.seed = 3;
  out.push_back(c);
  c = Case{};
  c.limit = true, c.initial = false, c.D = false, c.seed = 4;
  out.push_back(c);
  c = Case{};
  c.B = 1, c.T = 70, c.seqlens = {1, 40, 29}, c.seed = 5;
  out.push_back(c);
  c = Case{};
  c.dt_scale = 6.0, c.a_scale = 20.0, c.seed = 6;  // decays down to e^-100s: state forgotten
  out.push_back(c);
  c = Case{};
  c.a_scale = 1e-6, c.T = 100, c.seed = 7;  // decays within 1e-6 of 1
  out.push_back(c);
  c = Case{};
  c.T = 1, c.G = 1, c.seed = 8;
  out.push_back(c);
  return out;
}

TEST(Ssd, OracleMatchesTokenByTokenRecurrence) {
  for (const Case& c : cases()) {
    const Inputs in = make_inputs(c, DType::f64);
    auto [y, f] = run(Form::reference, c, in, DType::f64);
    auto [ny, nf] = naive(c, in);
    EXPECT_LE(check::rel_error(y, ny), 1e-12) << c.describe();
    EXPECT_LE(check::rel_error(f, nf), 1e-12) << c.describe();
  }
}

TEST(Ssd, OracleGradientsMatchFiniteDifferences) {
  for (Case c : cases()) {
    if (c.T > 40) continue;
    if (c.dt_scale > 1.0) c.dt_scale = 2.0;  // keep softplus/clamp kinks away from the step
    Inputs in = make_inputs(c, DType::f64);
    const Loss loss(c, DType::f64);
    const std::vector<Buffer> grads = loss.gradients(Form::reference, c, in);
    std::vector<Buffer*> params = in.differentiable();
    for (size_t k = 0; k < params.size(); ++k) {
      if (!params[k]->given()) continue;
      // Up to 12 elements per input, spread over it (each costs two oracle runs).
      const int64_t n = params[k]->numel(), step = std::max<int64_t>(1, n / 12);
      Buffer fd(DType::f64, {(n + step - 1) / step}), an(DType::f64, {(n + step - 1) / step});
      for (int64_t i = 0, j = 0; i < n; i += step, ++j) {
        const double x0 = params[k]->get(i), h = 1e-6 * std::max(1.0, std::fabs(x0));
        params[k]->set(i, x0 + h);
        const double up = loss.value(c, in);
        params[k]->set(i, x0 - h);
        const double down = loss.value(c, in);
        params[k]->set(i, x0);
        fd.set(j, (up - down) / (2 * h));
        an.set(j, grads[k].get(i));
      }
      EXPECT_LE(check::rel_error(an, fd), 1e-6) << "input " << k << " " << c.describe();
    }
  }
}

// fp32 forms against the oracle on the same fp32-rounded inputs: 1e-5 (fp32 accumulation
// over chunks; the transforms and the skip in fp32), as for the other chunk forms.
TEST(Ssd, FastFormsMatchOracle) {
  for (const Case& c : cases()) {
    Inputs in = make_inputs(c, DType::f32);
    auto [ry, rf] = run(Form::reference, c, in, DType::f32);
    for (Form form : {Form::chunk, Form::recurrent}) {
      auto [y, f] = run(form, c, in, DType::f32);
      EXPECT_LE(check::rel_error(y, ry), 1e-5) << form_name(form) << " " << c.describe();
      EXPECT_LE(check::rel_error(f, rf), 1e-5) << form_name(form) << " " << c.describe();
    }
    const Loss loss(c, DType::f32);
    const std::vector<Buffer> want = loss.gradients(Form::reference, c, in);
    const std::vector<Buffer> got = loss.gradients(Form::chunk, c, in);
    // dA sums dt * dg over every token; with decays of e^-100 and below the chunk backward's
    // gate gradients keep ~1e-4 of their (tiny) size, as simple_gla's own at such gates.
    for (size_t k = 0; k < got.size(); ++k)
      if (got[k].given())
        EXPECT_LE(check::rel_error(got[k], want[k]), k == 2 && c.a_scale > 1 ? 1e-4 : 1e-5)
            << "input " << k << " " << c.describe();
  }
}

void expect_error(const std::function<void()>& fn, const std::string& fragment) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one containing: " << fragment;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(Ssd, RejectsBadInputs) {
  Case c;
  Inputs in = make_inputs(c, DType::f32);
  Buffer y(DType::f32, {c.B, c.T, c.H, c.P}), f(DType::f32, {c.B, c.H, c.P, c.N});
  auto fwd = [&](SsdArgs a) { ssd_forward(Form::chunk, a, {y.view(), f.view()}); };
  {
    Inputs bad = make_inputs(c, DType::f32);
    bad.A.set(1, 0.5);
    expect_error([&] { fwd(bad.args(c, true)); }, "ssd_scan: A must be in [");
  }
  {
    Case n = c;
    n.softplus = false;
    Inputs bad = make_inputs(n, DType::f32);
    bad.dt.set(3, -5.0);
    expect_error([&] { fwd(bad.args(n, true)); }, "dt after dt_bias must be finite and >= 0");
  }
  {
    SsdArgs a = in.args(c, true);
    a.dt_min = 0.5, a.dt_max = 0.1;
    expect_error([&] { fwd(a); }, "dt_limit must satisfy");
  }
  {
    Case g = c;
    g.G = 3;
    Inputs bad = make_inputs(g, DType::f32);
    SsdArgs a = bad.args(g, true);
    expect_error([&] { fwd(a); }, "must divide the number of heads H = 4");
  }
  {
    SsdArgs a = in.args(c, true);
    Buffer D(DType::f32, {c.H + 1});
    a.D = D.view();
    expect_error([&] { fwd(a); }, "D must have shape [H]");
  }
}

}  // namespace
}  // namespace linattn
