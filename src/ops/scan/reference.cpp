// fp64 oracle of the selective scan (algorithms.md §4.10 (a) forward, (c) backward), token by
// token through the caller's views (any strides, any dtype). Work items are (sequence, group):
// an item owns the y rows of its channels and the dB, dC rows of its group; the per-channel
// parameter gradients (dA, dD, ddelta_bias) are summed over sequences afterwards in order.
// Backward per channel d, with a_t = exp(Δ_t A), x̄_t = Δ_t u_t and ỹ_t = dy_t · silu(z_t):
//     dh_t = C_t ỹ_t + a_{t+1} dh_{t+1}   (dh_L = dfinal_state)
//     dΔ_t = Σ_n dh_t (h_{t-1} a_t A + B_t u_t),  dA += Σ_t dh_t h_{t-1} a_t Δ_t
//     du_t = Σ_n dh_t B_t Δ_t + D ỹ_t,  dB_t += dh_t x̄_t,  dC_t += ỹ_t h_t,  dh_0 = a_1 dh_1
// and ddelta = dΔ · sigmoid(delta + bias) with softplus (dΔ without), ddelta_bias = Σ_t ddelta.
#include <cmath>
#include <vector>

#include "core/dtype.hpp"
#include "core/parallel.hpp"
#include "ops/scan/scan.hpp"

namespace linattn::scan {
namespace {

double get(const TensorView& t, int64_t offset) { return load_as_double(t.data, t.dtype, offset); }
void put(const TensorView& t, int64_t offset, double v) { store_from_double(t.data, t.dtype, offset, v); }
double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }
double softplus(double v) { return v > 20.0 ? v : std::log1p(std::exp(v)); }

// The inputs of one (sequence, channel) as fp64 columns over the sequence's tokens.
struct Channel {
  std::vector<double> u, raw, dt, z;  // raw: delta + bias; dt: Δ
  std::vector<double> A, h0;          // [N]
  double D = 0;

  Channel(const Problem& p, const ScanArgs& a, const Sequence& s, int64_t seq, int64_t d) {
    const int64_t L = s.length;
    u.resize(L);
    raw.resize(L);
    dt.resize(L);
    z.assign(L, 0.0);
    const double bias = a.delta_bias.given() ? get(a.delta_bias, d * a.delta_bias.strides[0]) : 0.0;
    for (int64_t t = 0; t < L; ++t) {
      const int64_t row = s.start + t;
      u[t] = get(a.u, at3(a.u, s.batch, row, d));
      raw[t] = get(a.delta, at3(a.delta, s.batch, row, d)) + bias;
      dt[t] = p.softplus ? softplus(raw[t]) : raw[t];
      if (a.z.given()) z[t] = get(a.z, at3(a.z, s.batch, row, d));
    }
    A.resize(p.N);
    h0.assign(p.N, 0.0);
    for (int64_t n = 0; n < p.N; ++n) {
      A[n] = get(a.A, at2(a.A, d, n));
      if (a.initial_state.given()) h0[n] = get(a.initial_state, at3(a.initial_state, seq, d, n));
    }
    if (a.D.given()) D = get(a.D, d * a.D.strides[0]);
  }
  double gate(const ScanArgs& a, int64_t t) const { return a.z.given() ? z[t] * sigmoid(z[t]) : 1.0; }
};

// Scans one channel: h (L+1 rows of N, row 0 = h0) and y before the gate.
void scan_channel(const Problem& p, const ScanArgs& a, const Sequence& s, const Channel& ch,
                  int64_t g, std::vector<double>& h, std::vector<double>& y) {
  const int64_t L = s.length, N = p.N;
  h.assign((L + 1) * N, 0.0);
  y.assign(L, 0.0);
  for (int64_t n = 0; n < N; ++n) h[n] = ch.h0[n];
  for (int64_t t = 0; t < L; ++t) {
    const int64_t row = s.start + t;
    double acc = ch.D * ch.u[t];
    for (int64_t n = 0; n < N; ++n) {
      const double hn = std::exp(ch.dt[t] * ch.A[n]) * h[t * N + n] +
                        ch.dt[t] * get(a.B, at4(a.B, s.batch, row, g, n)) * ch.u[t];
      h[(t + 1) * N + n] = hn;
      acc += get(a.C, at4(a.C, s.batch, row, g, n)) * hn;
    }
    y[t] = acc;
  }
}

int64_t total_work(const Problem& p) { return p.B * p.T * p.D * p.N; }

}  // namespace

void reference_forward(const Problem& p, const ScanArgs& a, const ScanOutputs& out) {
  const int64_t S = p.num_sequences();
  parallel_for_work(S * p.G, total_work(p), [&](int64_t item) {
    const int64_t seq = item / p.G, g = item % p.G;
    const Sequence& s = p.sequences[seq];
    std::vector<double> h, y;
    for (int64_t d = g * p.group_size(); d < (g + 1) * p.group_size(); ++d) {
      const Channel ch(p, a, s, seq, d);
      scan_channel(p, a, s, ch, g, h, y);
      for (int64_t t = 0; t < s.length; ++t) put(out.y, at3(out.y, s.batch, s.start + t, d), y[t] * ch.gate(a, t));
      if (a.output_final_state)
        for (int64_t n = 0; n < p.N; ++n)
          put(out.final_state, at3(out.final_state, seq, d, n), h[s.length * p.N + n]);
    }
  });
}

void reference_backward(const Problem& p, const ScanArgs& a, const ScanGradOutputs& go,
                        const ScanGrads& gr) {
  const int64_t S = p.num_sequences(), N = p.N;
  // Per sequence and channel: dA [N], dD, ddelta_bias; summed over sequences in order below.
  std::vector<double> params(S * p.D * (N + 2), 0.0);
  parallel_for_work(S * p.G, total_work(p), [&](int64_t item) {
    const int64_t seq = item / p.G, g = item % p.G;
    const Sequence& s = p.sequences[seq];
    const int64_t L = s.length;
    std::vector<double> h, y, dh(N), dB(L * N, 0.0), dC(L * N, 0.0);
    for (int64_t d = g * p.group_size(); d < (g + 1) * p.group_size(); ++d) {
      const Channel ch(p, a, s, seq, d);
      scan_channel(p, a, s, ch, g, h, y);
      double* dA = &params[(seq * p.D + d) * (N + 2)];
      double& dD = dA[N];
      double& dbias = dA[N + 1];
      for (int64_t n = 0; n < N; ++n)
        dh[n] = go.dfinal_state.given() ? get(go.dfinal_state, at3(go.dfinal_state, seq, d, n)) : 0.0;
      for (int64_t t = L - 1; t >= 0; --t) {
        const int64_t row = s.start + t;
        const double dy = get(go.dy, at3(go.dy, s.batch, row, d));
        if (gr.dz.given()) {
          const double sg = sigmoid(ch.z[t]);
          put(gr.dz, at3(gr.dz, s.batch, row, d), dy * y[t] * sg * (1.0 + ch.z[t] * (1.0 - sg)));
        }
        const double dyg = dy * ch.gate(a, t);  // ỹ
        double du = ch.D * dyg, ddt = 0.0;
        dD += dyg * ch.u[t];
        for (int64_t n = 0; n < N; ++n) {
          const double Bn = get(a.B, at4(a.B, s.batch, row, g, n));
          const double Cn = get(a.C, at4(a.C, s.batch, row, g, n));
          const double at = std::exp(ch.dt[t] * ch.A[n]);
          dC[t * N + n] += dyg * h[(t + 1) * N + n];
          dh[n] += Cn * dyg;
          const double dah = dh[n] * h[t * N + n] * at;  // dh_t · ∂h_t/∂a_t · a_t
          ddt += dah * ch.A[n] + dh[n] * Bn * ch.u[t];
          dA[n] += dah * ch.dt[t];
          du += dh[n] * Bn * ch.dt[t];
          dB[t * N + n] += dh[n] * ch.dt[t] * ch.u[t];
          dh[n] *= at;
        }
        const double dd = p.softplus ? ddt * sigmoid(ch.raw[t]) : ddt;
        dbias += dd;
        if (gr.du.given()) put(gr.du, at3(gr.du, s.batch, row, d), du);
        if (gr.ddelta.given()) put(gr.ddelta, at3(gr.ddelta, s.batch, row, d), dd);
      }
      if (gr.dinitial_state.given())
        for (int64_t n = 0; n < N; ++n) put(gr.dinitial_state, at3(gr.dinitial_state, seq, d, n), dh[n]);
    }
    for (int64_t t = 0; t < L; ++t)
      for (int64_t n = 0; n < N; ++n) {
        if (gr.dB.given()) put(gr.dB, at4(gr.dB, s.batch, s.start + t, g, n), dB[t * N + n]);
        if (gr.dC.given()) put(gr.dC, at4(gr.dC, s.batch, s.start + t, g, n), dC[t * N + n]);
      }
  });
  for (int64_t d = 0; d < p.D; ++d) {
    std::vector<double> sum(N + 2, 0.0);
    for (int64_t seq = 0; seq < S; ++seq)
      for (int64_t i = 0; i < N + 2; ++i) sum[i] += params[(seq * p.D + d) * (N + 2) + i];
    if (gr.dA.given())
      for (int64_t n = 0; n < N; ++n) put(gr.dA, at2(gr.dA, d, n), sum[n]);
    if (gr.dD.given()) put(gr.dD, d * gr.dD.strides[0], sum[N]);
    if (gr.ddelta_bias.given()) put(gr.ddelta_bias, d * gr.ddelta_bias.strides[0], sum[N + 1]);
  }
}

}  // namespace linattn::scan
