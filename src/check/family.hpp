// Helpers for the check files of ops with an API of their own (src/ops/<family>/check.cpp):
// random inputs, sequence offsets, the fp64 loss of a forward against fixed upstream weights,
// and central finite differences of such a loss.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "check/harness.hpp"

namespace linattn::check {

// A buffer of `dtype` with entries uniform in [lo, hi) (drawn in fp64, then rounded).
Buffer random_buffer(DType dtype, std::vector<int64_t> shape, std::mt19937_64& rng, double lo,
                     double hi);

// cu_seqlens (int64, [N+1]) of the given sequence lengths.
Buffer offsets_of(const std::vector<int64_t>& seqlens);

// Σ_i a[i] b[i] in fp64 (0 if either is not given).
double dot(const Buffer& a, const Buffer& b);

// One input of a forward checked by finite differences: the fp64 buffer the loss reads
// (perturbed in place) and the gradient the backward gave for it.
struct Differentiable {
  Buffer* input;
  const Buffer* grad;
};

// Central differences of loss() at `per_input` random elements of each input, against the
// gradients: the largest relative error over the inputs (an input with a tiny gradient next
// to the others is measured against 1e-3 of the largest, as harness.cpp's oracle check).
double finite_difference_error(const std::vector<Differentiable>& inputs,
                               const std::function<double()>& loss, std::mt19937_64& rng,
                               int per_input = 12);

}  // namespace linattn::check
