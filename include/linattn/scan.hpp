// Diagonal SSM selective scan (Mamba-1, S4D with per-token Δ; algorithms.md §4.10). Per
// sequence, channel d = 0..D-1 and state n = 0..N-1, with g(d) the group of channel d:
//     Δ_t[d]   = softplus(delta[t, d] + delta_bias[d])    (or delta + bias without softplus)
//     h_t[d,n] = exp(Δ_t[d] A[d,n]) h_{t-1}[d,n] + Δ_t[d] B[t, g, n] u[t, d]   (B̄ = ΔB, ZOH-simplified)
//     y[t, d]  = (Σ_n C[t, g, n] h_t[d,n] + D[d] u[t, d]) · silu(z[t, d])       (z optional)
// Names follow mamba_ssm's selective_scan_fn (u, delta, A, B, C, D, z, delta_bias,
// delta_softplus; return_last_state is output_final_state). Layout is linattn's token-major
// one: u, delta, z, y [B, T, D]; B, C [B, T, G, N] (G groups of D/G channels; G = 1 is mamba's
// [B, N, L]); states [N_seq, D, N] (mamba's last_state layout). Views may have any strides, so
// mamba's channel-first [B, D, L] arrays are passed as transposed views without copies (the
// Python binding does so). Extras over mamba: initial_state, cu_seqlens (B = 1), a decode step.
// Not supported: time-invariant (c(D N)) or complex B/C.
#pragma once

#include <cstdint>
#include <vector>

#include "linattn/ops.hpp"
#include "linattn/tensor.hpp"

namespace linattn {

struct ScanArgs {
  TensorView u;              // [B, T, D] float32 / bfloat16 / float64
  TensorView delta;          // [B, T, D] (Δ before bias/softplus)
  TensorView A;              // [D, N] (negative for a decaying state)
  TensorView B;              // [B, T, G, N]
  TensorView C;              // [B, T, G, N]
  TensorView D;              // optional [D]: skip connection
  TensorView z;              // optional [B, T, D]: output gate y · silu(z)
  TensorView delta_bias;     // optional [D]
  TensorView initial_state;  // optional [N_seq, D, N]
  TensorView cu_seqlens;     // optional [N_seq+1] int32/int64; requires B == 1
  bool delta_softplus = false;
  bool output_final_state = false;  // mamba's return_last_state
};

struct ScanOutputs {
  TensorView y;            // [B, T, D], dtype of u, contiguous
  TensorView final_state;  // [N_seq, D, N] float32 / float64 when output_final_state
};

struct ScanGradOutputs {
  TensorView dy;            // [B, T, D]
  TensorView dfinal_state;  // optional [N_seq, D, N]
};

// Each optional (not computed when not given), shaped like its input, contiguous.
struct ScanGrads {
  TensorView du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state;
};

struct ScanShapes {
  std::vector<int64_t> y;            // [B, T, D]
  std::vector<int64_t> final_state;  // [N_seq, D, N], empty unless output_final_state
};

ScanShapes selective_scan_output_shapes(const ScanArgs& args);

// form: Form::reference (fp64 oracle) or Form::chunk (the fast form: blocks of channels in
// SIMD lanes, scanned over time with fp32 states; float64 inputs run the oracle).
void selective_scan_forward(Form form, const ScanArgs& args, const ScanOutputs& out);
void selective_scan_backward(Form form, const ScanArgs& args, const ScanGradOutputs& grad_out,
                             const ScanGrads& grads);

// One decode step (mamba's selective_state_update): one token of each of N sequences, the
// state [N, D, N_state] (float32/float64) updated in place. x, dt, z, y [N, D]; B, C [N, G, N_state].
struct ScanStepArgs {
  TensorView state;  // [N, D, N_state], in place
  TensorView x, dt, A, B, C, D, z, dt_bias;
  bool dt_softplus = false;
};
void selective_state_update(const ScanStepArgs& args, const TensorView& y);

}  // namespace linattn
