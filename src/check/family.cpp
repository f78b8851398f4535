#include "check/family.hpp"

#include <algorithm>
#include <cmath>

namespace linattn::check {

Buffer random_buffer(DType dtype, std::vector<int64_t> shape, std::mt19937_64& rng, double lo,
                     double hi) {
  Buffer b(dtype, std::move(shape));
  std::uniform_real_distribution<double> u(lo, hi);
  for (int64_t i = 0; i < b.numel(); ++i) b.set(i, u(rng));
  return b;
}

Buffer offsets_of(const std::vector<int64_t>& seqlens) {
  Buffer b(DType::i64, {static_cast<int64_t>(seqlens.size()) + 1});
  int64_t total = 0;
  b.set(0, 0);
  for (size_t i = 0; i < seqlens.size(); ++i) b.set(static_cast<int64_t>(i) + 1, total += seqlens[i]);
  return b;
}

double dot(const Buffer& a, const Buffer& b) {
  if (!a.given() || !b.given()) return 0.0;
  double s = 0.0;
  for (int64_t i = 0; i < a.numel(); ++i) s += a.get(i) * b.get(i);
  return s;
}

double finite_difference_error(const std::vector<Differentiable>& inputs,
                               const std::function<double()>& loss, std::mt19937_64& rng,
                               int per_input) {
  // h = 1e-5 max(1, |x|): truncation O(h^2) ~ 1e-10, rounding O(eps |loss| / h) ~ 1e-11.
  constexpr double kRelativeStep = 1e-5;
  std::vector<std::pair<double, double>> sampled;  // (|fd - grad|^2, |fd|^2) per input
  double largest = 0;
  for (const Differentiable& d : inputs) {
    if (!d.input->given()) continue;
    std::uniform_int_distribution<int64_t> pick(0, d.input->numel() - 1);
    double diff2 = 0, norm2 = 0;
    for (int e = 0; e < per_input; ++e) {
      const int64_t i = pick(rng);
      const double x = d.input->get(i), h = kRelativeStep * std::max(1.0, std::abs(x));
      d.input->set(i, x + h);
      const double lp = loss();
      d.input->set(i, x - h);
      const double lm = loss();
      d.input->set(i, x);
      const double fd = (lp - lm) / (2 * h), g = d.grad->get(i);
      diff2 += (fd - g) * (fd - g);
      norm2 += fd * fd;
    }
    largest = std::max(largest, std::sqrt(norm2));
    sampled.push_back({diff2, norm2});
  }
  double worst = 0;
  for (auto [diff2, norm2] : sampled)
    worst = std::max(worst, std::sqrt(diff2) / std::max(std::sqrt(norm2), 1e-3 * largest));
  return worst;
}

}  // namespace linattn::check
