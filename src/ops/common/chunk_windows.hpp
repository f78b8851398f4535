// How the chunk kernels of the delta-rule families (delta/, dplr/) split one work item when
// there are fewer items than threads. Their chunk-to-chunk transitions act on the key side of
// the state only (S' = e^{G_C} S + Kd^T (U - W S) in §4.6b, (diag + low rank) S in §4.8b), so
// every value column of S, Ṽ and O evolves on its own: the serial state pass runs in parallel
// over blocks of value columns, after the chunks' state-independent preparation has run in
// parallel over the chunks of a window. Windows bound the memory to a few chunks per thread.
// With at least as many items as threads an item is one window of one chunk and one block of
// all V columns (the fused pass, state in cache). Every GEMM of the kernels computes each
// output element as the same k-ordered chain of multiply-adds whatever its column range
// (kernels/gemm.cpp), so both splits give the same bits for every thread count.
#pragma once

#include <algorithm>
#include <cstdint>

#include "core/parallel.hpp"

namespace linattn {

struct ChunkWindows {
  int64_t chunks = 1;   // chunks prepared together (in parallel)
  int64_t columns = 0;  // value columns per block of the state pass (in parallel)

  int64_t blocks(int64_t V) const { return (V + columns - 1) / columns; }

  // Runs body(e0, cols) for the blocks [e0, e0 + cols) of V columns, in parallel.
  template <typename Body>
  void for_each_column_block(int64_t V, Body&& body) const {
    parallel_for(blocks(V), [&](int64_t b) { body(b * columns, std::min(columns, V - b * columns)); });
  }
};

// 32 columns: a whole number of the GEMM's column tiles (two vectors) up to AVX-512, and
// V = 128 still splits four ways. Four chunks per thread in a window keeps the threads busy
// when one of them is descheduled.
inline constexpr int64_t kColumnBlock = 32;

inline ChunkWindows chunk_windows(int64_t items, int64_t V) {
  if (items_cover_threads(items)) return {1, V};
  return {4 * int64_t{max_threads()}, kColumnBlock};
}

}  // namespace linattn
