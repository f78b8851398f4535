// LLA (algorithms.md §4.9): the fp64 oracle against finite differences and the operator's
// properties; the blockwise (chunk) and decode (recurrent) forms against the oracle in float32
// and bfloat16; the preconditioned and default-setting solves; determinism across thread
// counts; rejected inputs; the C API.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "linattn/error.hpp"
#include "linattn/linattn.h"
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
    EXPECT_LE(shift_invariance_error(c, DType::f64, Form::reference), 1e-10) << c.describe();
    // fp32 scores near 35 carry ~2e-6 absolute rounding: the weights move by that much.
    EXPECT_LE(shift_invariance_error(c, DType::f32, Form::chunk), 1e-4) << c.describe();
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

// The Jacobi-preconditioned CG solves the same systems.
TEST(Lla, PreconditionedSolveMatchesReference) {
  for (const Case& c : builtin_cases()) {
    const Inputs in = make_inputs(c, DType::f32);
    Args a = tight_args(c, in);
    a.cg_use_preconditioner = true;
    Buffer o(DType::f32, {c.B, c.Tq, c.H, c.V});
    forward(Form::chunk, a, o.view());
    const Buffer want = run_forward(c, in.to(DType::f64), Form::reference);
    EXPECT_LE(linattn::check::rel_error(o, want), tolerance(DType::f32)) << c.describe();
  }
}

// The direct solver (Sigma_i accumulated and Cholesky-factored) solves the same systems.
TEST(Lla, DirectSolveMatchesReference) {
  for (const DType dtype : {DType::f32, DType::bf16})
    for (Case c : builtin_cases()) {
      c.solver = Solver::direct;
      EXPECT_LE(form_forward_error(c, dtype, Form::chunk), tolerance(dtype)) << c.describe();
      EXPECT_LE(form_backward_error(c, dtype, Form::chunk), tolerance(dtype)) << c.describe();
      EXPECT_LE(form_forward_error(c, dtype, Form::recurrent), tolerance(dtype)) << c.describe();
    }
}

// With the authors' defaults (at most 32 CG iterations) at their lambda = 10 the solve has
// converged for their head dim: the output matches the direct solve to fp32 accuracy.
TEST(Lla, DefaultSolverSettingsConvergeAtLambda10) {
  Case c;
  c.T = c.Tq = 200;
  c.K = c.V = 64;
  c.lambda = 10;
  const Inputs in = make_inputs(c, DType::f32);
  Args a = tight_args(c, in);
  const Args defaults;
  a.cg_atol = defaults.cg_atol;
  a.cg_rtol = defaults.cg_rtol;
  a.cg_max_iters = defaults.cg_max_iters;
  Buffer o(DType::f32, {c.B, c.Tq, c.H, c.V});
  forward(Form::chunk, a, o.view());
  EXPECT_LE(linattn::check::rel_error(o, run_forward(c, in.to(DType::f64), Form::reference)), 1e-5);
}

TEST(Lla, BitwiseIdenticalForAnyThreadCount) {
  Case c;
  c.B = 2;
  c.H = 3;
  c.T = c.Tq = 150;
  c.K = 16;
  c.V = 8;
  const Inputs in = make_inputs(c, DType::f32);
  std::mt19937_64 rng(5);
  Buffer d_o(DType::f32, {c.B, c.T, c.H, c.V});
  std::normal_distribution<double> normal;
  for (int64_t i = 0; i < d_o.numel(); ++i) d_o.set(i, normal(rng));
  const int threads = omp_get_max_threads();
  std::vector<std::vector<double>> results;
  for (const int n : {1, 2, 3}) {
    omp_set_num_threads(n);
    const Buffer o = run_forward(c, in, Form::chunk);
    const Grads g = run_backward(c, in, Form::chunk, d_o);
    std::vector<double> all;
    for (const Buffer* b : {&o, &g.dq, &g.dk, &g.dv})
      for (int64_t i = 0; i < b->numel(); ++i) all.push_back(b->get(i));
    results.push_back(all);
  }
  omp_set_num_threads(threads);
  EXPECT_EQ(results[0], results[1]);
  EXPECT_EQ(results[0], results[2]);
}

void expect_error(const Args& a, const char* needle, Form form = Form::chunk) {
  Buffer o(a.v.given() ? a.v.dtype : DType::f32, {1, 4, 1, 3});
  try {
    forward(form, a, o.view());
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Lla, RejectsBadInput) {
  Case c;
  c.T = c.Tq = 4;
  c.V = 3;
  const Inputs in = make_inputs(c, DType::f32);
  const Args good = tight_args(c, in);
  Args a = good;
  a.ridge_lambda = 0;
  expect_error(a, "ridge_lambda must be finite and > 0");
  Case wide = c;
  wide.K = 5;
  const Inputs wide_in = make_inputs(wide, DType::f32);
  a = good;
  a.k = wide_in.k.view();
  expect_error(a, "k must have shape [B, T, H, K] = [1, *, 1, 4], got [1, 4, 1, 5]");
  Case longer = c;
  longer.Tq = 6;
  longer.T = 6;
  const Inputs more = make_inputs(longer, DType::f32);
  a = good;
  a.q = more.q.view();
  expect_error(a, "q may not have more tokens than k");
  a = good;
  a.cg_max_iters = 0;
  expect_error(a, "cg_max_iters must be >= 1");
  Buffer lam(DType::f32, {1, 4, 1});
  for (int64_t i = 0; i < 4; ++i) lam.set(i, i == 2 ? -1.0 : 1.0);
  a = good;
  a.ridge_lambda_per_token = lam.view();
  expect_error(a, "ridge_lambda_per_token must be finite and > 0");
  // The decode form has no backward.
  Buffer d_o(DType::f32, {1, 4, 1, 3});
  Buffer dq(DType::f32, {1, 4, 1, 4});
  EXPECT_THROW(backward(Form::recurrent, good, d_o.view(), {dq.view(), {}, {}, {}}), Error);
}

TEST(Lla, CApi) {
  Case c;
  c.T = c.Tq = 9;
  const Inputs in = make_inputs(c, DType::f32);
  auto tensor = [](const Buffer& b) {
    std::vector<int64_t> shape = b.shape();
    return linattn_tensor_contiguous(b.view().data, static_cast<linattn_dtype>(b.dtype()),
                                     static_cast<int32_t>(shape.size()), shape.data());
  };
  linattn_lla_args a;
  linattn_lla_args_init(&a);
  EXPECT_EQ(a.ridge_lambda, 10.0);
  EXPECT_EQ(a.cg_max_iters, 32);
  a.q = tensor(in.q);
  a.k = tensor(in.k);
  a.v = tensor(in.v);
  a.ridge_lambda = c.lambda;
  Buffer o(DType::f32, {c.B, c.T, c.H, c.V});
  linattn_tensor ot = tensor(o);
  ASSERT_EQ(linattn_lla_forward(LINATTN_FORM_REFERENCE, &a, &ot), LINATTN_OK) << linattn_last_error();
  EXPECT_LE(linattn::check::rel_error(o, run_forward(c, in, Form::reference)), 1e-7);
  EXPECT_EQ(linattn_lla_forward(LINATTN_FORM_CHUNK, nullptr, &ot), LINATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(linattn_last_error()).find("args is NULL"), std::string::npos);
  linattn_lla_grads g{};
  Buffer dq(DType::f32, in.q.shape());
  g.dq = tensor(dq);
  EXPECT_EQ(linattn_lla_backward(LINATTN_FORM_RECURRENT, &a, &ot, &g), LINATTN_ERROR_NOT_IMPLEMENTED);
  EXPECT_EQ(linattn_lla_backward(LINATTN_FORM_CHUNK, &a, &ot, &g), LINATTN_OK) << linattn_last_error();
}

}  // namespace
}  // namespace linattn::lla::check
