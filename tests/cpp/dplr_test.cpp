// dplr_delta_rule's fast forms (src/ops/dplr/) against the fp64 oracle, forward and backward:
// the builtin cases plus shapes they miss (several chunks with a partial last one, RWKV-7's head
// size 64 and K = V = 128, grouped value heads, odd head sizes, varlen sequences straddling chunk
// boundaries, chunks too strongly decayed for the factored form), T = 65536, and the reduction to the delta
// rule. (Determinism across thread counts: reference_test.cpp's test covers every op.)
#include <gtest/gtest.h>

#include <omp.h>

#include <algorithm>
#include <string>

#include "check/harness.hpp"
#include "linattn/ops.hpp"
#include "ops/common/problem.hpp"
#include "ops/dplr/chunk.hpp"

namespace linattn::check {
namespace {

constexpr Op kOp = Op::dplr_delta_rule;

std::vector<Case> cases() {
  std::vector<Case> out = builtin_cases(kOp);
  Case c = out.front();
  c.B = 1;
  c.H = 2;
  c.HV = 4;
  c.K = 64;
  c.V = 64;
  c.T = 130;
  c.seed = 301;
  out.push_back(c);
  c.K = c.V = 128;
  c.HV = 2;
  c.T = 70;
  c.seed = 302;
  out.push_back(c);
  c.K = 32;
  c.V = 24;
  c.seqlens = {70, 1, 129, 64};
  c.T = 264;
  c.seed = 303;
  out.push_back(c);
  c.seqlens.clear();
  c.B = 2;
  c.H = 1;
  c.HV = 3;
  c.K = 5;  // sizes that fill no vector
  c.V = 7;
  c.T = 100;
  c.seed = 310;
  out.push_back(c);
  c.B = 1;
  c.H = 2;
  c.HV = 4;
  for (Gates gates : {Gates::decay_near_0, Gates::decay_wide, Gates::decay_near_1, Gates::abar_near_1}) {
    c.seqlens.clear();
    c.K = c.V = 16;
    c.T = 200;
    c.gates = gates;  // decay~0: every chunk pair by pair; decay[-20,-1e-6]: some chunks each way
    c.seed = 304 + static_cast<int>(gates);
    out.push_back(c);
  }
  // Key sizes above kRecurrentMaxKey keep the chunk form's own forward (chunk.hpp): factored
  // chunks, pair-by-pair ones, and both in one sequence.
  for (Gates gates : {Gates::typical, Gates::decay_near_0, Gates::decay_wide}) {
    c.K = dplr::kRecurrentMaxKey + 8;
    c.V = 24;
    c.T = 130;
    c.gates = gates;
    c.seed = 320 + static_cast<int>(gates);
    out.push_back(c);
  }
  // One head, more value columns than one block of the recurrent form: columns split over
  // threads, narrower blocks for the rest.
  c.B = c.H = c.HV = 1;
  c.K = 64;
  c.V = 144;
  c.gates = Gates::typical;
  c.seed = 330;
  out.push_back(c);
  return out;
}

TEST(DplrChunk, Registered) {
  EXPECT_TRUE(has_form(kOp, Form::chunk, false));
  EXPECT_TRUE(has_form(kOp, Form::chunk, true));
  EXPECT_TRUE(has_form(kOp, Form::recurrent, false));
}

// The chunk form's forward is the recurrent form's token loop up to kRecurrentMaxKey, its own
// chunked algorithm above; cases() has both.
TEST(DplrChunk, ForwardFormByKeySize) {
  Case c = builtin_cases(kOp).front();
  c.V = 16;
  for (int64_t K : {5, 64, 128, 256, 257, 300}) {
    c.K = K;
    const Inputs in = make_inputs(c, DType::f32);
    EXPECT_EQ(dplr::forward_runs_recurrent(make_problem(kOp, in.args(c))), K <= 256) << K;
  }
  const std::vector<Case> all = cases();
  EXPECT_TRUE(std::any_of(all.begin(), all.end(), [](const Case& x) { return x.K <= dplr::kRecurrentMaxKey; }));
  EXPECT_TRUE(std::any_of(all.begin(), all.end(), [](const Case& x) { return x.K > dplr::kRecurrentMaxKey; }));
}

// The recurrent form splits heads, then value columns, over threads: the same bits either way.
TEST(DplrRecurrent, SameBitsForEverySplit) {
  Case c = builtin_cases(kOp).front();
  c.B = 1;
  c.K = 64;
  c.V = 144;
  c.T = 130;
  c.seed = 331;
  for (int64_t heads : {1, 3}) {
    c.H = c.HV = heads;
    const Inputs in = make_inputs(c, DType::f32);
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    const Outputs want = run_forward(c, in, Form::recurrent);
    for (int threads : {2, 3, 8}) {
      omp_set_num_threads(threads);
      const Outputs got = run_forward(c, in, Form::recurrent);
      EXPECT_TRUE(bitwise_equal(got.o, want.o)) << threads << " threads, " << c.describe();
      EXPECT_TRUE(bitwise_equal(got.final_state, want.final_state)) << threads << " threads, " << c.describe();
    }
    omp_set_num_threads(saved);
  }
}

// Tolerances by dtype (conventions.md): fp32 storage and accumulation 1e-5, bf16 storage 1e-2.
TEST(DplrChunk, ForwardMatchesOracle) {
  for (const Case& c : cases())
    for (Form form : {Form::chunk, Form::recurrent}) {
      EXPECT_LE(form_forward_error(c, DType::f32, form), 1e-5) << form_name(form) << " " << c.describe();
      EXPECT_LE(form_forward_error(c, DType::bf16, form), 1e-2) << form_name(form) << " " << c.describe();
    }
}

TEST(DplrChunk, BackwardMatchesOracle) {
  for (const Case& c : cases()) {
    EXPECT_LE(form_backward_error(c, DType::f32, Form::chunk), 1e-5) << c.describe();
    EXPECT_LE(form_backward_error(c, DType::bf16, Form::chunk), 1e-2) << c.describe();
  }
}

// Issue 4's long case: T = 65536, RWKV-7's decays and every decay regime in one sequence.
TEST(DplrChunk, LongSequence) {
  for (Gates gates : {Gates::typical, Gates::decay_wide}) {
    Case c;
    c.op = kOp;
    c.B = c.H = c.HV = 1;
    c.K = c.V = 8;
    c.T = 65536;
    c.gates = gates;
    c.seed = 13;
    const std::string what = gates_name(gates);
    EXPECT_LE(form_forward_error(c, DType::f32, Form::chunk), 1e-5) << what;
    EXPECT_LE(form_forward_error(c, DType::f32, Form::recurrent), 1e-5) << what;
    EXPECT_LE(form_backward_error(c, DType::f32, Form::chunk), 1e-5) << what;
  }
}

// §4.8a: with gk = 0, a = -beta k, b = k and v -> beta v the transition is I - beta k k^T and
// the write beta k v^T: the delta rule. Every dplr form in fp32 is within fp32 error of
// delta_rule's fp64 oracle (o, final state, and the gradients of q and the initial state,
// which the substitution leaves alone).
TEST(DplrReduction, DeltaRule) {
  Case dc = builtin_cases(Op::delta_rule).front();
  dc.HV = dc.H;  // a, b are per q/k head, beta per value head: one value head each
  dc.T = 150;
  dc.K = dc.V = 16;
  const Inputs din = make_inputs(dc, DType::f64);
  const Outputs want = run_forward(dc, din, Form::reference);
  Buffer d_o(DType::f64, want.o.shape()), d_f(DType::f64, want.final_state.shape());
  for (int64_t i = 0; i < d_o.numel(); ++i) d_o.set(i, std::sin(0.37 * i));
  for (int64_t i = 0; i < d_f.numel(); ++i) d_f.set(i, std::cos(0.11 * i));
  const Gradients want_grads = run_backward(dc, din, Form::reference, d_o, d_f);

  Case pc = dc;
  pc.op = kOp;
  Inputs pin = din;
  pin.beta = Buffer();
  pin.gk = Buffer(DType::f64, din.q.shape());  // zeros: no decay
  pin.a = Buffer(DType::f64, din.k.shape());
  pin.b = din.k;
  const int64_t K = dc.K, V = dc.V;
  for (int64_t row = 0; row < din.beta.numel(); ++row) {  // [B, T, H] rows of k and v
    const double beta = din.beta.get(row);
    for (int64_t d = 0; d < K; ++d) pin.a.set(row * K + d, -beta * din.k.get(row * K + d));
    for (int64_t e = 0; e < V; ++e) pin.v.set(row * V + e, beta * din.v.get(row * V + e));
  }
  const Inputs low = pin.to(DType::f32);
  for (Form form : {Form::reference, Form::chunk, Form::recurrent}) {
    const Inputs& in = form == Form::reference ? pin : low;
    const Outputs got = run_forward(pc, in, form);
    EXPECT_LE(rel_error(got.o, want.o), 1e-5) << form_name(form);
    EXPECT_LE(rel_error(got.final_state, want.final_state), 1e-5) << form_name(form);
    if (form == Form::recurrent) continue;
    const Gradients grads = run_backward(pc, in, form, d_o.to(in.v.dtype()), d_f);
    EXPECT_LE(rel_error(grads.dq, want_grads.dq), 1e-5) << form_name(form);
    EXPECT_LE(rel_error(grads.dinitial_state, want_grads.dinitial_state), 1e-5) << form_name(form);
  }
}

}  // namespace
}  // namespace linattn::check
