// The checks of LLA (algorithms.md §4.9), shared by `linattn check lla_attention` (lla_jobs)
// and the GoogleTest suite (tests/cpp/lla_test.cpp): random cases, the oracle against finite
// differences and the operator's properties, every fast form against the oracle.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "check/harness.hpp"
#include "linattn/lla.hpp"

namespace linattn::lla::check {

using linattn::check::Buffer;

struct Case {
  int64_t B = 1, Tq = 1, T = 1, H = 1, K = 4, V = 4;  // Tq < T: the last Tq positions query
  std::vector<int64_t> seqlens;  // non-empty: one row split by cu_seqlens (B = 1, Tq = T = sum)
  double lambda = 1.0;           // ridge; per_token: lambda * uniform[0.5, 2] per (token, head)
  bool per_token = false;
  double key_shift = 0;          // added to every key: keys away from the queries
  uint64_t seed = 1;
  Solver solver = Solver::cg;
  std::string describe() const;
};

struct Inputs {
  Buffer q, k, v, lambda, cu_seqlens;
  Inputs to(DType dtype) const;
};
Inputs make_inputs(const Case& c, DType dtype);

struct Grads {
  Buffer dq, dk, dv, dlambda;
};

// Solver settings that make CG converge to fp32 rounding: the checks compare a fast form with
// the oracle's direct solve, not a truncated CG with it.
Args tight_args(const Case& c, const Inputs& in);
Buffer run_forward(const Case& c, const Inputs& in, Form form);
Buffer run_forward(const Args& args);
Grads run_backward(const Case& c, const Inputs& in, Form form, const Buffer& d_o);

// Checks of the oracle (fp64); each returns a relative error.
double finite_difference_error(const Case& c);  // backward vs central differences (q, k, v, lambda)
double affine_error(const Case& c);    // o(c v + b) = c o(v) + b: sum_j l_ij = 1 and linearity
double softmax_limit_error(const Case& c);
// Scale invariance: every weight of a query multiplied by one constant leaves o unchanged.
// Keys with a zero last channel, then q and k moved by 10 along it: z_ij is unchanged and each
// query's logits shift by a constant (up to ~35 here), which the max shift removes exactly.
double shift_invariance_error(const Case& c, DType dtype, Form form);  // lambda = 1e9 vs softmax attention written apart
double varlen_error(const Case& c);    // cu_seqlens = separate runs (needs seqlens)

// A fast form against the oracle on inputs stored as `dtype`: relative error of o, and the
// largest over the gradients.
double form_forward_error(const Case& c, DType dtype, Form form);
double form_backward_error(const Case& c, DType dtype, Form form);
// The decode form, one query at a time against the growing cache, against the chunk form's
// prefill of the whole sequence.
double decode_error(const Case& c, DType dtype);

std::vector<Case> builtin_cases();
std::vector<linattn::check::Job> jobs(DType dtype);

}  // namespace linattn::lla::check
