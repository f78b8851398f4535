// Register-blocked fp32 GEMM microkernel (Highway, dynamic dispatch). The nn kernel keeps an
// MR x (2 vectors) tile of C in registers and streams A (broadcast) and B (two vector loads)
// over k: 2*MR FMAs per 2 loads + MR broadcasts. MR = 8 on 512-bit targets (16 accumulators of
// 32 registers), 4 on narrower ones (8 of 16). The nt and tn variants transpose the operand that
// is not row-major into thread-local scratch first: O(k*n) moves against O(m*n*k) FMAs.
#include "kernels/gemm.hpp"

#include <algorithm>
#include <type_traits>

#include "core/dtype.hpp"
#include "core/scratch.hpp"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/gemm.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace linattn::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using D = hn::ScalableTag<float>;
using Vf = hn::Vec<D>;

// One MR x (2 vectors) tile of C, all in registers.
template <int MR>
HWY_INLINE void Tile(int64_t k, const float* HWY_RESTRICT A, int64_t lda,
                     const float* HWY_RESTRICT B, int64_t ldb, float* HWY_RESTRICT C,
                     int64_t ldc, bool accumulate) {
  const D d;
  const size_t N = hn::Lanes(d);
  Vf c0[MR], c1[MR];
  for (int r = 0; r < MR; ++r) {
    c0[r] = accumulate ? hn::LoadU(d, C + r * ldc) : hn::Zero(d);
    c1[r] = accumulate ? hn::LoadU(d, C + r * ldc + N) : hn::Zero(d);
  }
  for (int64_t p = 0; p < k; ++p) {
    const Vf b0 = hn::LoadU(d, B + p * ldb);
    const Vf b1 = hn::LoadU(d, B + p * ldb + N);
    for (int r = 0; r < MR; ++r) {
      const Vf a = hn::Set(d, A[r * lda + p]);
      c0[r] = hn::MulAdd(a, b0, c0[r]);
      c1[r] = hn::MulAdd(a, b1, c1[r]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    hn::StoreU(c0[r], d, C + r * ldc);
    hn::StoreU(c1[r], d, C + r * ldc + N);
  }
}

constexpr int kRowsPerTile = HWY_MAX_BYTES >= 64 ? 8 : 4;

template <int MR>
HWY_INLINE void RowTail(int rows, int64_t k, const float* A, int64_t lda, const float* B,
                        int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  if constexpr (MR > 0) {
    if (rows == MR) return Tile<MR>(k, A, lda, B, ldb, C, ldc, accumulate);
    RowTail<MR - 1>(rows, k, A, lda, B, ldb, C, ldc, accumulate);
  }
}

// All rows of one block of `width` columns of C.
void ColumnBlock(int64_t m, int64_t k, const float* A, int64_t lda, const float* B, int64_t ldb,
                 float* C, int64_t ldc, bool accumulate) {
  int64_t i = 0;
  for (; i + kRowsPerTile <= m; i += kRowsPerTile)
    Tile<kRowsPerTile>(k, A + i * lda, lda, B, ldb, C + i * ldc, ldc, accumulate);
  if (i < m)
    RowTail<kRowsPerTile - 1>(static_cast<int>(m - i), k, A + i * lda, lda, B, ldb, C + i * ldc,
                              ldc, accumulate);
}

void GemmNN(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B,
            int64_t ldb, float* C, int64_t ldc, bool accumulate, float* pad) {
  const D d;
  const int64_t width = 2 * static_cast<int64_t>(hn::Lanes(d));
  int64_t j = 0;
  for (; j + width <= n; j += width) ColumnBlock(m, k, A, lda, B + j, ldb, C + j, ldc, accumulate);
  if (j == n) return;
  // Column tail: copied into zero-padded full-width panels, so no load or store ever reaches
  // past the caller's rows (masked loads are plain loads on pre-AVX2 targets).
  const int64_t cols = n - j;
  float* Bp = pad;
  float* Cp = pad + k * width;
  for (int64_t p = 0; p < k; ++p)
    for (int64_t c = 0; c < width; ++c) Bp[p * width + c] = c < cols ? B[p * ldb + j + c] : 0.0f;
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < width; ++c) Cp[r * width + c] = accumulate && c < cols ? C[r * ldc + j + c] : 0.0f;
  ColumnBlock(m, k, A, lda, Bp, width, Cp, width, accumulate);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < cols; ++c) C[r * ldc + j + c] = Cp[r * width + c];
}

int64_t Width() { return 2 * static_cast<int64_t>(hn::Lanes(D())); }

// Transpose in 8 x 8 tiles; edges element by element. On 256-bit and wider targets a tile is
// eight 8-lane vectors shuffled in three rounds (32-bit interleave, 64-bit interleave, 128-bit
// halves), the classic AVX transpose.
// In is float (or uint16_t: bf16 bits, widened to fp32 on the way: the rows of a transposed bf16
// view, ops/common/rows.hpp).
HWY_INLINE float Widen(float x) { return x; }
HWY_INLINE float Widen(uint16_t bits) { return bf16_to_f32(bits); }

#if HWY_MAX_BYTES >= 32
template <typename In>
HWY_INLINE void Tile8x8(const In* HWY_RESTRICT in, int64_t ld_in, float* HWY_RESTRICT out,
                        int64_t ld_out) {
  const hn::CappedTag<float, 8> d;
  const hn::Repartition<uint64_t, decltype(d)> d64;
  using V8 = hn::Vec<decltype(d)>;
  V8 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) {
    if constexpr (std::is_same_v<In, float>) {
      r[i] = hn::LoadU(d, in + i * ld_in);
    } else {  // bf16 -> fp32: the bits in the high half
      const hn::Rebind<uint16_t, decltype(d)> d16;
      const hn::RebindToUnsigned<decltype(d)> d32;
      r[i] = hn::BitCast(d, hn::ShiftLeft<16>(hn::PromoteTo(d32, hn::LoadU(d16, in + i * ld_in))));
    }
  }
  for (int i = 0; i < 8; i += 2) {
    t[i] = hn::InterleaveLower(d, r[i], r[i + 1]);
    t[i + 1] = hn::InterleaveUpper(d, r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4)
    for (int j = 0; j < 2; ++j) {
      const auto a = hn::BitCast(d64, t[i + j]), b = hn::BitCast(d64, t[i + j + 2]);
      u[i + 2 * j] = hn::BitCast(d, hn::InterleaveLower(d64, a, b));
      u[i + 2 * j + 1] = hn::BitCast(d, hn::InterleaveUpper(d64, a, b));
    }
  for (int i = 0; i < 4; ++i) {
    hn::StoreU(hn::ConcatLowerLower(d, u[i + 4], u[i]), d, out + i * ld_out);
    hn::StoreU(hn::ConcatUpperUpper(d, u[i + 4], u[i]), d, out + (i + 4) * ld_out);
  }
}
#else
template <typename In>
HWY_INLINE void Tile8x8(const In* HWY_RESTRICT in, int64_t ld_in, float* HWY_RESTRICT out,
                        int64_t ld_out) {
  for (int64_t r = 0; r < 8; ++r)
    for (int64_t c = 0; c < 8; ++c) out[c * ld_out + r] = Widen(in[r * ld_in + c]);
}
#endif

template <typename In>
HWY_INLINE void TransposeTiles(int64_t rows, int64_t cols, const In* HWY_RESTRICT in,
                               int64_t ld_in, float* HWY_RESTRICT out, int64_t ld_out) {
  constexpr int64_t kTile = 8;
  const int64_t full_rows = rows / kTile * kTile, full_cols = cols / kTile * kTile;
  for (int64_t r0 = 0; r0 < full_rows; r0 += kTile)
    for (int64_t c0 = 0; c0 < full_cols; c0 += kTile)
      Tile8x8(in + r0 * ld_in + c0, ld_in, out + c0 * ld_out + r0, ld_out);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = (r < full_rows ? full_cols : 0); c < cols; ++c)
      out[c * ld_out + r] = Widen(in[r * ld_in + c]);
}

void Transpose(int64_t rows, int64_t cols, const float* HWY_RESTRICT in, int64_t ld_in,
               float* HWY_RESTRICT out, int64_t ld_out) {
  TransposeTiles(rows, cols, in, ld_in, out, ld_out);
}

void TransposeBf16(int64_t rows, int64_t cols, const uint16_t* HWY_RESTRICT in, int64_t ld_in,
                   float* HWY_RESTRICT out, int64_t ld_out) {
  TransposeTiles(rows, cols, in, ld_in, out, ld_out);
}

}  // namespace HWY_NAMESPACE
}  // namespace linattn::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace linattn::kernels {

HWY_EXPORT(GemmNN);
HWY_EXPORT(Width);
HWY_EXPORT(Transpose);
HWY_EXPORT(TransposeBf16);

// Scratch slots: the transposed operand of nt/tn, and the padded column tail of nn.
constexpr int kTransposeSlot = ScratchArena::kGemmSlot;
constexpr int kPadSlot = ScratchArena::kGemmSlot - 1;

void gemm_nn(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B,
             int64_t ldb, float* C, int64_t ldc, Accumulate acc) {
  if (m <= 0 || n <= 0) return;
  const int64_t width = HWY_DYNAMIC_DISPATCH(Width)();
  float* pad = n % width ? ScratchArena::local().get<float>(kPadSlot, (k + m) * width) : nullptr;
  HWY_DYNAMIC_DISPATCH(GemmNN)(m, n, k, A, lda, B, ldb, C, ldc, acc == Accumulate::yes, pad);
}

void transpose(int64_t rows, int64_t cols, const float* in, int64_t ld_in, float* out,
               int64_t ld_out) {
  HWY_DYNAMIC_DISPATCH(Transpose)(rows, cols, in, ld_in, out, ld_out);
}

void transpose_bf16(int64_t rows, int64_t cols, const uint16_t* in, int64_t ld_in, float* out,
                    int64_t ld_out) {
  HWY_DYNAMIC_DISPATCH(TransposeBf16)(rows, cols, in, ld_in, out, ld_out);
}

void gemm_nt(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B,
             int64_t ldb, float* C, int64_t ldc, Accumulate acc) {
  float* Bt = ScratchArena::local().get<float>(kTransposeSlot, static_cast<size_t>(k * n));
  transpose(n, k, B, ldb, Bt, n);
  gemm_nn(m, n, k, A, lda, Bt, n, C, ldc, acc);
}

void gemm_tn(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B,
             int64_t ldb, float* C, int64_t ldc, Accumulate acc) {
  float* At = ScratchArena::local().get<float>(kTransposeSlot, static_cast<size_t>(m * k));
  transpose(k, m, A, lda, At, k);
  gemm_nn(m, n, k, At, k, B, ldb, C, ldc, acc);
}

void lower_gemm_nn(int64_t m, int64_t n, const float* L, int64_t ldl, const float* B, int64_t ldb,
                   float* C, int64_t ldc, Accumulate acc) {
  for (int64_t i0 = 0; i0 < m; i0 += kTriangleBlock) {
    const int64_t rows = std::min(kTriangleBlock, m - i0), end = i0 + rows;
    gemm_nn(rows, n, end, L + i0 * ldl, ldl, B, ldb, C + i0 * ldc, ldc, acc);
  }
}

void lower_gemm_tn(int64_t m, int64_t n, const float* L, int64_t ldl, const float* B, int64_t ldb,
                   float* C, int64_t ldc, Accumulate acc) {
  for (int64_t j0 = 0; j0 < m; j0 += kTriangleBlock) {  // rows j0.. of C need L rows >= j0
    const int64_t rows = std::min(kTriangleBlock, m - j0);
    gemm_tn(rows, n, m - j0, L + j0 * ldl + j0, ldl, B + j0 * ldb, ldb, C + j0 * ldc, ldc, acc);
  }
}

void lower_gemm_nt(int64_t m, int64_t k, const float* A, int64_t lda, const float* B, int64_t ldb,
                   float* C, int64_t ldc) {
  float* Bt = ScratchArena::local().get<float>(kTransposeSlot, static_cast<size_t>(k * m));
  transpose(m, k, B, ldb, Bt, m);
  for (int64_t i0 = 0; i0 < m; i0 += kTriangleBlock) {
    const int64_t rows = std::min(kTriangleBlock, m - i0), end = i0 + rows;
    gemm_nn(rows, end, k, A + i0 * lda, lda, Bt, m, C + i0 * ldc, ldc, Accumulate::no);
  }
}

}  // namespace linattn::kernels
#endif  // HWY_ONCE
