// The C API of the ops with an API of their own, causal_conv1d and selective_scan (linattn.h):
// the C++ API's results bit for bit, status codes and messages for bad input.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>

#include "check/family.hpp"
#include "linattn/conv1d.hpp"
#include "linattn/linattn.h"
#include "ops/scan/check.hpp"

namespace {

using linattn::check::Buffer;

linattn_tensor c_view(const Buffer& b) {
  const linattn::TensorView v = b.view();
  linattn_tensor t{};
  t.data = v.data;
  t.dtype = static_cast<int32_t>(v.dtype);
  t.ndim = v.ndim;
  for (int i = 0; i < v.ndim; ++i) {
    t.shape[i] = v.shape[i];
    t.strides[i] = v.strides[i];
  }
  return t;
}

TEST(CapiConv1d, MatchesCppApiAndReportsErrors) {
  std::mt19937_64 rng(3);
  const int64_t B = 2, T = 9, D = 5, W = 4;
  const Buffer x = linattn::check::random_buffer(linattn::DType::f32, {B, T, D}, rng, -1, 1);
  const Buffer w = linattn::check::random_buffer(linattn::DType::f32, {D, W}, rng, -1, 1);
  const Buffer h0 = linattn::check::random_buffer(linattn::DType::f32, {B, D, W}, rng, -1, 1);
  Buffer y_c(linattn::DType::f32, {B, T, D}), y_cpp(linattn::DType::f32, {B, T, D});
  Buffer f_c(linattn::DType::f32, {B, D, W}), f_cpp(linattn::DType::f32, {B, D, W});

  linattn_conv1d_args a{};
  a.x = c_view(x);
  a.weight = c_view(w);
  a.initial_state = c_view(h0);
  a.output_final_state = 1;
  a.activation = LINATTN_ACTIVATION_SILU;
  linattn_tensor y = c_view(y_c), f = c_view(f_c);
  ASSERT_EQ(linattn_causal_conv1d_forward(LINATTN_FORM_CHUNK, &a, &y, &f), LINATTN_OK)
      << linattn_last_error();

  linattn::Conv1dArgs cpp;
  cpp.x = x.view();
  cpp.weight = w.view();
  cpp.initial_state = h0.view();
  cpp.output_final_state = true;
  cpp.activation = linattn::Activation::silu;
  linattn::causal_conv1d_forward(linattn::Form::chunk, cpp, {y_cpp.view(), f_cpp.view()});
  EXPECT_EQ(linattn::check::rel_error(y_c, y_cpp), 0.0);
  EXPECT_EQ(linattn::check::rel_error(f_c, f_cpp), 0.0);

  // Backward and a decode step run through the C API as well.
  Buffer dx(linattn::DType::f32, {B, T, D});
  linattn_conv1d_grads g{};
  g.dx = c_view(dx);
  a.output_final_state = 0;
  EXPECT_EQ(linattn_causal_conv1d_backward(LINATTN_FORM_CHUNK, &a, &y, nullptr, &g), LINATTN_OK)
      << linattn_last_error();
  Buffer x1(linattn::DType::f32, {B, D}), y1(linattn::DType::f32, {B, D});
  Buffer cache = h0;
  linattn_tensor xt = c_view(x1), ct = c_view(cache), wt = c_view(w), yt = c_view(y1);
  EXPECT_EQ(linattn_causal_conv1d_update(&xt, &ct, &wt, nullptr, nullptr, 0, &yt), LINATTN_OK)
      << linattn_last_error();

  a.activation = 9;
  EXPECT_EQ(linattn_causal_conv1d_forward(LINATTN_FORM_CHUNK, &a, &y, nullptr),
            LINATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(linattn_last_error()).find("activation must be none (0) or silu (1), got 9"),
            std::string::npos);
  EXPECT_EQ(linattn_causal_conv1d_forward(LINATTN_FORM_CHUNK, nullptr, &y, nullptr),
            LINATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_STREQ(linattn_last_error(), "linattn_causal_conv1d_forward: args is NULL");
  EXPECT_EQ(linattn_causal_conv1d_update(&xt, &ct, nullptr, nullptr, nullptr, 0, &yt),
            LINATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_STREQ(linattn_last_error(), "linattn_causal_conv1d_update: weight is NULL");
}

TEST(CapiScan, MatchesCppApiAndReportsErrors) {
  linattn::scan::Case c = linattn::scan::Case::of(2, 9, 5, 4);
  c.gate = c.softplus = true;
  const linattn::scan::Inputs in = linattn::scan::make_inputs(c, linattn::DType::f32);
  const linattn::scan::Outputs want = linattn::scan::run_forward(c, in, linattn::Form::chunk);
  Buffer y(linattn::DType::f32, {2, 9, 5}), f(linattn::DType::f32, {2, 5, 4});
  linattn_scan_args a{};
  a.u = c_view(in.u);
  a.delta = c_view(in.delta);
  a.A = c_view(in.A);
  a.B = c_view(in.B);
  a.C = c_view(in.C);
  a.D = c_view(in.D);
  a.z = c_view(in.z);
  a.initial_state = c_view(in.initial_state);
  a.delta_softplus = 1;
  a.output_final_state = 1;
  linattn_tensor yt = c_view(y), ft = c_view(f);
  ASSERT_EQ(linattn_selective_scan_forward(LINATTN_FORM_CHUNK, &a, &yt, &ft), LINATTN_OK)
      << linattn_last_error();
  EXPECT_EQ(linattn::check::rel_error(y, want.y), 0.0);
  EXPECT_EQ(linattn::check::rel_error(f, want.final_state), 0.0);

  Buffer du(linattn::DType::f32, {2, 9, 5});
  linattn_scan_grads g{};
  g.du = c_view(du);
  a.output_final_state = 0;
  EXPECT_EQ(linattn_selective_scan_backward(LINATTN_FORM_CHUNK, &a, &yt, nullptr, &g), LINATTN_OK)
      << linattn_last_error();
  a.A = linattn_tensor{};
  EXPECT_EQ(linattn_selective_scan_forward(LINATTN_FORM_CHUNK, &a, &yt, nullptr),
            LINATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_STREQ(linattn_last_error(), "selective_scan: A is required but was not given");
  linattn_scan_step_args s{};
  EXPECT_EQ(linattn_selective_state_update(&s, nullptr), LINATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_STREQ(linattn_last_error(), "linattn_selective_state_update: y is NULL");
}

}  // namespace
