#include "ops/attention/chunk.hpp"

#include <algorithm>
#include <cmath>

#include "core/scratch.hpp"
#include "kernels/elementwise.hpp"
#include "kernels/gemm.hpp"
#include "ops/common/rows.hpp"

namespace linattn::attention {

using kernels::Accumulate;

std::vector<Tile> tiles(const Problem& p, int64_t size) {
  std::vector<Tile> out;
  for (int64_t s = 0; s < static_cast<int64_t>(p.spans.size()); ++s)
    for (int64_t r0 = 0; r0 < p.spans[s].rows; r0 += size)
      out.push_back({s, r0, std::min(size, p.spans[s].rows - r0)});
  return out;
}

void load_scaled_rows(const TensorView& t, int64_t b, int64_t row0, int64_t rows, int64_t head,
                      float scale, float* dst) {
  load_rows(t, b, row0, rows, head, dst, t.shape[3]);
  for (int64_t i = 0; i < rows * t.shape[3]; ++i) dst[i] *= scale;
}

const int64_t* positions(int64_t pos0, int64_t rows) {
  int64_t* pos = ScratchArena::local().get<int64_t>(kSlotPos, rows);
  for (int64_t r = 0; r < rows; ++r) pos[r] = pos0 + r;
  return pos;
}

void store_lse(const TensorView& lse, int64_t b, int64_t row0, int64_t rows, int64_t head,
               const float* values) {
  for (int64_t r = 0; r < rows; ++r)
    store_scalar(lse, b, row0 + r, head, values[r]);
}

void load_lse(const TensorView& lse, int64_t b, int64_t row0, int64_t rows, int64_t head,
              float* dst) {
  for (int64_t r = 0; r < rows; ++r) dst[r] = load_scalar(lse, b, row0 + r, head);
}

namespace {

// The keys any of the rows reads: [first_key(min pos), max pos].
struct KeyRange {
  int64_t lo, hi;
  int64_t first_tile() const { return lo / kForwardKeys * kForwardKeys; }
};
KeyRange key_range(const Problem& p, const int64_t* pos, int64_t rows) {
  const auto [lo, hi] = std::minmax_element(pos, pos + rows);
  return {p.first_key(*lo), *hi};
}

// Sets S[r, c] = -inf where key j0 + c is outside row r's [first_key(pos[r]), pos[r]]. Tiles every
// row reads in full (all but the diagonal and window-edge tiles) are left alone.
void mask(const Problem& p, const int64_t* pos, int64_t rows, int64_t j0, int64_t n, float* S) {
  const auto [lo, hi] = std::minmax_element(pos, pos + rows);
  if (j0 >= p.first_key(*hi) && j0 + n - 1 <= *lo) return;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t first = p.first_key(pos[r]) - j0, last = pos[r] - j0;
    float* row = S + r * n;
    for (int64_t c = 0; c < n; ++c)
      if (c < first || c > last) row[c] = -INFINITY;
  }
}

}  // namespace

void attend(const Problem& p, const Span& s, int64_t hkv, const TensorView& k,
            const TensorView& v, const float* Q, int64_t rows, const int64_t* pos, float* O,
            float* lse) {
  const int64_t K = p.K, V = p.V;
  ScratchArena& arena = ScratchArena::local();
  float* S = arena.get<float>(kSlotS, rows * kForwardKeys);
  float* Kbuf = arena.get<float>(kSlotK, kForwardKeys * K);
  float* Vbuf = arena.get<float>(kSlotV, kForwardKeys * V);
  float* m = arena.get<float>(kSlotStats, 2 * rows);  // running max, then running sum
  float* l = m + rows;
  std::fill(O, O + rows * V, 0.0f);
  std::fill(m, m + rows, -INFINITY);
  std::fill(l, l + rows, 0.0f);
  const KeyRange keys = key_range(p, pos, rows);
  for (int64_t j0 = keys.first_tile(); j0 <= keys.hi; j0 += kForwardKeys) {
    const int64_t n = std::min(kForwardKeys, keys.hi + 1 - j0);
    // K is read in place. A tile of many rows gets S from gemm_nt (which transposes the key
    // tile) and reads V from a contiguous copy: rows of the caller's tensor are H*V apart, which
    // maps them onto a few cache sets, and the product reads them once per 8 rows (13% faster at
    // H = 16). A tile of a few rows (a decode step) reads each key row once: dot products, V in
    // place.
    int64_t ldk, ldv = V;
    const float* Kj = f32_rows(k, s.kb, s.kv0 + j0, n, hkv, Kbuf, ldk);
    const float* Vj = Vbuf;
    if (rows > kFewRows) {
      load_rows(v, s.kb, s.kv0 + j0, n, hkv, Vbuf, V);
      kernels::gemm_nt(rows, n, K, Q, K, Kj, ldk, S, n, Accumulate::no);
    } else {
      Vj = f32_rows(v, s.kb, s.kv0 + j0, n, hkv, Vbuf, ldv);
      for (int64_t c = 0; c < n; ++c)
        for (int64_t r = 0; r < rows; ++r) S[r * n + c] = kernels::dot(Q + r * K, Kj + c * ldk, K);
    }
    mask(p, pos, rows, j0, n, S);
    for (int64_t r = 0; r < rows; ++r) {
      float* row = S + r * n;
      const float m_new = std::max(m[r], kernels::max_of(row, n));
      // A row with no key yet (-inf so far) keeps a finite pivot: e^{-inf - 0} = 0, no NaN.
      const float pivot = m_new == -INFINITY ? 0.0f : m_new;
      const float alpha = std::exp(m[r] - pivot);
      const float sum = kernels::exp_shifted_sum(row, n, pivot);
      if (alpha != 1.0f) {
        l[r] *= alpha;
        for (int64_t c = 0; c < V; ++c) O[r * V + c] *= alpha;
      }
      l[r] += sum;
      m[r] = m_new;
    }
    kernels::gemm_nn(rows, V, n, S, n, Vj, ldv, O, V, Accumulate::yes);
  }
  // Every row reads at least its own key, so l >= 1 (the max term is e^0).
  for (int64_t r = 0; r < rows; ++r) {
    const float inv = 1.0f / l[r];
    for (int64_t c = 0; c < V; ++c) O[r * V + c] *= inv;
    lse[r] = m[r] + std::log(l[r]);
  }
}

void tile_gradients(const Problem& p, const int64_t* pos, int64_t rows, int64_t j0, int64_t n,
                    const float* Q, const float* dO, const float* lse, const float* D,
                    const float* Kt, const float* Vt, float* P, float* dS) {
  kernels::gemm_nn(rows, n, p.K, Q, p.K, Kt, n, P, n, Accumulate::no);
  mask(p, pos, rows, j0, n, P);
  for (int64_t r = 0; r < rows; ++r) kernels::exp_shifted_sum(P + r * n, n, lse[r]);
  kernels::gemm_nn(rows, n, p.V, dO, p.V, Vt, n, dS, n, Accumulate::no);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < n; ++c) dS[r * n + c] = P[r * n + c] * (dS[r * n + c] - D[r]);
}

}  // namespace linattn::attention
