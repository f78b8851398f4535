// Mamba-2's SSD scan (state space duality; mamba_ssm's mamba_chunk_scan_combined), per head h:
//   dt_t = clamp(softplus(dt_t + dt_bias_h) if dt_softplus else dt_t + dt_bias_h, dt_min, dt_max)
//   S_t  = exp(dt_t A_h) S_{t-1} + (dt_t x_t) B_t^T        S: [P, N] (mamba's state layout)
//   y_t  = (C_t S_t + D_h x_t) * silu(z_t)
// with B, C shared by the heads of a group (G groups, H % G == 0). This is simple_gla with
// grouped q/k heads (q = C, k = B, v = dt x, g = dt A, scale 1), so the forms run simple_gla's
// forms (the gated family's chunk kernels, its fp64 oracle, its recurrent step) and add the
// dt transform, the D skip and the z gate, forward and backward, around them.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "linattn/ops.hpp"
#include "linattn/tensor.hpp"

namespace linattn {

struct SsdArgs {
  TensorView x;              // [B, T, H, P] float32 / bfloat16 / float64
  TensorView dt;             // [B, T, H] (before dt_bias, softplus, clamping)
  TensorView A;              // [H], <= 0
  TensorView B;              // [B, T, G, N]
  TensorView C;              // [B, T, G, N]
  TensorView D;              // optional [H] or [H, P]: skip connection
  TensorView z;              // optional [B, T, H, P]: output gate y * silu(z)
  TensorView dt_bias;        // optional [H]
  TensorView initial_state;  // optional [N_seq, H, P, N]
  TensorView cu_seqlens;     // optional [N_seq+1] int32/int64; requires B == 1
  bool dt_softplus = false;
  double dt_min = 0.0;  // mamba_ssm's dt_limit
  double dt_max = std::numeric_limits<double>::infinity();
  bool output_final_state = false;
};

struct SsdOutputs {
  TensorView y;            // [B, T, H, P], dtype of x, contiguous
  TensorView final_state;  // [N_seq, H, P, N] float32 / float64 when output_final_state
};

struct SsdGradOutputs {
  TensorView dy;            // [B, T, H, P]
  TensorView dfinal_state;  // optional [N_seq, H, P, N]
};

struct SsdGrads {
  TensorView dx, ddt, dA, dB, dC, dD, dz, ddt_bias, dinitial_state;
};

struct SsdShapes {
  std::vector<int64_t> y;            // [B, T, H, P]
  std::vector<int64_t> final_state;  // [N_seq, H, P, N], empty unless output_final_state
};

SsdShapes ssd_output_shapes(const SsdArgs& args);

// form: reference (the fp64 oracle: simple_gla's oracle, the transforms in double), chunk
// (the chunk-parallel form; float64 inputs run on the oracle) or recurrent (token by token:
// decode). The backward of chunk and recurrent is the chunk backward.
void ssd_forward(Form form, const SsdArgs& args, const SsdOutputs& out);
void ssd_backward(Form form, const SsdArgs& args, const SsdGradOutputs& grad_out,
                  const SsdGrads& grads);

}  // namespace linattn
