// The fp64 oracle of LLA (algorithms.md §4.9a, c): each query on its own, Sigma_i assembled from
// the centred z_ij = k_j - q_i (no cancellation between Sigma~ and the q terms) and solved by
// Cholesky (SPD: a weighted Gram matrix plus lambda_i omega_i I with lambda_i > 0). The backward
// is the exact gradient derived in §4.9c, including the ridge term of F_ij and dlambda_i.
// Work items are (sequence, head) pairs, each owning its rows of every output.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/parallel.hpp"
#include "ops/lla/lla.hpp"

namespace linattn::lla {
namespace {

void load_row(const TensorView& t, int64_t b, int64_t row, int64_t h, double* dst) {
  const int64_t base = row_offset(t, b, row, h);
  for (int64_t d = 0; d < t.shape[3]; ++d) dst[d] = load_as_double(t.data, t.dtype, base + d * t.strides[3]);
}
void store_row(const TensorView& t, int64_t b, int64_t row, int64_t h, const double* src) {
  const int64_t base = row_offset(t, b, row, h);
  for (int64_t d = 0; d < t.shape[3]; ++d) store_from_double(t.data, t.dtype, base + d * t.strides[3], src[d]);
}
double dot(int64_t n, const double* x, const double* y) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += x[i] * y[i];
  return s;
}

// One query's forward quantities over its keys 0..n-1.
struct Query {
  std::vector<double> q, w, z, rho, L;  // z: n x K rows; L: Cholesky factor of Sigma
  double omega = 0, delta = 0, lambda = 0;
};

// Everything of §4.9a for one query: w (shifted by the max), z, omega, mu, Sigma = L L^T, rho,
// delta (shifted by delta_eps). Keys are the rows of Kmat (n x K).
void solve_query(const Problem& p, const double* Kmat, int64_t n, Query& x) {
  const int64_t K = p.K;
  x.w.assign(n, 0);
  x.z.assign(n * K, 0);
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    x.w[j] = p.scale * dot(K, x.q.data(), Kmat + j * K);
    m = std::max(m, x.w[j]);
  }
  std::vector<double> mu(K, 0.0);
  x.L.assign(K * K, 0.0);
  x.omega = 0;
  for (int64_t j = 0; j < n; ++j) {
    x.w[j] = std::exp(x.w[j] - m);
    x.omega += x.w[j];
    double* z = x.z.data() + j * K;
    for (int64_t d = 0; d < K; ++d) z[d] = Kmat[j * K + d] - x.q[d];
    for (int64_t d = 0; d < K; ++d) {
      mu[d] += x.w[j] * z[d];
      for (int64_t e = 0; e <= d; ++e) x.L[d * K + e] += x.w[j] * z[d] * z[e];
    }
  }
  for (int64_t d = 0; d < K; ++d) x.L[d * K + d] += x.lambda * x.omega;
  cholesky(K, x.L.data());
  x.rho.assign(K, 0);
  cholesky_solve(K, x.L.data(), mu.data(), x.rho.data());
  x.delta = shifted_delta(x.omega - dot(K, mu.data(), x.rho.data()), p.a->delta_eps);
}

template <typename Body>
void for_each_sequence_head(const Problem& p, Body&& body) {
  parallel_for(p.N() * p.H, [&](int64_t item) {
    const Sequence& s = p.sequences[item / p.H];
    const int64_t h = item % p.H, K = p.K, V = p.V;
    std::vector<double> Kmat(s.keys * K), Vmat(s.keys * V);
    for (int64_t j = 0; j < s.keys; ++j) {
      load_row(p.a->k, s.batch, s.key0 + j, h, Kmat.data() + j * K);
      load_row(p.a->v, s.batch, s.key0 + j, h, Vmat.data() + j * V);
    }
    body(s, h, Kmat, Vmat);
  });
}

}  // namespace

void reference_forward(const Problem& p, const TensorView& o) {
  for_each_sequence_head(p, [&](const Sequence& s, int64_t h, const std::vector<double>& Kmat,
                        const std::vector<double>& Vmat) {
    const int64_t K = p.K, V = p.V;
    Query x;
    x.q.resize(K);
    std::vector<double> out(V);
    for (int64_t r = 0; r < s.queries; ++r) {
      const int64_t n = s.offset() + r + 1, row = s.query0 + r;
      load_row(p.a->q, s.batch, row, h, x.q.data());
      x.lambda = p.lambda(s.batch, row, h);
      solve_query(p, Kmat.data(), n, x);
      std::fill(out.begin(), out.end(), 0.0);
      for (int64_t j = 0; j < n; ++j) {
        const double l = x.w[j] * (1 - dot(K, x.rho.data(), x.z.data() + j * K)) / x.delta;
        for (int64_t e = 0; e < V; ++e) out[e] += l * Vmat[j * V + e];
      }
      store_row(o, s.batch, row, h, out.data());
    }
  });
}

void reference_backward(const Problem& p, const TensorView& d_o, const Grads& grads) {
  for_each_sequence_head(p, [&](const Sequence& s, int64_t h, const std::vector<double>& Kmat,
                        const std::vector<double>& Vmat) {
    const int64_t K = p.K, V = p.V;
    const double scale = p.scale;
    Query x;
    x.q.resize(K);
    std::vector<double> g(V), G(s.keys), T(K), U(K), dmu(K), dq(K), dz(K);
    std::vector<double> dk(s.keys * K, 0.0), dv(s.keys * V, 0.0);
    for (int64_t r = 0; r < s.queries; ++r) {
      const int64_t n = s.offset() + r + 1, row = s.query0 + r;
      load_row(p.a->q, s.batch, row, h, x.q.data());
      load_row(d_o, s.batch, row, h, g.data());
      x.lambda = p.lambda(s.batch, row, h);
      solve_query(p, Kmat.data(), n, x);
      const double* rho = x.rho.data();
      // beta = g.o / delta = sum_j G_j l_j / delta; tau, T = sum_j C_j (1, z_j), C_j = G_j w_j / delta.
      double go = 0, tau = 0;
      std::fill(T.begin(), T.end(), 0.0);
      for (int64_t j = 0; j < n; ++j) {
        const double* z = x.z.data() + j * K;
        G[j] = dot(V, g.data(), Vmat.data() + j * V);
        const double l = x.w[j] * (1 - dot(K, rho, z)) / x.delta;
        go += G[j] * l;
        const double C = G[j] * x.w[j] / x.delta;
        tau += C;
        for (int64_t d = 0; d < K; ++d) T[d] += C * z[d];
        for (int64_t e = 0; e < V; ++e) dv[j * V + e] += l * g[e];
      }
      const double beta = go / x.delta;
      cholesky_solve(K, x.L.data(), T.data(), U.data());
      for (int64_t d = 0; d < K; ++d) dmu[d] = -U[d] + 2 * beta * rho[d];
      const double ridge = dot(K, rho, U.data()) - beta * dot(K, rho, rho);  // d L / d(lambda omega)
      std::fill(dq.begin(), dq.end(), 0.0);
      for (int64_t j = 0; j < n; ++j) {
        const double* z = x.z.data() + j * K;
        const double a = dot(K, rho, z), u = dot(K, U.data(), z), w = x.w[j];
        // F_ij = dL/dw_ij, simplified with dmu.z = -u + 2 beta a; w_ij depends on q_i, k_j via
        // its exponent (the max shift cancels exactly).
        const double F = (1 - a) * (G[j] / x.delta - beta * (1 - a) - u) + x.lambda * ridge;
        const double C = G[j] * w / x.delta;
        for (int64_t d = 0; d < K; ++d) {
          dz[d] = -C * rho[d] + w * (dmu[d] + a * U[d] + u * rho[d] - 2 * beta * a * rho[d]);
          dq[d] += scale * w * F * Kmat[j * K + d] - dz[d];
          dk[j * K + d] += scale * w * F * x.q[d] + dz[d];
        }
      }
      if (grads.dq.given()) store_row(grads.dq, s.batch, row, h, dq.data());
      if (grads.dridge_lambda_per_token.given())
        store_from_double(grads.dridge_lambda_per_token.data, grads.dridge_lambda_per_token.dtype,
                          row_offset(grads.dridge_lambda_per_token, s.batch, row, h), x.omega * ridge);
    }
    for (int64_t j = 0; j < s.keys; ++j) {
      if (grads.dk.given()) store_row(grads.dk, s.batch, s.key0 + j, h, dk.data() + j * K);
      if (grads.dv.given()) store_row(grads.dv, s.batch, s.key0 + j, h, dv.data() + j * V);
    }
  });
}

}  // namespace linattn::lla
