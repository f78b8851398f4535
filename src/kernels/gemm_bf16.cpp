// bf16-operand GEMMs (gemm_bf16.hpp). Operands are packed as 32-bit words holding a pair of bf16
// values consecutive along k (even k in the low half): A row-major by pairs (or, for A^T, by
// pairs of its rows), B as [k/2, n] pairs of rows with n padded to the tile width. The
// microkernel keeps an MR x (2 vectors) tile of C in registers, like gemm.cpp's, and per pair of
// k does 2*MR pairwise dots of a broadcast A pair with two B vectors: natively one vdpbf16ps each
// (2 products per lane per instruction, twice the fp32 FMA rate), else two fp32 FMAs on the
// widened halves (bf16 -> fp32 is a 16-bit shift: exact products either way).
#include "kernels/gemm_bf16.hpp"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>
#include <cstring>

#include "core/dtype.hpp"
#include "core/scratch.hpp"

#ifndef LINATTN_KERNELS_GEMM_BF16_TYPES
#define LINATTN_KERNELS_GEMM_BF16_TYPES
namespace linattn::kernels {

// The pair layout puts the even-k value in the low half of a word.
static_assert(std::endian::native == std::endian::little, "bf16 pair packing assumes little endian");

constexpr int kMaxTileRows = 8;

// An r-row tile: C[r x width] (+)= sum over `pairs` of A's pairs (row i, pair p at
// A[i * a_row + p * a_pair]) times B's (pair p, column j at B[p * ldb + j]).
using PairTileFn = void (*)(int64_t pairs, const uint32_t* A, int64_t a_row, int64_t a_pair,
                            const uint32_t* B, int64_t ldb, float* C, int64_t ldc, bool accumulate);
struct PairKernel {
  int64_t width;  // columns of C per tile (two vectors)
  int rows;       // rows of a full tile
  PairTileFn tile[kMaxTileRows + 1];  // tile[r] for r = 1..rows
};

}  // namespace linattn::kernels
#endif

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/gemm_bf16.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace linattn::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using D = hn::ScalableTag<float>;
using DU = hn::RebindToUnsigned<D>;
using DI = hn::RebindToSigned<D>;
using DU16 = hn::Rebind<uint16_t, D>;
using Vf = hn::Vec<D>;
using Vu = hn::Vec<DU>;

// bf16 bits of fp32 lanes in the low halves, rounded as f32_to_bf16 (nearest even; NaN stays a
// quiet NaN).
HWY_INLINE Vu RoundToBf16(Vf v) {
  const DU du;
  const Vu bits = hn::BitCast(du, v);
  const Vu high = hn::ShiftRight<16>(bits);
  const Vu rounded = hn::ShiftRight<16>(hn::Add(bits, hn::Add(hn::Set(du, 0x7fffu), hn::And(high, hn::Set(du, 1u)))));
  return hn::IfThenElse(hn::RebindMask(du, hn::IsNaN(v)), hn::Or(high, hn::Set(du, 0x40u)), rounded);
}

// out row r = bf16(src row r) as k values then a zero when k is odd (ld_out words per row).
void PackRowsF32(int64_t rows, int64_t k, const float* HWY_RESTRICT src, int64_t ld,
                 uint32_t* HWY_RESTRICT out, int64_t ld_out) {
  const D d;
  const DU16 du16;
  const DI di;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * ld;
    uint16_t* o = reinterpret_cast<uint16_t*>(out + r * ld_out);
    int64_t j = 0;
    for (; j + N <= k; j += N)
      hn::StoreU(hn::DemoteTo(du16, hn::BitCast(di, RoundToBf16(hn::LoadU(d, s + j)))), du16, o + j);
    for (; j < k; ++j) o[j] = f32_to_bf16(s[j]);
    if (k % 2) o[k] = 0;
  }
}

// out[p * ld_out + j] = (src[2p, j], src[2p+1, j]) for pairs p < ceil(k/2), j < n; zero for a
// missing row 2p+1 and for columns n..ld_out.
template <typename Row>
HWY_INLINE void PackPairRows(int64_t k, int64_t n, uint32_t* HWY_RESTRICT out, int64_t ld_out,
                             Row row) {
  const DU du;
  const int64_t N = static_cast<int64_t>(hn::Lanes(du));
  for (int64_t p = 0; 2 * p < k; ++p) {
    uint32_t* o = out + p * ld_out;
    const bool odd = 2 * p + 1 < k;
    int64_t j = 0;
    for (; j + N <= n; j += N) {
      const Vu hi = odd ? row.vector(2 * p + 1, j) : hn::Zero(du);
      hn::StoreU(hn::Or(row.vector(2 * p, j), hn::ShiftLeft<16>(hi)), du, o + j);
    }
    for (; j < n; ++j) o[j] = row.scalar(2 * p, j) | (odd ? uint32_t{row.scalar(2 * p + 1, j)} << 16 : 0u);
    std::fill(o + n, o + ld_out, 0u);
  }
}

void PackPairRowsF32(int64_t k, int64_t n, const float* HWY_RESTRICT src, int64_t ld,
                     uint32_t* HWY_RESTRICT out, int64_t ld_out) {
  struct {
    const float* src;
    int64_t ld;
    Vu vector(int64_t i, int64_t j) const { return RoundToBf16(hn::LoadU(D(), src + i * ld + j)); }
    uint32_t scalar(int64_t i, int64_t j) const { return f32_to_bf16(src[i * ld + j]); }
  } row{src, ld};
  PackPairRows(k, n, out, ld_out, row);
}

void PackPairRowsBf16(int64_t k, int64_t n, const uint16_t* HWY_RESTRICT src, int64_t ld,
                      uint32_t* HWY_RESTRICT out, int64_t ld_out) {
  struct {
    const uint16_t* src;
    int64_t ld;
    Vu vector(int64_t i, int64_t j) const { return hn::PromoteTo(DU(), hn::LoadU(DU16(), src + i * ld + j)); }
    uint32_t scalar(int64_t i, int64_t j) const { return src[i * ld + j]; }
  } row{src, ld};
  PackPairRows(k, n, out, ld_out, row);
}

// The widening tile: a pair word w holds bf16 values whose fp32 forms are w << 16 (even k) and
// w & 0xffff0000 (odd k).
template <int MR>
void PairTile(int64_t pairs, const uint32_t* HWY_RESTRICT A, int64_t a_row, int64_t a_pair,
              const uint32_t* HWY_RESTRICT B, int64_t ldb, float* HWY_RESTRICT C, int64_t ldc,
              bool accumulate) {
  const D d;
  const DU du;
  const size_t N = hn::Lanes(d);
  const Vu high = hn::Set(du, 0xffff0000u);
  Vf c0[MR], c1[MR];
  for (int r = 0; r < MR; ++r) {
    c0[r] = accumulate ? hn::LoadU(d, C + r * ldc) : hn::Zero(d);
    c1[r] = accumulate ? hn::LoadU(d, C + r * ldc + N) : hn::Zero(d);
  }
  for (int64_t p = 0; p < pairs; ++p) {
    const Vu b0 = hn::LoadU(du, B + p * ldb), b1 = hn::LoadU(du, B + p * ldb + N);
    const Vf b0_even = hn::BitCast(d, hn::ShiftLeft<16>(b0)), b0_odd = hn::BitCast(d, hn::And(b0, high));
    const Vf b1_even = hn::BitCast(d, hn::ShiftLeft<16>(b1)), b1_odd = hn::BitCast(d, hn::And(b1, high));
    for (int r = 0; r < MR; ++r) {
      const Vu a = hn::Set(du, A[r * a_row + p * a_pair]);
      const Vf a_even = hn::BitCast(d, hn::ShiftLeft<16>(a)), a_odd = hn::BitCast(d, hn::And(a, high));
      c0[r] = hn::MulAdd(a_odd, b0_odd, hn::MulAdd(a_even, b0_even, c0[r]));
      c1[r] = hn::MulAdd(a_odd, b1_odd, hn::MulAdd(a_even, b1_even, c1[r]));
    }
  }
  for (int r = 0; r < MR; ++r) {
    hn::StoreU(c0[r], d, C + r * ldc);
    hn::StoreU(c1[r], d, C + r * ldc + N);
  }
}

const PairKernel* WideningKernel() {
  static const PairKernel kernel = {
      2 * static_cast<int64_t>(hn::Lanes(D())), HWY_MAX_BYTES >= 64 ? 8 : 4,
      {nullptr, &PairTile<1>, &PairTile<2>, &PairTile<3>, &PairTile<4>, &PairTile<5>,
       &PairTile<6>, &PairTile<7>, &PairTile<8>}};
  return &kernel;
}

}  // namespace HWY_NAMESPACE
}  // namespace linattn::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#if defined(__x86_64__) && (defined(__clang__) || __GNUC__ >= 10)
#define LINATTN_NATIVE_BF16_DOT 1
#include <immintrin.h>
#endif

namespace linattn::kernels {

HWY_EXPORT(PackRowsF32);
HWY_EXPORT(PackPairRowsF32);
HWY_EXPORT(PackPairRowsBf16);
HWY_EXPORT(WideningKernel);

namespace {

#if LINATTN_NATIVE_BF16_DOT
// The native tile (AVX-512 BF16, 16 fp32 lanes per vector): one vdpbf16ps per pair and vector.
template <int MR>
__attribute__((target("avx512f,avx512bf16"))) void NativeTile(
    int64_t pairs, const uint32_t* __restrict A, int64_t a_row, int64_t a_pair,
    const uint32_t* __restrict B, int64_t ldb, float* __restrict C, int64_t ldc, bool accumulate) {
  __m512 c0[MR], c1[MR];
  for (int r = 0; r < MR; ++r) c0[r] = c1[r] = _mm512_setzero_ps();
  if (accumulate)  // (separate from the zeroing: a conditional initialiser sends GCC to the stack)
    for (int r = 0; r < MR; ++r) {
      c0[r] = _mm512_loadu_ps(C + r * ldc);
      c1[r] = _mm512_loadu_ps(C + r * ldc + 16);
    }
  for (int64_t p = 0; p < pairs; ++p) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(B + p * ldb);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(B + p * ldb + 16);
    for (int r = 0; r < MR; ++r) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(A[r * a_row + p * a_pair]));
      c0[r] = _mm512_dpbf16_ps(c0[r], a, b0);
      c1[r] = _mm512_dpbf16_ps(c1[r], a, b1);
    }
  }
  for (int r = 0; r < MR; ++r) {
    _mm512_storeu_ps(C + r * ldc, c0[r]);
    _mm512_storeu_ps(C + r * ldc + 16, c1[r]);
  }
}

const PairKernel kNative = {32, 8,
                            {nullptr, &NativeTile<1>, &NativeTile<2>, &NativeTile<3>, &NativeTile<4>,
                             &NativeTile<5>, &NativeTile<6>, &NativeTile<7>, &NativeTile<8>}};

bool cpu_has_native() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
  return yes;
}
#else
bool cpu_has_native() { return false; }
#endif

std::atomic<bool> force_widening{false};

const PairKernel& pair_kernel() {
#if LINATTN_NATIVE_BF16_DOT
  if (cpu_has_native() && !force_widening.load(std::memory_order_relaxed)) return kNative;
#endif
  // Dispatched on every call, not cached: the kernel tests switch targets between calls
  // (hwy::SetSupportedTargetsForTest), and the call is nothing next to the GEMM's work.
  return *HWY_DYNAMIC_DISPATCH(WideningKernel)();
}

// All rows of one block of kern.width columns of C.
void column_block(const PairKernel& kern, int64_t m, int64_t pairs, const uint32_t* A,
                  int64_t a_row, int64_t a_pair, const uint32_t* B, int64_t ldb, float* C,
                  int64_t ldc, bool acc) {
  int64_t i = 0;
  for (; i + kern.rows <= m; i += kern.rows)
    kern.tile[kern.rows](pairs, A + i * a_row, a_row, a_pair, B, ldb, C + i * ldc, ldc, acc);
  if (i < m) kern.tile[m - i](pairs, A + i * a_row, a_row, a_pair, B, ldb, C + i * ldc, ldc, acc);
}

// C[m x n] (+)= A B over `pairs` pairs of k. B's rows hold whole tiles (ldb >= n rounded up to
// the width, zero padded); the column tail of C goes through `pad` (m x width) so no store
// reaches past the caller's rows.
void pair_gemm(const PairKernel& kern, int64_t m, int64_t n, int64_t pairs, const uint32_t* A,
               int64_t a_row, int64_t a_pair, const uint32_t* B, int64_t ldb, float* C,
               int64_t ldc, bool acc, float* pad) {
  const int64_t w = kern.width;
  int64_t j = 0;
  for (; j + w <= n; j += w) column_block(kern, m, pairs, A, a_row, a_pair, B + j, ldb, C + j, ldc, acc);
  if (j == n) return;
  const int64_t cols = n - j;
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < w; ++c) pad[r * w + c] = acc && c < cols ? C[r * ldc + j + c] : 0.0f;
  column_block(kern, m, pairs, A, a_row, a_pair, B + j, ldb, pad, w, acc);
  for (int64_t r = 0; r < m; ++r) std::copy(pad + r * w, pad + r * w + cols, C + r * ldc + j);
}

void pack_rows(int64_t rows, int64_t k, const float* src, int64_t ld, uint32_t* out, int64_t ld_out) {
  HWY_DYNAMIC_DISPATCH(PackRowsF32)(rows, k, src, ld, out, ld_out);
}
void pack_rows(int64_t rows, int64_t k, const uint16_t* src, int64_t ld, uint32_t* out, int64_t ld_out) {
  for (int64_t r = 0; r < rows; ++r) {
    uint32_t* o = out + r * ld_out;
    std::memcpy(o, src + r * ld, k * sizeof(uint16_t));
    if (k % 2) o[k / 2] &= 0xffffu;  // the pair's missing odd half
  }
}
void pack_pair_rows(int64_t k, int64_t n, const float* src, int64_t ld, uint32_t* out, int64_t ld_out) {
  HWY_DYNAMIC_DISPATCH(PackPairRowsF32)(k, n, src, ld, out, ld_out);
}
void pack_pair_rows(int64_t k, int64_t n, const uint16_t* src, int64_t ld, uint32_t* out, int64_t ld_out) {
  HWY_DYNAMIC_DISPATCH(PackPairRowsBf16)(k, n, src, ld, out, ld_out);
}

int64_t pairs_of(int64_t k) { return (k + 1) / 2; }
int64_t round_up(int64_t n, int64_t w) { return (n + w - 1) / w * w; }

// Rows of an operand as pair words, ld_words apart: bf16 rows with even k and leading dimension
// (and 4-byte alignment) are already that and are read in place; others are packed into buf.
const uint32_t* pair_words(int64_t rows, int64_t k, const uint16_t* src, int64_t ld, uint32_t* buf,
                           int64_t& ld_words) {
  if (k % 2 == 0 && ld % 2 == 0 && reinterpret_cast<uintptr_t>(src) % alignof(uint32_t) == 0) {
    ld_words = ld / 2;
    return reinterpret_cast<const uint32_t*>(src);
  }
  ld_words = pairs_of(k);
  pack_rows(rows, k, src, ld, buf, ld_words);
  return buf;
}
const uint32_t* pair_words(int64_t rows, int64_t k, const float* src, int64_t ld, uint32_t* buf,
                           int64_t& ld_words) {
  ld_words = pairs_of(k);
  pack_rows(rows, k, src, ld, buf, ld_words);
  return buf;
}

// The packed operands of one call in the calling thread's scratch (gemm.cpp's slots: the two
// families of kernels never nest): three word regions and the column-tail pad.
struct Buffers {
  uint32_t* a;
  uint32_t* b;
  uint32_t* t;
  float* pad;
};
Buffers buffers(int64_t a_words, int64_t b_words, int64_t t_words, int64_t pad_floats) {
  constexpr int64_t kLine = kScratchAlignment / sizeof(uint32_t);
  const int64_t a_size = round_up(a_words, kLine), b_size = round_up(b_words, kLine);
  ScratchArena& arena = ScratchArena::local();
  uint32_t* words = arena.get<uint32_t>(ScratchArena::kGemmSlot, a_size + b_size + t_words);
  float* pad = arena.get<float>(ScratchArena::kGemmSlot - 1, pad_floats);
  return {words, words + a_size, words + a_size + b_size, pad};
}

}  // namespace

Bf16Dot bf16_dot() {
  return cpu_has_native() && !force_widening.load(std::memory_order_relaxed) ? Bf16Dot::native
                                                                              : Bf16Dot::widening;
}

void force_bf16_widening(bool force) { force_widening.store(force, std::memory_order_relaxed); }

Products chunk_products(bool bf16_inputs) {
  return bf16_inputs && bf16_dot() == Bf16Dot::native ? Products::bf16 : Products::f32;
}

// A's pairs as the microkernel reads them: row i, pair p at words[i * row + p * pair].
struct PairWords {
  const uint32_t* words;
  int64_t row, pair;
};

// C[m x n] (+)= A B[k x n], with pack_a(buffer) giving A's pairs (packed into buffer if needed).
template <typename TB, typename PackA>
void general_gemm(int64_t m, int64_t n, int64_t k, const TB* B, int64_t ldb, float* C, int64_t ldc,
                  Accumulate acc, PackA pack_a) {
  if (m <= 0 || n <= 0) return;
  const PairKernel& kern = pair_kernel();
  const int64_t kp = pairs_of(k), np = round_up(n, kern.width);
  const Buffers buf = buffers(m * kp, kp * np, 0, m * kern.width);
  const PairWords a = pack_a(buf.a);
  pack_pair_rows(k, n, B, ldb, buf.b, np);
  pair_gemm(kern, m, n, kp, a.words, a.row, a.pair, buf.b, np, C, ldc, acc == Accumulate::yes, buf.pad);
}

template <typename TA, typename TB>
void gemm_bf16_nn(int64_t m, int64_t n, int64_t k, const TA* A, int64_t lda, const TB* B,
                  int64_t ldb, float* C, int64_t ldc, Accumulate acc) {
  general_gemm(m, n, k, B, ldb, C, ldc, acc, [&](uint32_t* buffer) {
    int64_t row = 0;
    const uint32_t* words = pair_words(m, k, A, lda, buffer, row);
    return PairWords{words, row, 1};
  });
}

template <typename TA, typename TB>
void gemm_bf16_tn(int64_t m, int64_t n, int64_t k, const TA* A, int64_t lda, const TB* B,
                  int64_t ldb, float* C, int64_t ldc, Accumulate acc) {
  general_gemm(m, n, k, B, ldb, C, ldc, acc, [&](uint32_t* buffer) {
    pack_pair_rows(k, m, A, lda, buffer, m);  // A^T's row i, pair p at buffer[p * m + i]
    return PairWords{buffer, 1, m};
  });
}

template <typename TL, typename TB>
void lower_gemm_bf16_nn(int64_t m, int64_t n, const TL* L, int64_t ldl, const TB* B, int64_t ldb,
                        float* C, int64_t ldc, Accumulate acc) {
  if (m <= 0 || n <= 0) return;
  const PairKernel& kern = pair_kernel();
  const int64_t kp = pairs_of(m), np = round_up(n, kern.width);
  const Buffers buf = buffers(m * kp, kp * np, 0, kTriangleBlock * kern.width);
  int64_t l_row = 0;
  const uint32_t* l = pair_words(m, m, L, ldl, buf.a, l_row);
  pack_pair_rows(m, n, B, ldb, buf.b, np);
  for (int64_t i0 = 0; i0 < m; i0 += kTriangleBlock) {
    const int64_t rows = std::min(kTriangleBlock, m - i0), end = i0 + rows;
    pair_gemm(kern, rows, n, pairs_of(end), l + i0 * l_row, l_row, 1, buf.b, np, C + i0 * ldc, ldc,
              acc == Accumulate::yes, buf.pad);
  }
}

template <typename TA, typename TB>
void lower_gemm_bf16_nt(int64_t m, int64_t k, const TA* A, int64_t lda, const TB* B, int64_t ldb,
                        float* C, int64_t ldc) {
  if (m <= 0) return;
  const PairKernel& kern = pair_kernel();
  const int64_t kp = pairs_of(k), mp = round_up(m, kern.width);
  const Buffers buf = buffers(m * kp, kp * mp, m * kp, kTriangleBlock * kern.width);
  int64_t a_row = 0, b_row = 0;
  const uint32_t* a = pair_words(m, k, A, lda, buf.a, a_row);
  // B^T by pairs: B's rows as pair words, transposed (bit-exact moves).
  const uint32_t* b = pair_words(m, k, B, ldb, buf.t, b_row);
  transpose(m, kp, reinterpret_cast<const float*>(b), b_row, reinterpret_cast<float*>(buf.b), mp);
  for (int64_t p = 0; p < kp; ++p) std::fill(buf.b + p * mp + m, buf.b + (p + 1) * mp, 0u);
  for (int64_t i0 = 0; i0 < m; i0 += kTriangleBlock) {
    const int64_t rows = std::min(kTriangleBlock, m - i0), end = i0 + rows;
    pair_gemm(kern, rows, end, kp, a + i0 * a_row, a_row, 1, buf.b, mp, C + i0 * ldc, ldc, false, buf.pad);
  }
}

#define LINATTN_GEMM_BF16(TA, TB)                                                                  \
  template void gemm_bf16_nn(int64_t, int64_t, int64_t, const TA*, int64_t, const TB*, int64_t,    \
                             float*, int64_t, Accumulate);                                         \
  template void gemm_bf16_tn(int64_t, int64_t, int64_t, const TA*, int64_t, const TB*, int64_t,    \
                             float*, int64_t, Accumulate);                                         \
  template void lower_gemm_bf16_nn(int64_t, int64_t, const TA*, int64_t, const TB*, int64_t,       \
                                   float*, int64_t, Accumulate);                                   \
  template void lower_gemm_bf16_nt(int64_t, int64_t, const TA*, int64_t, const TB*, int64_t,       \
                                   float*, int64_t);
LINATTN_GEMM_BF16(float, float)
LINATTN_GEMM_BF16(float, uint16_t)
LINATTN_GEMM_BF16(uint16_t, float)
LINATTN_GEMM_BF16(uint16_t, uint16_t)
#undef LINATTN_GEMM_BF16

}  // namespace linattn::kernels
#endif  // HWY_ONCE
