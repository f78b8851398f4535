// The fp64 oracle establishes itself: against independent forms written apart from it, against
// central finite differences, and against itself (varlen, split runs, reductions, threads).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "check/harness.hpp"
#include "linattn/ops.hpp"

namespace linattn::check {
namespace {

struct OpCase {
  Op op;
  Case c;
};

std::vector<OpCase> all_cases() {
  std::vector<OpCase> out;
  for (int i = 0; i < kNumOps; ++i)
    for (const Case& c : builtin_cases(static_cast<Op>(i))) out.push_back({static_cast<Op>(i), c});
  return out;
}

std::string case_name(const testing::TestParamInfo<OpCase>& info) {
  return std::string(op_name(info.param.op)) + "_" + std::to_string(info.index);
}

class ReferenceOracle : public testing::TestWithParam<OpCase> {};

TEST_P(ReferenceOracle, MatchesIndependentForm) {
  const Case& c = GetParam().c;
  EXPECT_LE(independent_form_error(c), 1e-9) << c.describe();
}

TEST_P(ReferenceOracle, BackwardMatchesFiniteDifferences) {
  const Case& c = GetParam().c;
  if (c.T * c.n_h > 64) GTEST_SKIP() << "finite differences run on short cases only";
  EXPECT_LE(finite_difference_error(c), 1e-6) << c.describe();
}

TEST_P(ReferenceOracle, VarlenOrSplitRunIsConsistent) {
  const Case& c = GetParam().c;
  if (!c.seqlens.empty()) {
    EXPECT_EQ(varlen_error(c), 0.0) << c.describe();
  } else if (!op_spec(c.op).causal) {
    GTEST_SKIP() << "a non-causal op has no state to carry from one run to the next";
  } else if (!c.normalize && c.T >= 2 && c.T <= 64) {
    EXPECT_LE(split_run_error(c), 1e-12) << c.describe();
  } else {
    GTEST_SKIP() << "normalize resets its key sum per call; T = 1 cannot be split";
  }
}

INSTANTIATE_TEST_SUITE_P(AllOps, ReferenceOracle, testing::ValuesIn(all_cases()), case_name);

Case small(Op op) {
  Case c = builtin_cases(op).front();
  c.T = 19;
  return c;
}

// Reductions of algorithms.md §7.5: each op specialises to a simpler one.
TEST(ReferenceReductions, DeltaProductWithOneStepIsGatedDeltaRule) {
  Case prod = small(Op::delta_product);
  prod.n_h = 1;
  Case gdn = prod;
  gdn.op = Op::gated_delta_rule;
  const Inputs in = make_inputs(prod, DType::f64);
  const Outputs a = run_forward(prod, in, Form::reference);
  const Outputs b = run_forward(gdn, in, Form::reference);
  EXPECT_EQ(rel_error(a.o, b.o), 0.0);
  EXPECT_EQ(rel_error(a.final_state, b.final_state), 0.0);
}

TEST(ReferenceReductions, ZeroLogDecayRemovesTheGate) {
  for (auto [gated, plain] : {std::pair{Op::gated_delta_rule, Op::delta_rule},
                              {Op::simple_gla, Op::linear_attn}}) {
    Case cg = small(gated);
    Inputs in = make_inputs(cg, DType::f64);
    for (int64_t i = 0; i < in.g.numel(); ++i) in.g.set(i, 0.0);
    Case cp = cg;
    cp.op = plain;
    Inputs plain_in = in;
    plain_in.g = Buffer();
    const Outputs a = run_forward(cg, in, Form::reference);
    const Outputs b = run_forward(cp, plain_in, Form::reference);
    EXPECT_EQ(rel_error(a.o, b.o), 0.0) << op_name(gated);
  }
}

TEST(ReferenceReductions, ChannelConstantGlaIsSimpleGla) {
  Case cs = small(Op::simple_gla);
  const Inputs in = make_inputs(cs, DType::f64);
  Case cg = cs;
  cg.op = Op::gla;
  Inputs gla_in = in;
  gla_in.g = Buffer();
  gla_in.gk = Buffer(DType::f64, {cs.B, cs.T, cs.HV, cs.K});
  for (int64_t i = 0; i < gla_in.gk.numel(); ++i) gla_in.gk.set(i, in.g.get(i / cs.K));
  const Outputs a = run_forward(cs, in, Form::reference);
  const Outputs b = run_forward(cg, gla_in, Form::reference);
  EXPECT_LE(rel_error(a.o, b.o), 1e-14);
  EXPECT_LE(rel_error(a.final_state, b.final_state), 1e-14);
}

TEST(ReferenceReductions, RetentionIsSimpleGlaWithItsFixedDecay) {
  Case cr = small(Op::retention);
  const Inputs in = make_inputs(cr, DType::f64);
  Case cs = cr;
  cs.op = Op::simple_gla;
  Inputs gated = in;
  gated.g = Buffer(DType::f64, {cr.B, cr.T, cr.HV});
  for (int64_t i = 0; i < gated.g.numel(); ++i) gated.g.set(i, std::log1p(-std::exp2(-5.0 - i % cr.HV)));
  const Outputs a = run_forward(cr, in, Form::reference);
  const Outputs b = run_forward(cs, gated, Form::reference);
  EXPECT_EQ(rel_error(a.o, b.o), 0.0);
  EXPECT_EQ(rel_error(a.final_state, b.final_state), 0.0);
}

TEST(ReferenceReductions, ZeroBetaFreezesTheState) {
  Case c = small(Op::delta_rule);
  Inputs in = make_inputs(c, DType::f64);
  for (int64_t i = 0; i < in.beta.numel(); ++i) in.beta.set(i, 0.0);
  const Outputs out = run_forward(c, in, Form::reference);
  EXPECT_EQ(rel_error(out.final_state, in.initial_state), 0.0);
}

// Work items own their outputs, and fewer items than threads switch to chunk-level parallelism
// with the same arithmetic, so neither the thread count nor the run can change a single bit.
// Three cases per op: many items (B=2, several heads), a single item spanning several chunks,
// and varlen sequences straddling chunks; fp32 and bf16; 1, 2, 4 and 8 threads, then 1 again.
TEST(Determinism, BitwiseAcrossThreadCountsAndRuns) {
  for (int i = 0; i < kNumOps; ++i) {
    const Op op = static_cast<Op>(i);
    Case single = small(op), varlen = small(op);
    single.B = single.H = single.HV = 1;
    single.T = 150;
    varlen.B = 1;
    varlen.seqlens = {70, 1, 129};
    varlen.T = 200;
    for (const Case& c : {small(op), single, varlen}) {
      for (DType dtype : {DType::f32, DType::bf16}) {
        const Inputs in = make_inputs(c, dtype);
        for (Form form : {Form::reference, Form::chunk, Form::recurrent}) {
          if (!has_form(op, form, false)) continue;
          const bool with_backward = has_form(op, form, true);
          const int saved = omp_get_max_threads();
          std::vector<Outputs> outs;
          std::vector<Gradients> grads;
          for (int threads : {1, 2, 4, 8, 1}) {
            omp_set_num_threads(threads);
            outs.push_back(run_forward(c, in, form));
            if (!with_backward) continue;
            Buffer d_o(DType::f32, outs.back().o.shape());
            for (int64_t j = 0; j < d_o.numel(); ++j) d_o.set(j, std::sin(0.1 * j));
            grads.push_back(run_backward(c, in, form, d_o, Buffer()));
          }
          omp_set_num_threads(saved);
          const std::string what = std::string(op_name(op)) + " " + form_name(form) + " " +
                                   dtype_name(dtype) + " " + c.describe();
          for (size_t t = 1; t < outs.size(); ++t) {
            EXPECT_TRUE(bitwise_equal(outs[t].o, outs[0].o)) << what << " run " << t;
            EXPECT_TRUE(bitwise_equal(outs[t].final_state, outs[0].final_state)) << what << " run " << t;
          }
          for (size_t t = 1; t < grads.size(); ++t) {
            const auto a = grads[t].list(), b = grads[0].list();
            for (size_t g = 0; g < a.size(); ++g)
              EXPECT_TRUE(bitwise_equal(*a[g].second, *b[g].second)) << what << " run " << t << " " << a[g].first;
          }
        }
      }
    }
  }
}

// Every row of `linattn check` passes: the oracle's own checks in float64, and every fast form
// of every op (those of ops.hpp and the families with an API of their own) against the oracle
// in float32 and bfloat16.
TEST(CheckRunner, AllRowsPass) {
  for (DType dtype : {DType::f64, DType::f32, DType::bf16}) {
    const auto rows = run(check_names(), dtype);
    ASSERT_FALSE(rows.empty());
    for (const Row& r : rows)
      EXPECT_TRUE(r.pass) << r.op << " " << r.form << " " << r.dtype << " " << r.shape << " "
                          << r.check << " error " << r.error;
  }
}

}  // namespace
}  // namespace linattn::check
