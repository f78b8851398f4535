// Softmax attention (include/linattn/attention.hpp): every `linattn check` row of the family, tile
// edges the built-in cases miss, results bitwise identical for any thread count, the window
// reductions, and the errors bad input must raise.
#include <gtest/gtest.h>
#include <omp.h>

#include <cstring>
#include <string>

#include "check/harness.hpp"
#include "linattn/attention.hpp"
#include "linattn/error.hpp"
#include "linattn/linattn.h"
#include "ops/attention/check.hpp"
#include "ops/attention/chunk.hpp"

namespace linattn::check {
namespace {

bool same_bits(const Buffer& a, const Buffer& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double x = a.get(i), y = b.get(i);
    if (std::memcmp(&x, &y, sizeof x) != 0) return false;
  }
  return true;
}

TEST(SoftmaxAttention, CheckRowsPass) {
  for (DType dtype : {DType::f64, DType::f32, DType::bf16})
    for (const Row& r : run({"softmax_attention"}, dtype))
      EXPECT_TRUE(r.pass) << r.form << " " << r.dtype << " " << r.shape << " " << r.check
                          << " error " << r.error << " tolerance " << r.tolerance;
}

// Lengths around the tiles (chunk.hpp), with and without a window, in fp32.
TEST(SoftmaxAttention, TileEdges) {
  constexpr int64_t R = attention::kTileRows, C = attention::kTileKeys;
  for (int64_t T : {R - 1, R, R + 1, C + 1, 2 * R + 3})
    for (int64_t window : {int64_t{0}, C, C + 1}) {
      const AttnCase c{1, T, 2, 1, 16, 8, window, {}, 1.0, static_cast<uint64_t>(T + window)};
      const AttnInputs low = make_attn_inputs(c).to(DType::f32);
      const AttnForward got = attn_forward(c, low, Form::chunk);
      const AttnForward want = attn_forward(c, low.to(DType::f64), Form::reference);
      EXPECT_LT(rel_error(got.o, want.o), 1e-5) << c.describe();
      Buffer d_o = got.o;
      const AttnGrads g = attn_backward(c, low, Form::chunk, d_o);
      const AttnGrads w = attn_backward(c, low.to(DType::f64), Form::reference, d_o.to(DType::f64));
      EXPECT_LT(rel_error(g.dq, w.dq), 1e-5) << c.describe();
      EXPECT_LT(rel_error(g.dk, w.dk), 1e-5) << c.describe();
      EXPECT_LT(rel_error(g.dv, w.dv), 1e-5) << c.describe();
    }
}

// A window of T or more reads what full causal attention reads: the same bits.
TEST(SoftmaxAttention, WindowOfTIsFullCausal) {
  const AttnCase full{1, 150, 2, 2, 8, 8, 0, {}, 1.0, 31};
  AttnCase wide = full;
  wide.window = 150;
  const AttnInputs in = make_attn_inputs(full).to(DType::f32);
  EXPECT_TRUE(same_bits(attn_forward(full, in, Form::chunk).o, attn_forward(wide, in, Form::chunk).o));
}

// Eight (sequence, kv head) items run the fused backward at 1 to 3 threads; one item runs it at
// 1 thread and the two-pass backward at 2 and 3 (chunk_bwd.cpp): the same bits either way.
class BitwiseAcrossThreadCounts : public ::testing::TestWithParam<AttnCase> {};
INSTANTIATE_TEST_SUITE_P(SoftmaxAttention, BitwiseAcrossThreadCounts,
                         ::testing::Values(AttnCase{1, 0, 4, 2, 16, 16, 40, {1, 170, 64, 33}, 2.0, 41},
                                           AttnCase{1, 300, 3, 1, 16, 8, 0, {}, 1.0, 42},
                                           AttnCase{1, 290, 2, 1, 8, 8, 130, {}, 1.0, 43}));

TEST_P(BitwiseAcrossThreadCounts, ForwardAndBackward) {
  const AttnCase c = GetParam();
  const AttnInputs in = make_attn_inputs(c).to(DType::f32);
  AttnCase grad_case = c;  // an upstream gradient of o's shape [B, T, H, V]
  grad_case.K = c.V;
  grad_case.seed += 1000;
  const Buffer d_o = make_attn_inputs(grad_case).q.to(DType::f32);
  const int saved = omp_get_max_threads();
  AttnForward first_f;
  AttnGrads first_g;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    const AttnForward f = attn_forward(c, in, Form::chunk);
    const AttnGrads g = attn_backward(c, in, Form::chunk, d_o);
    if (threads == 1) {
      first_f = f;
      first_g = g;
      continue;
    }
    EXPECT_TRUE(same_bits(f.o, first_f.o) && same_bits(f.lse, first_f.lse)) << threads;
    EXPECT_TRUE(same_bits(g.dq, first_g.dq) && same_bits(g.dk, first_g.dk) &&
                same_bits(g.dv, first_g.dv)) << threads;
  }
  omp_set_num_threads(saved);
}

// The message names the function and the argument, and says what was expected and given.
void expect_error(const std::function<void()>& call, const std::string& part) {
  try {
    call();
    ADD_FAILURE() << "no error; expected one mentioning: " << part;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST(SoftmaxAttention, RejectsBadInput) {
  const AttnCase c{1, 10, 4, 2, 8, 8, 0, {}, 1.0, 51};
  const AttnInputs in = make_attn_inputs(c).to(DType::f32);
  Buffer o(DType::f32, {1, 10, 4, 8}), lse(DType::f32, {1, 10, 4});
  const auto args = [&] {
    AttentionArgs a;
    a.q = in.q.view();
    a.k = in.k.view();
    a.v = in.v.view();
    return a;
  };
  {
    AttentionArgs a = args();
    Buffer k3(DType::f32, {1, 10, 3, 8});
    a.k = k3.view();
    a.v = Buffer(DType::f32, {1, 10, 3, 8}).view();
    expect_error([&] { attention_forward(Form::chunk, a, {o.view(), lse.view()}); },
                 "parallel_attn: the number of query heads H = 4 must be a multiple");
  }
  {
    AttentionArgs a = args();
    a.window_size = -2;
    expect_error([&] { attention_forward(Form::chunk, a, {o.view(), {}}); },
                 "parallel_attn: window_size must be >= 1");
  }
  {
    Buffer bad(DType::f32, {1, 10, 4, 7});
    expect_error([&] { attention_forward(Form::chunk, args(), {bad.view(), {}}); },
                 "parallel_attn: o must have shape [B, T, H, V] = [1, 10, 4, 8], got [1, 10, 4, 7]");
  }
  {
    Buffer d_o(DType::f32, {1, 10, 4, 8}), dq(DType::f32, {1, 10, 4, 8});
    expect_error([&] { attention_backward(Form::chunk, args(), o.view(), {}, d_o.view(), {dq.view(), {}, {}}); },
                 "parallel_attn: lse is required");
  }
  expect_error([&] { attention_forward(Form::recurrent, args(), {o.view(), {}}); },
               "form 'recurrent' is not implemented");
  {
    AttentionCacheArgs a;
    Buffer q(DType::f32, {2, 3, 4, 8}), kc(DType::f32, {2, 20, 2, 8}), vc(DType::f32, {2, 20, 2, 8});
    Buffer lens(DType::i64, {2}), out(DType::f32, {2, 3, 4, 8});
    lens.set(0, 2);
    lens.set(1, 20);
    a.q = q.view();
    a.k_cache = kc.view();
    a.v_cache = vc.view();
    a.cache_seqlens = lens.view();
    expect_error([&] { attention_decode(Form::recurrent, a, out.view()); },
                 "attn_with_kvcache: cache_seqlens[0] must be in [Tq, S] = [3, 20]");
  }
}


linattn_tensor c_view(const Buffer& b) {
  const TensorView v = b.view();
  linattn_tensor t{};
  t.data = v.data;
  t.dtype = static_cast<int32_t>(v.dtype);
  t.ndim = v.ndim;
  for (int i = 0; i < v.ndim; ++i) t.shape[i] = v.shape[i], t.strides[i] = v.strides[i];
  return t;
}

// The C API runs the same code as the C++ API and reports bad input as a status and a message.
TEST(SoftmaxAttention, CApi) {
  const AttnCase c{1, 70, 4, 2, 8, 8, 9, {}, 1.0, 61};
  const AttnInputs in = make_attn_inputs(c).to(DType::f32);
  const AttnForward want = attn_forward(c, in, Form::chunk);
  linattn_attention_args a;
  linattn_attention_args_init(&a);
  a.q = c_view(in.q);
  a.k = c_view(in.k);
  a.v = c_view(in.v);
  a.window_size = c.window;
  Buffer o(DType::f32, want.o.shape()), lse(DType::f32, want.lse.shape());
  linattn_tensor co = c_view(o), clse = c_view(lse);
  ASSERT_EQ(linattn_attention_forward(LINATTN_FORM_CHUNK, &a, &co, &clse), LINATTN_OK) << linattn_last_error();
  EXPECT_TRUE(same_bits(o, want.o) && same_bits(lse, want.lse));
  Buffer dq(DType::f32, in.q.shape());
  linattn_tensor cdq = c_view(dq), cdo = c_view(o);
  ASSERT_EQ(linattn_attention_backward(LINATTN_FORM_CHUNK, &a, &co, &clse, &cdo, &cdq, nullptr, nullptr), LINATTN_OK)
      << linattn_last_error();
  EXPECT_TRUE(same_bits(dq, attn_backward(c, in, Form::chunk, o).dq));
  EXPECT_EQ(linattn_attention_backward(LINATTN_FORM_CHUNK, &a, &co, nullptr, &cdo, &cdq, nullptr, nullptr),
            LINATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(linattn_last_error()).find("lse is required"), std::string::npos) << linattn_last_error();
  linattn_kvcache_args d;
  linattn_kvcache_args_init(&d);
  EXPECT_EQ(linattn_attention_decode(LINATTN_FORM_RECURRENT, &d, &co), LINATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(linattn_last_error()).find("attn_with_kvcache: q is required"), std::string::npos)
      << linattn_last_error();
}

}  // namespace
}  // namespace linattn::check
