// Blocks of the fast conv1d (forward.cpp, backward.cpp): a work item is a block of kChannels
// channels over every sequence, so each item owns its outputs and its weight/bias gradients and
// nothing is reduced across items (results do not depend on the thread count). Inside an item
// the tokens go by in blocks of kTokens rows of fp32, each holding the W-1 inputs before it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core/dtype.hpp"
#include "ops/common/rows.hpp"
#include "ops/conv1d/conv1d.hpp"

namespace linattn::conv1d {

inline constexpr int64_t kChannels = 64;  // one item: 256 bytes of each token row
inline constexpr int64_t kTokens = 64;    // rows per block

// The channel block [d0, d0 + width) of one item and its fp32 weights, transposed: w[j * ld + c].
struct ChannelBlock {
  int64_t d0, width;
  float* w;     // [W][kChannels]
  float* bias;  // [kChannels], zeros without a bias

  ChannelBlock(const Problem& p, const Conv1dArgs& a, int64_t item, float* scratch)
      : d0(item * kChannels), width(std::min(kChannels, p.D - item * kChannels)), w(scratch),
        bias(scratch + p.W * kChannels) {
    for (int64_t c = 0; c < width; ++c) {
      for (int64_t j = 0; j < p.W; ++j)
        w[j * kChannels + c] = static_cast<float>(load_as_double(a.weight.data, a.weight.dtype, at2(a.weight, d0 + c, j)));
      bias[c] = a.bias.given() ? static_cast<float>(load_as_double(a.bias.data, a.bias.dtype, (d0 + c) * a.bias.strides[0])) : 0.0f;
    }
  }
  static int64_t scratch_size(const Problem& p) { return (p.W + 1) * kChannels; }
};

// Rows τ in [tau0, tau0 + rows) of x̃ (tau0 >= 1 - W) (sequence n, channels of cb) into dst (ld = kChannels):
// x where τ >= 0 (and τ < L), the initial state's column W + τ where τ < 0 (zeros without one).
inline void load_extended(const Problem& p, const Conv1dArgs& a, const TensorView& xb,
                          const ChannelBlock& cb, int64_t n, int64_t tau0, int64_t rows, float* dst) {
  const Sequence& s = p.sequences[n];
  for (int64_t r = 0; r < rows && tau0 + r < 0; ++r) {
    float* row = dst + r * kChannels;
    if (!a.initial_state.given()) {
      std::fill(row, row + cb.width, 0.0f);
      continue;
    }
    const TensorView& h0 = a.initial_state;
    for (int64_t c = 0; c < cb.width; ++c)
      row[c] = static_cast<float>(load_as_double(h0.data, h0.dtype, at3(h0, n, cb.d0 + c, p.W + tau0 + r)));
  }
  const int64_t first = std::max<int64_t>(0, tau0), last = std::min(tau0 + rows, s.length);
  if (last > first) load_rows(xb, s.batch, s.start + first, last - first, 0, dst + (first - tau0) * kChannels, kChannels);
  for (int64_t tau = std::max(first, last); tau < tau0 + rows; ++tau)  // past the end: zeros
    std::fill(dst + (tau - tau0) * kChannels, dst + (tau - tau0) * kChannels + cb.width, 0.0f);
}

// pre[r] = bias + Σ_j w[j] ⊙ xt[r + j] for r < rows, where xt's row 0 is x̃[t0 - (W-1)].
void preactivation_rows(const Problem& p, const ChannelBlock& cb, const float* xt, int64_t rows,
                        float* pre);

}  // namespace linattn::conv1d
