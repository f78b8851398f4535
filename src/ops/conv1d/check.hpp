// Checks of the causal depthwise conv1d: random cases, the oracle's own checks (finite
// differences, varlen, split run, decode steps) and the fast form against the oracle. Used by
// `linattn check` (jobs()) and the GoogleTest suite.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "check/harness.hpp"
#include "ops/conv1d/conv1d.hpp"

namespace linattn::conv1d {

struct Case {
  int64_t B = 1, T = 1, D = 4, W = 4;
  std::vector<int64_t> seqlens;  // non-empty: one row split by cu_seqlens
  bool bias = true, residual = false, initial_state = true, silu = false;
  uint64_t seed = 1;
  std::string describe() const;
  static Case of(int64_t B, int64_t T, int64_t D, int64_t W);  // defaults otherwise
  int64_t N() const { return seqlens.empty() ? B : static_cast<int64_t>(seqlens.size()); }
};

struct Inputs {
  check::Buffer x, weight, bias, residual, initial_state, cu_seqlens;
  Conv1dArgs args(const Case& c, bool output_final_state) const;
  Inputs to(DType dtype) const;
};
Inputs make_inputs(const Case& c, DType dtype);

struct Outputs {
  check::Buffer y, final_state;
};
struct Grads {
  check::Buffer dx, dweight, dbias, dresidual, dinitial_state;
};
Outputs run_forward(const Case& c, const Inputs& in, Form form);
Grads run_backward(const Case& c, const Inputs& in, Form form, const check::Buffer& dy,
                   const check::Buffer& dfinal_state);

// Oracle checks (fp64), each a relative error.
double finite_difference_error(const Case& c);
double varlen_error(const Case& c);      // needs seqlens
double split_run_error(const Case& c);   // T >= 2, no seqlens
// Token-by-token causal_conv1d_update from the initial state vs the oracle's forward, inputs
// stored as `dtype` (y and the cache after the last step vs y and final_state).
double decode_error(const Case& c, DType dtype);
// The fast form vs the oracle on the same inputs stored as `dtype`.
double fast_forward_error(const Case& c, DType dtype);
double fast_backward_error(const Case& c, DType dtype);

std::vector<Case> builtin_cases();
std::vector<check::Job> jobs(DType dtype);  // the `linattn check` rows of causal_conv1d

}  // namespace linattn::conv1d
