// selective_scan: the oracle's own checks, the fast form and the decode step against it (the
// builtin cases of `linattn check` plus Mamba-like and long shapes), strided (channel-first)
// inputs, determinism across thread counts, and the inputs the API must reject.
#include <gtest/gtest.h>
#include <omp.h>

#include <random>
#include <string>

#include "check/family.hpp"
#include "linattn/error.hpp"
#include "linattn/scan.hpp"
#include "ops/scan/check.hpp"

namespace linattn::scan {
namespace {

using check::Buffer;

std::vector<Case> cases() {
  std::vector<Case> out = builtin_cases();
  Case c = Case::of(1, 300, 96, 16);  // Mamba's N, three items, five tiles
  c.gate = c.bias = c.softplus = true;
  c.seed = 90;
  out.push_back(c);
  return out;
}

TEST(Scan, ReferenceGradientsMatchFiniteDifferences) {
  for (const Case& c : cases())
    if (c.T * c.D <= 400) EXPECT_LE(finite_difference_error(c), 1e-6) << c.describe();
}

TEST(Scan, VarlenAndSplitRunsMatchOneRun) {
  for (const Case& c : cases()) {
    if (!c.seqlens.empty()) EXPECT_LE(varlen_error(c), 1e-12) << c.describe();
    else if (c.T >= 2) EXPECT_LE(split_run_error(c), 1e-12) << c.describe();
  }
}

TEST(Scan, FastFormMatchesReference) {
  for (const Case& c : cases()) {
    EXPECT_LE(fast_forward_error(c, DType::f32), 1e-5) << c.describe();
    EXPECT_LE(fast_backward_error(c, DType::f32), 1e-5) << c.describe();
    EXPECT_LE(fast_forward_error(c, DType::bf16), 1e-2) << c.describe();
    EXPECT_LE(fast_backward_error(c, DType::bf16), 1e-2) << c.describe();
  }
}

// T = 65536: fp32 states over a long sequence. With decays of 1 - 1e-6 each token adds
// about 1e-6 h to h, and fp32 rounds such nearly constant increments the same way token after
// token (half an ulp, 3e-8 h, is 3% of the increment): the error grows like T, to ~3e-4 here.
// That is the price of fp32 states (the CUDA kernel's too); typical decays stay near 1e-6.
TEST(Scan, LongSequenceMatchesReference) {
  for (Decay decay : {Decay::typical, Decay::near_1}) {
    Case c = Case::of(1, 65536, 3, 4);
    c.decay = decay;
    c.softplus = c.gate = true;
    const double tol = decay == Decay::near_1 ? 1e-3 : 1e-5;
    EXPECT_LE(fast_forward_error(c, DType::f32), tol) << c.describe();
    EXPECT_LE(fast_backward_error(c, DType::f32), tol) << c.describe();
  }
}

TEST(Scan, DecodeStepsMatchForward) {
  for (const Case& c : cases()) {
    if (!c.seqlens.empty()) continue;
    EXPECT_LE(decode_error(c, DType::f64), 1e-12) << c.describe();
    EXPECT_LE(decode_error(c, DType::f32), 1e-5) << c.describe();
  }
}

TEST(Scan, BitwiseIdenticalForAnyThreadCount) {
  Case c = Case::of(1, 200, 70, 16);
  c.seqlens = {120, 1, 79};
  c.G = 2;
  c.gate = c.bias = c.softplus = true;
  const Inputs in = make_inputs(c, DType::f32);
  std::mt19937_64 rng(5);
  const Buffer dy = check::random_buffer(DType::f32, {c.B, c.T, c.D}, rng, -1, 1);
  const Buffer df = check::random_buffer(DType::f32, {c.num_sequences(), c.D, c.N}, rng, -1, 1);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const Outputs one = run_forward(c, in, Form::chunk);
  const Grads gone = run_backward(c, in, Form::chunk, dy, df);
  for (int threads : {2, 3}) {
    omp_set_num_threads(threads);
    const Outputs many = run_forward(c, in, Form::chunk);
    const Grads gmany = run_backward(c, in, Form::chunk, dy, df);
    EXPECT_EQ(check::rel_error(many.y, one.y), 0.0);
    EXPECT_EQ(check::rel_error(many.final_state, one.final_state), 0.0);
    for (auto [a, b] : {std::pair{&gmany.du, &gone.du}, {&gmany.ddelta, &gone.ddelta}, {&gmany.dA, &gone.dA},
                        {&gmany.dB, &gone.dB}, {&gmany.dC, &gone.dC}, {&gmany.dD, &gone.dD},
                        {&gmany.dz, &gone.dz}, {&gmany.ddelta_bias, &gone.ddelta_bias},
                        {&gmany.dinitial_state, &gone.dinitial_state}})
      EXPECT_EQ(check::rel_error(*a, *b), 0.0) << threads;
  }
  omp_set_num_threads(saved);
}

TEST(Scan, RejectsBadInputs) {
  Case c = Case::of(2, 5, 4, 3);
  const Inputs in = make_inputs(c, DType::f32);
  Buffer y(DType::f32, {c.B, c.T, c.D});
  const Buffer wrong_A(DType::f32, {c.D, c.N + 1}), groups(DType::f32, {c.B, c.T, 3, c.N});
  const Buffer wrong_state(DType::f32, {c.B, c.D + 1, c.N});
  auto forward = [&](const ScanArgs& a) {
    return check::error_message([&] { selective_scan_forward(Form::chunk, a, {y.view(), {}}); });
  };
  auto expect = [](const std::string& message, const std::string& part) {
    EXPECT_NE(message.find(part), std::string::npos) << "got: " << message;
  };
  const ScanArgs good = in.args(c, false);
  EXPECT_EQ(forward(good), "");
  ScanArgs a = good;
  a.A = wrong_A.view();
  expect(forward(a), "selective_scan: B must have shape [B, T, G, N] (B, T from u, N from A) = [2, 5, 1, 4], got [2, 5, 1, 3]");
  a = good;
  a.B = a.C = groups.view();
  expect(forward(a), "the number of groups G = 3 (B's dimension 2) must divide the number of channels D = 4");
  a = good;
  a.delta = {};
  expect(forward(a), "selective_scan: delta is required but was not given");
  a = good;
  a.initial_state = wrong_state.view();
  expect(forward(a), "initial_state must have shape [N_seq, D, N] = [2, 4, 3], got [2, 5, 3]");
  expect(check::error_message([&] { selective_scan_forward(Form::recurrent, good, {y.view(), {}}); }),
         "the recurrent form is the decode step selective_state_update");
  Buffer bf_state(DType::bf16, {c.B, c.D, c.N});
  a = good;
  a.output_final_state = true;
  expect(check::error_message([&] { selective_scan_forward(Form::chunk, a, {y.view(), bf_state.view()}); }),
         "final_state must be float32 or float64, got bfloat16");
}

}  // namespace
}  // namespace linattn::scan
