// Fast backward of the causal depthwise conv1d (algorithms.md §4.10). Per item (kChannels
// channels, blocks.hpp) and token block [t0, t1): recompute pre on rows [t0, t1 + W - 1) (the
// rows whose g reaches this block), g = dy ⊙ act'(pre), then
//     dx̃[τ] = Σ_j w[j] ⊙ g[τ + (W-1) - j]      (+ dfinal[j] where τ = L - W + j)
//     dw[j] += Σ_{t in block} g[t] ⊙ x̃[t - (W-1) + j],   db += Σ_{t in block} g[t]
// dinitial_state is dx̃ on τ < 0, from the first block. Block sums go into double accumulators,
// so the weight gradients keep fp32 block precision over long sequences.
#include <vector>

#include "core/parallel.hpp"
#include "core/scratch.hpp"
#include "kernels/elementwise.hpp"
#include "ops/conv1d/blocks.hpp"

namespace linattn::conv1d {
namespace {

constexpr int kSlot = 1;  // ScratchArena slot of this file (forward.cpp uses 0)

void backward_item(const Problem& p, const Conv1dArgs& a, const Conv1dGradOutputs& go,
                   const Conv1dGrads& gr, int64_t item) {
  const int64_t W = p.W, rows_g = kTokens + W - 1, rows_x = rows_g + W - 1;
  float* scratch = ScratchArena::local().get<float>(
      kSlot, ChannelBlock::scratch_size(p) + (rows_x + 3 * rows_g + (W + 1)) * kChannels);
  const ChannelBlock cb(p, a, item, scratch);
  float* xt = scratch + ChannelBlock::scratch_size(p);  // x̃ rows from t0 - (W-1)
  float* g = xt + rows_x * kChannels;                    // g rows from t0
  float* sg = g + rows_g * kChannels;                    // sigmoid rows
  float* dx = sg + rows_g * kChannels;                   // dx̃ rows from t0 (or from -W)
  float* part = dx + rows_g * kChannels;                 // block sums: dw[W][.], db[.]
  std::vector<double> acc((W + 1) * kChannels, 0.0);     // dw, db over every block
  const int64_t width = cb.width;
  const TensorView xb = channel_block(a.x, cb.d0, width);
  const TensorView dyb = channel_block(go.dy, cb.d0, width);
  const TensorView dxb = gr.dx.given() ? channel_block(gr.dx, cb.d0, width) : TensorView{};
  const TensorView drb = gr.dresidual.given() ? channel_block(gr.dresidual, cb.d0, width) : TensorView{};
  const TensorView& dht = go.dfinal_state;
  auto dfinal = [&](int64_t n, int64_t c, int64_t j) {
    return static_cast<float>(load_as_double(dht.data, dht.dtype, at3(dht, n, cb.d0 + c, j)));
  };

  for (int64_t n = 0; n < p.N(); ++n) {
    const Sequence& s = p.sequences[n];
    const int64_t L = s.length;
    for (int64_t t0 = 0; t0 < L; t0 += kTokens) {
      const int64_t rows = std::min(kTokens, L - t0);
      const int64_t grows = std::min(rows + W - 1, L - t0);  // g rows that exist
      load_extended(p, a, xb, cb, n, t0 - (W - 1), grows + W - 1, xt);
      load_rows(dyb, s.batch, s.start + t0, grows, 0, g, kChannels);
      if (drb.given()) store_rows(drb, s.batch, s.start + t0, rows, 0, g, kChannels);
      if (p.activation == Activation::silu) {
        float* pre = dx;  // dx is free until g is complete
        preactivation_rows(p, cb, xt, grows, pre);
        for (int64_t r = 0; r < grows; ++r) {
          const int64_t o = r * kChannels;
          kernels::sigmoid(width, pre + o, sg + o);
          for (int64_t c = 0; c < width; ++c)
            g[o + c] *= sg[o + c] * (1.0f + pre[o + c] * (1.0f - sg[o + c]));
        }
      }
      std::fill(g + grows * kChannels, g + rows_g * kChannels, 0.0f);  // past the end

      std::fill(part, part + (W + 1) * kChannels, 0.0f);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < W; ++j)
          kernels::mul_add(width, g + r * kChannels, xt + (r + j) * kChannels, part + j * kChannels);
        for (int64_t c = 0; c < width; ++c) part[W * kChannels + c] += g[r * kChannels + c];
      }
      for (int64_t i = 0; i < (W + 1) * kChannels; ++i) acc[i] += part[i];

      if (dxb.given()) {
        std::fill(dx, dx + rows * kChannels, 0.0f);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < W; ++j)
            kernels::mul_add(width, cb.w + j * kChannels, g + (r + W - 1 - j) * kChannels, dx + r * kChannels);
        if (dht.given())
          for (int64_t r = std::max<int64_t>(0, L - W - t0); r < rows; ++r)
            for (int64_t c = 0; c < width; ++c) dx[r * kChannels + c] += dfinal(n, c, t0 + r - (L - W));
        store_rows(dxb, s.batch, s.start + t0, rows, 0, dx, kChannels);
      }
      if (t0 == 0 && gr.dinitial_state.given()) {  // dx̃[τ] for τ in [-W, 0): g rows 0..W-2 are here
        const TensorView& dh0 = gr.dinitial_state;
        for (int64_t c = 0; c < width; ++c)
          for (int64_t col = 0; col < W; ++col) {
            const int64_t tau = col - W;
            float v = 0.0f;
            for (int64_t j = 0; j < W; ++j) {
              const int64_t k = tau + W - 1 - j;
              if (k >= 0 && k < grows) v += cb.w[j * kChannels + c] * g[k * kChannels + c];
            }
            if (dht.given() && tau - (L - W) >= 0) v += dfinal(n, c, tau - (L - W));
            store_from_double(dh0.data, dh0.dtype, at3(dh0, n, cb.d0 + c, col), v);
          }
      }
    }
  }
  for (int64_t c = 0; c < width; ++c) {
    if (gr.dweight.given())
      for (int64_t j = 0; j < W; ++j)
        store_from_double(gr.dweight.data, gr.dweight.dtype, at2(gr.dweight, cb.d0 + c, j), acc[j * kChannels + c]);
    if (gr.dbias.given())
      store_from_double(gr.dbias.data, gr.dbias.dtype, (cb.d0 + c) * gr.dbias.strides[0], acc[W * kChannels + c]);
  }
}

}  // namespace

void fast_backward(const Problem& p, const Conv1dArgs& a, const Conv1dGradOutputs& go,
                   const Conv1dGrads& gr) {
  parallel_for((p.D + kChannels - 1) / kChannels, [&](int64_t item) { backward_item(p, a, go, gr, item); });
}

}  // namespace linattn::conv1d
