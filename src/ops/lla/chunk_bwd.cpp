// Blockwise LLA backward: the exact gradient of algorithms.md §4.9c (with the ridge term of F
// that FlashLLA's kernels omit), in two phases so that every work item owns its outputs:
//
// A, per query tile (as the forward): recompute W, mu, rho = Sigma^-1 mu; one pass over the
//    keys for G = dO V^T, delta = sum_j w (1 - rho.z) (chunk_fwd.cpp), l = W (1 - rho.z) / delta,
//    beta = sum_j l G / delta,
//    C = G W / delta, tau = sum_j C, T = C K - tau q; the second CG, U = Sigma^-1 T; then
//    P = W o F with F = (1 - a)(G / delta - beta (1 - a) - u) + lambda (rho.U - beta |rho|^2)
//    (a = rho.z, u = U.z) and
//      dq = scale P K - [-tau rho + omega dmu + (rho.mu) U + (U.mu) rho - 2 beta (rho.mu) rho],
//    dmu = -U + 2 beta rho, the bracket being sum_j dL/dz_ij in closed form. Keeps per row
//    rho, U, m, delta, beta, lambda c for phase B; writes dq and dlambda.
// B, per block of keys: over the query tiles that see it, recompute W, a, u, G and
//      dk += scale P^T Q - (W o (1 - a))^T U + (W o u - C + 2 beta W o (1 - a))^T rho,
//      dv += l^T dO.
// The forward is recomputed (nothing is saved between the calls), so the backward costs about
// a forward plus the second CG and the pair passes.
#include <vector>

#include "core/scratch.hpp"
#include "kernels/elementwise.hpp"
#include "kernels/gemm.hpp"
#include "ops/lla/chunk.hpp"

namespace linattn::lla {
namespace {

using kernels::Accumulate;

inline constexpr int64_t kKeyTileB = 64;  // keys per phase-B work item

// What phase A keeps of each query row for phase B, indexed by (batch, q row, head).
struct Saved {
  int64_t K;
  std::vector<float> rho, U, scalars;  // scalars: m, delta, beta, lambda c
  float* rho_of(int64_t i) { return rho.data() + i * K; }
  float* U_of(int64_t i) { return U.data() + i * K; }
  float* scalars_of(int64_t i) { return scalars.data() + i * 4; }
};

int64_t saved_index(const Problem& p, const Sequence& s, int64_t r, int64_t h) {
  return (s.batch * p.Tq + s.query0 + r) * p.H + h;
}

void phase_a(const Problem& p, const TensorView& d_o, const Grads& grads, Saved& saved) {
  for_each_block(p, Along::queries, kQueryTile, [&](const Sequence& s, int64_t h, int64_t r0, int64_t rows) {
    const int64_t K = p.K, V = p.V;
    const float scale = static_cast<float>(p.scale);
    const Tile t(p, s, h, r0, rows, true);
    count(p, &Stats::tile_pairs, t.pairs());
    const int64_t nk = t.keys();
    ScratchArena& arena = ScratchArena::local();
    int slot = kFirstCallerSlot;
    float* rho = arena.get<float>(slot++, rows * K);
    float* g = arena.get<float>(slot++, rows * V);
    float* G = arena.get<float>(slot++, rows * nk);  // dO V^T for every key, reused in pass 2
    float* A = arena.get<float>(slot++, rows * nk);  // rho.z_ij
    float* T = arena.get<float>(slot++, rows * K);
    float* U = arena.get<float>(slot++, rows * K);
    float* blk = arena.get<float>(slot++, rows * kKeyBlock);
    float* dq = arena.get<float>(slot++, rows * K);
    float* row = arena.get<float>(slot++, 5 * rows);
    float *delta = row, *beta = row + rows, *tau = row + 2 * rows, *ridge = row + 3 * rows;
    t.solve(t.mu, rho);
    load_rows(d_o, s.batch, t.row(0), rows, h, g, V);
    std::fill(row, row + 3 * rows, 0.0f);
    for (int64_t key0 = 0; key0 < nk; key0 += kKeyBlock) {
      const int64_t n = std::min(kKeyBlock, nk - key0);
      t.project(rho, key0, n, blk);
      kernels::gemm_nt(rows, n, V, g, V, t.Vmat + key0 * V, V, G + key0, nk, Accumulate::no);
      const float* w = t.weights(key0);
      for (int64_t r = 0; r < rows; ++r) {
        float sum = 0, go = 0, ct = 0;
        for (int64_t j = 0; j < n; ++j) {
          const float a = blk[r * n + j], wj = w[r * nk + j], Gj = G[r * nk + key0 + j];
          A[r * nk + key0 + j] = a;
          sum += wj * (1 - a);
          go += wj * (1 - a) * Gj;
          ct += (blk[r * n + j] = Gj * wj);  // delta C_ij
        }
        delta[r] += sum;
        beta[r] += go;
        tau[r] += ct;
      }
      kernels::gemm_nn(rows, K, n, blk, n, t.Kmat + key0 * K, K, T, K,
                       key0 == 0 ? Accumulate::no : Accumulate::yes);
    }
    for (int64_t r = 0; r < rows; ++r) {
      delta[r] = static_cast<float>(shifted_delta(delta[r], p.a->delta_eps));
      beta[r] /= delta[r] * delta[r];  // (sum_j l_ij G_ij) / delta
      tau[r] /= delta[r];
      for (int64_t d = 0; d < K; ++d) T[r * K + d] = T[r * K + d] / delta[r] - tau[r] * t.Q[r * K + d];
    }
    t.solve(T, U);
    for (int64_t r = 0; r < rows; ++r) {
      const float* rr = rho + r * K;
      ridge[r] = t.lambda[r] * (dot(K, rr, U + r * K) - beta[r] * dot(K, rr, rr));
    }
    for (int64_t key0 = 0; key0 < nk; key0 += kKeyBlock) {
      const int64_t n = std::min(kKeyBlock, nk - key0);
      t.project(U, key0, n, blk);
      const float* w = t.weights(key0);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < n; ++j) {
          const float a = A[r * nk + key0 + j], u = blk[r * n + j];
          const float F = (1 - a) * (G[r * nk + key0 + j] / delta[r] - beta[r] * (1 - a) - u) + ridge[r];
          blk[r * n + j] = scale * w[r * nk + j] * F;
        }
      kernels::gemm_nn(rows, K, n, blk, n, t.Kmat + key0 * K, K, dq, K,
                       key0 == 0 ? Accumulate::no : Accumulate::yes);
    }
    for (int64_t r = 0; r < rows; ++r) {
      const float *rr = rho + r * K, *ur = U + r * K, *mr = t.mu + r * K;
      const float rm = dot(K, rr, mr), um = dot(K, ur, mr);
      for (int64_t d = 0; d < K; ++d) {
        const float dmu = -ur[d] + 2 * beta[r] * rr[d];
        dq[r * K + d] -= -tau[r] * rr[d] + t.omega[r] * dmu + rm * ur[d] + um * rr[d] - 2 * beta[r] * rm * rr[d];
      }
      const int64_t i = saved_index(p, s, r0 + r, h);
      std::copy(rr, rr + K, saved.rho_of(i));
      std::copy(ur, ur + K, saved.U_of(i));
      float* sc = saved.scalars_of(i);
      sc[0] = t.shift[r];
      sc[1] = delta[r];
      sc[2] = beta[r];
      sc[3] = ridge[r];
      if (grads.dridge_lambda_per_token.given())
        store_scalar(grads.dridge_lambda_per_token, s.batch, t.row(r), h, t.omega[r] * ridge[r] / t.lambda[r]);
    }
    if (grads.dq.given()) store_rows(grads.dq, s.batch, t.row(0), rows, h, dq, K);
  });
}

void phase_b(const Problem& p, const TensorView& d_o, const Grads& grads, Saved& saved) {
  for_each_block(p, Along::keys, kKeyTileB, [&](const Sequence& s, int64_t h, int64_t key0, int64_t n) {
    const int64_t K = p.K, V = p.V, R = kQueryTile;
    const float scale = static_cast<float>(p.scale);
    ScratchArena& arena = ScratchArena::local();
    int slot = 0;
    float* Kb = arena.get<float>(slot++, n * K);
    float* Kt = arena.get<float>(slot++, n * K);
    float* Vb = arena.get<float>(slot++, n * V);
    float* Vt = arena.get<float>(slot++, n * V);
    float* q = arena.get<float>(slot++, R * K);
    float* g = arena.get<float>(slot++, R * V);
    float* rho = arena.get<float>(slot++, R * K);
    float* U = arena.get<float>(slot++, R * K);
    float* W = arena.get<float>(slot++, R * n);
    float* A = arena.get<float>(slot++, R * n);
    float* Ub = arena.get<float>(slot++, R * n);
    float* G = arena.get<float>(slot++, R * n);
    float* dk = arena.get<float>(slot++, n * K);
    float* dv = arena.get<float>(slot++, n * V);
    load_rows(p.a->k, s.batch, s.key0 + key0, n, h, Kb, K);
    load_rows(p.a->v, s.batch, s.key0 + key0, n, h, Vb, V);
    kernels::transpose(n, K, Kb, K, Kt, n);
    kernels::transpose(n, V, Vb, V, Vt, n);
    std::fill(dk, dk + n * K, 0.0f);
    std::fill(dv, dv + n * V, 0.0f);
    // Query r sees key j when offset + r >= j: the first tile that sees key0.
    const int64_t first = std::max<int64_t>(0, key0 - s.offset()) / R * R;
    for (int64_t r0 = first; r0 < s.queries; r0 += R) {
      const int64_t rows = std::min(R, s.queries - r0);
      count(p, &Stats::key_pairs, rows * n);
      load_rows(p.a->q, s.batch, s.query0 + r0, rows, h, q, K);
      load_rows(d_o, s.batch, s.query0 + r0, rows, h, g, V);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = saved_index(p, s, r0 + r, h);
        std::copy(saved.rho_of(i), saved.rho_of(i) + K, rho + r * K);
        std::copy(saved.U_of(i), saved.U_of(i) + K, U + r * K);
      }
      kernels::gemm_nn(rows, n, K, q, K, Kt, n, W, n, Accumulate::no);
      kernels::gemm_nn(rows, n, K, rho, K, Kt, n, A, n, Accumulate::no);
      kernels::gemm_nn(rows, n, K, U, K, Kt, n, Ub, n, Accumulate::no);
      kernels::gemm_nn(rows, n, V, g, V, Vt, n, G, n, Accumulate::no);
      for (int64_t r = 0; r < rows; ++r) {
        const float* sc = saved.scalars_of(saved_index(p, s, r0 + r, h));
        const float m = sc[0], delta = sc[1], beta = sc[2], ridge = sc[3];
        const float rq = dot(K, rho + r * K, q + r * K), uq = dot(K, U + r * K, q + r * K);
        const int64_t seen = std::min(n, s.offset() + r0 + r + 1 - key0);  // keys key0 + [0, seen)
        float* w = W + r * n;
        for (int64_t j = 0; j < seen; ++j) w[j] = scale * w[j] - m;
        kernels::exp_inplace(w, std::max<int64_t>(seen, 0));
        for (int64_t j = std::max<int64_t>(seen, 0); j < n; ++j) w[j] = 0;
        for (int64_t j = 0; j < n; ++j) {
          const float a = A[r * n + j] - rq, u = Ub[r * n + j] - uq, Gj = G[r * n + j], wj = w[j];
          const float F = (1 - a) * (Gj / delta - beta * (1 - a) - u) + ridge;
          const float C = Gj * wj / delta;
          const float l = wj * (1 - a) / delta;
          W[r * n + j] = scale * wj * F;                            // -> dk += W^T q
          A[r * n + j] = -wj * (1 - a);                             // -> dk += A^T U
          Ub[r * n + j] = wj * u - C + 2 * beta * wj * (1 - a);     // -> dk += Ub^T rho
          G[r * n + j] = l;                                         // -> dv += G^T dO
        }
      }
      kernels::gemm_tn(n, K, rows, W, n, q, K, dk, K, Accumulate::yes);
      kernels::gemm_tn(n, K, rows, A, n, U, K, dk, K, Accumulate::yes);
      kernels::gemm_tn(n, K, rows, Ub, n, rho, K, dk, K, Accumulate::yes);
      kernels::gemm_tn(n, V, rows, G, n, g, V, dv, V, Accumulate::yes);
    }
    if (grads.dk.given()) store_rows(grads.dk, s.batch, s.key0 + key0, n, h, dk, K);
    if (grads.dv.given()) store_rows(grads.dv, s.batch, s.key0 + key0, n, h, dv, V);
  });
}

}  // namespace

void chunk_backward(const Problem& p, const TensorView& d_o, const Grads& grads) {
  Saved saved{p.K, {}, {}, {}};
  const int64_t rows = p.B * p.Tq * p.H;
  saved.rho.resize(rows * p.K);
  saved.U.resize(rows * p.K);
  saved.scalars.resize(rows * 4);
  phase_a(p, d_o, grads, saved);
  phase_b(p, d_o, grads, saved);
}

}  // namespace linattn::lla
