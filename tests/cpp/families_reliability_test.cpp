// Determinism and numerical stress of the families with an API of their own (softmax
// attention, LLA, causal conv1d, selective scan), as tests/cpp/reference_test.cpp
// (Determinism.*) and stress_test.cpp do for the ops of ops.hpp (docs/reliability.md).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "check/harness.hpp"
#include "ops/attention/check.hpp"
#include "ops/conv1d/check.hpp"
#include "ops/lla/check.hpp"
#include "ops/scan/check.hpp"

namespace linattn::check {
namespace {

bool reduced() {
  const char* v = std::getenv("LINATTN_TEST_REDUCED");
  return v != nullptr && std::string(v) != "0";
}

// Every output of one family's run, concatenated as bit patterns.
std::vector<uint64_t> bits(std::initializer_list<const Buffer*> outputs) {
  std::vector<uint64_t> out;
  for (const Buffer* b : outputs)
    for (int64_t i = 0; i < b->numel(); ++i) {
      const double x = b->get(i);
      uint64_t u;
      std::memcpy(&u, &x, sizeof u);
      out.push_back(u);
    }
  return out;
}

// Runs `outputs` (the forward and backward of one case) with 1, 2, 4 and 8 threads and then 1
// again: every output and gradient must have the bits of the first run.
void expect_bitwise_across_threads(const std::string& what,
                                   const std::function<std::vector<uint64_t>()>& outputs) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const std::vector<uint64_t> first = outputs();
  for (int threads : {2, 4, 8, 1}) {
    omp_set_num_threads(threads);
    EXPECT_TRUE(outputs() == first) << what << ", " << threads << " threads";
  }
  omp_set_num_threads(saved);
}

// Cases with many work items and with fewer items than threads (one sequence, one head), plus
// a variable-length batch, each in fp32 and bf16.
TEST(FamiliesDeterminism, AttentionBitwiseAcrossThreadCounts) {
  const std::vector<AttnCase> cases = {{2, 150, 4, 2, 16, 8, 0, {}, 1.0, 3},
                                       {1, 300, 1, 1, 16, 8, 64, {}, 3.0, 4},
                                       {1, 0, 2, 1, 8, 8, 0, {70, 1, 129}, 1.0, 5}};
  for (const AttnCase& c : cases)
    for (DType dtype : {DType::f32, DType::bf16})
      expect_bitwise_across_threads("attention " + c.describe(), [&] {
        const AttnInputs in = make_attn_inputs(c).to(dtype);
        const AttnForward f = attn_forward(c, in, Form::chunk);
        const AttnGrads g = attn_backward(c, in, Form::chunk, f.o);
        return bits({&f.o, &f.lse, &g.dq, &g.dk, &g.dv});
      });
}

TEST(FamiliesDeterminism, LlaBitwiseAcrossThreadCounts) {
  std::vector<lla::check::Case> cases(3);
  cases[0].B = 2, cases[0].T = cases[0].Tq = 100, cases[0].H = 2;
  cases[1].T = cases[1].Tq = 150;
  cases[2].seqlens = {40, 1, 60};
  cases[2].T = cases[2].Tq = 101;
  for (lla::check::Case& c : cases)
    for (DType dtype : {DType::f32, DType::bf16})
      expect_bitwise_across_threads("lla " + c.describe(), [&] {
        const lla::check::Inputs in = lla::check::make_inputs(c, dtype);
        const Buffer o = lla::check::run_forward(c, in, Form::chunk);
        const Buffer decode = lla::check::run_forward(c, in, Form::recurrent);
        const lla::check::Grads g = lla::check::run_backward(c, in, Form::chunk, o);
        return bits({&o, &decode, &g.dq, &g.dk, &g.dv});
      });
}

TEST(FamiliesDeterminism, Conv1dBitwiseAcrossThreadCounts) {
  std::vector<conv1d::Case> cases = {conv1d::Case::of(3, 200, 40, 4), conv1d::Case::of(1, 700, 8, 3)};
  cases.push_back(conv1d::Case::of(1, 200, 16, 4));
  cases.back().seqlens = {70, 1, 129};
  for (conv1d::Case& c : cases) {
    c.residual = c.silu = true;
    for (DType dtype : {DType::f32, DType::bf16})
      expect_bitwise_across_threads("conv1d " + c.describe(), [&] {
        const conv1d::Inputs in = conv1d::make_inputs(c, dtype);
        const conv1d::Outputs f = conv1d::run_forward(c, in, Form::chunk);
        const conv1d::Grads g = conv1d::run_backward(c, in, Form::chunk, f.y, f.final_state);
        return bits({&f.y, &f.final_state, &g.dx, &g.dweight, &g.dbias, &g.dresidual,
                     &g.dinitial_state});
      });
  }
}

TEST(FamiliesDeterminism, ScanBitwiseAcrossThreadCounts) {
  std::vector<scan::Case> cases = {scan::Case::of(2, 150, 32, 8), scan::Case::of(1, 600, 8, 4)};
  cases.push_back(scan::Case::of(1, 200, 16, 4));
  cases.back().seqlens = {70, 1, 129};
  for (scan::Case& c : cases) {
    c.gate = c.bias = c.softplus = true;
    for (DType dtype : {DType::f32, DType::bf16})
      expect_bitwise_across_threads("scan " + c.describe(), [&] {
        const scan::Inputs in = scan::make_inputs(c, dtype);
        const scan::Outputs f = scan::run_forward(c, in, Form::chunk);
        const scan::Grads g = scan::run_backward(c, in, Form::chunk, f.y, f.final_state);
        return bits({&f.y, &f.final_state, &g.du, &g.ddelta, &g.dA, &g.dB, &g.dC, &g.dD, &g.dz,
                     &g.ddelta_bias, &g.dinitial_state});
      });
  }
}

// T = 65536 (4096 under LINATTN_TEST_REDUCED) against the fp64 oracle. Softmax attention with a
// sliding window (the oracle is O(T W) then) and extreme logits: standard deviation 30, so each
// row's softmax is nearly one-hot and exp() spans the whole fp32 range.
TEST(FamiliesStress, AttentionLongWindowedExtremeLogits) {
  const int64_t T = reduced() ? 4096 : 65536;
  for (double logit_std : {1.0, 30.0}) {
    const AttnCase c{1, T, 2, 1, 16, 8, 128, {}, logit_std, 17};
    const AttnInputs low = make_attn_inputs(c).to(DType::f32);
    const AttnForward got = attn_forward(c, low, Form::chunk);
    const AttnForward want = attn_forward(c, low.to(DType::f64), Form::reference);
    EXPECT_LT(rel_error(got.o, want.o), 1e-5) << c.describe();
    const AttnGrads g = attn_backward(c, low, Form::chunk, got.o);
    const AttnGrads w = attn_backward(c, low.to(DType::f64), Form::reference, got.o.to(DType::f64));
    std::printf("attention T %lld logit std %g: o %.2e dq %.2e dk %.2e dv %.2e\n",
                static_cast<long long>(T), logit_std, rel_error(got.o, want.o),
                rel_error(g.dq, w.dq), rel_error(g.dk, w.dk), rel_error(g.dv, w.dv));
    // Nearly one-hot rows: dq, dk are differences of nearly equal terms p (v - o), whose
    // rounding (~eps relative to |v|) is large against their small size; bound 1e-4.
    EXPECT_LT(rel_error(g.dq, w.dq), 1e-4) << c.describe();
    EXPECT_LT(rel_error(g.dk, w.dk), 1e-4) << c.describe();
    EXPECT_LT(rel_error(g.dv, w.dv), 1e-5) << c.describe();
  }
}

// conv1d over T tokens: no recurrence, so the error stays at fp32 rounding of W products.
TEST(FamiliesStress, Conv1dLong) {
  conv1d::Case c = conv1d::Case::of(1, reduced() ? 4096 : 65536, 8, 4);
  c.residual = c.silu = true;
  EXPECT_LT(conv1d::fast_forward_error(c, DType::f32), 1e-5);
  EXPECT_LT(conv1d::fast_backward_error(c, DType::f32), 1e-5);
  EXPECT_LT(conv1d::fast_forward_error(c, DType::bf16), 1e-2);
}

// LLA is O(T^2) in its oracle too, so its long case is T = 2048 (512 reduced), with a tiny
// ridge (lambda = 1e-2: Sigma_i near singular, the regression at its least regularised) and a
// huge one (1e6: the softmax-attention limit), solved directly and with CG. Bound 1e-4: the
// solve amplifies fp32 rounding by Sigma_i's condition number, ~1/lambda for the tiny ridge
// (measured 1.6e-5 forward, 2.8e-5 backward; 1.1e-6 for the huge one).
TEST(FamiliesStress, LlaLongExtremeRidge) {
  for (double lambda : {1e-2, 1e6})
    for (lla::Solver solver : {lla::Solver::direct, lla::Solver::cg}) {
      lla::check::Case c;
      c.T = c.Tq = reduced() ? 512 : 2048;
      c.K = c.V = 8;
      c.lambda = lambda;
      c.solver = solver;
      c.seed = 23;
      const double fwd = lla::check::form_forward_error(c, DType::f32, Form::chunk);
      const double bwd = lla::check::form_backward_error(c, DType::f32, Form::chunk);
      std::printf("lla lambda %g solver %d: forward %.2e backward %.2e\n", lambda,
                  static_cast<int>(solver), fwd, bwd);
      EXPECT_LT(fwd, 1e-4) << c.describe();
      EXPECT_LT(bwd, 1e-4) << c.describe();
    }
}

}  // namespace
}  // namespace linattn::check
