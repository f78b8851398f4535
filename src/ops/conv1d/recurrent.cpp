// The decode step of the causal depthwise conv1d (fla's causal_conv1d_update; algorithms.md
// §4.10: decode keeps the last W inputs): per (sequence n, channel d), shift the cache
// [n, d, :] by one token, append x, and y = act(Σ_j w[j] cache[j] + b) + r. The cache is the
// state of conv1d.hpp, so steps continue a forward's final_state and vice versa. Work items are
// sequences, each owning its cache rows and y row.
#include <cmath>

#include "core/dtype.hpp"
#include "core/parallel.hpp"
#include "ops/common/validator.hpp"
#include "ops/conv1d/conv1d.hpp"

namespace linattn {

namespace {

constexpr const char* kUpdate = "causal_conv1d_update";

void check_update(const Conv1dUpdateArgs& a, const TensorView& y) {
  Validator check(kUpdate);
  for (auto [name, t] : {std::pair{"x", &a.x}, {"cache", &a.cache}, {"weight", &a.weight}}) {
    check.present(name, *t);
    check.basic(name, *t);
    check.floating(name, *t);
  }
  check.rank("x", a.x, 2, "[N, D]");
  check.rank("weight", a.weight, 2, "[D, W]");
  const int64_t N = a.x.shape[0], D = a.x.shape[1], W = a.weight.shape[1];
  check.shape("weight", a.weight, {D, W}, "[D, W] (D from x)");
  check.shape("cache", a.cache, {N, D, W}, "[N, D, W]");
  if (a.bias.given()) {
    check.basic("bias", a.bias);
    check.floating("bias", a.bias);
    check.shape("bias", a.bias, {D}, "[D]");
  }
  if (a.residual.given()) {
    check.basic("residual", a.residual);
    check.floating("residual", a.residual);
    check.shape("residual", a.residual, {N, D}, "[N, D] (the shape of x)");
  }
  if (a.activation != Activation::none && a.activation != Activation::silu)
    fail(kUpdate, ": activation must be none (0) or silu (1), got ", static_cast<int>(a.activation));
  check.output("y", y, "x", a.x, {N, D}, "[N, D]");
  check.distinct_elements("cache", a.cache);
  check.no_overlaps({{"cache", &a.cache}, {"y", &y}},
                    {{"x", &a.x}, {"weight", &a.weight}, {"bias", &a.bias}, {"residual", &a.residual}});
}

double get(const TensorView& t, int64_t offset) { return load_as_double(t.data, t.dtype, offset); }

}  // namespace

void causal_conv1d_update(const Conv1dUpdateArgs& a, const TensorView& y) {
  check_update(a, y);
  const int64_t N = a.x.shape[0], D = a.x.shape[1], W = a.weight.shape[1];
  const TensorView& cache = a.cache;
  parallel_for_work(N, N * D * W, [&](int64_t n) {
    for (int64_t d = 0; d < D; ++d) {
      // fp64: a handful of products per channel, exact enough for float64 callers too.
      double acc = a.bias.given() ? get(a.bias, d * a.bias.strides[0]) : 0.0;
      for (int64_t j = 0; j < W; ++j) {
        const double v = j + 1 < W ? get(cache, at3(cache, n, d, j + 1)) : get(a.x, at2(a.x, n, d));
        store_from_double(cache.data, cache.dtype, at3(cache, n, d, j), v);
        acc += get(a.weight, at2(a.weight, d, j)) * v;
      }
      if (a.activation == Activation::silu) acc = acc / (1.0 + std::exp(-acc));
      if (a.residual.given()) acc += get(a.residual, at2(a.residual, n, d));
      store_from_double(y.data, y.dtype, at2(y, n, d), acc);
    }
  });
}

}  // namespace linattn
