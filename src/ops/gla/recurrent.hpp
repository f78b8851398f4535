// The decode kernel of the gated family (src/ops/gla/recurrent.cpp), shared with dplr_delta_rule.
#pragma once

#include <cstdint>

namespace linattn::gla {

// One token of one head, one pass over the K x V fp32 state (algorithms.md §3.1):
// dst = diag(a) src + k v^T (+ b sa^T when b is given: dplr_delta_rule's rank-1 term, §4.8a),
// o = dst^T q with q already scaled. src and dst (leading dimensions ld_src, ld_dst) may be the
// same rows.
void fused_step(int64_t K, int64_t V, const float* src, int64_t ld_src, float* dst,
                int64_t ld_dst, const float* a, const float* k, const float* v, const float* q,
                float* o, const float* b = nullptr, const float* sa = nullptr);

}  // namespace linattn::gla
