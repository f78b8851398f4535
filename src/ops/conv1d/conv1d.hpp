// The causal depthwise conv1d behind include/linattn/conv1d.hpp: the validated call and the
// implementations the entry points (api.cpp) dispatch to.
#pragma once

#include <cstdint>
#include <vector>

#include "core/parallel.hpp"
#include "linattn/conv1d.hpp"
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

// Element [b, t, d] of a [B, T, D] view, [d, j] of the weight, [n, d, j] of a state.
inline int64_t at3(const TensorView& t, int64_t i0, int64_t i1, int64_t i2) {
  return i0 * t.strides[0] + i1 * t.strides[1] + i2 * t.strides[2];
}
inline int64_t at2(const TensorView& t, int64_t i0, int64_t i1) {
  return i0 * t.strides[0] + i1 * t.strides[1];
}

// parallel_for over n items when the call does at least kParallelWork multiply-adds in all:
// a parallel region costs more than a tiny call (a decode step, the finite-difference checks'
// forwards), and oversubscribed machines make it far worse. Items own their outputs either way.
inline constexpr int64_t kParallelWork = 1 << 14;
template <typename Body>
void parallel_for_work(int64_t n, int64_t work, Body&& body) {
  if (work >= kParallelWork) {
    parallel_for(n, body);
  } else {
    for (int64_t i = 0; i < n; ++i) body(i);
  }
}

// fp64 oracle (reference.cpp): the formula of conv1d.hpp token by token.
void reference_forward(const Problem& p, const Conv1dArgs& args, const Conv1dOutputs& out);
void reference_backward(const Problem& p, const Conv1dArgs& args, const Conv1dGradOutputs& grad_out,
                        const Conv1dGrads& grads);

// Fast forms (forward.cpp, backward.cpp): float32/bfloat16 storage, fp32 arithmetic.
void fast_forward(const Problem& p, const Conv1dArgs& args, const Conv1dOutputs& out);
void fast_backward(const Problem& p, const Conv1dArgs& args, const Conv1dGradOutputs& grad_out,
                   const Conv1dGrads& grads);

}  // namespace linattn::conv1d
