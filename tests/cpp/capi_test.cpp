// The C API (linattn.h): it must give the C++ API's results bit for bit, and turn every bad
// input into a status code plus a message naming the problem, never an exception or UB (the
// bad inputs themselves are rows of tests/bad_inputs/catalogue.txt: bad_inputs_test.cpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "linattn/linattn.h"
#include "linattn/ops.hpp"

namespace {

constexpr linattn_op kOp = LINATTN_OP_GATED_DELTA_RULE;
constexpr linattn_form kRef = LINATTN_FORM_REFERENCE;

// A float32 buffer with its shape, viewable through both APIs.
struct Buffer {
  std::vector<int64_t> shape;
  std::vector<float> data;

  Buffer(std::vector<int64_t> dims, float fill = 0.0f) : shape(std::move(dims)) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    data.assign(n, fill);
  }
  linattn_tensor c() {
    return linattn_tensor_contiguous(data.data(), LINATTN_DTYPE_F32,
                                     static_cast<int32_t>(shape.size()), shape.data());
  }
  linattn::TensorView cpp() {
    return linattn::TensorView::contiguous_from(data.data(), linattn::DType::f32, shape);
  }
};

// Batch layout (B rows of T tokens) or, with cu_seqlens, one row of T tokens split into
// sequences.
struct Layout {
  int64_t B = 2, T = 5;
  std::vector<int64_t> cu_seqlens;  // empty: not given
};

// Everything written by one forward + backward, allocated with the shapes the op expects.
struct Results {
  Buffer o, final_state, dq, dk, dv, dg, dbeta, dinitial_state;

  Results(int64_t B, int64_t T, int64_t N, int64_t H, int64_t HV, int64_t K, int64_t V)
      // NaN fill: a result the API forgot to write cannot look like a valid one.
      : o({B, T, HV, V}, NAN), final_state({N, HV, K, V}, NAN), dq({B, T, H, K}, NAN),
        dk({B, T, H, K}, NAN), dv({B, T, HV, V}, NAN), dg({B, T, HV}, NAN),
        dbeta({B, T, HV}, NAN), dinitial_state({N, HV, K, V}, NAN) {}
  std::vector<Buffer*> all() {
    return {&o, &final_state, &dq, &dk, &dv, &dg, &dbeta, &dinitial_state};
  }
};

// gated_delta_rule with every input it takes (grouped value heads HV = 2H, g <= 0, beta in
// [0, 2], initial state, final state, l2norm), its upstream gradients, the C views of all of
// them, and one set of results written through the C API.
struct Problem {
  static constexpr int64_t H = 2, HV = 4, K = 4, V = 3;
  int64_t B, T, N;
  std::vector<int64_t> cu_seqlens;
  Buffer q, k, v, g, beta, initial_state, d_o, dfinal_state;
  Results out;
  linattn_args args;
  linattn_tensor o_view, final_state_view, d_o_view, dfinal_state_view;
  linattn_grads grads;

  explicit Problem(const Layout& s = {})
      : B(s.B), T(s.T), N(s.cu_seqlens.empty() ? s.B : int64_t(s.cu_seqlens.size()) - 1),
        cu_seqlens(s.cu_seqlens), q({B, T, H, K}), k({B, T, H, K}), v({B, T, HV, V}),
        g({B, T, HV}), beta({B, T, HV}), initial_state({N, HV, K, V}), d_o({B, T, HV, V}),
        dfinal_state({N, HV, K, V}), out(B, T, N, H, HV, K, V) {
    std::mt19937 rng(1234);
    std::normal_distribution<float> normal;
    std::uniform_real_distribution<float> unit;
    for (Buffer* b : {&q, &k, &v, &initial_state, &d_o, &dfinal_state})
      for (float& x : b->data) x = normal(rng);
    for (float& x : g.data) x = -0.5f * unit(rng);  // log decay, <= 0
    for (float& x : beta.data) x = 2.0f * unit(rng);  // in [0, 2]

    linattn_args_init(&args);
    args.q = q.c();
    args.k = k.c();
    args.v = v.c();
    args.g = g.c();
    args.beta = beta.c();
    args.initial_state = initial_state.c();
    if (!cu_seqlens.empty()) {
      const int64_t n = static_cast<int64_t>(cu_seqlens.size());
      args.cu_seqlens = linattn_tensor_contiguous(cu_seqlens.data(), LINATTN_DTYPE_I64, 1, &n);
    }
    args.output_final_state = 1;
    args.use_qk_l2norm_in_kernel = 1;  // keeps beta near 2 stable with unnormalised k

    o_view = out.o.c();
    final_state_view = out.final_state.c();
    d_o_view = d_o.c();
    dfinal_state_view = dfinal_state.c();
    grads = {out.dq.c(), out.dk.c(), out.dv.c(), out.dg.c(), {}, out.dbeta.c(),
             out.dinitial_state.c()};
  }
  Problem(const Problem&) = delete;  // the views point into this object's buffers
  Problem& operator=(const Problem&) = delete;

  linattn_status forward(linattn_form form = kRef) {
    return linattn_forward(kOp, form, &args, &o_view, &final_state_view);
  }
  linattn_status backward(linattn_form form = kRef) {
    return linattn_backward(kOp, form, &args, &d_o_view, &dfinal_state_view, &grads);
  }

  // The same computation through the C++ API, written into `r`.
  void run_cpp(Results& r) {
    linattn::OpArgs a;
    a.q = q.cpp();
    a.k = k.cpp();
    a.v = v.cpp();
    a.g = g.cpp();
    a.beta = beta.cpp();
    a.initial_state = initial_state.cpp();
    if (!cu_seqlens.empty())
      a.cu_seqlens = linattn::TensorView::contiguous_from(
          cu_seqlens.data(), linattn::DType::i64, std::vector<int64_t>{int64_t(cu_seqlens.size())});
    a.output_final_state = true;
    a.use_qk_l2norm_in_kernel = true;
    const auto op = static_cast<linattn::Op>(kOp);
    const auto form = static_cast<linattn::Form>(kRef);
    linattn::forward(op, form, a, {r.o.cpp(), r.final_state.cpp()});
    linattn::backward(op, form, a, {d_o.cpp(), dfinal_state.cpp()},
                      {r.dq.cpp(), r.dk.cpp(), r.dv.cpp(), r.dg.cpp(), {}, r.dbeta.cpp(),
                       r.dinitial_state.cpp()});
  }
};

TEST(CapiTest, MatchesCppApiBitwise) {
  for (const Layout& layout : {Layout{}, Layout{1, 7, {0, 3, 7}}}) {
    SCOPED_TRACE(layout.cu_seqlens.empty() ? "batch" : "cu_seqlens");
    Problem p(layout);
    ASSERT_EQ(p.forward(), LINATTN_OK) << linattn_last_error();
    ASSERT_EQ(p.backward(), LINATTN_OK) << linattn_last_error();
    EXPECT_STREQ(linattn_last_error(), "");

    Results expected(p.B, p.T, p.N, p.H, p.HV, p.K, p.V);
    p.run_cpp(expected);
    const std::vector<Buffer*> got = p.out.all(), want = expected.all();
    for (size_t i = 0; i < got.size(); ++i) {
      SCOPED_TRACE("result " + std::to_string(i));
      double norm = 0;
      for (float x : got[i]->data) norm += double(x) * x;
      EXPECT_TRUE(std::isfinite(norm) && norm > 0) << "not written, or not finite";
      EXPECT_EQ(std::memcmp(got[i]->data.data(), want[i]->data.data(),
                            got[i]->data.size() * sizeof(float)), 0);
    }
  }
}

// dplr_delta_rule's low-rank inputs a, b and their gradients da, db cross the C API: the chunk
// form through C equals the C++ API bit for bit, and a missing b is reported by name.
TEST(CapiTest, DplrDeltaRuleLowRankInputs) {
  constexpr int64_t B = 1, T = 70, H = 2, K = 4, V = 3;
  Buffer q({B, T, H, K}), k({B, T, H, K}), v({B, T, H, V}), a({B, T, H, K}), b({B, T, H, K}),
      gk({B, T, H, K}), d_o({B, T, H, V});
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (Buffer* x : {&q, &k, &v, &a, &d_o}) for (float& e : x->data) e = 0.5f * normal(rng);
  for (size_t i = 0; i < b.data.size(); ++i) b.data[i] = -0.5f * a.data[i];
  for (float& e : gk.data) e = -0.3f;
  Buffer o_c({B, T, H, V}), o_cpp({B, T, H, V});
  // dq, dk, dv, dgk, da, db
  std::vector<Buffer> c_grads(6, Buffer({B, T, H, K})), cpp_grads(6, Buffer({B, T, H, K}));
  c_grads[2] = cpp_grads[2] = Buffer({B, T, H, V});

  linattn_args args;
  linattn_args_init(&args);
  args.q = q.c(), args.k = k.c(), args.v = v.c(), args.gk = gk.c(), args.a = a.c(), args.b = b.c();
  linattn_tensor o_view = o_c.c(), d_o_view = d_o.c();
  linattn_grads grads{};
  grads.dq = c_grads[0].c(), grads.dk = c_grads[1].c(), grads.dv = c_grads[2].c();
  grads.dgk = c_grads[3].c(), grads.da = c_grads[4].c(), grads.db = c_grads[5].c();
  ASSERT_EQ(linattn_forward(LINATTN_OP_DPLR_DELTA_RULE, LINATTN_FORM_CHUNK, &args, &o_view, nullptr), LINATTN_OK)
      << linattn_last_error();
  ASSERT_EQ(linattn_backward(LINATTN_OP_DPLR_DELTA_RULE, LINATTN_FORM_CHUNK, &args, &d_o_view, nullptr, &grads),
            LINATTN_OK) << linattn_last_error();

  linattn::OpArgs cpp;
  cpp.q = q.cpp(), cpp.k = k.cpp(), cpp.v = v.cpp(), cpp.gk = gk.cpp(), cpp.a = a.cpp(), cpp.b = b.cpp();
  linattn::forward(linattn::Op::dplr_delta_rule, linattn::Form::chunk, cpp, {o_cpp.cpp(), {}});
  linattn::OpGrads g;
  g.dq = cpp_grads[0].cpp(), g.dk = cpp_grads[1].cpp(), g.dv = cpp_grads[2].cpp();
  g.dgk = cpp_grads[3].cpp(), g.da = cpp_grads[4].cpp(), g.db = cpp_grads[5].cpp();
  linattn::backward(linattn::Op::dplr_delta_rule, linattn::Form::chunk, cpp, {d_o.cpp(), {}}, g);
  EXPECT_EQ(o_c.data, o_cpp.data);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(c_grads[i].data, cpp_grads[i].data) << "gradient " << i;
    EXPECT_TRUE(std::any_of(c_grads[i].data.begin(), c_grads[i].data.end(), [](float x) { return x != 0.0f; }));
  }

  args.b = linattn_tensor{};
  EXPECT_EQ(linattn_forward(LINATTN_OP_DPLR_DELTA_RULE, LINATTN_FORM_CHUNK, &args, &o_view, nullptr),
            LINATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_STREQ(linattn_last_error(), "dplr_delta_rule: b is required but was not given");
}

TEST(CapiTest, OutputShapes) {
  Problem p(Layout{1, 7, {0, 3, 7}});
  int64_t o[4], state[4];
  ASSERT_EQ(linattn_output_shapes(kOp, &p.args, o, state), LINATTN_OK) << linattn_last_error();
  EXPECT_EQ(std::vector<int64_t>(o, o + 4), (std::vector<int64_t>{1, 7, p.HV, p.V}));
  EXPECT_EQ(std::vector<int64_t>(state, state + 4), (std::vector<int64_t>{2, p.HV, p.K, p.V}));
  p.args.output_final_state = 0;
  ASSERT_EQ(linattn_output_shapes(kOp, &p.args, o, state), LINATTN_OK);
  EXPECT_EQ(std::vector<int64_t>(state, state + 4), (std::vector<int64_t>{0, 0, 0, 0}));
  EXPECT_EQ(linattn_output_shapes(kOp, &p.args, o, nullptr), LINATTN_OK);  // optional
}

TEST(CapiTest, NamesFormsAndVersion) {
  for (int i = 0; i < linattn::kNumOps; ++i) {
    const auto op = static_cast<linattn_op>(i);
    const char* name = linattn_op_name(op);
    ASSERT_NE(name, nullptr);
    EXPECT_STREQ(name, linattn::op_name(static_cast<linattn::Op>(i)));
    linattn_op back = LINATTN_OP_LINEAR_ATTN;
    ASSERT_EQ(linattn_op_from_name(name, &back), LINATTN_OK);
    EXPECT_EQ(back, op);
    EXPECT_EQ(linattn_has_form(op, kRef, 0), 1);
  }
  EXPECT_EQ(linattn_op_name(static_cast<linattn_op>(99)), nullptr);
  EXPECT_NE(std::string(linattn_last_error()).find("unknown op id 99"), std::string::npos);
  EXPECT_EQ(linattn_has_form(static_cast<linattn_op>(-1), kRef, 0), 0);
  EXPECT_EQ(linattn_has_form(kOp, static_cast<linattn_form>(3), 1), 0);
  EXPECT_NE(std::string(linattn_last_error()).find("unknown form id 3"), std::string::npos);
  EXPECT_STREQ(linattn_version(), linattn::version());
}

// A form without an implementation is NOT_IMPLEMENTED (not a bad input), and the status always
// agrees with linattn_has_form, whichever forms have landed by now.
TEST(CapiTest, UnimplementedFormsReportNotImplemented) {
  for (linattn_form form : {LINATTN_FORM_REFERENCE, LINATTN_FORM_CHUNK, LINATTN_FORM_RECURRENT}) {
    for (int backward = 0; backward <= 1; ++backward) {
      SCOPED_TRACE(std::string(linattn::form_name(static_cast<linattn::Form>(form))) +
                   (backward ? " backward" : " forward"));
      Problem p;
      const linattn_status status = backward ? p.backward(form) : p.forward(form);
      const std::string message = linattn_last_error();  // before has_form resets it
      if (linattn_has_form(kOp, form, backward)) {
        EXPECT_EQ(status, LINATTN_OK) << message;
      } else {
        EXPECT_EQ(status, LINATTN_ERROR_NOT_IMPLEMENTED);
        EXPECT_NE(message.find("form has no"), std::string::npos) << message;
      }
    }
  }
}

TEST(CapiTest, SuccessClearsLastError) {
  Problem p;
  EXPECT_EQ(linattn_forward(kOp, kRef, nullptr, &p.o_view, nullptr),
            LINATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_STRNE(linattn_last_error(), "");
  EXPECT_EQ(p.forward(), LINATTN_OK);
  EXPECT_STREQ(linattn_last_error(), "");
}

TEST(CapiTest, ArgsInitDefaults) {
  linattn_args a;
  std::memset(&a, 0x5a, sizeof a);
  linattn_args_init(&a);
  EXPECT_TRUE(std::isnan(a.scale));
  EXPECT_EQ(a.num_householder, 1);
  EXPECT_EQ(a.output_final_state, 0);
  EXPECT_EQ(a.q.ndim, 0);
  EXPECT_EQ(a.cu_seqlens.ndim, 0);
  linattn_args_init(nullptr);  // documented no-op
}

}  // namespace
