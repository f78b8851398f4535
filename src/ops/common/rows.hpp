// Moving rows between caller tensors (float32 / bfloat16, any strides) and the fp32 working
// buffers of the fast forms: load-and-widen on the way in, round-and-store on the way out.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core/dtype.hpp"
#include "kernels/gemm.hpp"
#include "linattn/tensor.hpp"

namespace linattn {

// Offset of element [i0, i1, i2, 0] of a rank-3 or rank-4 view.
inline int64_t row_offset(const TensorView& t, int64_t i0, int64_t i1, int64_t i2) {
  return i0 * t.strides[0] + i1 * t.strides[1] + i2 * t.strides[2];
}

// The [rows, D] block t[b, row0 + r, head, d] (D = t.shape[3]) as a base element and its two
// strides: sr between rows (tokens), sd between elements of a row.
struct RowBlock {
  int64_t base, sr, sd;
};
inline RowBlock row_block(const TensorView& t, int64_t b, int64_t row0, int64_t head) {
  return {row_offset(t, b, row0, head), t.strides[1], t.strides[3]};
}

// Whether a block is read column by column: when tokens are closer in memory than the elements
// of a row, as in a transposed view (models pass q, k, v as views of a [B, D, T] convolution
// output, so d has stride T and tokens stride 1). A chunk of such a view is a contiguous [D, rows]
// block: read along its columns it streams through memory and the transpose happens in cache,
// where row by row every element is a cache line (and rows T elements apart share cache sets).
inline bool by_columns(const RowBlock& blk) {
  return (blk.sr < 0 ? -blk.sr : blk.sr) < (blk.sd < 0 ? -blk.sd : blk.sd);
}

// dst[r * ld + d] = convert(in[blk.base + r * sr + d * sd]) for r < rows, d < D, for any strides
// (negative and zero too), walking the block along whichever of its strides is shorter; rows of
// unit stride are copied as they are when no conversion is needed.
template <typename In, typename Out, typename Convert>
inline void gather_block(const In* in, const RowBlock& blk, int64_t rows, int64_t D, Out* dst,
                         int64_t ld, Convert convert) {
  in += blk.base;
  if constexpr (std::is_same_v<In, Out>) {
    if (blk.sd == 1) {
      for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * ld, in + r * blk.sr, D * sizeof(Out));
      return;
    }
  }
  if (by_columns(blk)) {
    for (int64_t d = 0; d < D; ++d)
      for (int64_t r = 0; r < rows; ++r) dst[r * ld + d] = convert(in[r * blk.sr + d * blk.sd]);
  } else {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t d = 0; d < D; ++d) dst[r * ld + d] = convert(in[r * blk.sr + d * blk.sd]);
  }
}

// A transposed view's block: D columns of `rows` contiguous tokens (sr = 1).
inline bool transposed(const RowBlock& blk) { return blk.sr == 1 && blk.sd > 1; }

// The [rows, D] block blk of t as fp32 rows: dst[r * ld + d] = t[blk.base + r * sr + d * sd].
// Widening bf16 is a 16-bit shift into the high half: loops the compiler vectorises.
inline void load_block(const TensorView& t, const RowBlock& blk, int64_t rows, int64_t D,
                       float* dst, int64_t ld) {
  if (t.dtype == DType::f32) {
    const float* in = static_cast<const float*>(t.data);
    if (transposed(blk)) kernels::transpose(D, rows, in + blk.base, blk.sd, dst, ld);
    else gather_block(in, blk, rows, D, dst, ld, [](float x) { return x; });
  } else if (t.dtype == DType::bf16) {
    const uint16_t* in = static_cast<const uint16_t*>(t.data);
    if (transposed(blk)) kernels::transpose_bf16(D, rows, in + blk.base, blk.sd, dst, ld);
    else gather_block(in, blk, rows, D, dst, ld, bf16_to_f32);
  } else {  // float64 (the fast forms' rows are floating)
    gather_block(static_cast<const double*>(t.data), blk, rows, D, dst, ld,
                 [](double x) { return static_cast<float>(x); });
  }
}

// dst[r * ld + d] = t[b, row0 + r, head, d] for r < rows, d < D (D = t.shape[3]), any strides.
inline void load_rows(const TensorView& t, int64_t b, int64_t row0, int64_t rows, int64_t head,
                      float* dst, int64_t ld) {
  load_block(t, row_block(t, b, row0, head), rows, t.shape[3], dst, ld);
}

// dst[r * ld + d] = t[b, row0 + r, head, d] as bf16 bits: bf16 rows copied as they are, other
// dtypes rounded (the operands of the bf16-product chunk GEMMs, kernels/gemm_bf16.hpp).
inline void load_rows_bf16(const TensorView& t, int64_t b, int64_t row0, int64_t rows,
                           int64_t head, uint16_t* dst, int64_t ld) {
  const int64_t D = t.shape[3];
  const RowBlock blk = row_block(t, b, row0, head);
  if (t.dtype == DType::bf16)
    gather_block(static_cast<const uint16_t*>(t.data), blk, rows, D, dst, ld, [](uint16_t x) { return x; });
  else if (t.dtype == DType::f32)
    gather_block(static_cast<const float*>(t.data), blk, rows, D, dst, ld, f32_to_bf16);
  else
    gather_block(static_cast<const double*>(t.data), blk, rows, D, dst, ld,
                 [](double x) { return f32_to_bf16(static_cast<float>(x)); });
}

// Asks the cache for rows [row0, row0 + rows) of t[b, :, head, :] ahead of use. Rows of one head
// are H*K elements apart (fla's layout), a page or more: the hardware prefetcher does not follow
// such strides, so the chunk kernels prefetch their next chunk while computing this one. The
// block is prefetched as the runs it is made of, along d (token-major rows) or along the tokens
// (a transposed view: by_columns); a block with no unit-stride run is left to the hardware.
inline void prefetch_rows(const TensorView& t, int64_t b, int64_t row0, int64_t rows, int64_t head) {
  const RowBlock blk = row_block(t, b, row0, head);
  const bool columns = by_columns(blk);
  const int64_t runs = columns ? t.shape[3] : rows, run_stride = columns ? blk.sd : blk.sr;
  const int64_t length = columns ? rows : t.shape[3], step = columns ? blk.sr : blk.sd;
  if (step != 1 && step != -1) return;
  const int64_t size = static_cast<int64_t>(dtype_size(t.dtype)), bytes = length * size;
  const char* data = static_cast<const char*>(t.data);
  for (int64_t i = 0; i < runs; ++i) {
    // A run with step -1 ends at its start element: it begins length - 1 elements lower.
    const char* run = data + (blk.base + i * run_stride + (step < 0 ? 1 - length : 0)) * size;
    for (int64_t offset = 0; offset < bytes; offset += 64) __builtin_prefetch(run + offset);
  }
}

// t[b, row0 + r, head, d] = src[r * ld + d], rounded to t's dtype.
inline void store_rows(const TensorView& t, int64_t b, int64_t row0, int64_t rows, int64_t head,
                       const float* src, int64_t ld) {
  const int64_t D = t.shape[3], sd = t.strides[3];
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t base = row_offset(t, b, row0 + r, head);
    const float* in = src + r * ld;
    if (t.dtype == DType::f32 && sd == 1) {
      std::memcpy(static_cast<float*>(t.data) + base, in, D * sizeof(float));
    } else if (t.dtype == DType::bf16) {
      uint16_t* out = static_cast<uint16_t*>(t.data) + base;
      for (int64_t d = 0; d < D; ++d) out[d * sd] = f32_to_bf16(in[d]);
    } else {
      for (int64_t d = 0; d < D; ++d) store_from_double(t.data, t.dtype, base + d * sd, in[d]);
    }
  }
}

// Rows [row0, row0 + rows) of t[b, :, head, :] as fp32 rows `ld` apart: the caller's memory
// itself when it is float32 with unit-stride rows (no copy on the hot path), else widened into
// `buf` (ld = D).
inline const float* f32_rows(const TensorView& t, int64_t b, int64_t row0, int64_t rows,
                             int64_t head, float* buf, int64_t& ld) {
  if (t.dtype == DType::f32 && t.strides[3] == 1) {
    ld = t.strides[1];
    return static_cast<const float*>(t.data) + row_offset(t, b, row0, head);
  }
  ld = t.shape[3];
  load_rows(t, b, row0, rows, head, buf, ld);
  return buf;
}

// fp64 rows for the oracles: dst[r * D + d] = t[b, row0 + r, head, d], and back (rounded).
inline void load_rows_f64(const TensorView& t, int64_t b, int64_t row0, int64_t rows,
                          int64_t head, double* dst) {
  const int64_t D = t.shape[3];
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < D; ++d)
      dst[r * D + d] = load_as_double(t.data, t.dtype, row_offset(t, b, row0 + r, head) + d * t.strides[3]);
}
inline void store_rows_f64(const TensorView& t, int64_t b, int64_t row0, int64_t rows,
                           int64_t head, const double* src) {
  const int64_t D = t.shape[3];
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < D; ++d)
      store_from_double(t.data, t.dtype, row_offset(t, b, row0 + r, head) + d * t.strides[3], src[r * D + d]);
}

// Scalar t[b, row, head] of a rank-3 view (gates, beta) as float.
inline float load_scalar(const TensorView& t, int64_t b, int64_t row, int64_t head) {
  return static_cast<float>(load_as_double(t.data, t.dtype, row_offset(t, b, row, head)));
}
inline void store_scalar(const TensorView& t, int64_t b, int64_t row, int64_t head, double value) {
  store_from_double(t.data, t.dtype, row_offset(t, b, row, head), value);
}

// State [n, head] of a [N, HV, K, V] view as K*V contiguous floats (zeros if not given).
inline void load_state(const TensorView& t, int64_t n, int64_t head, int64_t K, int64_t V, float* dst) {
  if (!t.given()) {
    std::memset(dst, 0, K * V * sizeof(float));
    return;
  }
  load_block(t, {n * t.strides[0] + head * t.strides[1], t.strides[2], t.strides[3]}, K, V, dst, V);
}

inline void store_state(const TensorView& t, int64_t n, int64_t head, int64_t K, int64_t V, const float* src) {
  for (int64_t r = 0; r < K; ++r) {
    const int64_t base = n * t.strides[0] + head * t.strides[1] + r * t.strides[2];
    for (int64_t c = 0; c < V; ++c) store_from_double(t.data, t.dtype, base + c * t.strides[3], src[r * V + c]);
  }
}

// Where a decode kernel reads its starting state and writes its final one, for (sequence n,
// value head hv): the caller's fp32 rows in place when their columns are unit-stride (no copy
// on the decode path; a caller may pass the same buffer as initial and final state), otherwise
// `scratch` (K x V), widened from the initial state or zeroed. final_rows is null unless an fp32
// final state was asked for (outputs are contiguous).
struct DecodeState {
  const float* src;
  int64_t ld_src;
  float* final_rows;
};
inline DecodeState decode_state(const TensorView& initial_state, const TensorView& final_state,
                                bool output_final_state, int64_t n, int64_t hv, int64_t K,
                                int64_t V, float* scratch) {
  DecodeState st{scratch, V, nullptr};
  const TensorView& h0 = initial_state;
  if (h0.given() && h0.dtype == DType::f32 && h0.strides[3] == 1) {
    st.src = static_cast<const float*>(h0.data) + n * h0.strides[0] + hv * h0.strides[1];
    st.ld_src = h0.strides[2];
  } else {
    load_state(h0, n, hv, K, V, scratch);
  }
  if (output_final_state && final_state.dtype == DType::f32)
    st.final_rows = static_cast<float*>(final_state.data) + (n * final_state.shape[1] + hv) * K * V;
  return st;
}

// Channels [d0, d0 + width) of a [B, T, D] view as a [B, T, 1, width] view (rows.hpp's layout).
inline TensorView channel_block(const TensorView& t, int64_t d0, int64_t width) {
  TensorView v;
  v.data = static_cast<char*>(t.data) + d0 * t.strides[2] * static_cast<int64_t>(dtype_size(t.dtype));
  v.dtype = t.dtype;
  v.ndim = 4;
  v.shape = {t.shape[0], t.shape[1], 1, width};
  v.strides = {t.strides[0], t.strides[1], 0, t.strides[2]};
  return v;
}

// dst[r * ld + c] = t[b, row0 + r, d0 + c] of a rank-3 view for r < rows, c < width: token-major
// [B, T, D] rows, or channel-first arrays passed as transposed views (e.g. mamba's [B, D, L]),
// which load_rows reads as the contiguous columns they are.
inline void load_tile(const TensorView& t, int64_t b, int64_t row0, int64_t rows, int64_t d0,
                      int64_t width, float* dst, int64_t ld) {
  load_rows(channel_block(t, d0, width), b, row0, rows, 0, dst, ld);
}

// The rank-3 view t[:, :, index, :] of a rank-4 view (a group's rows of [B, T, G, N]).
inline TensorView select_dim2(const TensorView& t, int64_t index) {
  TensorView v = t;
  v.data = static_cast<char*>(t.data) + index * t.strides[2] * static_cast<int64_t>(dtype_size(t.dtype));
  v.ndim = 3;
  v.shape = {t.shape[0], t.shape[1], t.shape[3]};
  v.strides = {t.strides[0], t.strides[1], t.strides[3]};
  return v;
}

}  // namespace linattn
