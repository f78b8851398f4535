// Fast forward of the causal depthwise conv1d (algorithms.md §4.10): per item (a block of
// kChannels channels, blocks.hpp) and token block, x̃'s rows in fp32, then
// pre = bias + Σ_j w[j] ⊙ x̃[t-(W-1)+j] as W vector multiply-adds per row, SiLU through the
// vectorised sigmoid, the residual, and one rounding into y. Memory bound: 2W FLOPs per element.
#include <vector>

#include "core/parallel.hpp"
#include "core/scratch.hpp"
#include "kernels/elementwise.hpp"
#include "ops/conv1d/blocks.hpp"

namespace linattn::conv1d {

void preactivation_rows(const Problem& p, const ChannelBlock& cb, const float* xt, int64_t rows,
                        float* pre) {
  for (int64_t r = 0; r < rows; ++r) {
    float* out = pre + r * kChannels;
    std::copy(cb.bias, cb.bias + cb.width, out);
    for (int64_t j = 0; j < p.W; ++j)
      kernels::mul_add(cb.width, cb.w + j * kChannels, xt + (r + j) * kChannels, out);
  }
}

namespace {

constexpr int kSlot = 0;  // ScratchArena slot of this file

void forward_item(const Problem& p, const Conv1dArgs& a, const Conv1dOutputs& out, int64_t item) {
  const int64_t rows_x = kTokens + p.W - 1;
  float* scratch = ScratchArena::local().get<float>(
      kSlot, ChannelBlock::scratch_size(p) + (rows_x + 2 * kTokens) * kChannels);
  const ChannelBlock cb(p, a, item, scratch);
  float* xt = scratch + ChannelBlock::scratch_size(p);
  float* pre = xt + rows_x * kChannels;
  float* aux = pre + kTokens * kChannels;  // sigmoid, then the residual
  const TensorView xb = channel_block(a.x, cb.d0, cb.width);
  const TensorView yb = channel_block(out.y, cb.d0, cb.width);
  const TensorView rb = a.residual.given() ? channel_block(a.residual, cb.d0, cb.width) : TensorView{};

  for (int64_t n = 0; n < p.N(); ++n) {
    const Sequence& s = p.sequences[n];
    for (int64_t t0 = 0; t0 < s.length; t0 += kTokens) {
      const int64_t rows = std::min(kTokens, s.length - t0);
      load_extended(p, a, xb, cb, n, t0 - (p.W - 1), rows + p.W - 1, xt);
      preactivation_rows(p, cb, xt, rows, pre);
      if (p.activation == Activation::silu)
        for (int64_t r = 0; r < rows; ++r) {
          float* row = pre + r * kChannels;
          float* sg = aux + r * kChannels;
          kernels::sigmoid(cb.width, row, sg);
          for (int64_t c = 0; c < cb.width; ++c) row[c] *= sg[c];
        }
      if (rb.given()) {
        load_rows(rb, s.batch, s.start + t0, rows, 0, aux, kChannels);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < cb.width; ++c) pre[r * kChannels + c] += aux[r * kChannels + c];
      }
      store_rows(yb, s.batch, s.start + t0, rows, 0, pre, kChannels);
    }
    if (a.output_final_state) {  // final[j] = x̃[L - W + j]
      load_extended(p, a, xb, cb, n, s.length - p.W, p.W, xt);
      const TensorView& f = out.final_state;
      for (int64_t c = 0; c < cb.width; ++c)
        for (int64_t j = 0; j < p.W; ++j)
          store_from_double(f.data, f.dtype, at3(f, n, cb.d0 + c, j), xt[j * kChannels + c]);
    }
  }
}

}  // namespace

void fast_forward(const Problem& p, const Conv1dArgs& a, const Conv1dOutputs& out) {
  parallel_for((p.D + kChannels - 1) / kChannels, [&](int64_t item) { forward_item(p, a, out, item); });
}

}  // namespace linattn::conv1d
