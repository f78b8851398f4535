#include "ops/dplr/chunk.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/scratch.hpp"
#include "kernels/elementwise.hpp"
#include "kernels/gemm.hpp"
#include "ops/common/rows.hpp"
#include "ops/delta/chunk.hpp"

namespace linattn::dplr {
namespace {

using kernels::Accumulate;

static_assert(kChunk == delta::kChunk, "the triangular solve of the delta family is sized for kChunk");

// Largest exponent a factored factor may carry (as the gated family: e^80 < fp32's e^88).
constexpr double kMaxFactorExponent = 80.0;

// Zeroes row i of M beyond its triangle (j > i, or j >= i when strict) and scales the rest.
void mask(int64_t rows, bool strict, float scale, float* M) {
  for (int64_t i = 0; i < rows; ++i) {
    float* row = M + i * kChunk;
    const int64_t end = strict ? i : i + 1;
    for (int64_t j = 0; j < end; ++j) row[j] *= scale;
    std::fill(row + end, row + rows, 0.0f);
  }
}

// M_ij = scale Σ_d x_id y_jd e^{E_id - G_jd} over the triangle: one GEMM of the factored rows,
// or pair by pair (K exps per pair) when the chunk's decays are too strong to factor.
void pair_scores(const Chunk& c, int64_t K, Side x, Side y, float scale, bool strict, float* M) {
  const int64_t rows = c.g.rows;
  if (c.factored) {
    kernels::lower_gemm_nt(rows, K, x.tilde, K, y.tilde, K, M, kChunk);
    mask(rows, strict, scale, M);
    return;
  }
  float* e = c.work;
  for (int64_t i = 0; i < rows; ++i) {
    float* row = M + i * kChunk;
    const int64_t end = strict ? i : i + 1;
    for (int64_t j = 0; j < end; ++j) {
      for (int64_t d = 0; d < K; ++d) e[d] = static_cast<float>(x.exponent[i * K + d] - y.exponent[j * K + d]);
      kernels::exp_inplace(e, K);
      double acc = 0;
      for (int64_t d = 0; d < K; ++d) acc += double(x.raw[i * K + d]) * y.raw[j * K + d] * e[d];
      row[j] = static_cast<float>(scale * acc);
    }
    std::fill(row + end, row + rows, 0.0f);
  }
}

}  // namespace

Side left_q(const Chunk& c) { return {c.g.q, c.g.B, c.g.q_tilde, c.g.ratio}; }
Side left_a(const Chunk& c) { return {c.a, c.Gx, c.a_tilde, c.a_ratio}; }
Side right_k(const Chunk& c) { return {c.g.k, c.g.B, c.g.k_tilde, c.g.inverse_ratio}; }
Side right_b(const Chunk& c) { return {c.b, c.g.B, c.b_tilde, c.g.inverse_ratio}; }

void prepare_chunk(const gla::Item& it, int64_t t0, int64_t rows, Chunk& c) {
  gla::prepare_chunk(it, t0, rows, c.g, gla::Need::scores);
  const int64_t K = it.p.K, V = it.p.V, C = kChunk, CK = C * K;
  float* next = ScratchArena::local().get<float>(kSlotChunk, 4 * C * C + 9 * CK + 2 * C * V + C * std::max(K, V));
  auto take = [&](int64_t n) {
    float* ptr = next;
    next += n;
    return ptr;
  };
  c.Aqb = take(C * C), c.Aab = take(C * C), c.Aak = take(C * C), c.T = take(C * C);
  c.Gx = reinterpret_cast<double*>(take(2 * CK));  // (8-byte aligned: C = 64 divides every size)
  c.a = take(CK), c.b = take(CK), c.ea = take(CK), c.W = take(CK);
  c.a_ratio = take(CK), c.a_tilde = take(CK), c.b_tilde = take(CK);
  c.X = take(C * V), c.SA = take(C * V), c.work = take(C * std::max(K, V));

  const int64_t b = it.s.batch, row0 = it.s.start + t0;
  load_rows(it.a.a, b, row0, rows, it.hq, c.a, K);
  load_rows(it.a.b, b, row0, rows, it.hq, c.b, K);
  const int64_t next_rows = std::min(kChunk, it.s.length - (t0 + rows));  // (as gla::prepare_chunk)
  if (next_rows > 0) {
    prefetch_rows(it.a.a, b, row0 + rows, next_rows, it.hq);
    prefetch_rows(it.a.b, b, row0 + rows, next_rows, it.hq);
  }
  // Ḡ_i = G_{i-1}: the decay a_i's read sees (sa_i uses the state before token i's decay).
  std::fill(c.Gx, c.Gx + K, 0.0);
  std::copy(c.g.B, c.g.B + (rows - 1) * K, c.Gx + K);
  for (int64_t i = 0; i < rows * K; ++i) c.ea[i] = static_cast<float>(c.Gx[i]);
  kernels::exp_inplace(c.ea, rows * K);

  // Factored form when e^{Ḡ_0 - G_m} = e^{-G_m} and e^{G_m - G_C} stay within e^80; this is
  // stricter than the gated family's test (Ḡ_0 >= G_0), so c.g has its q~, k~, ratios then.
  const int64_t m = rows / 2;
  const double* Gm = c.g.B + m * K;
  const double* last = c.g.B + (rows - 1) * K;
  double before = 0, after = 0;
  for (int64_t d = 0; d < K; ++d) {
    before = std::max(before, -Gm[d]);
    after = std::max(after, Gm[d] - last[d]);
  }
  c.factored = before <= kMaxFactorExponent && after <= kMaxFactorExponent && c.g.factored;
  if (c.factored) {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t d = 0; d < K; ++d) c.a_ratio[i * K + d] = static_cast<float>(c.Gx[i * K + d] - Gm[d]);
    kernels::exp_inplace(c.a_ratio, rows * K);
    for (int64_t i = 0; i < rows * K; ++i) {
      c.a_tilde[i] = c.a[i] * c.a_ratio[i];
      c.b_tilde[i] = c.b[i] * c.g.inverse_ratio[i];
    }
  }
  const float scale = static_cast<float>(it.p.scale);
  pair_scores(c, K, left_q(c), right_b(c), scale, false, c.Aqb);
  pair_scores(c, K, left_a(c), right_b(c), 1.0f, true, c.Aab);
  pair_scores(c, K, left_a(c), right_k(c), 1.0f, true, c.Aak);

  // T = (I - A_ab)^{-1} (forward substitution on L = -A_ab), then W = T (a ⊙ e^Ḡ), U = T A_ak V.
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < rows; ++j) c.T[i * C + j] = -c.Aab[i * C + j];
  delta::unit_lower_inverse(rows, c.T, c.T);
  for (int64_t i = 0; i < rows * K; ++i) c.work[i] = c.a[i] * c.ea[i];
  kernels::lower_gemm_nn(rows, K, c.T, C, c.work, K, c.W, K, Accumulate::no);
  kernels::lower_gemm_nn(rows, V, c.Aak, C, c.g.v, V, c.X, V, Accumulate::no);
  kernels::lower_gemm_nn(rows, V, c.T, C, c.X, V, c.SA, V, Accumulate::no);
}

int64_t step_floats(int64_t K, int64_t V) {
  const int64_t C = kChunk;
  return 4 * C * K + 2 * C * V + 2 * C * C + (K + 15) / 16 * 16;
}

void keep_step(const Chunk& c, int64_t K, int64_t V, float* memory, Step& st) {
  const int64_t C = kChunk, rows = c.g.rows;
  st.rows = rows;
  st.W = memory, st.Qf = st.W + C * K, st.Kd = st.Qf + C * K, st.Bd = st.Kd + C * K;
  st.SA = st.Bd + C * K, st.v = st.SA + C * V, st.Aqk = st.v + C * V, st.Aqb = st.Aqk + C * C;
  st.decay = st.Aqb + C * C;
  std::copy(c.W, c.W + rows * K, st.W);
  gla::apply_factor(gla::Gate::vector, rows, K, c.g.q, c.g.q_factor, st.Qf);
  gla::apply_factor(gla::Gate::vector, rows, K, c.g.k, c.g.k_factor, st.Kd);
  gla::apply_factor(gla::Gate::vector, rows, K, c.b, c.g.k_factor, st.Bd);
  std::copy(c.SA, c.SA + rows * V, st.SA);
  std::copy(c.g.v, c.g.v + rows * V, st.v);
  std::copy(c.g.A, c.g.A + rows * C, st.Aqk);
  std::copy(c.Aqb, c.Aqb + rows * C, st.Aqb);
  std::copy(c.g.state_decay, c.g.state_decay + K, st.decay);
}

void pair_backward(const Chunk& c, int64_t K, const float* dM, float scale, Side x, Side y,
                   float* dx, float* dy, double* dE, double* dG) {
  const int64_t rows = c.g.rows;
  thread_local std::vector<float> px, py, e;
  px.assign(rows * K, 0.0f);
  py.assign(rows * K, 0.0f);
  if (c.factored) {
    kernels::lower_gemm_nn(rows, K, dM, kChunk, y.tilde, K, px.data(), K, Accumulate::no);
    kernels::lower_gemm_tn(rows, K, dM, kChunk, x.tilde, K, py.data(), K, Accumulate::no);
    for (int64_t i = 0; i < rows * K; ++i) {
      px[i] *= scale * x.ratio[i];
      py[i] *= scale * y.ratio[i];
    }
  } else {
    e.resize(K);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < i; ++j) {
        const float s = scale * dM[i * kChunk + j];
        if (s == 0.0f) continue;
        for (int64_t d = 0; d < K; ++d) e[d] = static_cast<float>(x.exponent[i * K + d] - y.exponent[j * K + d]);
        kernels::exp_inplace(e.data(), K);
        for (int64_t d = 0; d < K; ++d) {
          px[i * K + d] += s * y.raw[j * K + d] * e[d];
          py[j * K + d] += s * x.raw[i * K + d] * e[d];
        }
      }
  }
  kernels::axpy(rows * K, 1.0f, px.data(), dx);
  kernels::axpy(rows * K, 1.0f, py.data(), dy);
  if (!dE) return;
  for (int64_t i = 0; i < rows * K; ++i) {
    dE[i] += double(x.raw[i]) * px[i];
    dG[i] -= double(y.raw[i]) * py[i];
  }
}

}  // namespace linattn::dplr
