// The gated family's chunk form on the longest sequences issue 3 names: T = 65536 with tiny
// B*H and log decays spread log-uniformly over [-20, -1e-6]. Chunk-local cumulative gates and
// exponents that are never positive (algorithms.md §3.3 S1-S3) keep everything finite and
// within fp32 accuracy of the oracle however long the sequence.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace linattn::check
