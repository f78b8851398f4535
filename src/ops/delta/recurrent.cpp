// Fused recurrent (decode) forward of the delta family: delta_rule (§4.5a), gated_delta_rule
// (§4.6a), delta_product (§4.7a: n_h Householder steps per token, optional gate) and kda (§4.8a:
// a per-channel gate). Per token per value head, on the K x V fp32 state (algorithms.md §3.1):
//     a   = exp(g_t) on every row, or exp(gk_t) per row (1 without a gate; applied once, before
//           step 1)
//     for j = 1..n_h:
//         p = S^T (a ⊙ k_j)                 (read pass: (diag(a) S)^T k, the decayed state)
//         u = beta_j (v_j - p)
//         S = diag(a) S + k_j u^T           (write pass; a = 1 after step 1; diag(a) S as
//                                            lo S + hi S, kernels::exp_split, so that decays
//                                            near 1 do not drift over many tokens)
//     o = scale S^T q
// The read pass of step j+1 is fused into the write pass of step j, and the read o = S^T q of
// token t into the write pass of its last step together with p = S^T k_{t+1,1} of the next
// token, so a token costs n_h passes over S (plus one read pass at the start of a call).
// Every column of every accumulation sums over the rows in the same order with the same
// instructions whichever pass computes it, so a chain of T = 1 calls equals one T-token call
// bitwise. Work items are (sequence, value head): each owns its o rows and its final state, so
// results do not depend on the thread count.
#include <algorithm>
#include <cmath>

#include "core/parallel.hpp"
#include "core/scratch.hpp"
#include "kernels/elementwise.hpp"
#include "ops/common/forms.hpp"
#include "ops/common/rows.hpp"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/delta/recurrent.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace linattn {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
namespace {  // helpers private to this file (the exported entry points follow)

using D = hn::ScalableTag<float>;
using Vf = hn::Vec<D>;

// acc = src^T x over NV vectors of columns (accumulators in registers while the rows stream).
template <int NV>
HWY_INLINE void ReadColumns(int64_t K, const float* HWY_RESTRICT src, int64_t ld_src,
                            const float* HWY_RESTRICT x, float* HWY_RESTRICT acc) {
  const D d;
  const size_t N = hn::Lanes(d);
  Vf sum[NV];
  for (int i = 0; i < NV; ++i) sum[i] = hn::Zero(d);
  for (int64_t r = 0; r < K; ++r) {
    const Vf xr = hn::Set(d, x[r]);
    const float* row = src + r * ld_src;
    for (int i = 0; i < NV; ++i) sum[i] = hn::MulAdd(xr, hn::LoadU(d, row + i * N), sum[i]);
  }
  for (int i = 0; i < NV; ++i) hn::StoreU(sum[i], d, acc + i * N);
}

// dst = diag(lo + hi) src + k u^T, as lo src + hi src + k u^T (kernels::exp_split); acc1 =
// dst^T x1 and, when TWO, acc2 = dst^T x2 (src may equal dst: each element is read before it
// is written).
template <int NV, bool TWO>
HWY_INLINE void UpdateColumns(int64_t K, const float* src, int64_t ld_src, float* dst,
                              int64_t ld_dst, const float* HWY_RESTRICT lo, const float* HWY_RESTRICT hi,
                              const float* HWY_RESTRICT k,
                              const float* HWY_RESTRICT u, const float* HWY_RESTRICT x1,
                              float* HWY_RESTRICT acc1, const float* HWY_RESTRICT x2,
                              float* HWY_RESTRICT acc2) {
  const D d;
  const size_t N = hn::Lanes(d);
  Vf uv[NV], s1[NV], s2[TWO ? NV : 1];
  for (int i = 0; i < NV; ++i) {
    uv[i] = hn::LoadU(d, u + i * N);
    s1[i] = hn::Zero(d);
    if constexpr (TWO) s2[i] = hn::Zero(d);
  }
  for (int64_t r = 0; r < K; ++r) {
    const Vf lr = hn::Set(d, lo[r]), hr = hn::Set(d, hi[r]), kr = hn::Set(d, k[r]), x1r = hn::Set(d, x1[r]);
    const float* s_row = src + r * ld_src;
    float* d_row = dst + r * ld_dst;
    if constexpr (TWO) {
      const Vf x2r = hn::Set(d, x2[r]);
      for (int i = 0; i < NV; ++i) {
        const Vf old = hn::LoadU(d, s_row + i * N);
        const Vf s = hn::MulAdd(kr, uv[i], hn::MulAdd(lr, old, hn::Mul(hr, old)));
        hn::StoreU(s, d, d_row + i * N);
        s1[i] = hn::MulAdd(x1r, s, s1[i]);
        s2[i] = hn::MulAdd(x2r, s, s2[i]);
      }
    } else {
      for (int i = 0; i < NV; ++i) {
        const Vf old = hn::LoadU(d, s_row + i * N);
        const Vf s = hn::MulAdd(kr, uv[i], hn::MulAdd(lr, old, hn::Mul(hr, old)));
        hn::StoreU(s, d, d_row + i * N);
        s1[i] = hn::MulAdd(x1r, s, s1[i]);
      }
    }
  }
  for (int i = 0; i < NV; ++i) {
    hn::StoreU(s1[i], d, acc1 + i * N);
    if constexpr (TWO) hn::StoreU(s2[i], d, acc2 + i * N);
  }
}

// Full blocks of NV vectors from column c on, then the narrower widths for what is left.
template <int NV>
HWY_INLINE size_t ReadBlocks(size_t c, size_t cols, int64_t K, const float* src, int64_t ld_src,
                             const float* x, float* acc) {
  const size_t width = NV * hn::Lanes(D());
  for (; c + width <= cols; c += width) ReadColumns<NV>(K, src + c, ld_src, x, acc + c);
  if constexpr (NV > 1) c = ReadBlocks<NV / 2>(c, cols, K, src, ld_src, x, acc);
  return c;
}

template <int NV, bool TWO>
HWY_INLINE size_t UpdateBlocks(size_t c, size_t cols, int64_t K, const float* src,
                               int64_t ld_src, float* dst, int64_t ld_dst, const float* lo,
                               const float* hi, const float* k, const float* u, const float* x1, float* acc1,
                               const float* x2, float* acc2) {
  const size_t width = NV * hn::Lanes(D());
  for (; c + width <= cols; c += width)
    UpdateColumns<NV, TWO>(K, src + c, ld_src, dst + c, ld_dst, lo, hi, k, u + c, x1, acc1 + c, x2,
                           TWO ? acc2 + c : nullptr);
  if constexpr (NV > 1)
    c = UpdateBlocks<NV / 2, TWO>(c, cols, K, src, ld_src, dst, ld_dst, lo, hi, k, u, x1, acc1, x2, acc2);
  return c;
}

}  // namespace

// acc = src^T x (K x V rows with leading dimension ld_src).
void DeltaRead(int64_t K, int64_t V, const float* src, int64_t ld_src, const float* x, float* acc) {
  constexpr int kWide = HWY_MAX_BYTES >= 64 ? 8 : 4;
  const size_t cols = static_cast<size_t>(V);
  const size_t c0 = ReadBlocks<kWide>(0, cols, K, src, ld_src, x, acc);
  // The last V % lanes columns in scalar code (no masked loads: see gla/recurrent.cpp). fma
  // keeps them bitwise equal to the tail of DeltaUpdate's accumulations.
  if (c0 == cols) return;
  std::fill(acc + c0, acc + cols, 0.0f);
  for (int64_t r = 0; r < K; ++r)
    for (size_t c = c0; c < cols; ++c) acc[c] = std::fma(x[r], (src + r * ld_src)[c], acc[c]);
}

// dst = diag(lo + hi) src + k u^T (each state row's decay split by kernels::exp_split);
// acc1 = dst^T x1; acc2 = dst^T x2 unless x2 is null.
void DeltaUpdate(int64_t K, int64_t V, const float* src, int64_t ld_src, float* dst,
                 int64_t ld_dst, const float* lo, const float* hi, const float* k, const float* u, const float* x1,
                 float* acc1, const float* x2, float* acc2) {
  const size_t cols = static_cast<size_t>(V);
  size_t c0;
  if (x2) {  // three register sets (u, acc1, acc2): half the width
    constexpr int kWide = HWY_MAX_BYTES >= 64 ? 4 : 2;
    c0 = UpdateBlocks<kWide, true>(0, cols, K, src, ld_src, dst, ld_dst, lo, hi, k, u, x1, acc1, x2, acc2);
  } else {
    constexpr int kWide = HWY_MAX_BYTES >= 64 ? 8 : 4;
    c0 = UpdateBlocks<kWide, false>(0, cols, K, src, ld_src, dst, ld_dst, lo, hi, k, u, x1, acc1, nullptr, nullptr);
  }
  if (c0 == cols) return;
  std::fill(acc1 + c0, acc1 + cols, 0.0f);
  if (x2) std::fill(acc2 + c0, acc2 + cols, 0.0f);
  for (int64_t r = 0; r < K; ++r)
    for (size_t c = c0; c < cols; ++c) {
      const float old = (src + r * ld_src)[c];
      const float s = std::fma(k[r], u[c], std::fma(lo[r], old, hi[r] * old));
      (dst + r * ld_dst)[c] = s;
      acc1[c] = std::fma(x1[r], s, acc1[c]);
      if (x2) acc2[c] = std::fma(x2[r], s, acc2[c]);
    }
}

}  // namespace HWY_NAMESPACE
}  // namespace linattn
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace linattn {

HWY_EXPORT(DeltaRead);
HWY_EXPORT(DeltaUpdate);

namespace delta_recurrent {

constexpr int kStateSlot = 0;         // ScratchArena slot: state and per-token rows
constexpr double kL2NormEps = 1e-6;   // fla's l2norm: x / sqrt(sum x^2 + eps), as the oracle

// A state row pointer usable in place: float32 with unit column stride.
// Row `row` of q or k for head `head`, L2-normalised when asked, times `mul`.
void load_qk(const TensorView& t, int64_t b, int64_t row, int64_t head, int64_t K, bool l2norm,
             float mul, float* dst) {
  load_rows(t, b, row, 1, head, dst, K);
  if (l2norm) {
    double sq = 0;
    for (int64_t d = 0; d < K; ++d) sq += static_cast<double>(dst[d]) * dst[d];
    mul = static_cast<float>(mul / std::sqrt(sq + kL2NormEps));
  }
  if (mul != 1.0f)
    for (int64_t d = 0; d < K; ++d) dst[d] *= mul;
}

// decay[r] = the multiplier of state row r at token `row`, also split as lo + hi
// (kernels::exp_split): exp(gk[row, hv, r]) for kda, exp(g[row, hv]) on every row for a scalar
// gate, 1 without one. log_gate is K floats of scratch.
void load_decay(const OpArgs& args, int64_t b, int64_t row, int64_t hv, int64_t K,
                float* log_gate, float* decay, float* lo, float* hi) {
  if (args.gk.given())
    load_rows(args.gk, b, row, 1, hv, log_gate, K);
  else
    std::fill(log_gate, log_gate + K, args.g.given() ? load_scalar(args.g, b, row, hv) : 0.0f);
  kernels::exp_split(log_gate, decay, lo, hi, K);
}

// One (sequence, value head) recurrence.
void run_head(const Problem& p, const OpArgs& args, const OpOutputs& out, int64_t n, int64_t hv) {
  const int64_t K = p.K, V = p.V, n_h = p.n_h, hq = hv / p.group();
  const bool l2 = args.use_qk_l2norm_in_kernel;
  const Sequence& s = p.sequences[n];
  // State, q, the token's keys, the next token's first key, its read key (decay ⊙ key), the
  // read key's decay, the token's and the next token's decay split (lo, hi), no decay (0, 1),
  // a log gate row; the token's values, then p, u, o.
  float* S = ScratchArena::local().get<float>(kStateSlot, K * V + (n_h + 11) * K + (n_h + 3) * V);
  float *q = S + K * V, *keys = q + K, *next_key = keys + n_h * K, *read_key = next_key + K;
  float *key_decay = read_key + K, *lo = key_decay + K, *hi = lo + K, *next_lo = hi + K;
  float *next_hi = next_lo + K, *zeros = next_hi + K, *ones = zeros + K, *log_gate = ones + K;
  float *vals = log_gate + K, *pk = vals + n_h * V, *u = pk + V, *o = u + V;
  std::fill(zeros, zeros + K, 0.0f);
  std::fill(ones, ones + K, 1.0f);

  const DecodeState io = decode_state(args.initial_state, out.final_state, args.output_final_state,
                                      n, hv, K, V, S);
  const float* src = io.src;
  int64_t ld_src = io.ld_src;
  float* final_rows = io.final_rows;

  // Token t's first step reads the decayed state: (diag(a) S)^T k = S^T (a ⊙ k), so each read
  // pass that serves a token's first step uses the read key a ⊙ k.
  auto load_first_key = [&](int64_t row, float* key, float* key_lo, float* key_hi) {
    load_qk(args.k, s.batch, row * n_h, hq, K, l2, 1.0f, key);
    load_decay(args, s.batch, row, hv, K, log_gate, key_decay, key_lo, key_hi);
    for (int64_t d = 0; d < K; ++d) read_key[d] = key_decay[d] * key[d];
  };
  const float scale = static_cast<float>(p.scale);
  // p = S^T (a ⊙ k) of the first key of the first token: the one read pass of the call.
  load_first_key(s.start, keys, lo, hi);
  HWY_DYNAMIC_DISPATCH(DeltaRead)(K, V, src, ld_src, read_key, pk);

  for (int64_t t = 0; t < s.length; ++t) {
    const int64_t row = s.start + t, key_row = row * n_h;
    const bool last_token = t == s.length - 1;
    load_qk(args.q, s.batch, row, hq, K, l2, scale, q);
    if (t > 0) {  // (first key and decay of token 0 loaded above)
      std::copy(next_key, next_key + K, keys);
      std::copy(next_lo, next_lo + K, lo);
      std::copy(next_hi, next_hi + K, hi);
    }
    for (int64_t j = 1; j < n_h; ++j) load_qk(args.k, s.batch, key_row + j, hq, K, l2, 1.0f, keys + j * K);
    load_rows(args.v, s.batch, key_row, n_h, hv, vals, V);
    if (!last_token) load_first_key(row + 1, next_key, next_lo, next_hi);
    if (t + 2 < s.length) {  // the rows after next, a page or more apart in fla's layout (rows.hpp)
      prefetch_rows(args.q, s.batch, row + 2, 1, hq);
      prefetch_rows(args.k, s.batch, (row + 2) * n_h, n_h, hq);
      prefetch_rows(args.v, s.batch, (row + 2) * n_h, n_h, hv);
      if (args.gk.given()) prefetch_rows(args.gk, s.batch, row + 2, 1, hv);
    }

    const float *step_lo = lo, *step_hi = hi;
    for (int64_t j = 0; j < n_h; ++j) {
      const float beta = load_scalar(args.beta, s.batch, key_row + j, hv);
      const float* vj = vals + j * V;
      for (int64_t c = 0; c < V; ++c) u[c] = beta * (vj[c] - pk[c]);
      const bool last_step = j == n_h - 1;
      float* dst = (final_rows && last_token && last_step) ? final_rows : S;
      const float* kj = keys + j * K;
      if (!last_step)  // fused: p = S^T k of the next step
        HWY_DYNAMIC_DISPATCH(DeltaUpdate)(K, V, src, ld_src, dst, V, step_lo, step_hi, kj, u, kj + K, pk, nullptr, nullptr);
      else if (!last_token)  // fused: o = S^T q and p = S^T (a ⊙ k) of the next token's first step
        HWY_DYNAMIC_DISPATCH(DeltaUpdate)(K, V, src, ld_src, dst, V, step_lo, step_hi, kj, u, q, o, read_key, pk);
      else
        HWY_DYNAMIC_DISPATCH(DeltaUpdate)(K, V, src, ld_src, dst, V, step_lo, step_hi, kj, u, q, o, nullptr, nullptr);
      src = dst;
      ld_src = V;
      step_lo = zeros;  // the gate decays the state once per token, before its first step
      step_hi = ones;
    }
    store_rows(out.o, s.batch, row, 1, hv, o, V);
  }
  if (args.output_final_state && !final_rows) store_state(out.final_state, n, hv, K, V, src);
}

}  // namespace delta_recurrent

void delta_recurrent_forward(const Problem& p, const OpArgs& args, const OpOutputs& out) {
  parallel_for(p.N() * p.HV, [&](int64_t item) {
    delta_recurrent::run_head(p, args, out, item / p.HV, item % p.HV);
  });
}

}  // namespace linattn
#endif  // HWY_ONCE
