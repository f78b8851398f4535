// The selective scan behind include/linattn/scan.hpp: the validated call and the
// implementations the entry points (api.cpp) dispatch to.
#pragma once

#include <cstdint>
#include <vector>

#include "linattn/scan.hpp"
#include "ops/common/elements.hpp"
#include "ops/common/problem.hpp"

namespace linattn::scan {

inline constexpr const char* kName = "selective_scan";

struct Problem {
  int64_t B, T, D, N, G;
  std::vector<Sequence> sequences;  // initial/final state row s belongs to sequence s
  bool softplus;
  int64_t group_size() const { return D / G; }
  int64_t num_sequences() const { return static_cast<int64_t>(sequences.size()); }
};

Problem make_problem(const ScanArgs& args);

// fp64 oracle (reference.cpp): the recurrence of scan.hpp token by token.
void reference_forward(const Problem& p, const ScanArgs& args, const ScanOutputs& out);
void reference_backward(const Problem& p, const ScanArgs& args, const ScanGradOutputs& grad_out,
                        const ScanGrads& grads);

// Fast forms (chunk_fwd.cpp, chunk_bwd.cpp): float32/bfloat16 storage, fp32 states.
void fast_forward(const Problem& p, const ScanArgs& args, const ScanOutputs& out);
void fast_backward(const Problem& p, const ScanArgs& args, const ScanGradOutputs& grad_out,
                   const ScanGrads& grads);

}  // namespace linattn::scan
