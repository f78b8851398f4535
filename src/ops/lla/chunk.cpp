// The query tile of the blockwise LLA forms (chunk.hpp; algorithms.md §4.9b).
#include "ops/lla/chunk.hpp"

#include <cmath>
#include <cstring>
#include <limits>

#include "core/scratch.hpp"
#include "kernels/elementwise.hpp"
#include "kernels/gemm.hpp"

namespace linattn::lla {
namespace {

using kernels::Accumulate;

// Scratch slots of the tile (the forms use kFirstCallerSlot and up).
enum Slot { kSlotQ, kSlotK, kSlotKt, kSlotV, kSlotW, kSlotRows, kSlotMu, kSlotDiag, kSlotCG, kSlotBlock, kSlotFactors };
static_assert(kSlotFactors < kFirstCallerSlot);

}  // namespace

Tile::Tile(const Problem& p_, const Sequence& s, int64_t h, int64_t r0, int64_t rows, bool with_values)
    : p(p_), s_(s), r0_(r0), rows_(rows), nk_(s.offset() + r0 + rows) {
  const int64_t K = p.K, V = p.V, nk = nk_;
  direct_ = p.a->solver == Solver::direct;
  ScratchArena& arena = ScratchArena::local();
  float* q = arena.get<float>(kSlotQ, rows * K);
  float* k = arena.get<float>(kSlotK, nk * K);
  Kt_ = arena.get<float>(kSlotKt, nk * K);
  W_ = arena.get<float>(kSlotW, rows * nk);
  float* per_row = arena.get<float>(kSlotRows, 3 * rows);
  float* m = arena.get<float>(kSlotMu, rows * K);
  load_rows(p.a->q, s.batch, row(0), rows, h, q, K);
  load_rows(p.a->k, s.batch, s.key0, nk, h, k, K);
  kernels::transpose(nk, K, k, K, Kt_, nk);
  Q = q;
  Kmat = k;
  Vmat = nullptr;
  if (with_values) {
    float* v = arena.get<float>(kSlotV, nk * V);
    load_rows(p.a->v, s.batch, s.key0, nk, h, v, V);
    Vmat = v;
  }

  // Pass 1. Row r sees keys [0, offset + r0 + r]; with every weight of the row kept, its exact
  // max replaces FlashLLA's online max (the shift cancels in o either way, §4.9a).
  kernels::gemm_nn(rows, nk, K, q, K, Kt_, nk, W_, nk, Accumulate::no);
  float* om = per_row;
  float* lam = per_row + rows;
  float* maxes = per_row + 2 * rows;
  for (int64_t r = 0; r < rows; ++r) {
    float* w = W_ + r * nk;
    const int64_t n = s.offset() + r0 + r + 1;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < n; ++j) mx = std::max(mx, w[j] *= static_cast<float>(p.scale));
    for (int64_t j = 0; j < n; ++j) w[j] -= mx;
    maxes[r] = mx;
    kernels::exp_inplace(w, n);
    std::memset(w + n, 0, (nk - n) * sizeof(float));
    double sum = 0;
    for (int64_t j = 0; j < n; ++j) sum += w[j];
    om[r] = static_cast<float>(sum);
    lam[r] = static_cast<float>(p.lambda(s.batch, row(r), h));
  }
  omega = om;
  lambda = lam;
  shift = maxes;
  kernels::gemm_nn(rows, K, nk, W_, nk, k, K, m, K, Accumulate::no);  // mu~ = W K
  diag_ = nullptr;
  if (p.a->cg_use_preconditioner) {
    // Jacobi: diag(Sigma_i) = W (K o K) - 2 mu~ o q + omega q o q + lambda omega (the ridge
    // keeps it positive; rounding could not make it smaller than that).
    float* ksq = arena.get<float>(kSlotBlock, nk * K);
    for (int64_t i = 0; i < nk * K; ++i) ksq[i] = k[i] * k[i];
    diag_ = arena.get<float>(kSlotDiag, rows * K);
    kernels::gemm_nn(rows, K, nk, W_, nk, ksq, K, diag_, K, Accumulate::no);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t d = 0; d < K; ++d) {
        const float qd = q[r * K + d], ridge = lam[r] * om[r];
        const float x = diag_[r * K + d] - 2 * m[r * K + d] * qd + om[r] * qd * qd + ridge;
        diag_[r * K + d] = std::max(x, ridge);
      }
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < K; ++d) m[r * K + d] -= om[r] * q[r * K + d];  // mu = mu~ - omega q
  mu = m;
}

void Tile::project(const float* X, int64_t key0, int64_t n, float* out) const {
  const int64_t K = p.K;
  kernels::gemm_nn(rows_, n, K, X, K, Kt_ + key0, nk_, out, n, Accumulate::no);
  for (int64_t r = 0; r < rows_; ++r) {
    const float xq = dot(K, X + r * K, Q + r * K);
    for (int64_t j = 0; j < n; ++j) out[r * n + j] -= xq;
  }
}

// Sigma_i p = sum_j w_ij (p.z_ij) z_ij + lambda_i omega_i p with z_ij = k_j - q_i: the centred
// products p.z_ij keep the q terms from cancelling against sum_j w (p.k_j) k_j (§4.9b writes
// the same operator expanded in Sigma~, mu~). With c_ij = w_ij p.z_ij the sum is
// sum_j c_ij k_j - (sum_j c_ij) q_i; summing the very c_ij (rather than using the equal p.mu_i)
// keeps the operator a sum of c_ij z_ij to rounding, which matters when Sigma_i is nearly
// singular (one key, small lambda: 50x smaller gradient noise).
void Tile::apply(const float* P, float* SP) const {
  constexpr int kLanes = 16;  // independent partial sums: the row sums vectorise
  const int64_t K = p.K;
  float* C = ScratchArena::local().get<float>(kSlotBlock, rows_ * kKeyBlock + 2 * rows_);
  float* pq = C + rows_ * kKeyBlock;
  float* csum = pq + rows_;
  for (int64_t r = 0; r < rows_; ++r) {
    pq[r] = dot(K, P + r * K, Q + r * K);
    csum[r] = 0;
  }
  for (int64_t key0 = 0; key0 < nk_; key0 += kKeyBlock) {
    const int64_t n = std::min(kKeyBlock, nk_ - key0);
    kernels::gemm_nn(rows_, n, K, P, K, Kt_ + key0, nk_, C, n, Accumulate::no);
    const float* w = weights(key0);
    for (int64_t r = 0; r < rows_; ++r) {
      float* c = C + r * n;
      const float* wr = w + r * nk_;
      float part[kLanes] = {};
      int64_t j = 0;
      for (; j + kLanes <= n; j += kLanes)
        for (int l = 0; l < kLanes; ++l) part[l] += (c[j + l] = wr[j + l] * (c[j + l] - pq[r]));
      for (; j < n; ++j) part[0] += (c[j] = wr[j] * (c[j] - pq[r]));
      for (int l = 0; l < kLanes; ++l) csum[r] += part[l];
    }
    kernels::gemm_nn(rows_, K, n, C, n, Kmat + key0 * K, K, SP, K,
                     key0 == 0 ? Accumulate::no : Accumulate::yes);
  }
  for (int64_t r = 0; r < rows_; ++r) {
    const float ridge = lambda[r] * omega[r];
    for (int64_t d = 0; d < K; ++d) SP[r * K + d] += ridge * P[r * K + d] - csum[r] * Q[r * K + d];
  }
}

// Sigma_i = (w_i o Z_i)^T Z_i + lambda_i omega_i I with Z_i = K - q_i over the row's keys: the
// centred keys again, so no Sigma~ - mu~ q^T cancellation; factored once per tile (the
// backward's two solves share the factors).
void Tile::factor() const {
  const int64_t K = p.K;
  ScratchArena& arena = ScratchArena::local();
  factors_ = arena.get<float>(kSlotFactors, rows_ * K * K);
  float* Z = arena.get<float>(kSlotBlock, 2 * nk_ * K);
  float* WZ = Z + nk_ * K;
  for (int64_t r = 0; r < rows_; ++r) {
    const int64_t n = s_.offset() + r0_ + r + 1;
    const float* w = W_ + r * nk_;
    for (int64_t j = 0; j < n; ++j)
      for (int64_t d = 0; d < K; ++d) {
        Z[j * K + d] = Kmat[j * K + d] - Q[r * K + d];
        WZ[j * K + d] = w[j] * Z[j * K + d];
      }
    float* L = factors_ + r * K * K;
    kernels::gemm_tn(K, K, n, WZ, K, Z, K, L, K, Accumulate::no);
    for (int64_t d = 0; d < K; ++d) L[d * K + d] += lambda[r] * omega[r];
    cholesky(K, L);
  }
}

void Tile::solve(const float* rhs, float* x) const {
  const int64_t K = p.K, n = rows_ * K;
  if (direct_) {
    if (!factors_) factor();
    for (int64_t r = 0; r < rows_; ++r) cholesky_solve(K, factors_ + r * K * K, rhs + r * K, x + r * K);
    return;
  }
  float* buf = ScratchArena::local().get<float>(kSlotCG, 4 * n + 3 * rows_);
  float *res = buf, *z = buf + n, *dir = buf + 2 * n, *SP = buf + 3 * n;
  float *norm = buf + 4 * n, *norm0 = norm + rows_, *active = norm0 + rows_;
  const float atol = static_cast<float>(p.a->cg_atol), rtol = static_cast<float>(p.a->cg_rtol);
  auto precondition = [&](int64_t r) {
    for (int64_t d = 0; d < K; ++d) z[r * K + d] = diag_ ? res[r * K + d] / diag_[r * K + d] : res[r * K + d];
  };
  int64_t n_active = 0;
  std::fill(x, x + n, 0.0f);
  std::memcpy(res, rhs, n * sizeof(float));
  for (int64_t r = 0; r < rows_; ++r) {
    precondition(r);
    std::memcpy(dir + r * K, z + r * K, K * sizeof(float));
    norm[r] = norm0[r] = dot(K, res + r * K, z + r * K);
    active[r] = norm0[r] != 0 && std::isfinite(norm0[r]);
    n_active += active[r] != 0;
  }
  for (int32_t it = 0; it < p.a->cg_max_iters && n_active > 0; ++it) {
    apply(dir, SP);
    count(p, &Stats::cg_pairs, pairs());
    for (int64_t r = 0; r < rows_; ++r) {
      if (!active[r]) continue;
      float* pr = dir + r * K;
      const float* sp = SP + r * K;
      const float curvature = dot(K, pr, sp);
      bool done = !(curvature > 0);
      if (!done) {
        const float alpha = norm[r] / curvature;
        for (int64_t d = 0; d < K; ++d) {
          x[r * K + d] += alpha * pr[d];
          res[r * K + d] -= alpha * sp[d];
        }
        precondition(r);
        const float next = dot(K, res + r * K, z + r * K);
        done = next <= rtol * std::max(atol, norm0[r]) || !std::isfinite(next);
        const float beta = next / norm[r];
        for (int64_t d = 0; d < K; ++d) pr[d] = z[r * K + d] + beta * pr[d];
        norm[r] = next;
      }
      if (done) {  // a finished row keeps its x and costs no more than zeros in the products
        active[r] = 0;
        --n_active;
        std::fill(pr, pr + K, 0.0f);
      }
    }
  }
}

}  // namespace linattn::lla
