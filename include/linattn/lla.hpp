// Local Linear Attention (LLA; Zuo et al., "Local Linear Attention: An Optimal Interpolation of
// Linear and Softmax Attention For Test-Time Regression"), causal (algorithms.md §4.9).
//
// Per query i and its keys j (j <= i):
//   w_ij = exp(scale q_i.k_j - m_i),  z_ij = k_j - q_i,  omega_i = sum_j w_ij,
//   mu_i = sum_j w_ij z_ij,  Sigma_i = sum_j w_ij z_ij z_ij^T + lambda_i omega_i I,
//   rho_i = Sigma_i^-1 mu_i,  delta_i = omega_i - mu_i.rho_i (+ delta_eps sign),
//   o_i = sum_j w_ij (1 - rho_i.z_ij) / delta_i v_j:
// the intercept of a weighted ridge regression of the values on z_ij (a local linear estimate
// at q_i). lambda -> infinity gives softmax attention. Cost O(T^2 K) like softmax attention.
//
// Not an Op of ops.hpp: it keeps a KV cache, has no state, and takes a regulariser and solver
// settings. Layout is fla's: q [B, Tq, H, K], k [B, T, H, K], v [B, T, H, V] with Tq <= T; the
// queries are the last Tq positions (query r sees keys 0 .. T - Tq + r), so Tq = T is prefill
// and training, Tq = 1 one decode step against the cache. cu_seqlens (B = 1) packs sequences;
// it needs Tq = T.
#pragma once

#include <cmath>
#include <cstdint>

#include "linattn/ops.hpp"
#include "linattn/tensor.hpp"

namespace linattn::lla {

// Work done by one call of the chunk or recurrent form, for benchmarks (FLOPs): query-key
// pairs of the query tiles (masked ones of diagonal tiles included), those pairs times the CG
// iterations of their tile (each iteration applies Sigma_i: 4K FLOPs per pair), and the pairs of
// the backward's key-tile pass.
struct Stats {
  int64_t tile_pairs = 0, cg_pairs = 0, key_pairs = 0;
};

// How the chunk and recurrent forms solve Sigma_i x = b (docs/design.md, "CG or a direct
// solve"): matrix-free conjugate gradients (FlashLLA; measured faster for K = 16..128), or
// Sigma_i accumulated per query and Cholesky-factored (2K^2 FLOPs per query-key pair plus
// K^3/3 per query, but no iteration count: exact whatever lambda, ignores the cg_* settings).
enum class Solver : int32_t { cg = 0, direct = 1 };

// Defaults are those of the authors' released code (FlashLLA `lla_attention`).
struct Args {
  TensorView q, k, v;
  double ridge_lambda = 10.0;          // lambda of every query, > 0 (ignored if the next is given)
  TensorView ridge_lambda_per_token;   // optional [B, Tq, H], every entry > 0
  TensorView cu_seqlens;               // [N+1] int32/int64; requires B == 1 and Tq == T
  double scale = NAN;                  // NaN: K^-0.5
  double delta_eps = 1e-12;            // delta += delta_eps * sign(delta), sign(0) = +1
  // Conjugate-gradient solve of Sigma_i rho_i = mu_i (chunk and recurrent forms; the reference
  // solves directly): stop a row when ||r||^2 <= cg_rtol * max(cg_atol, ||r_0||^2), after at
  // most cg_max_iters iterations; optional Jacobi preconditioner.
  double cg_atol = 1e-12;
  double cg_rtol = 1e-12;
  int32_t cg_max_iters = 32;
  bool cg_use_preconditioner = false;
  Solver solver = Solver::cg;
  Stats* stats = nullptr;              // optional: counters added to (not reset)
};

// Gradients; a view not given is not computed. Each must have its input's shape, be contiguous
// and floating. dridge_lambda_per_token needs ridge_lambda_per_token.
struct Grads {
  TensorView dq, dk, dv, dridge_lambda_per_token;
};

// Forms: Form::reference (fp64, a direct solve per query: the oracle), Form::chunk (blockwise
// FlashLLA: query tiles, matrix-free CG; float64 inputs run the reference) and
// Form::recurrent (decode: each query alone against its cache; forward only).
// o must be contiguous [B, Tq, H, V] with v's dtype. Throws linattn::Error on bad input.
void forward(Form form, const Args& args, const TensorView& o);
void backward(Form form, const Args& args, const TensorView& d_o, const Grads& grads);
bool has_form(Form form, bool backward_pass);

}  // namespace linattn::lla
