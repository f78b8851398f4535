// noncausal_linear_attn: the fast (chunk) form against the fp64 oracle in float32 and bfloat16,
// forward and backward, on the builtin cases plus shapes they miss (wide heads, sequences of
// several segments); the oracle against causal linear_attn at the last token; determinism; and
// the inputs a stateless op must reject.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include "check/harness.hpp"
#include "linattn/error.hpp"
#include "linattn/ops.hpp"

namespace linattn::check {
namespace {

constexpr Op kOp = Op::noncausal_linear_attn;

std::vector<Case> cases() {
  std::vector<Case> out = builtin_cases(kOp);
  Case c = out.front();
  c.K = 64;  // GEMM tiles of full vectors, V + 1 columns with normalize
  c.V = 48;
  c.T = 150;
  c.seed = 101;
  out.push_back(c);
  c.normalize = true;
  c.seed = 102;
  out.push_back(c);
  c = out.front();  // 18 blocks: 9 segments of 2 blocks (noncausal/chunk.hpp), one item
  c.B = c.H = 1;
  c.HV = 2;
  c.T = 64 * 17 + 5;
  c.normalize = true;
  c.seed = 103;
  out.push_back(c);
  return out;
}

// Relative error of the chunk form's o and of every gradient against the oracle on the same
// (dtype-rounded) inputs.
std::pair<double, double> chunk_errors(const Case& c, DType dtype) {
  const double fwd = form_forward_error(c, dtype, Form::chunk);
  const double bwd = form_backward_error(c, dtype, Form::chunk);
  return {fwd, bwd};
}

TEST(Noncausal, ChunkMatchesReferenceFloat32) {
  for (const Case& c : cases()) {
    const auto [fwd, bwd] = chunk_errors(c, DType::f32);
    EXPECT_LE(fwd, 1e-5) << c.describe();
    EXPECT_LE(bwd, 1e-5) << c.describe();
  }
}

TEST(Noncausal, ChunkMatchesReferenceBfloat16) {
  for (const Case& c : cases()) {
    const auto [fwd, bwd] = chunk_errors(c, DType::bf16);
    EXPECT_LE(fwd, 1e-2) << c.describe();
    EXPECT_LE(bwd, 1e-2) << c.describe();
  }
}

TEST(Noncausal, ReferenceGradientsMatchFiniteDifferences) {
  for (const Case& c : cases())
    if (c.T <= 64) EXPECT_LE(finite_difference_error(c), 1e-6) << c.describe();
}

// The last token of a causal run has seen the whole sequence: there the two ops agree, with
// and without the normaliser.
TEST(Noncausal, LastTokenEqualsCausalLinearAttention) {
  for (bool normalize : {false, true}) {
    Case c = builtin_cases(kOp).front();
    c.normalize = normalize;
    const Inputs in = make_inputs(c, DType::f64);
    Case causal = c;
    causal.op = Op::linear_attn;
    const Outputs a = run_forward(c, in, Form::reference);
    const Outputs b = run_forward(causal, in, Form::reference);
    const int64_t last = (c.T - 1) * c.HV * c.V, per_batch = c.T * c.HV * c.V;
    for (int64_t bt = 0; bt < c.B; ++bt)
      for (int64_t i = 0; i < c.HV * c.V; ++i)
        EXPECT_NEAR(a.o.get(bt * per_batch + last + i), b.o.get(bt * per_batch + last + i), 1e-12);
  }
}

// Segments and blocks are fixed by the sequence length, so threads cannot change a bit; the
// many-segment case runs its one item on all threads.
TEST(Noncausal, BitwiseAcrossThreadCounts) {
  const Case c = cases().back();
  const Inputs in = make_inputs(c, DType::f32);
  Buffer d_o(DType::f32, {c.B, c.T, c.HV, c.V});
  for (int64_t i = 0; i < d_o.numel(); ++i) d_o.set(i, std::sin(0.1 * i));
  const int saved = omp_get_max_threads();
  std::vector<Outputs> outs;
  std::vector<Gradients> grads;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    outs.push_back(run_forward(c, in, Form::chunk));
    grads.push_back(run_backward(c, in, Form::chunk, d_o, Buffer()));
  }
  omp_set_num_threads(saved);
  for (size_t t = 1; t < outs.size(); ++t) {
    EXPECT_EQ(rel_error(outs[t].o, outs[0].o), 0.0);
    EXPECT_EQ(rel_error(grads[t].dq, grads[0].dq), 0.0);
    EXPECT_EQ(rel_error(grads[t].dk, grads[0].dk), 0.0);
    EXPECT_EQ(rel_error(grads[t].dv, grads[0].dv), 0.0);
  }
}

// The message of the Error thrown by `call`, or "" if none.
template <typename Call>
std::string error_of(Call&& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Noncausal, RejectsState) {
  const Case c = builtin_cases(kOp).front();
  const Inputs in = make_inputs(c, DType::f32);
  Case stateful = c;
  stateful.initial_state = true;
  const Inputs with_state = make_inputs(stateful, DType::f32);
  EXPECT_EQ(error_of([&] { output_shapes(kOp, with_state.args(stateful)); }),
            "noncausal_linear_attn: initial_state must not be given (a non-causal op has no "
            "recurrent state)");
  OpArgs a = in.args(c);
  a.output_final_state = true;
  EXPECT_EQ(error_of([&] { output_shapes(kOp, a); }),
            "noncausal_linear_attn: output_final_state=True is not supported (a non-causal op "
            "has no recurrent state to return)");
  Buffer d_o(DType::f32, {c.B, c.T, c.HV, c.V}), d_f(DType::f32, {c.B, c.HV, c.K, c.V});
  EXPECT_EQ(error_of([&] { run_backward(c, in, Form::reference, d_o, d_f); }),
            "noncausal_linear_attn: dfinal_state must not be given (a non-causal op has no final "
            "state)");
  EXPECT_FALSE(has_form(kOp, Form::recurrent, false));
  EXPECT_TRUE(has_form(kOp, Form::chunk, true));
}

}  // namespace
}  // namespace linattn::check
