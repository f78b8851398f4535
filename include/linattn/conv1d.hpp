// Causal depthwise conv1d (algorithms.md §4.10, "Causal depthwise conv1d"): the short
// convolution applied before the mixers (q, k, v of the delta family; x, B, C of Mamba).
//
// Per channel d of a sequence of length L, with x̃ the inputs extended to the left by the
// cached inputs of the previous segment (zeros without an initial state):
//     pre[t, d] = bias[d] + Σ_{j<W} weight[d, j] x̃[t - (W-1) + j, d]
//     y[t, d]   = act(pre[t, d]) + residual[t, d]          (act: identity or SiLU)
// Names, layout and semantics follow fla's `causal_conv1d` (fla/modules/convolution.py):
// x [B, T, D] (token-major), weight [D, W], optional bias [D] and residual [B, T, D] (fla's
// Canon residual, added after the activation), cu_seqlens (B = 1). The state is fla's cache
// [N, D, W]: the last W inputs of each sequence, oldest first. The forward reads only its last
// W-1 columns (column 0 is the input that just left the window; it is carried so that the
// decode step can keep a full window, as fla's). final_state[n, d, j] = x̃[L - W + j, d], so a
// sequence shorter than W carries part of its initial state through.
//
// Differences from fla, all documented in docs/design.md: weight is required (fla's Triton path
// without a weight sums the window); the gradient of the final state flows into every input it
// copies (fla drops column 0's and the initial state's share); no `backend` argument.
#pragma once

#include <cstdint>
#include <vector>

#include "linattn/ops.hpp"
#include "linattn/tensor.hpp"

namespace linattn {

enum class Activation : int32_t { none = 0, silu = 1 };  // fla: None, "silu" / "swish"

struct Conv1dArgs {
  TensorView x;              // [B, T, D] float32 / bfloat16 / float64, any strides
  TensorView weight;         // [D, W], W >= 1
  TensorView bias;           // optional [D]
  TensorView residual;       // optional [B, T, D], added after the activation
  TensorView initial_state;  // optional [N, D, W]: the last W inputs of the previous segment
  TensorView cu_seqlens;     // optional [N+1] int32/int64 offsets; requires B == 1
  bool output_final_state = false;
  Activation activation = Activation::none;
};

struct Conv1dOutputs {
  TensorView y;            // [B, T, D], dtype of x, contiguous
  TensorView final_state;  // [N, D, W] (any floating dtype) when output_final_state
};

struct Conv1dGradOutputs {
  TensorView dy;            // [B, T, D]
  TensorView dfinal_state;  // optional [N, D, W]
};

// Gradients, each optional (not computed when not given), each shaped like its input.
struct Conv1dGrads {
  TensorView dx, dweight, dbias, dresidual, dinitial_state;
};

struct Conv1dShapes {
  std::vector<int64_t> y;            // [B, T, D]
  std::vector<int64_t> final_state;  // [N, D, W], empty unless output_final_state
};

// Validates the inputs (throws Error) and returns the shapes of the outputs to allocate.
Conv1dShapes causal_conv1d_output_shapes(const Conv1dArgs& args);

// form: Form::reference (fp64 oracle, forward and backward) or Form::chunk (the fast form:
// fp32 accumulation over blocks of tokens and channels, float32/bfloat16 storage; float64
// inputs run the oracle). Form::recurrent is the decode step below.
void causal_conv1d_forward(Form form, const Conv1dArgs& args, const Conv1dOutputs& out);
void causal_conv1d_backward(Form form, const Conv1dArgs& args, const Conv1dGradOutputs& grad_out,
                            const Conv1dGrads& grads);

// One decode step (fla's causal_conv1d_update): x [N, D] holds one token of each of N
// sequences; cache [N, D, W] (the state above) is shifted by one token and takes x as its
// newest column, in place; y [N, D] (dtype of x) = act(Σ_j weight[:, j] cache[:, :, j] + bias)
// + residual. Running it token by token equals the forward with that cache as state.
struct Conv1dUpdateArgs {
  TensorView x;         // [N, D]
  TensorView cache;     // [N, D, W], updated in place; any floating dtype, any strides
  TensorView weight;    // [D, W]
  TensorView bias;      // optional [D]
  TensorView residual;  // optional [N, D]
  Activation activation = Activation::none;
};
void causal_conv1d_update(const Conv1dUpdateArgs& args, const TensorView& y);

}  // namespace linattn
