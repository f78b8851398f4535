// Fused recurrent (decode) forward of the gated Hebbian family: linear_attn (§4.1a), retention
// (§4.2a), simple_gla (§4.3a), gla (§4.4a). Per token per value head, one pass over the K x V
// fp32 state (algorithms.md §3.1): for each key row r
//     S[r,:] = a_r S[r,:] + k_r v          (decay, then the write k v^T)
//     o      += (scale q_r) S[r,:]          (the read o = scale S^T q, from the updated row)
// so the state is read and written once per token. The ops differ only in the row decays a_r:
// 1 (linear_attn), gamma_h (retention), exp(g_t) (simple_gla), exp(gk_t[r]) (gla).
// Work items are (sequence, value head): each owns its o rows and its final state, so results
// do not depend on the thread count.
#include <algorithm>
#include <cmath>

#include "core/parallel.hpp"
#include "core/scratch.hpp"
#include "ops/common/forms.hpp"
#include "ops/common/rows.hpp"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/gla/recurrent.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

HWY_BEFORE_NAMESPACE();
namespace linattn {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using D = hn::ScalableTag<float>;
using Vf = hn::Vec<D>;

// NV vectors of columns, all K rows: v and the o accumulators stay in registers while the rows
// stream by (8 + 8 + 3 of 32 registers on 512-bit targets, 4 + 4 + 3 of 16 on 256-bit).
template <int NV>
HWY_INLINE void Columns(int64_t K, const float* HWY_RESTRICT src, int64_t ld_src, float* dst,
                        int64_t ld_dst, const float* HWY_RESTRICT a, const float* HWY_RESTRICT k,
                        const float* HWY_RESTRICT v, const float* HWY_RESTRICT q,
                        float* HWY_RESTRICT o) {
  const D d;
  const size_t N = hn::Lanes(d);
  Vf vv[NV], acc[NV];
  for (int i = 0; i < NV; ++i) {
    vv[i] = hn::LoadU(d, v + i * N);
    acc[i] = hn::Zero(d);
  }
  for (int64_t r = 0; r < K; ++r) {
    const Vf ar = hn::Set(d, a[r]), kr = hn::Set(d, k[r]), qr = hn::Set(d, q[r]);
    // src and dst may be the same rows (in-place update): each element is read before written.
    const float* s_row = src + r * ld_src;
    float* d_row = dst + r * ld_dst;
    for (int i = 0; i < NV; ++i) {
      const Vf s = hn::MulAdd(ar, hn::LoadU(d, s_row + i * N), hn::Mul(kr, vv[i]));
      hn::StoreU(s, d, d_row + i * N);
      acc[i] = hn::MulAdd(qr, s, acc[i]);
    }
  }
  for (int i = 0; i < NV; ++i) hn::StoreU(acc[i], d, o + i * N);
}

// Full blocks of NV vectors from column c on, then the narrower widths for what is left (so
// V = 64 on a 512-bit target is one 4-vector block, not four passes over the rows).
template <int NV>
HWY_INLINE size_t FullBlocks(size_t c, size_t cols, int64_t K, const float* src, int64_t ld_src,
                             float* dst, int64_t ld_dst, const float* a, const float* k,
                             const float* v, const float* q, float* o) {
  const size_t width = NV * hn::Lanes(D());
  for (; c + width <= cols; c += width)
    Columns<NV>(K, src + c, ld_src, dst + c, ld_dst, a, k, v + c, q, o + c);
  if constexpr (NV > 1) c = FullBlocks<NV / 2>(c, cols, K, src, ld_src, dst, ld_dst, a, k, v, q, o);
  return c;
}

// One token of one head, one pass over the K x V fp32 state (algorithms.md §3.1):
// dst = diag(a) src + k v^T, o = dst^T q with q already scaled. src and dst (leading dimensions
// ld_src, ld_dst) may be the same rows.
void FusedStep(int64_t K, int64_t V, const float* src, int64_t ld_src, float* dst,
               int64_t ld_dst, const float* a, const float* k, const float* v, const float* q,
               float* o) {
  constexpr int kWide = HWY_MAX_BYTES >= 64 ? 8 : 4;
  const size_t cols = static_cast<size_t>(V);
  const size_t c0 = FullBlocks<kWide>(0, cols, K, src, ld_src, dst, ld_dst, a, k, v, q, o);
  // The last V % lanes columns in scalar code: masked loads/stores would touch memory past the
  // row on SSE4 and older (Highway 1.0.3 emulates them by a full load and a read-modify-write),
  // out of bounds at a buffer's end and racing with the rows of the neighbouring head.
  if (c0 == cols) return;
  std::fill(o + c0, o + cols, 0.0f);
  for (int64_t r = 0; r < K; ++r)
    for (size_t c = c0; c < cols; ++c) {
      const float s = a[r] * (src + r * ld_src)[c] + k[r] * v[c];
      (dst + r * ld_dst)[c] = s;
      o[c] += q[r] * s;
    }
}

// x = exp(x) for the K per-channel decays of gla: vectorised, since K scalar std::exp calls
// per token cost about half as much as the state pass itself at K = V = 128.
void ExpInPlace(float* x, int64_t n) {
  const D d;
  const size_t N = hn::Lanes(d), count = static_cast<size_t>(n);
  size_t i = 0;
  for (; i + N <= count; i += N) hn::StoreU(hn::Exp(d, hn::LoadU(d, x + i)), d, x + i);
  for (; i < count; ++i) x[i] = std::exp(x[i]);  // (no masked tail: see FusedStep)
}

}  // namespace HWY_NAMESPACE
}  // namespace linattn
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace linattn {

HWY_EXPORT(FusedStep);
HWY_EXPORT(ExpInPlace);

namespace {

constexpr int kStateSlot = 0;            // ScratchArena slot: state and per-token rows
constexpr double kNormalizeEps = 1e-10;  // fla's normalize_output, as the oracle

enum class Gate { none, fixed, scalar, channel };

Gate gate_of(const Problem& p, const OpArgs& args) {
  if (p.spec->fixed_decay) return Gate::fixed;
  if (args.gk.given()) return Gate::channel;
  if (args.g.given()) return Gate::scalar;
  return Gate::none;
}

// A state row pointer usable in place: float32 with unit column stride.
// One (sequence, value head) recurrence.
void run_head(const Problem& p, const OpArgs& args, const OpOutputs& out, Gate gate, int64_t n,
              int64_t hv) {
  const int64_t K = p.K, V = p.V, hq = hv / p.group();
  const Sequence& s = p.sequences[n];
  float* S = ScratchArena::local().get<float>(kStateSlot, K * V + 4 * K + 2 * V);
  float *q = S + K * V, *k = q + K, *a = k + K, *z = a + K, *v = z + K, *o = v + V;

  const DecodeState io = decode_state(args.initial_state, out.final_state, args.output_final_state,
                                      n, hv, K, V, S);
  const float* src = io.src;
  int64_t ld_src = io.ld_src;
  float* final_rows = io.final_rows;

  if (gate == Gate::none) std::fill(a, a + K, 1.0f);
  if (gate == Gate::fixed) std::fill(a, a + K, static_cast<float>(std::exp(retention_log_decay(hv))));
  if (args.normalize) std::fill(z, z + K, 0.0f);  // key sum restarts per call (fla)
  const float scale = static_cast<float>(p.scale);

  for (int64_t t = 0; t < s.length; ++t) {
    const int64_t row = s.start + t;
    load_rows(args.q, s.batch, row, 1, hq, q, K);
    load_rows(args.k, s.batch, row, 1, hq, k, K);
    load_rows(args.v, s.batch, row, 1, hv, v, V);
    for (int64_t r = 0; r < K; ++r) q[r] *= scale;
    if (gate == Gate::scalar) std::fill(a, a + K, std::exp(load_scalar(args.g, s.batch, row, hv)));
    if (gate == Gate::channel) {
      load_rows(args.gk, s.batch, row, 1, hv, a, K);
      HWY_DYNAMIC_DISPATCH(ExpInPlace)(a, K);
    }
    float* dst = (final_rows && t == s.length - 1) ? final_rows : S;
    HWY_DYNAMIC_DISPATCH(FusedStep)(K, V, src, ld_src, dst, V, a, k, v, q, o);
    src = dst;
    ld_src = V;
    if (args.normalize) {  // o / (scale q.z + eps), z the running key sum (§4.1a)
      double den = kNormalizeEps;
      for (int64_t r = 0; r < K; ++r) {
        z[r] += k[r];
        den += q[r] * z[r];
      }
      for (int64_t c = 0; c < V; ++c) o[c] = static_cast<float>(o[c] / den);
    }
    store_rows(out.o, s.batch, row, 1, hv, o, V);
  }
  if (args.output_final_state && !final_rows) store_state(out.final_state, n, hv, K, V, src);
}

}  // namespace

void gla_recurrent_forward(const Problem& p, const OpArgs& args, const OpOutputs& out) {
  const Gate gate = gate_of(p, args);
  parallel_for(p.N() * p.HV, [&](int64_t item) { run_head(p, args, out, gate, item / p.HV, item % p.HV); });
}

}  // namespace linattn
#endif  // HWY_ONCE
