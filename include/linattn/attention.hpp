// Softmax attention (algorithms.md §4.11): the baseline every linear op is measured against and
// the full-attention layer of hybrid models. It has no matrix state, so it has this API of its
// own rather than an linattn::Op.
//
// Causal, with an optional sliding window; GQA (H query heads over Hkv key/value heads,
// H % Hkv == 0, query head h reads kv head h / (H / Hkv)); variable-length batches (cu_seqlens,
// B = 1); float32 / bfloat16 storage with fp32 arithmetic, float64 through the fp64 oracle.
// Forms: Form::reference (the fp64 oracle, every form is tested against it), Form::chunk (the
// tiled flash-style forward and backward: no T x T matrix is ever stored) and, for the decode step
// against a KV cache, Form::recurrent. Layout and argument names follow fla's parallel_attn:
// q [B, T, H, K], k [B, T, Hkv, K], v [B, T, Hkv, V].
#pragma once

#include <cmath>
#include <cstdint>

#include "linattn/ops.hpp"
#include "linattn/tensor.hpp"

namespace linattn {

struct AttentionArgs {
  TensorView q, k, v;        // [B, T, H, K], [B, T, Hkv, K], [B, T, Hkv, V]
  TensorView cu_seqlens;     // optional [N+1] int32/int64 token offsets; requires B == 1
  double scale = NAN;        // NaN means the default K^-0.5
  int64_t window_size = 0;   // 0: full causal; W >= 1: token i reads keys [i - W + 1, i] (fla)
};

struct AttentionOutputs {
  TensorView o;    // [B, T, H, V], dtype of v
  TensorView lse;  // optional [B, T, H] float32/float64: log sum_j exp(scale q_i . k_j), for backward
};

struct AttentionGrads {
  TensorView dq, dk, dv;  // each optional, shaped and typed like its input
};

// Throws Error on bad input. Float64 inputs run the oracle whatever the form.
void attention_forward(Form form, const AttentionArgs& args, const AttentionOutputs& out);

// Gradients given the upstream gradient d_o [B, T, H, V]. The chunk form needs the forward's o
// and lse (it recomputes the probabilities tile by tile from them, §4.11 c); the reference form
// recomputes everything in fp64 and ignores them. o and lse are trusted, not checked against
// q and k: an lse below a row's largest score makes exp(s - lse) overflow (NaN/Inf gradients).
void attention_backward(Form form, const AttentionArgs& args, const TensorView& o,
                        const TensorView& lse, const TensorView& d_o, const AttentionGrads& grads);

// Decode against a KV cache: the newest Tq tokens of each of N sequences attend to their cache.
// The cache already holds the new tokens' keys and values: sequence n has cache_seqlens[n] valid
// rows, and its query t sits at position cache_seqlens[n] - Tq + t (causal, bottom-right
// aligned as in flash-attn's flash_attn_with_kvcache), with the same window rule as above.
struct AttentionCacheArgs {
  TensorView q;                 // [N, Tq, H, K]
  TensorView k_cache, v_cache;  // [N, S, Hkv, K], [N, S, Hkv, V]
  TensorView cache_seqlens;     // [N] int32/int64, Tq <= cache_seqlens[n] <= S
  double scale = NAN;
  int64_t window_size = 0;
};

// Form::reference (fp64) or Form::recurrent; o is [N, Tq, H, V] with v_cache's dtype.
void attention_decode(Form form, const AttentionCacheArgs& args, const TensorView& o);

}  // namespace linattn
