// Fused recurrent (decode) forward of dplr_delta_rule (algorithms.md §4.8a), per token per value
// head on the K x V fp32 state:
//     sa = S^T a                                     (the state before the token's decay)
//     S  = diag(e^{gk}) S + b sa^T + k v^T,   o = scale S^T q
// two passes over the state (the read of sa must finish before any row is overwritten), the
// second the gated family's decode kernel with its rank-1 term: 9KV FLOPs and K exps per token. Work items are (sequence, value head): each owns its o rows and
// its final state, so results do not depend on the thread count.
#include <algorithm>

#include "core/parallel.hpp"
#include "core/scratch.hpp"
#include "kernels/elementwise.hpp"
#include "ops/common/forms.hpp"
#include "ops/common/rows.hpp"
#include "ops/gla/recurrent.hpp"

namespace linattn {
namespace {

constexpr int kStateSlot = 0;  // ScratchArena slot: state and per-token rows

void run_head(const Problem& p, const OpArgs& args, const OpOutputs& out, int64_t n, int64_t hv) {
  const int64_t K = p.K, V = p.V, hq = hv / p.group();
  const Sequence& s = p.sequences[n];
  float* S = ScratchArena::local().get<float>(kStateSlot, K * V + 5 * K + 3 * V);
  float *q = S + K * V, *k = q + K, *a = k + K, *b = a + K, *decay = b + K;
  float *v = decay + K, *sa = v + V, *o = sa + V;
  const DecodeState io = decode_state(args.initial_state, out.final_state, args.output_final_state,
                                      n, hv, K, V, S);
  const float* src = io.src;
  int64_t ld_src = io.ld_src;
  const float scale = static_cast<float>(p.scale);
  for (int64_t t = 0; t < s.length; ++t) {
    const int64_t row = s.start + t;
    load_rows(args.q, s.batch, row, 1, hq, q, K);
    load_rows(args.k, s.batch, row, 1, hq, k, K);
    load_rows(args.a, s.batch, row, 1, hq, a, K);
    load_rows(args.b, s.batch, row, 1, hq, b, K);
    load_rows(args.v, s.batch, row, 1, hv, v, V);
    load_rows(args.gk, s.batch, row, 1, hv, decay, K);
    kernels::exp_inplace(decay, K);
    for (int64_t r = 0; r < K; ++r) q[r] *= scale;
    float* dst = (io.final_rows && t == s.length - 1) ? io.final_rows : S;
    std::fill(sa, sa + V, 0.0f);  // sa = S^T a, before the state is overwritten
    for (int64_t r = 0; r < K; ++r) kernels::axpy(V, a[r], src + r * ld_src, sa);
    gla::fused_step(K, V, src, ld_src, dst, V, decay, k, v, q, o, b, sa);
    src = dst;
    ld_src = V;
    store_rows(out.o, s.batch, row, 1, hv, o, V);
  }
  if (args.output_final_state && !io.final_rows) store_state(out.final_state, n, hv, K, V, src);
}

}  // namespace

void dplr_recurrent_forward(const Problem& p, const OpArgs& args, const OpOutputs& out) {
  parallel_for(p.N() * p.HV, [&](int64_t item) { run_head(p, args, out, item / p.HV, item % p.HV); });
}

}  // namespace linattn
