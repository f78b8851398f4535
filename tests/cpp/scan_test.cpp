// selective_scan: the oracle's own checks, the fast form and the decode step against it (the
// builtin cases of `linattn check` plus Mamba-like and long shapes), strided (channel-first)
// inputs, the time-chunked mode of few items, determinism across thread counts, and the inputs
// the API must reject.
#include <gtest/gtest.h>
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

#include "check/family.hpp"
#include "linattn/error.hpp"
#include "linattn/scan.hpp"
#include "ops/scan/check.hpp"
#include "ops/scan/chunk.hpp"

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

// Whether the fast form splits the case's sequences into time chunks (chunk.hpp), so that the
// tests below cannot pass without exercising that mode.
bool time_chunked(const Case& c) {
  const Inputs in = make_inputs(c, DType::f32);
  return Chunks(make_problem(in.args(c, false))).split();
}

// Few channels, long sequences: the time-chunked mode (two-pass scan, algorithms.md §4.10 (b))
// against the oracle. fp32 1e-5 and bf16 1e-2 as everywhere (both sides read the same rounded
// inputs; the carried states add one rounding per chunk boundary). The decay regimes of
// make_inputs: Δ ~ 1e-6 with A = -1 (decay 1 - 1e-6: the chunk decays exp(A ΣΔ) near 1),
// Δ in [1, 3] with A down to -160 (decays e^-480: states forgotten within a token and chunk
// decays underflowing to exactly 0), and typical. T = 5000 is not a multiple of the chunk.
// Decays of 1 - 1e-6 get the fp32 states' drift of LongSequenceMatchesReference (which grows
// with the run of tokens scanned in one chain): bound 1e-4; measured 2.0e-5 forward, 1.7e-5
// backward here (one chunk per sequence measures 1.1e-4 and 6.7e-5: the chunks' local chains
// restart from zero, which shortens the drift).
TEST(Scan, TimeChunksMatchReference) {
  for (Decay decay : {Decay::typical, Decay::near_1, Decay::near_0}) {
    Case c = Case::of(1, 5000, 16, 16);
    c.decay = decay;
    c.gate = c.bias = c.softplus = true;
    c.seed = 41;
    ASSERT_TRUE(time_chunked(c));
    for (DType dtype : {DType::f32, DType::bf16}) {
      const double tol = dtype == DType::bf16 ? 1e-2 : decay == Decay::near_1 ? 1e-4 : 1e-5;
      EXPECT_LE(fast_forward_error(c, dtype), tol) << c.describe() << " " << dtype_name(dtype);
      EXPECT_LE(fast_backward_error(c, dtype), tol) << c.describe() << " " << dtype_name(dtype);
    }
  }
  // Varlen with sequences of one token between long ones, no skip, no softplus.
  Case c = Case::of(1, 4700, 32, 16);
  c.seqlens = {1, 2600, 1, 1, 2097};
  c.skip = false;
  c.seed = 42;
  ASSERT_TRUE(time_chunked(c));
  EXPECT_LE(fast_forward_error(c, DType::f32), 1e-5) << c.describe();
  EXPECT_LE(fast_backward_error(c, DType::f32), 1e-5) << c.describe();
}

// T = 65536 over 32 channels and N = 16 (128 time chunks), the shape of bench-scan's
// time-chunked row. LINATTN_TEST_REDUCED=1 (the sanitizer build) runs T = 4096.
TEST(Scan, LongSequenceTimeChunksMatchReference) {
  const char* reduced = std::getenv("LINATTN_TEST_REDUCED");
  Case c = Case::of(1, reduced && std::string(reduced) != "0" ? 4096 : 65536, 32, 16);
  c.gate = c.softplus = true;
  c.seed = 43;
  ASSERT_TRUE(time_chunked(c));
  const double fwd = fast_forward_error(c, DType::f32), bwd = fast_backward_error(c, DType::f32);
  std::printf("scan time chunks %s: forward %.2e backward %.2e\n", c.describe().c_str(), fwd, bwd);
  EXPECT_LE(fwd, 1e-5) << c.describe();
  EXPECT_LE(bwd, 1e-5) << c.describe();
}

TEST(Scan, DecodeStepsMatchForward) {
  for (const Case& c : cases()) {
    if (!c.seqlens.empty()) continue;
    EXPECT_LE(decode_error(c, DType::f64), 1e-12) << c.describe();
    EXPECT_LE(decode_error(c, DType::f32), 1e-5) << c.describe();
  }
}

// Bitwise identical outputs and gradients for 1, 2, 4 and 8 threads: many items (one chunk per
// sequence), and the time-chunked mode with one item (2+ threads run the three-step split
// sweeps) and six items (4 threads run each item on one thread, 8 the split sweeps).
TEST(Scan, BitwiseIdenticalForAnyThreadCount) {
  Case many = Case::of(1, 200, 70, 16);
  many.seqlens = {120, 1, 79};
  many.G = 2;
  Case one = Case::of(1, 3000, 32, 16);
  Case six = Case::of(1, 3200, 32, 8);
  six.seqlens = {2100, 1, 1099};
  six.G = 2;
  for (Case* c : {&many, &one, &six}) {
    c->gate = c->bias = c->softplus = true;
    EXPECT_EQ(time_chunked(*c), c != &many);
    const Inputs in = make_inputs(*c, DType::f32);
    std::mt19937_64 rng(5);
    const Buffer dy = check::random_buffer(DType::f32, {c->B, c->T, c->D}, rng, -1, 1);
    const Buffer df = check::random_buffer(DType::f32, {c->num_sequences(), c->D, c->N}, rng, -1, 1);
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    const Outputs o1 = run_forward(*c, in, Form::chunk);
    const Grads g1 = run_backward(*c, in, Form::chunk, dy, df);
    for (int threads : {2, 4, 8}) {
      omp_set_num_threads(threads);
      const Outputs on = run_forward(*c, in, Form::chunk);
      const Grads gn = run_backward(*c, in, Form::chunk, dy, df);
      EXPECT_EQ(check::rel_error(on.y, o1.y), 0.0) << c->describe() << " " << threads;
      EXPECT_EQ(check::rel_error(on.final_state, o1.final_state), 0.0) << c->describe() << " " << threads;
      for (auto [a, b] : {std::pair{&gn.du, &g1.du}, {&gn.ddelta, &g1.ddelta}, {&gn.dA, &g1.dA},
                          {&gn.dB, &g1.dB}, {&gn.dC, &g1.dC}, {&gn.dD, &g1.dD}, {&gn.dz, &g1.dz},
                          {&gn.ddelta_bias, &g1.ddelta_bias}, {&gn.dinitial_state, &g1.dinitial_state}})
        EXPECT_EQ(check::rel_error(*a, *b), 0.0) << c->describe() << " " << threads;
    }
    omp_set_num_threads(saved);
  }
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
