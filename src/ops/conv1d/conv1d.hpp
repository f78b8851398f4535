// The causal depthwise conv1d behind include/linattn/conv1d.hpp: the validated call and the
// implementations the entry points (api.cpp) dispatch to.
#pragma once

#include <cstdint>
#include <vector>

#include "core/parallel.hpp"
#include "linattn/conv1d.hpp"
#include "ops/common/elements.hpp"
#include "ops/common/problem.hpp"

namespace linattn::conv1d {

inline constexpr const char* kName = "causal_conv1d";

struct Problem {
  int64_t B, T, D, W;
  std::vector<Sequence> sequences;  // initial/final state row n belongs to sequence n
  Activation activation;
  int64_t N() const { return static_cast<int64_t>(sequences.size()); }
};

Problem make_problem(const Conv1dArgs& args);

// fp64 oracle (reference.cpp): the formula of conv1d.hpp token by token.
void reference_forward(const Problem& p, const Conv1dArgs& args, const Conv1dOutputs& out);
void reference_backward(const Problem& p, const Conv1dArgs& args, const Conv1dGradOutputs& grad_out,
                        const Conv1dGrads& grads);

// Fast forms (forward.cpp, backward.cpp): float32/bfloat16 storage, fp32 arithmetic.
void fast_forward(const Problem& p, const Conv1dArgs& args, const Conv1dOutputs& out);
void fast_backward(const Problem& p, const Conv1dArgs& args, const Conv1dGradOutputs& grad_out,
                   const Conv1dGrads& grads);

}  // namespace linattn::conv1d
