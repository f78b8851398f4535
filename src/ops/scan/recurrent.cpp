// The decode step of the selective scan (mamba's selective_state_update; algorithms.md §4.10
// (a) for one token): per (sequence, channel), h = exp(Δ A) h + Δ B x in place and
// y = (C·h + D x) · silu(z). The state is scan.hpp's [N, D, N_state], so steps continue a
// forward's final_state. Work items are sequences, each owning its state rows and y row.
#include <cmath>

#include "core/dtype.hpp"
#include "core/parallel.hpp"
#include "ops/common/validator.hpp"
#include "ops/scan/scan.hpp"

namespace linattn {
namespace {

constexpr const char* kStep = "selective_state_update";

double get(const TensorView& t, int64_t offset) { return load_as_double(t.data, t.dtype, offset); }

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
  for (auto [name, t] : {std::pair{"D", &a.D}, {"dt_bias", &a.dt_bias}}) {
    if (!t->given()) continue;
    check.floating_input(name, *t);
    check.shape(name, *t, {D}, "[D]");
  }
  if (a.z.given()) {
    check.floating_input("z", a.z);
    check.shape("z", a.z, {N, D}, "[N, D] (the shape of x)");
  }
  check.present("y", y);
  check.basic("y", y);
  check.same_dtype("y", y, "x", a.x);
  check.shape("y", y, {N, D}, "[N, D]");
  check.writable("y", y);
}

}  // namespace

void selective_state_update(const ScanStepArgs& a, const TensorView& y) {
  check_step(a, y);
  const int64_t N = a.state.shape[0], D = a.state.shape[1], S = a.state.shape[2];
  const int64_t group = D / a.B.shape[1];
  const TensorView& h = a.state;
  parallel_for_work(N, N * D * S, [&](int64_t n) {
    for (int64_t d = 0; d < D; ++d) {
      const int64_t g = d / group;
      const double x = get(a.x, at2(a.x, n, d));
      double dt = get(a.dt, at2(a.dt, n, d)) + (a.dt_bias.given() ? get(a.dt_bias, d * a.dt_bias.strides[0]) : 0.0);
      if (a.dt_softplus) dt = dt > 20.0 ? dt : std::log1p(std::exp(dt));
      double acc = a.D.given() ? get(a.D, d * a.D.strides[0]) * x : 0.0;
      for (int64_t k = 0; k < S; ++k) {
        const int64_t o = at3(h, n, d, k);
        const double hk = std::exp(dt * get(a.A, at2(a.A, d, k))) * get(h, o) +
                          dt * get(a.B, at3(a.B, n, g, k)) * x;
        store_from_double(h.data, h.dtype, o, hk);
        acc += get(a.C, at3(a.C, n, g, k)) * hk;
      }
      if (a.z.given()) {
        const double z = get(a.z, at2(a.z, n, d));
        acc *= z / (1.0 + std::exp(-z));
      }
      store_from_double(y.data, y.dtype, at2(y, n, d), acc);
    }
  });
}

}  // namespace linattn
