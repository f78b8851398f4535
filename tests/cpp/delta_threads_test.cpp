// The delta-rule families' chunk forms when work items are fewer than threads
// (ops/common/chunk_windows.hpp: windows of chunks prepared in parallel, state passes in parallel
// over blocks of 32 value columns): against the fp64 oracle, forward and backward, on one or two
// items running on four threads (V = 72: two whole blocks and a partial one; T not divisible by
// 64; more chunks than a window holds; one long and several short sequences; extreme gates),
// and bitwise identical for 1, 2, 4 and 8 threads (1 thread takes the items path).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <string>
#include <vector>

#include "check/harness.hpp"
#include "linattn/ops.hpp"

namespace linattn::check {
namespace {

const Op kOps[] = {Op::delta_rule, Op::gated_delta_rule, Op::delta_product, Op::kda, Op::dplr_delta_rule};

// Sets the OpenMP thread count for a scope.
class Threads {
 public:
  explicit Threads(int n) : saved_(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~Threads() { omp_set_num_threads(saved_); }

 private:
  int saved_;
};

Case single_item(Op op) {
  Case c = builtin_cases(op).front();
  c.B = c.H = c.HV = 1;
  c.K = 32;
  c.V = 72;
  c.T = 1100;  // 18 chunks, the last partial: more than a window of 4 threads (16 chunks)
  c.seed = 301;
  return c;
}

std::vector<Case> cases(Op op) {
  const OpSpec& spec = op_spec(op);
  std::vector<Case> out{single_item(op)};
  auto add = [&](auto&& edit) {
    Case c = single_item(op);
    edit(c);
    c.seed = 302 + out.size();
    out.push_back(c);
  };
  add([](Case& c) { c.B = 1; c.seqlens = {1000, 3, 130, 1}; c.T = 1134; });  // one long, some short
  add([](Case& c) { c.HV = 2; c.T = 300; });  // two items (grouped value heads) on four threads
  add([](Case& c) { c.initial_state = c.output_final_state = false; c.T = 200; });
  if (spec.takes_g || spec.takes_gk) {
    add([](Case& c) { c.gates = Gates::decay_near_0; });
    add([](Case& c) { c.gates = Gates::decay_near_1; });
  }
  if (spec.takes_beta) add([](Case& c) { c.gates = Gates::beta_near_2; c.l2norm = true; });
  if (spec.takes_ab) add([](Case& c) { c.gates = Gates::abar_near_1; });
  if (spec.takes_num_householder) add([](Case& c) { c.n_h = 3; c.T = 400; });  // groups straddle chunks
  return out;
}

TEST(DeltaThreads, FewItemsMatchOracle) {
  const Threads threads(4);
  for (Op op : kOps)
    for (const Case& c : cases(op)) {
      const std::string what = std::string(op_name(op)) + " " + c.describe();
      EXPECT_LE(form_forward_error(c, DType::f32, Form::chunk), 1e-5) << what;
      EXPECT_LE(form_backward_error(c, DType::f32, Form::chunk), 1e-5) << what;
    }
  const Case c = single_item(Op::gated_delta_rule);
  EXPECT_LE(form_forward_error(c, DType::bf16, Form::chunk), 1e-2);
  EXPECT_LE(form_backward_error(c, DType::bf16, Form::chunk), 1e-2);
}

// 1 thread runs the item path (one chunk at a time, all columns at once), 2, 4 and 8 the
// few-items path with windows of 8, 16 and 32 chunks and the column blocks spread over the
// threads: the output, final state and every gradient agree to the bit.
TEST(DeltaThreads, BitwiseAcrossThreadCounts) {
  for (Op op : kOps) {
    std::vector<Case> list{single_item(op), cases(op)[1]};
    if (op_spec(op).takes_num_householder) list.push_back(cases(op).back());
    for (const Case& c : list) {
      const Inputs in = make_inputs(c, DType::f32);
      std::vector<Outputs> outs;
      std::vector<Gradients> grads;
      for (int n : {1, 2, 4, 8}) {
        const Threads threads(n);
        outs.push_back(run_forward(c, in, Form::chunk));
        Buffer d_o(DType::f32, outs.back().o.shape());
        for (int64_t j = 0; j < d_o.numel(); ++j) d_o.set(j, std::sin(0.1 * j));
        Buffer d_final(DType::f32, outs.back().final_state.shape());
        for (int64_t j = 0; j < d_final.numel(); ++j) d_final.set(j, std::cos(0.3 * j));
        grads.push_back(run_backward(c, in, Form::chunk, d_o, d_final));
      }
      const std::string what = std::string(op_name(op)) + " " + c.describe();
      for (size_t t = 1; t < outs.size(); ++t) {
        EXPECT_TRUE(bitwise_equal(outs[t].o, outs[0].o)) << what << " run " << t;
        EXPECT_TRUE(bitwise_equal(outs[t].final_state, outs[0].final_state)) << what << " run " << t;
        const auto a = grads[t].list(), b = grads[0].list();
        ASSERT_EQ(a.size(), b.size());
        for (size_t g = 0; g < a.size(); ++g)
          EXPECT_TRUE(bitwise_equal(*a[g].second, *b[g].second)) << what << " run " << t << " " << a[g].first;
      }
    }
  }
}

}  // namespace
}  // namespace linattn::check
