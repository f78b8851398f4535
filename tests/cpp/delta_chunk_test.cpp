// The chunk form of delta_rule, gated_delta_rule, delta_product and kda (src/ops/delta/chunk*.cpp)
// against the fp64 oracle, forward and backward: the builtin cases plus shapes they miss (several
// chunks with partial last chunks, larger heads, more grouped value heads, varlen sequences that
// straddle chunk boundaries; for delta_product token groups that straddle chunks, n_h = 3).
#include <gtest/gtest.h>

#include <string>

#include "check/harness.hpp"
#include "linattn/ops.hpp"

namespace linattn::check {
namespace {

const Op kOps[] = {Op::delta_rule, Op::gated_delta_rule, Op::delta_product, Op::kda};

std::vector<Case> cases(Op op) {
  std::vector<Case> out = builtin_cases(op);
  Case c = out.front();
  c.H = 2;
  c.HV = 8;
  c.seed = 201;
  out.push_back(c);
  c.HV = 2;
  c.K = 16;
  c.V = 40;
  c.T = 200;
  c.l2norm = true;
  c.seed = 202;
  out.push_back(c);
  c.K = 64;
  c.V = 64;
  c.T = 130;
  c.gates = Gates::beta_wide;
  c.seed = 203;
  out.push_back(c);
  c.B = 1;
  c.K = 32;
  c.V = 24;
  c.seqlens = {70, 1, 129, 64};
  c.T = 264;
  c.seed = 204;
  out.push_back(c);
  if (op_spec(op).takes_num_householder) {  // 3 does not divide the chunk: groups straddle chunks
    c.n_h = 3;
    c.seed = 205;
    out.push_back(c);
    c.seqlens.clear();
    c.B = 2;
    c.T = 50;
    c.gated = false;
    c.seed = 206;
    out.push_back(c);
  }
  return out;
}

TEST(DeltaChunk, Registered) {
  for (Op op : kOps) {
    EXPECT_TRUE(has_form(op, Form::chunk, false)) << op_name(op);
    EXPECT_TRUE(has_form(op, Form::chunk, true)) << op_name(op);
  }
}

TEST(DeltaChunk, ForwardMatchesOracle) {
  for (Op op : kOps)
    for (const Case& c : cases(op)) {
      EXPECT_LE(form_forward_error(c, DType::f32, Form::chunk), 1e-5) << op_name(op) << " " << c.describe();
      EXPECT_LE(form_forward_error(c, DType::bf16, Form::chunk), 1e-2) << op_name(op) << " " << c.describe();
    }
}

TEST(DeltaChunk, BackwardMatchesOracle) {
  for (Op op : kOps)
    for (const Case& c : cases(op)) {
      EXPECT_LE(form_backward_error(c, DType::f32, Form::chunk), 1e-5) << op_name(op) << " " << c.describe();
      EXPECT_LE(form_backward_error(c, DType::bf16, Form::chunk), 1e-2) << op_name(op) << " " << c.describe();
    }
}

}  // namespace
}  // namespace linattn::check
