// The gated family's chunk form on the longest sequences issue 3 names: T = 65536 with tiny
// B*H and log decays spread log-uniformly over [-20, -1e-6]. Chunk-local cumulative gates and
// exponents that are never positive (algorithms.md §3.3 S1-S3) keep everything finite and
// within fp32 accuracy of the oracle however long the sequence.
#include <gtest/gtest.h>

#include <cmath>

#include "check/harness.hpp"

namespace linattn::check {
namespace {

TEST(GlaChunk, LongSequenceWithEveryDecayRegime) {
  for (Op op : {Op::simple_gla, Op::gla, Op::retention, Op::linear_attn}) {
    Case c;
    c.op = op;
    c.B = c.H = c.HV = 1;
    c.K = c.V = 8;
    c.T = 65536;
    c.gates = Gates::decay_wide;
    c.seed = 7;
    // fp32: 1e-5 as everywhere; the oracle's own error is ~1e-13 here.
    EXPECT_LE(form_forward_error(c, DType::f32, Form::chunk), 1e-5) << op_name(op);
    EXPECT_LE(form_backward_error(c, DType::f32, Form::chunk), 1e-5) << op_name(op);
  }
}

// A log decay of -inf (a reset: the state is forgotten) inside a chunk: the chunk forms floor it
// at -200 on loading (ops/common/rows.hpp; e^-200 is already 0 in fp32), so forward and
// gradients are the oracle's within fp32 error (before: NaN differences -inf - -inf).
TEST(ChunkForms, ResetGateMatchesOracle) {
  for (Op op : {Op::gla, Op::simple_gla, Op::dplr_delta_rule, Op::gated_delta_rule}) {
    Case c = builtin_cases(op).front();
    c.T = 150;
    Inputs in = make_inputs(c, DType::f32);
    Buffer& gate = in.gk.given() ? in.gk : in.g;
    for (int64_t i : {int64_t{5}, gate.numel() / 2, gate.numel() / 2 + 1, gate.numel() - 9})
      gate.set(i, -INFINITY);
    const Inputs wide = in.to(DType::f64);
    const Outputs got = run_forward(c, in, Form::chunk), want = run_forward(c, wide, Form::reference);
    EXPECT_LE(rel_error(got.o, want.o), 1e-5) << op_name(op);
    EXPECT_LE(rel_error(got.final_state, want.final_state), 1e-5) << op_name(op);
    Buffer d_o(DType::f64, want.o.shape());
    for (int64_t i = 0; i < d_o.numel(); ++i) d_o.set(i, std::sin(0.3 * i));
    const Gradients g = run_backward(c, in, Form::chunk, d_o.to(DType::f32), Buffer());
    const Gradients w = run_backward(c, wide, Form::reference, d_o, Buffer());
    const auto gl = g.list(), wl = w.list();
    for (size_t i = 0; i < gl.size(); ++i)
      EXPECT_LE(rel_error(*gl[i].second, *wl[i].second), 1e-5) << op_name(op) << " " << gl[i].first;
  }
}

}  // namespace
}  // namespace linattn::check
