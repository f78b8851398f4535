// Checks of the selective scan: random cases with decay regimes, the oracle's own checks
// (finite differences, varlen, split run, decode steps) and the fast form against the oracle.
// Used by `linattn check` (jobs()) and the GoogleTest suite.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "check/harness.hpp"
#include "ops/scan/scan.hpp"

namespace linattn::scan {

enum class Decay { typical, near_1, near_0 };  // exp(Δ A) ~ 0.5..1, ~1 - 1e-6, e^-30..e^-10

struct Case {
  int64_t B = 1, T = 1, D = 4, N = 4, G = 1;
  std::vector<int64_t> seqlens;  // non-empty: one row split by cu_seqlens
  bool initial_state = true, skip = true, gate = false, bias = false, softplus = false;
  Decay decay = Decay::typical;
  uint64_t seed = 1;
  static Case of(int64_t B, int64_t T, int64_t D, int64_t N);  // defaults otherwise
  std::string describe() const;
  int64_t num_sequences() const { return seqlens.empty() ? B : static_cast<int64_t>(seqlens.size()); }
};

struct Inputs {
  check::Buffer u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens;
  ScanArgs args(const Case& c, bool output_final_state) const;
  Inputs to(DType dtype) const;
};
Inputs make_inputs(const Case& c, DType dtype);

struct Outputs {
  check::Buffer y, final_state;
};
struct Grads {
  check::Buffer du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state;
};
Outputs run_forward(const Case& c, const Inputs& in, Form form);
Grads run_backward(const Case& c, const Inputs& in, Form form, const check::Buffer& dy,
                   const check::Buffer& dfinal_state);

double finite_difference_error(const Case& c);
double varlen_error(const Case& c);     // needs seqlens
double split_run_error(const Case& c);  // T >= 2, no seqlens
double decode_error(const Case& c, DType dtype);  // selective_state_update steps vs the oracle
double fast_forward_error(const Case& c, DType dtype);
double fast_backward_error(const Case& c, DType dtype);

std::vector<Case> builtin_cases();
std::vector<check::Job> jobs(DType dtype);  // the `linattn check` rows of selective_scan

}  // namespace linattn::scan
