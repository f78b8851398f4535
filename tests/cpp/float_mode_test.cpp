// Subnormals out of the fast forms (core/float_mode.hpp, issue 15): a call runs with flush-to-zero
// and denormals-are-zero on every thread that computes it, and leaves the caller's mode (and the
// OpenMP threads' modes) as it found them; the oracles run in the caller's mode.
#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <vector>

#include "check/harness.hpp"
#include "core/float_mode.hpp"
#include "core/parallel.hpp"
#include "linattn/ops.hpp"

namespace linattn::check {
namespace {

#if LINATTN_HAS_MXCSR

constexpr unsigned kRoundTowardZero = 0x6000u;  // MXCSR rounding control: a mode no call sets

// The modes the OpenMP threads are in outside any linattn call, one per thread.
std::vector<unsigned> team_modes(int threads) {
  std::vector<unsigned> modes(threads, 0);
#pragma omp parallel num_threads(threads)
  modes[omp_get_thread_num()] = float_mode();
  return modes;
}

TEST(FloatMode, ParallelForGivesEveryThreadTheCallersMode) {
  const int threads = 4;
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  const std::vector<unsigned> before = team_modes(threads);
  const unsigned caller = float_mode();
  std::vector<unsigned> seen(64, 0);
  {
    const FlushDenormals mode;
    ASSERT_EQ(float_mode() & kFlushDenormalBits, kFlushDenormalBits);
    parallel_for(64, [&](int64_t i) { seen[i] = float_mode(); });
  }
  EXPECT_EQ(float_mode(), caller);
  for (unsigned m : seen) EXPECT_EQ(m & kFlushDenormalBits, kFlushDenormalBits);
  EXPECT_EQ(team_modes(threads), before);  // the workers went back to their own mode
  omp_set_num_threads(saved);
}

// Every form, forward and backward, hands the caller back its mode (an unusual one included).
TEST(FloatMode, CallsRestoreTheCallersMode) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(4);
  const unsigned caller = float_mode();
  for (unsigned mode : {caller, caller | kRoundTowardZero}) {
    set_float_mode(mode);
    for (Op op : {Op::gla, Op::gated_delta_rule, Op::dplr_delta_rule}) {
      Case c = builtin_cases(op).front();
      c.gates = Gates::decay_near_0;
      const Inputs in = make_inputs(c, DType::f32);
      for (Form form : {Form::reference, Form::chunk, Form::recurrent}) {
        const Outputs out = run_forward(c, in, form);
        EXPECT_EQ(float_mode(), mode) << op_name(op) << " forward " << form_name(form);
      }
      const Outputs out = run_forward(c, in, Form::chunk);
      run_backward(c, in, Form::chunk, out.o, out.final_state);
      EXPECT_EQ(float_mode(), mode) << op_name(op) << " backward";
    }
  }
  set_float_mode(caller);
  omp_set_num_threads(saved);
}

// What the mode does: a subnormal operand reads as zero inside a fast call (DAZ), not in the
// caller's arithmetic afterwards.
TEST(FloatMode, FlushesSubnormalsOnlyInside) {
  volatile float tiny = 1e-40f, half = 0.5f;  // a subnormal; volatile: computed at run time
  float inside = 1;
  {
    const FlushDenormals mode;
    inside = tiny * half;
  }
  const float outside = tiny * half;
  EXPECT_EQ(inside, 0.0f);
  EXPECT_EQ(outside, 5e-41f);
}

#else

TEST(FloatMode, ParallelForGivesEveryThreadTheCallersMode) {
  GTEST_SKIP() << "no MXCSR on this target: the floating-point mode is left alone";
}

#endif

}  // namespace
}  // namespace linattn::check
