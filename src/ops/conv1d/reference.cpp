// fp64 oracle of the causal depthwise conv1d (algorithms.md §4.10, "Causal depthwise conv1d"),
// forward and backward, token by token through the caller's views (any strides, any dtype).
// Per sequence and channel it builds x̃, the inputs extended by the W cached ones (zeros
// without an initial state), then
//     pre[t] = b + Σ_j w[j] x̃[t-(W-1)+j],  y[t] = act(pre[t]) + r[t],  final[j] = x̃[L-W+j]
// and, backward with g[t] = dy[t] act'(pre[t]):
//     dx̃[τ] = Σ_j w[j] g[τ+(W-1)-j] (+ dfinal[j] where τ = L-W+j),  dw[j] = Σ_t g[t] x̃[t-(W-1)+j],
//     db = Σ_t g[t],  dr = dy,  dx = dx̃[0..L),  dinitial_state = dx̃[-W..0).
#include <cmath>
#include <vector>

#include "core/dtype.hpp"
#include "core/parallel.hpp"
#include "ops/conv1d/conv1d.hpp"

namespace linattn::conv1d {
namespace {

double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }

// x̃ of sequence n, channel d: xt[W + τ] for τ in [-W, L).
void extended_inputs(const Problem& p, const Conv1dArgs& a, int64_t n, int64_t d,
                     std::vector<double>& xt) {
  const Sequence& s = p.sequences[n];
  xt.assign(p.W + s.length, 0.0);
  if (a.initial_state.given())
    for (int64_t j = 0; j < p.W; ++j)
      xt[j] = load_as_double(a.initial_state.data, a.initial_state.dtype, at3(a.initial_state, n, d, j));
  for (int64_t t = 0; t < s.length; ++t)
    xt[p.W + t] = load_as_double(a.x.data, a.x.dtype, at3(a.x, s.batch, s.start + t, d));
}

double weight(const Conv1dArgs& a, int64_t d, int64_t j) {
  return load_as_double(a.weight.data, a.weight.dtype, at2(a.weight, d, j));
}

// pre[t] for t in [0, L).
void preactivations(const Problem& p, const Conv1dArgs& a, int64_t d, const std::vector<double>& xt,
                    int64_t L, std::vector<double>& pre) {
  const double b = a.bias.given() ? load_as_double(a.bias.data, a.bias.dtype, d * a.bias.strides[0]) : 0.0;
  pre.assign(L, b);
  for (int64_t t = 0; t < L; ++t)
    for (int64_t j = 0; j < p.W; ++j) pre[t] += weight(a, d, j) * xt[t + 1 + j];  // x̃[t-(W-1)+j]
}

}  // namespace

void reference_forward(const Problem& p, const Conv1dArgs& a, const Conv1dOutputs& out) {
  parallel_for_work(p.D, p.D * p.T * p.W, [&](int64_t d) {
    std::vector<double> xt, pre;
    for (int64_t n = 0; n < p.N(); ++n) {
      const Sequence& s = p.sequences[n];
      extended_inputs(p, a, n, d, xt);
      preactivations(p, a, d, xt, s.length, pre);
      for (int64_t t = 0; t < s.length; ++t) {
        double y = p.activation == Activation::silu ? pre[t] * sigmoid(pre[t]) : pre[t];
        if (a.residual.given())
          y += load_as_double(a.residual.data, a.residual.dtype, at3(a.residual, s.batch, s.start + t, d));
        store_from_double(out.y.data, out.y.dtype, at3(out.y, s.batch, s.start + t, d), y);
      }
      if (a.output_final_state)
        for (int64_t j = 0; j < p.W; ++j)
          store_from_double(out.final_state.data, out.final_state.dtype, at3(out.final_state, n, d, j),
                            xt[s.length + j]);  // x̃[L-W+j]
    }
  });
}

void reference_backward(const Problem& p, const Conv1dArgs& a, const Conv1dGradOutputs& go,
                        const Conv1dGrads& gr) {
  parallel_for_work(p.D, p.D * p.T * p.W, [&](int64_t d) {  // channel d owns its gradients: no reduction across items
    std::vector<double> xt, pre, g, dxt;
    std::vector<double> dw(p.W, 0.0);
    double db = 0.0;
    for (int64_t n = 0; n < p.N(); ++n) {
      const Sequence& s = p.sequences[n];
      const int64_t L = s.length;
      extended_inputs(p, a, n, d, xt);
      preactivations(p, a, d, xt, L, pre);
      g.assign(L, 0.0);
      for (int64_t t = 0; t < L; ++t) {
        const int64_t row = s.start + t;
        const double dy = load_as_double(go.dy.data, go.dy.dtype, at3(go.dy, s.batch, row, d));
        if (gr.dresidual.given())
          store_from_double(gr.dresidual.data, gr.dresidual.dtype, at3(gr.dresidual, s.batch, row, d), dy);
        const double sg = sigmoid(pre[t]);
        g[t] = p.activation == Activation::silu ? dy * sg * (1.0 + pre[t] * (1.0 - sg)) : dy;
      }
      dxt.assign(p.W + L, 0.0);
      for (int64_t t = 0; t < L; ++t) {
        db += g[t];
        for (int64_t j = 0; j < p.W; ++j) {
          dxt[t + 1 + j] += weight(a, d, j) * g[t];
          dw[j] += g[t] * xt[t + 1 + j];
        }
      }
      if (go.dfinal_state.given())
        for (int64_t j = 0; j < p.W; ++j)
          dxt[L + j] += load_as_double(go.dfinal_state.data, go.dfinal_state.dtype, at3(go.dfinal_state, n, d, j));
      if (gr.dx.given())
        for (int64_t t = 0; t < L; ++t)
          store_from_double(gr.dx.data, gr.dx.dtype, at3(gr.dx, s.batch, s.start + t, d), dxt[p.W + t]);
      if (gr.dinitial_state.given())
        for (int64_t j = 0; j < p.W; ++j)
          store_from_double(gr.dinitial_state.data, gr.dinitial_state.dtype,
                            at3(gr.dinitial_state, n, d, j), dxt[j]);
    }
    if (gr.dweight.given())
      for (int64_t j = 0; j < p.W; ++j)
        store_from_double(gr.dweight.data, gr.dweight.dtype, at2(gr.dweight, d, j), dw[j]);
    if (gr.dbias.given()) store_from_double(gr.dbias.data, gr.dbias.dtype, d * gr.dbias.strides[0], db);
  });
}

}  // namespace linattn::conv1d
