// causal_conv1d: the oracle's own checks and the fast form / decode step against it (the
// builtin cases of `linattn check` plus a wide-kernel and a long case), strided inputs,
// determinism across thread counts, and the inputs the API must reject.
#include <gtest/gtest.h>
#include <omp.h>

#include <cstring>
#include <string>

#include "check/family.hpp"
#include "linattn/conv1d.hpp"
#include "linattn/error.hpp"
#include "ops/conv1d/check.hpp"

namespace linattn::conv1d {
namespace {

using check::Buffer;

std::vector<Case> cases() {
  std::vector<Case> out = builtin_cases();
  Case c = Case::of(1, 30, 7, 7);
  c.residual = c.silu = true;
  c.seed = 90;
  out.push_back(c);
  c = Case::of(2, 1000, 130, 4);
  c.silu = true;
  c.seed = 91;
  out.push_back(c);
  return out;
}

TEST(Conv1d, ReferenceGradientsMatchFiniteDifferences) {
  for (const Case& c : cases())
    if (c.T * c.D <= 400) EXPECT_LE(finite_difference_error(c), 1e-6) << c.describe();
}

TEST(Conv1d, VarlenAndSplitRunsMatchOneRun) {
  for (const Case& c : cases()) {
    if (!c.seqlens.empty()) EXPECT_LE(varlen_error(c), 1e-12) << c.describe();
    else if (c.T >= 2) EXPECT_LE(split_run_error(c), 1e-12) << c.describe();
  }
}

TEST(Conv1d, FastFormMatchesReference) {
  for (const Case& c : cases()) {
    EXPECT_LE(fast_forward_error(c, DType::f32), 1e-5) << c.describe();
    EXPECT_LE(fast_backward_error(c, DType::f32), 1e-5) << c.describe();
    // bf16 storage: y and the gradients are rounded to 8 bits (2^-9 relative).
    EXPECT_LE(fast_forward_error(c, DType::bf16), 1e-2) << c.describe();
    EXPECT_LE(fast_backward_error(c, DType::bf16), 1e-2) << c.describe();
  }
}

TEST(Conv1d, DecodeStepsMatchForward) {
  for (const Case& c : cases()) {
    if (!c.seqlens.empty()) continue;
    EXPECT_LE(decode_error(c, DType::f64), 1e-12) << c.describe();
    EXPECT_LE(decode_error(c, DType::f32), 1e-6) << c.describe();
  }
}

// x as channels [0, D) of a [B, T, 2D] buffer: the fast form reads strided rows.
TEST(Conv1d, StridedInputMatchesContiguous) {
  Case c = Case::of(2, 70, 66, 4);
  c.silu = true;
  const Inputs in = make_inputs(c, DType::f32);
  Buffer wide(DType::f32, {c.B, c.T, 2 * c.D});
  for (int64_t r = 0; r < c.B * c.T; ++r)
    for (int64_t d = 0; d < c.D; ++d) wide.set(r * 2 * c.D + d, in.x.get(r * c.D + d));
  Conv1dArgs a = in.args(c, true);
  a.x = wide.view();
  a.x.shape[2] = c.D;
  const Outputs want = run_forward(c, in, Form::chunk);
  Outputs got{Buffer(DType::f32, {c.B, c.T, c.D}), Buffer(DType::f32, {c.B, c.D, c.W})};
  causal_conv1d_forward(Form::chunk, a, {got.y.view(), got.final_state.view()});
  EXPECT_EQ(check::rel_error(got.y, want.y), 0.0);
  EXPECT_EQ(check::rel_error(got.final_state, want.final_state), 0.0);
}

TEST(Conv1d, BitwiseIdenticalForAnyThreadCount) {
  Case c = Case::of(1, 300, 200, 4);
  c.seqlens = {100, 1, 199};
  c.residual = c.silu = true;
  const Inputs in = make_inputs(c, DType::f32);
  std::mt19937_64 rng(5);
  const Buffer dy = check::random_buffer(DType::f32, {c.B, c.T, c.D}, rng, -1, 1);
  const Buffer df = check::random_buffer(DType::f32, {c.N(), c.D, c.W}, rng, -1, 1);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const Outputs one = run_forward(c, in, Form::chunk);
  const Grads gone = run_backward(c, in, Form::chunk, dy, df);
  for (int threads : {2, 3, 4}) {
    omp_set_num_threads(threads);
    const Outputs many = run_forward(c, in, Form::chunk);
    const Grads gmany = run_backward(c, in, Form::chunk, dy, df);
    EXPECT_EQ(check::rel_error(many.y, one.y), 0.0) << threads;
    EXPECT_EQ(check::rel_error(many.final_state, one.final_state), 0.0) << threads;
    for (auto [a, b] : {std::pair{&gmany.dx, &gone.dx}, {&gmany.dweight, &gone.dweight},
                        {&gmany.dbias, &gone.dbias}, {&gmany.dinitial_state, &gone.dinitial_state}})
      EXPECT_EQ(check::rel_error(*a, *b), 0.0) << threads;
  }
  omp_set_num_threads(saved);
}

TEST(Conv1d, RejectsBadInputs) {
  const Case c = Case::of(2, 5, 3, 4);
  const Inputs in = make_inputs(c, DType::f32);
  Buffer y(DType::f32, {c.B, c.T, c.D}), fs(DType::f32, {c.B, c.D, c.W});
  auto forward = [&](Conv1dArgs a, TensorView out_y, TensorView out_f = {}) {
    return check::error_message([&] { causal_conv1d_forward(Form::chunk, a, {out_y, out_f}); });
  };
  Conv1dArgs a = in.args(c, false);
  EXPECT_EQ(forward(a, y.view()), "");

  const Buffer wrong_weight(DType::f32, {c.D + 1, c.W}), wrong_state(DType::f32, {c.B, c.D, c.W - 1});
  const Buffer ints(DType::i32, {c.B, c.T, c.D}), bf16_y(DType::bf16, {c.B, c.T, c.D});
  const Buffer offsets = check::offsets_of({2, 3});
  auto expect = [&](const std::string& message, const std::string& part) {
    EXPECT_NE(message.find(part), std::string::npos) << "got: " << message;
  };
  Conv1dArgs bad = a;
  bad.weight = wrong_weight.view();
  expect(forward(bad, y.view()), "causal_conv1d: weight must have shape [D, W] (D from x) = [3, 4], got [4, 4]");
  bad = a;
  bad.weight = {};
  expect(forward(bad, y.view()), "causal_conv1d: weight is required but was not given");
  bad = a;
  bad.initial_state = wrong_state.view();
  expect(forward(bad, y.view()), "initial_state must have shape [N, D, W] = [2, 3, 4], got [2, 3, 3]");
  bad = a;
  bad.x = ints.view();
  expect(forward(bad, y.view()), "x must be float32, bfloat16 or float64, got int32");
  bad = a;
  bad.cu_seqlens = offsets.view();
  expect(forward(bad, y.view()), "with cu_seqlens the batch size B must be 1");
  bad = a;
  bad.activation = static_cast<Activation>(7);
  expect(forward(bad, y.view()), "activation must be none (0) or silu (1), got 7");
  expect(forward(a, bf16_y.view()), "y must have the dtype of x (float32), got bfloat16");
  bad = a;
  bad.output_final_state = true;
  expect(forward(bad, y.view()), "final_state is required but was not given");
  expect(forward(a, y.view(), fs.view()), "final_state must not be given (output_final_state is false)");
  expect(check::error_message([&] { causal_conv1d_forward(Form::recurrent, a, {y.view(), {}}); }),
         "the recurrent form is the decode step causal_conv1d_update");

  // Backward: a gradient for an input that was not given; decode: a cache of the wrong width.
  Conv1dArgs no_bias = a;
  no_bias.bias = {};
  Buffer db(DType::f32, {c.D});
  expect(check::error_message([&] {
           causal_conv1d_backward(Form::chunk, no_bias, {y.view(), {}}, {{}, {}, db.view(), {}, {}});
         }),
         "dbias was given but its input bias was not");
  Conv1dUpdateArgs u;
  Buffer x_step(DType::f32, {c.B, c.D}), y_step(DType::f32, {c.B, c.D});
  u.x = x_step.view();
  u.cache = wrong_state.view();
  u.weight = in.weight.view();
  expect(check::error_message([&] { causal_conv1d_update(u, y_step.view()); }),
         "causal_conv1d_update: cache must have shape [N, D, W] = [2, 3, 4], got [2, 3, 3]");
}

}  // namespace
}  // namespace linattn::conv1d
