#include "ops/conv1d/check.hpp"

#include <algorithm>
#include <random>
#include <sstream>

#include "check/family.hpp"
#include "linattn/error.hpp"

namespace linattn::conv1d {

using check::Buffer;
using check::rel_error;

std::string Case::describe() const {
  std::ostringstream s;
  s << "B=" << B << " T=" << T << " D=" << D << " W=" << W;
  if (!seqlens.empty()) s << " varlen(" << seqlens.size() << ")";
  if (initial_state) s << " h0";
  if (!bias) s << " no-bias";
  if (residual) s << " residual";
  if (silu) s << " silu";
  return s.str();
}

Conv1dArgs Inputs::args(const Case& c, bool output_final_state) const {
  Conv1dArgs a;
  a.x = x.view();
  a.weight = weight.view();
  a.bias = bias.view();
  a.residual = residual.view();
  a.initial_state = initial_state.view();
  a.cu_seqlens = cu_seqlens.view();
  a.output_final_state = output_final_state;
  a.activation = c.silu ? Activation::silu : Activation::none;
  return a;
}

Inputs Inputs::to(DType dtype) const {
  return {x.to(dtype), weight.to(dtype), bias.to(dtype), residual.to(dtype), initial_state.to(dtype),
          cu_seqlens};
}

Inputs make_inputs(const Case& c, DType dtype) {
  std::mt19937_64 rng(c.seed * 0x9E3779B97F4A7C15ull + 0xC0);
  Inputs in;
  in.x = check::random_buffer(dtype, {c.B, c.T, c.D}, rng, -2, 2);
  // fla's init scale: weights ~ 1/sqrt(W) keep pre-activations O(1).
  const double w = 1.0 / std::sqrt(static_cast<double>(c.W));
  in.weight = check::random_buffer(dtype, {c.D, c.W}, rng, -w, w);
  if (c.bias) in.bias = check::random_buffer(dtype, {c.D}, rng, -0.5, 0.5);
  if (c.residual) in.residual = check::random_buffer(dtype, {c.B, c.T, c.D}, rng, -1, 1);
  if (c.initial_state) in.initial_state = check::random_buffer(dtype, {c.N(), c.D, c.W}, rng, -2, 2);
  if (!c.seqlens.empty()) in.cu_seqlens = check::offsets_of(c.seqlens);
  return in;
}

Outputs run_forward(const Case& c, const Inputs& in, Form form) {
  const DType dtype = in.x.dtype();
  Outputs out{Buffer(dtype, {c.B, c.T, c.D}), Buffer(dtype, {c.N(), c.D, c.W})};
  causal_conv1d_forward(form, in.args(c, true), {out.y.view(), out.final_state.view()});
  return out;
}

Grads run_backward(const Case& c, const Inputs& in, Form form, const Buffer& dy,
                   const Buffer& dfinal_state) {
  auto like = [](const Buffer& b) { return b.given() ? Buffer(b.dtype(), b.shape()) : Buffer(); };
  Grads g{like(in.x), like(in.weight), like(in.bias), like(in.residual), like(in.initial_state)};
  causal_conv1d_backward(form, in.args(c, false), {dy.view(), dfinal_state.view()},
                         {g.dx.view(), g.dweight.view(), g.dbias.view(), g.dresidual.view(),
                          g.dinitial_state.view()});
  return g;
}

namespace {

double outputs_error(const Outputs& got, const Outputs& want) {
  return std::max(rel_error(got.y, want.y), rel_error(got.final_state, want.final_state));
}

double grads_error(const Grads& got, const Grads& want) {
  double worst = 0;
  for (auto [a, b] : {std::pair{&got.dx, &want.dx}, {&got.dweight, &want.dweight},
                      {&got.dbias, &want.dbias}, {&got.dresidual, &want.dresidual},
                      {&got.dinitial_state, &want.dinitial_state}})
    if (b->given()) worst = std::max(worst, rel_error(*a, *b));
  return worst;
}

// Random upstream gradients for y and final_state.
std::pair<Buffer, Buffer> upstream(const Case& c, uint64_t salt) {
  std::mt19937_64 rng(c.seed + salt);
  Buffer dy = check::random_buffer(DType::f64, {c.B, c.T, c.D}, rng, -1, 1);
  Buffer df = check::random_buffer(DType::f64, {c.N(), c.D, c.W}, rng, -1, 1);
  return {std::move(dy), std::move(df)};
}

// Sequence-local inputs: tokens [start, start + len) of row b with `state` as initial state.
Inputs piece(const Inputs& in, int64_t b, int64_t start, int64_t len, const Buffer& state) {
  return {check::slice_tokens(in.x, b, start, len, 1), in.weight, in.bias,
          check::slice_tokens(in.residual, b, start, len, 1), state, Buffer()};
}

Outputs oracle(const Case& c, const Inputs& in) { return run_forward(c, in, Form::reference); }

}  // namespace

double finite_difference_error(const Case& c) {
  Inputs in = make_inputs(c, DType::f64);
  const std::pair<Buffer, Buffer> up = upstream(c, 17);
  // Named references, not a structured binding: the lambda below captures them (clang < 16).
  const Buffer& dy = up.first;
  const Buffer& df = up.second;
  const Grads g = run_backward(c, in, Form::reference, dy, df);
  auto loss = [&] {
    const Outputs out = run_forward(c, in, Form::reference);
    return check::dot(out.y, dy) + check::dot(out.final_state, df);
  };
  std::mt19937_64 rng(c.seed + 23);
  return check::finite_difference_error({{&in.x, &g.dx}, {&in.weight, &g.dweight}, {&in.bias, &g.dbias},
                                         {&in.residual, &g.dresidual}, {&in.initial_state, &g.dinitial_state}},
                                        loss, rng);
}

double varlen_error(const Case& c) {
  if (c.seqlens.empty()) fail("conv1d varlen_error: the case has no seqlens");
  return check::varlen_error(c, make_inputs(c, DType::f64), oracle, piece);
}

double split_run_error(const Case& c) {
  if (!c.seqlens.empty() || c.T < 2) fail("conv1d split_run_error: needs a fixed-length case with T >= 2");
  return check::split_run_error(c, make_inputs(c, DType::f64), oracle, piece);
}

double decode_error(const Case& c, DType dtype) {
  if (!c.seqlens.empty()) fail("conv1d decode_error: needs a fixed-length case");
  const Inputs low = make_inputs(c, dtype);
  const Outputs want = run_forward(c, low.to(DType::f64), Form::reference);
  Buffer cache = low.initial_state.given() ? low.initial_state : Buffer(dtype, {c.B, c.D, c.W});
  Outputs got{Buffer(dtype, {c.B, c.T, c.D}), cache};
  for (int64_t t = 0; t < c.T; ++t) {
    Conv1dUpdateArgs a;
    auto token = [&](const Buffer& b) {  // [B, T, D] -> row t as a [B, D] view
      if (!b.given()) return TensorView{};
      TensorView v = b.view();
      v.data = static_cast<char*>(v.data) + t * v.strides[1] * static_cast<int64_t>(dtype_size(v.dtype));
      v.ndim = 2;
      v.shape = {c.B, c.D};
      v.strides = {c.T * c.D, 1};
      return v;
    };
    a.x = token(low.x);
    a.cache = got.final_state.view();
    a.weight = low.weight.view();
    a.bias = low.bias.view();
    a.residual = token(low.residual);
    a.activation = c.silu ? Activation::silu : Activation::none;
    Buffer y(dtype, {c.B, c.D});  // outputs are contiguous
    causal_conv1d_update(a, y.view());
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t d = 0; d < c.D; ++d) got.y.set((b * c.T + t) * c.D + d, y.get(b * c.D + d));
  }
  return outputs_error(got, want);
}

double fast_forward_error(const Case& c, DType dtype) {
  const Inputs low = make_inputs(c, dtype);
  return outputs_error(run_forward(c, low, Form::chunk), run_forward(c, low.to(DType::f64), Form::reference));
}

double fast_backward_error(const Case& c, DType dtype) {
  const Inputs low = make_inputs(c, dtype);
  const auto [dy, df] = upstream(c, 29);
  const Grads want = run_backward(c, low.to(DType::f64), Form::reference, dy, df);
  return grads_error(run_backward(c, low, Form::chunk, dy.to(dtype), df.to(dtype)), want);
}

Case Case::of(int64_t B, int64_t T, int64_t D, int64_t W) {
  Case c;
  c.B = B;
  c.T = T;
  c.D = D;
  c.W = W;
  return c;
}

std::vector<Case> builtin_cases() {
  std::vector<Case> cases;
  auto add = [&](Case c) {
    c.seed = cases.size() + 1;
    cases.push_back(c);
  };
  Case c = Case::of(2, 37, 70, 4);  // two channel blocks, one partial
  c.silu = true;
  add(c);
  add(Case::of(1, 1, 5, 4));  // T < W: the state carries through
  c = Case::of(2, 3, 3, 4);
  c.initial_state = false;
  c.silu = true;
  add(c);
  c = Case::of(1, 20, 9, 2);
  c.bias = false;
  c.residual = true;
  add(c);
  c = Case::of(1, 16, 6, 3);
  c.residual = c.silu = true;
  add(c);
  add(Case::of(1, 12, 4, 1));
  c = Case::of(1, 200, 67, 4);  // several token blocks
  c.silu = true;
  add(c);
  c = Case::of(1, 76, 66, 4);
  c.seqlens = {1, 64, 2, 9};
  c.residual = c.silu = true;
  add(c);
  c = Case::of(1, 10, 5, 3);
  c.seqlens = {4, 6};
  c.initial_state = false;
  add(c);
  return cases;
}

std::vector<check::Job> jobs(DType dtype) {
  return check::family_jobs<Case>(kName, dtype, builtin_cases(),
                                  {finite_difference_error, varlen_error, split_run_error, decode_error,
                                   fast_forward_error, fast_backward_error});
}

}  // namespace linattn::conv1d
