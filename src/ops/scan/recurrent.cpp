// The decode step of the selective scan (mamba's selective_state_update; algorithms.md §4.10
// (a) for one token): per (sequence, channel), h = exp(Δ A) h + Δ B x in place and
// y = (C·h + D x) · silu(z). The state is scan.hpp's [N, D, N_state], so steps continue a
// forward's final_state; the step runs the forward's own kernels on a one-token sequence.
#include "core/float_mode.hpp"
#include "ops/common/validator.hpp"
#include "ops/scan/scan.hpp"

namespace linattn {
namespace {

constexpr const char* kStep = "selective_state_update";

void check_step(const ScanStepArgs& a, const TensorView& y) {
  Validator check(kStep);
  for (auto [name, t] : {std::pair{"state", &a.state}, {"x", &a.x}, {"dt", &a.dt}, {"A", &a.A},
                         {"B", &a.B}, {"C", &a.C}}) {
    check.present(name, *t);
    check.floating_input(name, *t);
  }
  check.rank("state", a.state, 3, "[N, D, N_state]");
  check.rank("B", a.B, 3, "[N, G, N_state]");
  const int64_t N = a.state.shape[0], D = a.state.shape[1], S = a.state.shape[2], G = a.B.shape[1];
  check.shape("x", a.x, {N, D}, "[N, D] (from state)");
  check.shape("dt", a.dt, {N, D}, "[N, D] (from state)");
  check.shape("A", a.A, {D, S}, "[D, N_state] (from state)");
  check.shape("B", a.B, {N, G, S}, "[N, G, N_state]");
  check.shape("C", a.C, {N, G, S}, "[N, G, N_state] (the shape of B)");
  if (D % G != 0) fail(kStep, ": the number of groups G = ", G, " must divide D = ", D);
  check.optional_input("D", a.D, {D}, "[D]");
  check.optional_input("dt_bias", a.dt_bias, {D}, "[D]");
  check.optional_input("z", a.z, {N, D}, "[N, D] (the shape of x)");
  check.output("y", y, "x", a.x, {N, D}, "[N, D]");
  check.distinct_elements("state", a.state);
  check.no_overlaps({{"state", &a.state}, {"y", &y}},
                    {{"x", &a.x}, {"dt", &a.dt}, {"A", &a.A}, {"B", &a.B}, {"C", &a.C},
                     {"D", &a.D}, {"z", &a.z}, {"dt_bias", &a.dt_bias}});
}

// A view with a new dimension of size 1 at `dim` (one token: [N, D] -> [N, 1, D]).
TensorView one_token(const TensorView& t, int dim) {
  if (!t.given()) return t;
  TensorView v = t;
  v.ndim = t.ndim + 1;
  for (int i = t.ndim; i > dim; --i) {
    v.shape[i] = t.shape[i - 1];
    v.strides[i] = t.strides[i - 1];
  }
  v.shape[dim] = 1;
  v.strides[dim] = t.strides[dim] * t.shape[dim];  // keeps a contiguous view contiguous
  return v;
}

}  // namespace

// The step is the scan of one token with the state as both initial and final state: each
// work item reads its channels' state rows before it writes them, so in place is safe.
void selective_state_update(const ScanStepArgs& a, const TensorView& y) {
  check_step(a, y);
  ScanArgs s;
  s.u = one_token(a.x, 1);
  s.delta = one_token(a.dt, 1);
  s.A = a.A;
  s.B = one_token(a.B, 1);
  s.C = one_token(a.C, 1);
  s.D = a.D;
  s.z = one_token(a.z, 1);
  s.delta_bias = a.dt_bias;
  s.initial_state = a.state;
  s.delta_softplus = a.dt_softplus;
  s.output_final_state = true;
  const scan::Problem p = scan::make_problem(s);
  const ScanOutputs out{one_token(y, 1), a.state};
  if (a.x.dtype == DType::f64) {
    scan::reference_forward(p, s, out);
  } else {
    const FlushDenormals mode;
    scan::fast_forward(p, s, out);
  }
}

}  // namespace linattn
