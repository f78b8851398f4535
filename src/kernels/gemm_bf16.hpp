// GEMMs with bfloat16 operands and fp32 accumulation, for the chunk forms when the inputs are
// bf16: every product takes bf16 operands, every sum is fp32. An operand is either bf16
// bits (uint16_t: the caller's inputs as given) or fp32 values rounded to bf16 (nearest even, as
// f32_to_bf16) while it is packed, as fla casts gate-scaled operands to the input dtype before its
// tensor-core dots. Each call packs its operands into the calling thread's scratch in the layout
// of the pairwise dot product (AVX-512 BF16 vdpbf16ps: lane j of C gains a[2j] b[2j] +
// a[2j+1] b[2j+1]), i.e. consecutive pairs along k side by side: O(k (m + n)) moves against
// O(m n k) multiply-adds at twice the fp32 FMA rate. Same shapes and contracts as gemm.hpp.
#pragma once

#include <cstdint>

#include "kernels/gemm.hpp"

namespace linattn::kernels {

// The operand precision of a chunk form's products: fp32, or bf16 operands with fp32 sums (the
// forward with bf16 inputs).
enum class Products { f32, bf16 };

// The pairwise dot the bf16 GEMMs run: the CPU's native bf16 dot product (vdpbf16ps), or, on
// CPUs without it, fp32 FMAs on the widened pairs (the same exact products, rounded in another
// order). The choice depends on the CPU only, never on the thread count.
enum class Bf16Dot { native, widening };
Bf16Dot bf16_dot();
// Tests only: run the widening path even where the native one exists (`false` restores the
// CPU's choice). Not thread-safe; set it before the products run.
void force_bf16_widening(bool force);

// The products of a chunk form whose q, k, v are bf16 (`bf16_inputs`): bf16 operands where the
// CPU has the native dot; fp32 ones on the rows widened as they are loaded where it has not,
// because the widening dot (two fp32 FMAs per pair, after packing) ran the bf16 chunk forward at
// about half the fp32 speed on an AVX-512 Ice Lake (issue 15), and fp32 operands only add
// precision. Fixed by the CPU, never by the thread count.
Products chunk_products(bool bf16_inputs);

// T is float (rounded to bf16 when packed) or uint16_t (bf16 bits), per operand.
// C[m x n] (+)= A[m x k] * B[k x n]
template <typename TA, typename TB>
void gemm_bf16_nn(int64_t m, int64_t n, int64_t k, const TA* A, int64_t lda, const TB* B,
                  int64_t ldb, float* C, int64_t ldc, Accumulate acc);
// C[m x n] (+)= A[k x m]^T * B[k x n]
template <typename TA, typename TB>
void gemm_bf16_tn(int64_t m, int64_t n, int64_t k, const TA* A, int64_t lda, const TB* B,
                  int64_t ldb, float* C, int64_t ldc, Accumulate acc);
// C[m x n] (+)= L * B[m x n], L lower triangular (as lower_gemm_nn, blocks of kTriangleBlock).
template <typename TL, typename TB>
void lower_gemm_bf16_nn(int64_t m, int64_t n, const TL* L, int64_t ldl, const TB* B, int64_t ldb,
                        float* C, int64_t ldc, Accumulate acc);
// The lower block triangle of A[m x k] * B[m x k]^T into C[m x m] (as lower_gemm_nt).
template <typename TA, typename TB>
void lower_gemm_bf16_nt(int64_t m, int64_t k, const TA* A, int64_t lda, const TB* B, int64_t ldb,
                        float* C, int64_t ldc);

}  // namespace linattn::kernels
