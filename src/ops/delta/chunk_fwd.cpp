// Chunk-parallel forward of gated_delta_rule (algorithms.md §4.6b), delta_rule (§4.5b, the
// same with g = 0), delta_product (§4.7b: the same on the expanded sequence of n_h steps per
// token, chunk.hpp) and kda (§4.8b: per-channel gates, so e^{G} scales each channel and
// e^{G_C} S decays each state row), chunk 64, with the UT transform of §3.5. Per chunk (chunk.cpp
// prepares G, Γ_ij = exp(G_i - G_j), L, T0 = (I + L)^{-1}, W = T0 (β ⊙ K ⊙ e^G), U = T0 (β ⊙ V)):
//   Ṽ  = U - W S                                  (row r = the recurrent u_r)
//   O  = (scale Q ⊙ e^{G}) S + scale ((Q K^T) ⊙ Γ) Ṽ
//   S' = e^{G_C} S + (K ⊙ e^{G_C - G})^T Ṽ
// q and k are L2-normalised first when use_qk_l2norm_in_kernel; grouped value heads read q/k
// head hv / (HV / H). Work items are (sequence, value head). Inside an item the chunks go by in
// windows (ops/common/chunk_windows.hpp): each window's chunks are prepared (in parallel when
// items are fewer than threads), then the state runs through them in blocks of value columns
// (in parallel likewise), writing O. With enough items a window is one chunk and one block of
// all columns, the state staying in cache. Both give the same bits for every thread count.
#include <algorithm>
#include <vector>

#include "core/parallel.hpp"
#include "core/scratch.hpp"
#include "kernels/gemm.hpp"
#include "ops/common/chunk_windows.hpp"
#include "ops/common/forms.hpp"
#include "ops/common/rows.hpp"
#include "ops/delta/chunk.hpp"

namespace linattn {
namespace {

using delta::kChunk;
using kernels::Accumulate;

void run_item(const Problem& p, const OpArgs& a, const OpOutputs& out, const ChunkWindows& windows,
              int64_t n, int64_t hv) {
  const int64_t K = p.K, V = p.V, hq = hv / p.group(), n_h = p.n_h;
  const Sequence& s = p.sequences[n];
  const int64_t steps = s.length * n_h, n_chunks = (steps + kChunk - 1) / kChunk;
  // A window's chunks and outputs.
  const int64_t stride = delta::chunk_floats(p), count = std::max<int64_t>(1, std::min(windows.chunks, n_chunks));
  ScratchArena& arena = ScratchArena::local();
  float* memory = arena.get<float>(delta::kSlotWindow, count * (stride + kChunk * V));
  float* outputs = memory + count * stride;
  float* S = arena.get<float>(delta::kSlotStates, K * V);
  std::vector<delta::Chunk> chunks(count);
  load_state(a.initial_state, n, hv, K, V, S);
  for (int64_t w0 = 0; w0 < n_chunks; w0 += count) {
    const int64_t in_window = std::min(count, n_chunks - w0);
    parallel_for(in_window, [&](int64_t i) {
      const int64_t t0 = (w0 + i) * kChunk;
      delta::prepare_chunk(p, a, s, hv, hq, t0, std::min(kChunk, steps - t0), chunks[i], memory + i * stride);
    });
    windows.for_each_column_block(V, [&](int64_t e0, int64_t cols) {
      float* work = ScratchArena::local().get<float>(delta::kSlotWork, kChunk * cols);
      for (int64_t i = 0; i < in_window; ++i)
        delta::advance_columns(chunks[i], K, V, e0, cols, S, S, outputs + i * kChunk * V, work);
    });
    parallel_for(in_window, [&](int64_t i) {
      const int64_t t0 = (w0 + i) * kChunk, rows = chunks[i].rows;
      const float* O = outputs + i * kChunk * V;
      if (n_h == 1) {
        store_rows(out.o, s.batch, s.start + t0, rows, hv, O, V);
        return;
      }
      for (int64_t r = 0; r < rows; ++r)
        if (delta::query_step(t0 + r, n_h))
          store_rows(out.o, s.batch, s.start + (t0 + r) / n_h, 1, hv, O + r * V, V);
    });
  }
  if (a.output_final_state) store_state(out.final_state, n, hv, K, V, S);
}

}  // namespace

void delta_chunk_forward(const Problem& p, const OpArgs& a, const OpOutputs& out) {
  const int64_t items = p.N() * p.HV;
  const ChunkWindows windows = chunk_windows(items, p.V);
  for_each_work_item(items, [&](int64_t item) { run_item(p, a, out, windows, item / p.HV, item % p.HV); });
}

}  // namespace linattn
