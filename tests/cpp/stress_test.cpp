// Numerical stress: every fast form of every op against the fp64 oracle on T = 65536 tokens with
// extreme gates (decays near 0 and near 1 and spread over [-20, -1e-6], beta near 0 and near 2
// and spread over [0, 2] on unit keys), forward and backward, fp32 and bf16. One row per
// (op, regime): a new op adds rows. Bounds: fp32 1e-5 unless a row says why it needs more (the
// constants below); bf16 1e-2 (both sides read the same bf16-rounded inputs, so the error is the
// fast form's bf16 output storage, 2^-9 relative per element, and its fp32 arithmetic; measured
// at most 3.1e-3). Measured figures:
// docs/reliability.md. LINATTN_TEST_REDUCED=1 (the sanitizer build) runs T = 4096 instead.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "check/harness.hpp"
#include "linattn/ops.hpp"

namespace linattn::check {
namespace {

struct StressRow {
  Op op;
  Gates gates;
  bool normalize = false;
  double chunk_tol = 1e-5;      // fp32 bound of the chunk form
  double recurrent_tol = 1e-5;  // fp32 bound of the recurrent form
};

// Ungated beta ~ 2 makes every step of delta_rule a reflection: the state is carried through
// 65536 orthogonal maps with nothing decaying, so fp32 rounding accumulates like a random walk,
// ~eps sqrt(T) = 6e-8 * 256 = 1.5e-5 per unit of state (measured: chunk 4.0e-5 forward, 5.1e-5
// backward; recurrent 2.0e-5); 1e-4 bounds that.
constexpr double kReflectionTol = 1e-4;
// Log decays of -1e-6 (a multiplier 1 - 1e-6) barely forget, and a multiplier that close to 1
// cannot be stored in fp32 without a relative error of up to 2^-24 in the multiplier, always in
// the same direction for a constant gate: that bias compounds once per scan step. The chunk form
// rounds one multiplier per chunk (T/64 = 1024 steps): <= 1024 * 2^-24 = 6.1e-5 (measured
// 1.1e-5); the recurrent form one per token (65536 steps): <= 65536 * 2^-24 = 3.9e-3 (measured
// 5.3e-4). linear_attn, with no multiplier at all, stays at 6e-7.
constexpr double kChunkNearOneTol = 1024 * 0x1p-24, kRecurrentNearOneTol = 65536 * 0x1p-24;

const StressRow kRows[] = {
    {Op::linear_attn, Gates::typical},
    {Op::linear_attn, Gates::typical, true},
    {Op::retention, Gates::typical},
    {Op::simple_gla, Gates::decay_near_0},
    {Op::simple_gla, Gates::decay_near_1, false, kChunkNearOneTol, kRecurrentNearOneTol},
    {Op::simple_gla, Gates::decay_wide},
    {Op::gla, Gates::decay_near_0},
    {Op::gla, Gates::decay_near_1, false, kChunkNearOneTol, kRecurrentNearOneTol},
    {Op::gla, Gates::decay_wide},
    {Op::delta_rule, Gates::beta_near_0},
    {Op::delta_rule, Gates::beta_near_2, false, kReflectionTol, kReflectionTol},
    {Op::delta_rule, Gates::beta_wide},
    {Op::gated_delta_rule, Gates::decay_near_0},
    {Op::gated_delta_rule, Gates::decay_near_1},
    {Op::gated_delta_rule, Gates::beta_near_2},
    {Op::gated_delta_rule, Gates::decay_wide},
    {Op::delta_product, Gates::beta_near_0},
    {Op::delta_product, Gates::beta_near_2},
    {Op::delta_product, Gates::beta_wide},
    {Op::delta_product, Gates::decay_wide},
    {Op::noncausal_linear_attn, Gates::typical},
    {Op::noncausal_linear_attn, Gates::typical, true},
    {Op::kda, Gates::decay_near_0},
    {Op::kda, Gates::decay_wide},
    {Op::dplr_delta_rule, Gates::typical},
    {Op::dplr_delta_rule, Gates::decay_near_0},
};

void PrintTo(const StressRow& row, std::ostream* out) {
  *out << op_name(row.op) << " " << gates_name(row.gates) << (row.normalize ? " normalize" : "");
}

bool reduced() {
  const char* v = std::getenv("LINATTN_TEST_REDUCED");
  return v != nullptr && std::string(v) != "0";
}

Case stress_case(const StressRow& row) {
  Case c;
  c.op = row.op;
  c.B = c.H = c.HV = 1;
  c.K = c.V = 8;
  c.T = reduced() ? 4096 : 65536;
  if (op_spec(row.op).takes_num_householder) {  // 65536 Householder steps either way
    c.n_h = 2;
    c.T /= 2;
  }
  c.l2norm = op_spec(row.op).takes_l2norm;  // unit keys: beta in [0, 2] keeps |eigenvalues| <= 1
  c.normalize = row.normalize;
  c.initial_state = c.output_final_state = op_spec(row.op).causal;
  c.gates = row.gates;
  c.seed = 11;
  return c;
}

class Stress : public testing::TestWithParam<StressRow> {};

TEST_P(Stress, EveryFastFormMatchesOracle) {
  const StressRow& row = GetParam();
  const Case c = stress_case(row);
  for (Form form : {Form::chunk, Form::recurrent}) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      const double fp32_tol = form == Form::chunk ? row.chunk_tol : row.recurrent_tol;
      const double tol = dtype == DType::f32 ? fp32_tol : 1e-2;
      const std::string what = std::string(op_name(row.op)) + " " + form_name(form) + " " +
                               dtype_name(dtype) + " " + c.describe();
      if (has_form(row.op, form, false)) {
        const double err = form_forward_error(c, dtype, form);
        std::printf("stress %s forward %.2e\n", what.c_str(), err);
        EXPECT_LE(err, tol) << what;
      }
      if (has_form(row.op, form, true)) {
        const double err = form_backward_error(c, dtype, form);
        std::printf("stress %s backward %.2e\n", what.c_str(), err);
        EXPECT_LE(err, tol) << what;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(LongSequences, Stress, testing::ValuesIn(kRows),
                         [](const testing::TestParamInfo<StressRow>& info) {
                           std::string name = std::string(op_name(info.param.op)) + "_" +
                                              std::to_string(info.index);
                           return name;
                         });

// Resets (log decay -inf, allowed) and huge finite decays (-1e30) at a few tokens, mid-chunk:
// the chunk forms used to give NaN for the first (-inf - -inf) and a wrong answer for the second
// (the huge value absorbed the ordinary decays summed with it). Every fast form must match the
// oracle, forward and backward, for every op with a gate input.
TEST(Stress, ResetsAndHugeDecaysMatchOracle) {
  for (int i = 0; i < kNumOps; ++i) {
    const Op op = static_cast<Op>(i);
    const OpSpec& spec = op_spec(op);
    if (!spec.takes_g && !spec.takes_gk) continue;
    Case c;
    c.op = op;
    c.B = 2;
    c.T = 150;
    c.H = 1;
    c.HV = 2;
    c.K = c.V = 8;
    c.n_h = spec.takes_num_householder ? 2 : 1;
    c.l2norm = spec.takes_l2norm;
    c.seed = 5;
    Inputs in = make_inputs(c, DType::f32);
    Buffer& gate = spec.takes_gk ? in.gk : in.g;
    const int64_t per_token = gate.numel() / (c.B * c.T);
    for (int64_t token : {3, 70, 71, 200}) {  // two in a row, and one in the second batch row
      gate.set(token * per_token, -INFINITY);
      gate.set(token * per_token + per_token - 1, -1e30);
    }
    const Outputs want = run_forward(c, in, Form::reference);
    Buffer d_o(DType::f32, want.o.shape()), d_state(DType::f32, want.final_state.shape());
    for (int64_t j = 0; j < d_o.numel(); ++j) d_o.set(j, std::sin(0.3 * j));
    for (int64_t j = 0; j < d_state.numel(); ++j) d_state.set(j, std::cos(0.7 * j));
    const Gradients want_grads = run_backward(c, in, Form::reference, d_o, d_state);
    for (Form form : {Form::chunk, Form::recurrent}) {
      const std::string what = std::string(op_name(op)) + " " + form_name(form);
      if (!has_form(op, form, false)) continue;
      const Outputs got = run_forward(c, in, form);
      EXPECT_LE(rel_error(got.o, want.o), 1e-5) << what;
      EXPECT_LE(rel_error(got.final_state, want.final_state), 1e-5) << what;
      if (!has_form(op, form, true)) continue;
      const Gradients got_grads = run_backward(c, in, form, d_o, d_state);
      const auto a = got_grads.list(), b = want_grads.list();
      for (size_t g = 0; g < a.size(); ++g)
        EXPECT_LE(rel_error(*a[g].second, *b[g].second), 1e-5) << what << " " << a[g].first;
    }
  }
}

// Every op has stress rows.
TEST(StressTable, CoversEveryOp) {
  for (int i = 0; i < kNumOps; ++i) {
    bool found = false;
    for (const StressRow& row : kRows) found = found || row.op == static_cast<Op>(i);
    EXPECT_TRUE(found) << op_name(static_cast<Op>(i));
  }
}

}  // namespace
}  // namespace linattn::check
