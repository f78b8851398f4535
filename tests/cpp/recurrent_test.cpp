// The fused recurrent (decode) form of every op that has one (src/ops/gla/recurrent.cpp,
// src/ops/delta/recurrent.cpp) against the fp64 oracle, and the properties the decode path
// relies on: a chain of T = 1 calls (state fed back in place) is one T-token call, and any
// input strides give the same result.
#include <gtest/gtest.h>

#include <numeric>

#include "check/harness.hpp"
#include "core/dtype.hpp"
#include "linattn/ops.hpp"

namespace linattn::check {
namespace {

std::vector<Op> recurrent_ops() {
  std::vector<Op> ops;
  for (int i = 0; i < kNumOps; ++i)
    if (has_form(static_cast<Op>(i), Form::recurrent, false)) ops.push_back(static_cast<Op>(i));
  return ops;
}
const std::vector<Op> kOps = recurrent_ops();

// The builtin cases (extreme gates, T = 4096, n_h = 1..4, varlen, normalize, ...) plus shapes
// they miss: more grouped value heads, and V = 251 so that every
// column path of the kernel runs (full blocks of every width, then a scalar tail).
std::vector<Case> cases(Op op) {
  std::vector<Case> out = builtin_cases(op);
  Case c = out.front();
  c.H = 2;
  c.HV = 8;
  c.seed = 101;
  out.push_back(c);
  c.B = 1;
  c.HV = 2;
  c.K = 16;
  c.V = 251;
  c.T = 5;
  c.l2norm = op_spec(op).takes_l2norm;
  c.seed = 102;
  out.push_back(c);
  return out;
}

TEST(Recurrent, MatchesOracleFloat32) {
  for (Op op : kOps)
    for (const Case& c : cases(op))
      EXPECT_LE(form_forward_error(c, DType::f32, Form::recurrent), 1e-5) << op_name(op) << " " << c.describe();
}

TEST(Recurrent, MatchesOracleBfloat16) {
  for (Op op : kOps)
    for (const Case& c : cases(op))
      EXPECT_LE(form_forward_error(c, DType::bf16, Form::recurrent), 1e-2) << op_name(op) << " " << c.describe();
}

TEST(Recurrent, RegisteredForwardOnly) {
  for (Op op : kOps) {
    EXPECT_TRUE(has_form(op, Form::recurrent, false)) << op_name(op);
    EXPECT_FALSE(has_form(op, Form::recurrent, true)) << op_name(op);
  }
}

// Decode: 20 calls of one token each, final_state written over initial_state (the same
// buffer, as an engine updates its cache), equal one T = 20 call bitwise: the kernel does the
// same fp32 operations in the same order either way. (normalize is left out: fla restarts its
// key sum per call, so the two are different computations by definition.)
TEST(Recurrent, DecodeChainEqualsOneCall) {
  for (Op op : kOps) {
    for (int32_t n_h : {1, 3}) {
      if (n_h > 1 && op != Op::delta_product) continue;
      Case c = builtin_cases(op).front();
      c.B = 2;
      c.T = 20;
      c.H = 2;
      c.HV = 4;
      c.K = 16;
      c.V = 24;
      c.n_h = n_h;
      c.l2norm = op_spec(op).takes_l2norm;
      const Inputs in = make_inputs(c, DType::f32);
      const Outputs full = run_forward(c, in, Form::recurrent);

      Buffer state = in.initial_state;  // updated in place by every step
      for (int64_t t = 0; t < c.T; ++t) {
        OpArgs a = in.args(c);
        for (TensorView* view : {&a.q, &a.k, &a.v, &a.g, &a.gk, &a.beta, &a.a, &a.b}) {
          if (!view->given()) continue;
          const int64_t rows = view == &a.k || view == &a.v || view == &a.beta ? n_h : 1;
          view->data = static_cast<char*>(view->data) + t * rows * view->strides[1] * dtype_size(view->dtype);
          view->shape[1] = rows;
        }
        a.initial_state = state.view();
        Buffer o(DType::f32, {c.B, 1, c.HV, c.V});
        forward(op, Form::recurrent, a, {o.view(), state.view()});
        for (int64_t b = 0; b < c.B; ++b)
          for (int64_t i = 0; i < c.HV * c.V; ++i)
            ASSERT_EQ(o.get(b * c.HV * c.V + i), full.o.get((b * c.T + t) * c.HV * c.V + i))
                << op_name(op) << " n_h " << n_h << " token " << t;
      }
      EXPECT_EQ(rel_error(state, full.final_state), 0.0) << op_name(op) << " n_h " << n_h;
    }
  }
}

// A copy of `b` in non-contiguous memory: dims 1 and 2 swapped (a transposed [B, H, T, D]
// tensor, or [N, K, HV, V] for states), the innermost dim read with element step `step` and
// each of its rows padded by one element.
struct Strided {
  Buffer storage;
  TensorView view;
};
Strided strided(const Buffer& b, int64_t step) {
  if (!b.given()) return {};
  const auto& shape = b.shape();
  const int rank = static_cast<int>(shape.size());
  std::vector<int> order(rank);  // memory order, outermost first
  std::iota(order.begin(), order.end(), 0);
  std::swap(order[1], order[2]);
  TensorView v;
  v.dtype = b.dtype();
  v.ndim = rank;
  int64_t stride = step;  // of the innermost memory dim; ends as the storage size
  for (int i = rank - 1; i >= 0; --i) {
    const int dim = order[i];
    v.shape[dim] = shape[dim];
    v.strides[dim] = stride;
    stride = i == rank - 1 ? shape[dim] * step + 1 : stride * shape[dim];
  }
  Strided s{Buffer(b.dtype(), {stride}), {}};
  v.data = s.storage.view().data;
  std::vector<int64_t> index(rank, 0);
  for (int64_t flat = 0; flat < b.numel(); ++flat) {
    int64_t offset = 0;
    for (int d = 0; d < rank; ++d) offset += index[d] * v.strides[d];
    s.storage.set(offset, b.get(flat));
    for (int d = rank - 1; d >= 0 && ++index[d] == shape[d]; --d) index[d] = 0;
  }
  s.view = v;
  return s;
}

// Strided inputs give bitwise the contiguous result. Step 1 keeps f32 state rows readable in
// place (row stride != V); step 2 sends the state through the widening loader, and there the
// final state is requested as float64 to cover its generic store too.
TEST(Recurrent, StridedInputsMatchContiguous) {
  for (Op op : kOps) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      for (int64_t step : {1, 2}) {
        Case c = builtin_cases(op).front();
        c.H = 2;
        c.HV = 4;
        c.V = 20;
        c.l2norm = op_spec(op).takes_l2norm;
        const Inputs in = make_inputs(c, dtype);
        const Outputs want = run_forward(c, in, Form::recurrent);
        const Strided q = strided(in.q, step), k = strided(in.k, step), v = strided(in.v, step),
                      g = strided(in.g, step), gk = strided(in.gk, step),
                      beta = strided(in.beta, step), h0 = strided(in.initial_state, step),
                      ta = strided(in.a, step), tb = strided(in.b, step);
        OpArgs a = in.args(c);
        a.q = q.view;
        a.k = k.view;
        a.v = v.view;
        a.g = g.view;
        a.gk = gk.view;
        a.beta = beta.view;
        a.a = ta.view;
        a.b = tb.view;
        a.initial_state = h0.view;
        Buffer o(dtype, want.o.shape());
        Buffer fs(step == 1 ? DType::f32 : DType::f64, want.final_state.shape());
        forward(op, Form::recurrent, a, {o.view(), fs.view()});
        const std::string what = std::string(op_name(op)) + " " + dtype_name(dtype) + " step " + std::to_string(step);
        EXPECT_EQ(rel_error(o, want.o), 0.0) << what;
        EXPECT_EQ(rel_error(fs, want.final_state), 0.0) << what;
      }
    }
  }
}

}  // namespace
}  // namespace linattn::check
