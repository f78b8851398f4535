// Mamba-2's SSD scan (include/linattn/ssd.hpp) as simple_gla with grouped q/k heads: validate,
// transform dt, run simple_gla's form (its oracle in double for Form::reference), then the
// D skip and the z gate. The backward recomputes the transforms (and the pre-gate output when
// z is given), runs simple_gla's backward on the gated output gradient and takes the chain
// rule back through v = dt x, g = dt A, the clamp and the softplus.
#include "linattn/ssd.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/dtype.hpp"
#include "linattn/error.hpp"
#include "ops/common/elements.hpp"
#include "ops/common/validator.hpp"

namespace linattn {
namespace ssd {
namespace {

constexpr const char* kName = "ssd_scan";

struct Problem {
  int64_t B, T, H, P, G, N;
  std::vector<Sequence> sequences;
  int64_t num_sequences() const { return static_cast<int64_t>(sequences.size()); }
};

std::vector<Validator::Named> inputs(const SsdArgs& a) {
  return {{"x", &a.x}, {"dt", &a.dt}, {"A", &a.A}, {"B", &a.B}, {"C", &a.C}, {"D", &a.D},
          {"z", &a.z}, {"dt_bias", &a.dt_bias}, {"initial_state", &a.initial_state},
          {"cu_seqlens", &a.cu_seqlens}};
}

Problem make_problem(const SsdArgs& a) {
  Validator check(kName);
  for (auto [name, t] : {std::pair{"x", &a.x}, {"dt", &a.dt}, {"A", &a.A}, {"B", &a.B}, {"C", &a.C}}) {
    check.present(name, *t);
    check.floating_input(name, *t);
  }
  check.rank("x", a.x, 4, "[B, T, H, P]");
  check.rank("B", a.B, 4, "[B, T, G, N]");
  Problem p{a.x.shape[0], a.x.shape[1], a.x.shape[2], a.x.shape[3], a.B.shape[2], a.B.shape[3], {}};
  check.shape("dt", a.dt, {p.B, p.T, p.H}, "[B, T, H] (B, T, H from x)");
  check.shape("A", a.A, {p.H}, "[H] (H from x)");
  check.shape("B", a.B, {p.B, p.T, p.G, p.N}, "[B, T, G, N] (B, T from x)");
  check.shape("C", a.C, {p.B, p.T, p.G, p.N}, "[B, T, G, N] (the shape of B)");
  if (p.H % p.G != 0)
    fail(kName, ": the number of groups G = ", p.G, " (B's dimension 2) must divide the number of "
         "heads H = ", p.H);
  if (a.D.given()) {
    check.floating_input("D", a.D);
    if (a.D.ndim == 1) check.shape("D", a.D, {p.H}, "[H]");
    else check.shape("D", a.D, {p.H, p.P}, "[H] or [H, P]");
  }
  check.optional_input("dt_bias", a.dt_bias, {p.H}, "[H]");
  check.optional_input("z", a.z, {p.B, p.T, p.H, p.P}, "[B, T, H, P] (the shape of x)");
  check.range("A", a.A, -std::numeric_limits<double>::infinity(), 0.0,
              "the state decay exp(dt A) must be in [0, 1]");
  if (!(a.dt_min >= 0.0 && a.dt_max >= a.dt_min))
    fail(kName, ": dt_limit must satisfy 0 <= dt_min <= dt_max, got (", a.dt_min, ", ", a.dt_max,
         ")");
  p.sequences = check.sequences(a.cu_seqlens, p.B, p.T);
  check.optional_input("initial_state", a.initial_state, {p.num_sequences(), p.H, p.P, p.N},
                       "[N_seq, H, P, N]");
  return p;
}

// States are [.., P, N] here (mamba's layout) and [.., K = N, V = P] in simple_gla: the same
// memory seen with the last two dimensions swapped.
TensorView swap_last(TensorView t) {
  if (t.given()) {
    std::swap(t.shape[t.ndim - 1], t.shape[t.ndim - 2]);
    std::swap(t.strides[t.ndim - 1], t.strides[t.ndim - 2]);
  }
  return t;
}

template <typename W>
constexpr DType dtype_of() { return std::is_same_v<W, double> ? DType::f64 : DType::f32; }

template <typename W>
W load(const TensorView& t, int64_t offset) {
  if constexpr (std::is_same_v<W, double>) return load_as_double(t.data, t.dtype, offset);
  else return load_as_float(t.data, t.dtype, offset);
}

template <typename W>
struct Buffer {
  std::vector<W> data;
  TensorView view;
  Buffer() = default;
  explicit Buffer(std::initializer_list<int64_t> shape) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    data.assign(static_cast<size_t>(n), W(0));
    view = TensorView::contiguous(data.data(), dtype_of<W>(), shape);
  }
  W& operator[](int64_t i) { return data[static_cast<size_t>(i)]; }
};

double softplus(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }  // torch's threshold
double softplus_grad(double x) { return x > 20.0 ? 1.0 : 1.0 / (1.0 + std::exp(-x)); }

bool clamps(const SsdArgs& a) {
  return a.dt_min != 0.0 || a.dt_max != std::numeric_limits<double>::infinity();
}

// The simple_gla inputs: dt (transformed), v = dt x, g = dt A, q = C and k = B (one row per
// head).
template <typename W>
struct Gla {
  Buffer<W> dt, v, g, q_buf, k_buf;
  TensorView q, k;

  Gla(const Problem& p, const SsdArgs& a)
      : dt({p.B, p.T, p.H}), v({p.B, p.T, p.H, p.P}), g({p.B, p.T, p.H}) {
    const bool clamp = clamps(a);
    const int64_t rows = p.B * p.T;
    int64_t bad_row = -1;
#pragma omp parallel for schedule(static) reduction(max : bad_row)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t b = r / p.T, t = r % p.T;
      for (int64_t h = 0; h < p.H; ++h) {
        double d = load_as_double(a.dt.data, a.dt.dtype, at3(a.dt, b, t, h));
        if (a.dt_bias.given()) d += load_as_double(a.dt_bias.data, a.dt_bias.dtype, h * a.dt_bias.strides[0]);
        if (a.dt_softplus) d = softplus(d);
        if (clamp) d = std::fmin(std::fmax(d, a.dt_min), a.dt_max);
        if (!(d >= 0.0) || std::isinf(d)) bad_row = std::max(bad_row, r * p.H + h);
        const W dw = static_cast<W>(d);
        const int64_t i = r * p.H + h;
        dt[i] = dw;
        g[i] = dw * load<W>(a.A, h * a.A.strides[0]);
        for (int64_t j = 0; j < p.P; ++j) v[i * p.P + j] = dw * load<W>(a.x, at4(a.x, b, t, h, j));
      }
    }
    if (bad_row >= 0) {
      const int64_t r = bad_row / p.H, h = bad_row % p.H;
      fail(kName, ": dt after dt_bias", a.dt_softplus ? ", softplus" : "",
           clamps(a) ? " and dt_limit" : "", " must be finite and >= 0 (a step size), got ",
           dt[bad_row], " at [", r / p.T, ", ", r % p.T, ", ", h, "]",
           a.dt_softplus ? "" : "; mamba's models pass dt_softplus=True");
    }
    q = expanded(a.C, q_buf, p);
    k = expanded(a.B, k_buf, p);
  }

  // One q/k row per head, contiguous: simple_gla's grouped heads (one q/k head for many value
  // heads) and strided rows (transformers hands B and C over as views into the conv output,
  // often channel-first) run several times slower than the copy costs (measured: 9x at
  // mamba2-130m's H = 24, G = 1, T = 1024).
  static TensorView expanded(const TensorView& in, Buffer<W>& buf, const Problem& p) {
    buf = Buffer<W>({p.B, p.T, p.H, p.N});
    const int64_t rows = p.B * p.T, heads_per_group = p.H / p.G;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t gi = 0; gi < p.G; ++gi) {
        // Each group's row read once (strided reads are the cost), then copied to its heads.
        W* first = &buf[(r * p.H + gi * heads_per_group) * p.N];
        for (int64_t n = 0; n < p.N; ++n) first[n] = load<W>(in, at4(in, r / p.T, r % p.T, gi, n));
        for (int64_t h = 1; h < heads_per_group; ++h)
          std::copy(first, first + p.N, first + h * p.N);
      }
    return buf.view;
  }

  OpArgs args(const SsdArgs& a, bool output_final_state) const {
    OpArgs o;
    o.q = q;
    o.k = k;
    o.v = v.view;
    o.g = g.view;
    o.initial_state = swap_last(a.initial_state);
    o.cu_seqlens = a.cu_seqlens;
    o.scale = 1.0;
    o.output_final_state = output_final_state;
    return o;
  }
};

template <typename W>
W skip(const SsdArgs& a, int64_t h, int64_t j) {
  if (!a.D.given()) return W(0);
  return a.D.ndim == 1 ? load<W>(a.D, h * a.D.strides[0]) : load<W>(a.D, at2(a.D, h, j));
}

template <typename W>
W sigmoid(W x) { return W(1) / (W(1) + std::exp(-x)); }

// The simple_gla form a form of the SSD runs on, and whether it works in double.
struct Plan {
  Form gla_forward, gla_backward;
  bool exact;
};
Plan plan(Form form, const SsdArgs& a) {
  form_name(form);  // throws for an id out of range
  if (form == Form::reference || a.x.dtype == DType::f64)
    return {Form::reference, Form::reference, true};
  return {form, Form::chunk, false};
}

// body(b, t, h, j, i) for every element of a [B, T, H, P] tensor (i: its contiguous index),
// in parallel over tokens.
template <typename Body>
void for_each_element(const Problem& p, Body&& body) {
  const int64_t rows = p.B * p.T;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 0; h < p.H; ++h)
      for (int64_t j = 0; j < p.P; ++j) body(r / p.T, r % p.T, h, j, (r * p.H + h) * p.P + j);
}

// simple_gla's [N_seq, H, N, P] states into a contiguous [N_seq, H, P, N] output.
template <typename W>
void store_states(const Problem& p, Buffer<W>& states, const TensorView& out) {
  const int64_t S = p.num_sequences();
  for (int64_t s = 0; s < S; ++s)
    for (int64_t h = 0; h < p.H; ++h)
      for (int64_t j = 0; j < p.P; ++j)
        for (int64_t n = 0; n < p.N; ++n)
          store_from_double(out.data, out.dtype, ((s * p.H + h) * p.P + j) * p.N + n,
                            static_cast<double>(states[((s * p.H + h) * p.N + n) * p.P + j]));
}

// o = C S (pre-skip, pre-gate) and the final state in simple_gla's layout.
template <typename W>
Buffer<W> gla_forward(const Problem& p, const SsdArgs& a, const Gla<W>& gla, Form form,
                      Buffer<W>* state) {
  Buffer<W> o({p.B, p.T, p.H, p.P});
  OpOutputs out{o.view, state ? state->view : TensorView{}};
  forward(Op::simple_gla, form, gla.args(a, state != nullptr), out);
  return o;
}

template <typename W>
void run_forward(const Problem& p, const Plan& pl, const SsdArgs& a, const SsdOutputs& out) {
  Gla<W> gla(p, a);
  Buffer<W> state;
  if (a.output_final_state) state = Buffer<W>({p.num_sequences(), p.H, p.N, p.P});
  Buffer<W> o = gla_forward(p, a, gla, pl.gla_forward, a.output_final_state ? &state : nullptr);
  for_each_element(p, [&](int64_t b, int64_t t, int64_t h, int64_t j, int64_t i) {
    W y = o[i] + skip<W>(a, h, j) * load<W>(a.x, at4(a.x, b, t, h, j));
    if (a.z.given()) {
      const W z = load<W>(a.z, at4(a.z, b, t, h, j));
      y *= z * sigmoid(z);
    }
    store_from_double(out.y.data, out.y.dtype, i, static_cast<double>(y));
  });
  if (a.output_final_state) store_states(p, state, out.final_state);
}

template <typename W>
void run_backward(const Problem& p, const Plan& pl, const SsdArgs& a, const SsdGradOutputs& go,
                  const SsdGrads& grads) {
  Gla<W> gla(p, a);
  const int64_t rows = p.B * p.T;
  // The gradient reaching C S: dy through the gate (which needs the pre-gate output).
  Buffer<W> dy0({p.B, p.T, p.H, p.P});
  Buffer<W> o;
  if (a.z.given()) o = gla_forward<W>(p, a, gla, pl.gla_forward, nullptr);
  for_each_element(p, [&](int64_t b, int64_t t, int64_t h, int64_t j, int64_t i) {
    const W dy = load<W>(go.dy, at4(go.dy, b, t, h, j));
    if (!a.z.given()) {
      dy0[i] = dy;
      return;
    }
    const W z = load<W>(a.z, at4(a.z, b, t, h, j)), sz = sigmoid(z);
    const W y0 = o[i] + skip<W>(a, h, j) * load<W>(a.x, at4(a.x, b, t, h, j));
    dy0[i] = dy * z * sz;
    if (grads.dz.given())
      store_from_double(grads.dz.data, grads.dz.dtype, i,
                        static_cast<double>(dy * y0 * sz * (W(1) + z * (W(1) - sz))));
  });
  Buffer<W> dq({p.B, p.T, p.H, p.N}), dk({p.B, p.T, p.H, p.N}), dv({p.B, p.T, p.H, p.P}),
      dg({p.B, p.T, p.H}), ds0;
  if (a.initial_state.given()) ds0 = Buffer<W>({p.num_sequences(), p.H, p.N, p.P});
  backward(Op::simple_gla, pl.gla_backward, gla.args(a, false),
           OpGradOutputs{dy0.view, swap_last(go.dfinal_state)},
           OpGrads{dq.view, dk.view, dv.view, dg.view, {}, {}, ds0.view, {}, {}});

  // dC, dB: the heads of each group summed in a fixed order.
  const int64_t heads_per_group = p.H / p.G;
  for (auto [grad, buf] : {std::pair{&grads.dC, &dq}, {&grads.dB, &dk}})
    if (grad->given()) {
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t gi = 0; gi < p.G; ++gi)
          for (int64_t n = 0; n < p.N; ++n) {
            W sum = 0;
            for (int64_t h = gi * heads_per_group; h < (gi + 1) * heads_per_group; ++h)
              sum += (*buf)[(r * p.H + h) * p.N + n];
            store_from_double(grad->data, grad->dtype, (r * p.G + gi) * p.N + n,
                              static_cast<double>(sum));
          }
    }
  if (grads.dinitial_state.given()) store_states(p, ds0, grads.dinitial_state);
  // x, dt (through v = dt x and g = dt A, the clamp and the softplus) per token and head;
  // the per-head sums (dA, ddt_bias, dD) in double, per head in a fixed order.
  const bool clamp = clamps(a);
  Buffer<double> ddt_pre({p.B, p.T, p.H});
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / p.T, t = r % p.T;
    for (int64_t h = 0; h < p.H; ++h) {
      const int64_t i = r * p.H + h;
      const W dtw = gla.dt[i];
      double ddt = static_cast<double>(dg[i]) * static_cast<double>(load<W>(a.A, h * a.A.strides[0]));
      for (int64_t j = 0; j < p.P; ++j) {
        const W x = load<W>(a.x, at4(a.x, b, t, h, j));
        const W dvij = dv[i * p.P + j];
        ddt += static_cast<double>(dvij) * static_cast<double>(x);
        if (grads.dx.given())
          store_from_double(grads.dx.data, grads.dx.dtype, i * p.P + j,
                            static_cast<double>(dvij * dtw + skip<W>(a, h, j) * dy0[i * p.P + j]));
      }
      double pre = load_as_double(a.dt.data, a.dt.dtype, at3(a.dt, b, t, h));
      if (a.dt_bias.given()) pre += load_as_double(a.dt_bias.data, a.dt_bias.dtype, h * a.dt_bias.strides[0]);
      if (clamp) {
        const double sp = a.dt_softplus ? softplus(pre) : pre;
        if (sp < a.dt_min || sp > a.dt_max) ddt = 0.0;
      }
      if (a.dt_softplus) ddt *= softplus_grad(pre);
      ddt_pre[i] = ddt;
      if (grads.ddt.given()) store_from_double(grads.ddt.data, grads.ddt.dtype, i, ddt);
    }
  }
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < p.H; ++h) {
    double dA = 0.0, dbias = 0.0;
    std::vector<double> dD(static_cast<size_t>(p.P), 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = r * p.H + h;
      dA += static_cast<double>(dg[i]) * static_cast<double>(gla.dt[i]);
      dbias += ddt_pre[i];
      if (grads.dD.given())
        for (int64_t j = 0; j < p.P; ++j)
          dD[static_cast<size_t>(j)] += static_cast<double>(dy0[i * p.P + j]) *
              load_as_double(a.x.data, a.x.dtype, at4(a.x, r / p.T, r % p.T, h, j));
    }
    if (grads.dA.given()) store_from_double(grads.dA.data, grads.dA.dtype, h, dA);
    if (grads.ddt_bias.given()) store_from_double(grads.ddt_bias.data, grads.ddt_bias.dtype, h, dbias);
    if (grads.dD.given()) {
      if (a.D.ndim == 1) {
        double sum = 0.0;
        for (double d : dD) sum += d;
        store_from_double(grads.dD.data, grads.dD.dtype, h, sum);
      } else {
        for (int64_t j = 0; j < p.P; ++j)
          store_from_double(grads.dD.data, grads.dD.dtype, h * p.P + j, dD[static_cast<size_t>(j)]);
      }
    }
  }
}

}  // namespace
}  // namespace ssd

SsdShapes ssd_output_shapes(const SsdArgs& args) {
  const ssd::Problem p = ssd::make_problem(args);
  SsdShapes s{{p.B, p.T, p.H, p.P}, {}};
  if (args.output_final_state) s.final_state = {p.num_sequences(), p.H, p.P, p.N};
  return s;
}

void ssd_forward(Form form, const SsdArgs& args, const SsdOutputs& out) {
  const ssd::Problem p = ssd::make_problem(args);
  const ssd::Plan pl = ssd::plan(form, args);
  Validator check(ssd::kName);
  check.output("y", out.y, "x", args.x, {p.B, p.T, p.H, p.P}, "[B, T, H, P]");
  check.state_output("final_state", out.final_state, args.output_final_state,
                     {p.num_sequences(), p.H, p.P, p.N}, "[N_seq, H, P, N]");
  if (args.output_final_state && out.final_state.dtype == DType::bf16)
    fail(ssd::kName, ": final_state must be float32 or float64, got bfloat16");
  check.no_overlaps({{"y", &out.y}, {"final_state", &out.final_state}}, ssd::inputs(args));
  if (pl.exact)
    ssd::run_forward<double>(p, pl, args, out);
  else
    ssd::run_forward<float>(p, pl, args, out);
}

void ssd_backward(Form form, const SsdArgs& args, const SsdGradOutputs& grad_out,
                  const SsdGrads& grads) {
  const ssd::Problem p = ssd::make_problem(args);
  const ssd::Plan pl = ssd::plan(form, args);
  Validator check(ssd::kName);
  check.input("dy", grad_out.dy, {p.B, p.T, p.H, p.P}, "[B, T, H, P]");
  check.optional_input("dfinal_state", grad_out.dfinal_state, {p.num_sequences(), p.H, p.P, p.N},
                       "[N_seq, H, P, N]");
  check.gradient("dx", grads.dx, "x", args.x);
  check.gradient("ddt", grads.ddt, "dt", args.dt);
  check.gradient("dA", grads.dA, "A", args.A);
  check.gradient("dB", grads.dB, "B", args.B);
  check.gradient("dC", grads.dC, "C", args.C);
  check.gradient("dD", grads.dD, "D", args.D);
  check.gradient("dz", grads.dz, "z", args.z);
  check.gradient("ddt_bias", grads.ddt_bias, "dt_bias", args.dt_bias);
  check.gradient("dinitial_state", grads.dinitial_state, "initial_state", args.initial_state);
  std::vector<Validator::Named> read = ssd::inputs(args);
  read.push_back({"dy", &grad_out.dy});
  read.push_back({"dfinal_state", &grad_out.dfinal_state});
  check.no_overlaps({{"dx", &grads.dx}, {"ddt", &grads.ddt}, {"dA", &grads.dA}, {"dB", &grads.dB},
                     {"dC", &grads.dC}, {"dD", &grads.dD}, {"dz", &grads.dz},
                     {"ddt_bias", &grads.ddt_bias}, {"dinitial_state", &grads.dinitial_state}},
                    read);
  if (pl.exact)
    ssd::run_backward<double>(p, pl, args, grad_out, grads);
  else
    ssd::run_backward<float>(p, pl, args, grad_out, grads);
}

}  // namespace linattn
