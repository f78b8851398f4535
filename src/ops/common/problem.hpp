// Validated description of one op call: sizes, sequences and flags, derived from OpArgs once
// so that every form (reference, chunk, recurrent) works from the same checked facts.
#pragma once

#include <cstdint>
#include <vector>

#include "linattn/ops.hpp"

namespace linattn {

// One independent sequence: batch row `batch`, tokens [start, start + length) of that row.
struct Sequence {
  int64_t batch;
  int64_t start;
  int64_t length;
};

struct Problem {
  Op op;
  const OpSpec* spec;
  int64_t B, T, H, HV, K, V;  // T counts tokens (queries); keys/values are T * n_h long
  int64_t n_h;                // Householder steps per token (1 except delta_product)
  double scale;
  bool delta;                 // delta-rule update (else Hebbian k v^T)
  std::vector<Sequence> sequences;  // N of them; initial/final state row n belongs to sequence n

  int64_t N() const { return static_cast<int64_t>(sequences.size()); }
  int64_t group() const { return HV / H; }  // value heads sharing one q/k head
};

// A log decay as the chunk forms accumulate it (chunk-local sums, then differences): floored at
// -1e4, whose exp() is already exactly 0 in fp32 and fp64. Without the floor a reset (-inf,
// allowed) makes -inf - -inf = NaN, and a huge finite decay (-1e30) absorbs the ordinary
// decays added to it in the sum, so their differences come out as 0 instead.
inline double chunk_log_decay(double g) { return g < -1e4 ? -1e4 : g; }

// retention's log decay for value head h: log(1 - 2^(-5-h)) (RetNet, fla's chunk_retention).
double retention_log_decay(int64_t head);

// Checks every input of `args` for `op` (shapes, dtypes, pointers, sizes, cu_seqlens, gate
// ranges) and throws Error naming the first problem.
Problem make_problem(Op op, const OpArgs& args);

void check_outputs(const Problem& p, const OpArgs& args, const OpOutputs& out);
void check_grads(const Problem& p, const OpArgs& args, const OpGradOutputs& grad_out,
                 const OpGrads& grads);

}  // namespace linattn
