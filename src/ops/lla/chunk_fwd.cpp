// Blockwise LLA forward (algorithms.md §4.9b), per query tile: pass 1 (W, moments) in the Tile,
// pass 2 the CG solve Sigma_i rho_i = mu_i, pass 3 the output
//   O = sum over key blocks of (W o (1 - rho.z)) V / delta,  delta = sum_j w_ij (1 - rho.z_ij).
// That delta equals omega - mu.rho (§4.9a) but is the sum of the very weights that multiply V:
// sum_j l_ij = 1 holds to rounding whatever error CG leaves in rho, and the cancellation of
// omega - mu.rho when the local fit is nearly exact (small lambda, few keys) cancels in the
// ratio instead (one key: o = v exactly).
// float32 or bfloat16 storage, fp32 arithmetic; float64 inputs run the oracle (api.cpp).
#include <algorithm>

#include "core/scratch.hpp"
#include "kernels/gemm.hpp"
#include "ops/lla/chunk.hpp"

namespace linattn::lla {

void tile_forward(const Problem& p, int64_t tile_rows, const TensorView& o) {
  for_each_block(p, Along::queries, tile_rows, [&](const Sequence& s, int64_t h, int64_t r0, int64_t rows) {
    const int64_t K = p.K, V = p.V;
    const Tile t(p, s, h, r0, rows, true);
    count(p, &Stats::tile_pairs, t.pairs());
    ScratchArena& arena = ScratchArena::local();
    float* rho = arena.get<float>(kFirstCallerSlot, rows * K);
    double* delta = arena.get<double>(kFirstCallerSlot + 1, rows);
    float* L = arena.get<float>(kFirstCallerSlot + 2, rows * kKeyBlock);
    float* O = arena.get<float>(kFirstCallerSlot + 3, rows * V);
    t.solve(t.mu, rho);
    std::fill(delta, delta + rows, 0.0);
    for (int64_t key0 = 0; key0 < t.keys(); key0 += kKeyBlock) {
      const int64_t n = std::min(kKeyBlock, t.keys() - key0);
      t.project(rho, key0, n, L);
      const float* w = t.weights(key0);
      for (int64_t r = 0; r < rows; ++r) {
        float sum = 0;
        for (int64_t j = 0; j < n; ++j) sum += (L[r * n + j] = w[r * t.keys() + j] * (1 - L[r * n + j]));
        delta[r] += sum;
      }
      kernels::gemm_nn(rows, V, n, L, n, t.Vmat + key0 * V, V, O, V,
                       key0 == 0 ? kernels::Accumulate::no : kernels::Accumulate::yes);
    }
    for (int64_t r = 0; r < rows; ++r) {
      const float inv = static_cast<float>(1 / shifted_delta(delta[r], p.a->delta_eps));
      for (int64_t e = 0; e < V; ++e) O[r * V + e] *= inv;
    }
    store_rows(o, s.batch, t.row(0), rows, h, O, V);
  });
}

void chunk_forward(const Problem& p, const TensorView& o) { tile_forward(p, kQueryTile, o); }

}  // namespace linattn::lla
