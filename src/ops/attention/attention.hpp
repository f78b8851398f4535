// Softmax attention internals (algorithms.md §4.11): the validated problem every form works from
// and the forms themselves. api.cpp validates and dispatches; reference.cpp is the fp64 oracle;
// chunk_fwd.cpp / chunk_bwd.cpp the tiled forward and backward; recurrent.cpp the decode step.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "linattn/tensor.hpp"

namespace linattn::attention {

// Query rows [q0, q0 + rows) of batch row qb, at positions pos0, pos0 + 1, ..., read the key rows
// kv0 + j of batch row kb for j in [first_key(pos), pos]. A training sequence is one span with
// q0 = kv0 and pos0 = 0; a decode step is one span per sequence with pos0 = cache length - Tq.
struct Span {
  int64_t qb, q0, rows, kb, kv0, pos0;
  int64_t kv_len() const { return pos0 + rows; }  // key rows any of its queries reads
};

struct Problem {
  int64_t H, Hkv, K, V;
  double scale;
  int64_t window;  // 0: full causal
  std::vector<Span> spans;

  int64_t group() const { return H / Hkv; }  // query heads per kv head
  int64_t first_key(int64_t pos) const {
    return window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
  }
};

// Outputs and gradients not given (empty views) are not computed.
void reference_forward(const Problem& p, const TensorView& q, const TensorView& k,
                       const TensorView& v, const TensorView& o, const TensorView& lse);
void reference_backward(const Problem& p, const TensorView& q, const TensorView& k,
                        const TensorView& v, const TensorView& d_o, const TensorView& dq,
                        const TensorView& dk, const TensorView& dv);
void chunk_forward(const Problem& p, const TensorView& q, const TensorView& k,
                   const TensorView& v, const TensorView& o, const TensorView& lse);
void chunk_backward(const Problem& p, const TensorView& q, const TensorView& k,
                    const TensorView& v, const TensorView& o, const TensorView& lse,
                    const TensorView& d_o, const TensorView& dq, const TensorView& dk,
                    const TensorView& dv);
void recurrent_decode(const Problem& p, const TensorView& q, const TensorView& k_cache,
                      const TensorView& v_cache, const TensorView& o);

}  // namespace linattn::attention
