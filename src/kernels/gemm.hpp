// Small fp32 GEMMs for the chunk-parallel kernels: the C x C, C x K and K x V products of one
// chunk (algorithms.md §3.2), sized for L1/L2 (chunk 16-128, head dims 16-256). Row-major
// operands with leading dimensions; results overwrite C or accumulate into it.
#pragma once

#include <cstdint>

namespace linattn::kernels {

enum class Accumulate : bool { no = false, yes = true };

// C[m x n] (+)= A[m x k] * B[k x n]
void gemm_nn(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B,
             int64_t ldb, float* C, int64_t ldc, Accumulate acc);
// C[m x n] (+)= A[m x k] * B[n x k]^T
void gemm_nt(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B,
             int64_t ldb, float* C, int64_t ldc, Accumulate acc);
// C[m x n] (+)= A[k x m]^T * B[k x n]
void gemm_tn(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B,
             int64_t ldb, float* C, int64_t ldc, Accumulate acc);

// Products with a lower-triangular square operand L (m x m, zero above the diagonal), in row
// blocks of kTriangleBlock so that blocks of zeros are skipped (the causal mask of a chunk):
// C[m x n] (+)= L * B[m x n]
void lower_gemm_nn(int64_t m, int64_t n, const float* L, int64_t ldl, const float* B, int64_t ldb,
                   float* C, int64_t ldc, Accumulate acc);
// C[m x n] (+)= L^T * B[m x n]
void lower_gemm_tn(int64_t m, int64_t n, const float* L, int64_t ldl, const float* B, int64_t ldb,
                   float* C, int64_t ldc, Accumulate acc);
// The lower block triangle of A[m x k] * B[m x k]^T into C[m x m]: blocks above the diagonal
// block are left untouched (the caller masks inside the diagonal blocks).
void lower_gemm_nt(int64_t m, int64_t k, const float* A, int64_t lda, const float* B, int64_t ldb,
                   float* C, int64_t ldc);
inline constexpr int64_t kTriangleBlock = 16;

// out[c x r] = in[r x c]^T; the bf16 form widens in's bits to fp32 on the way (the rows of a
// chunk of a transposed view, ops/common/rows.hpp).
void transpose(int64_t rows, int64_t cols, const float* in, int64_t ld_in, float* out,
               int64_t ld_out);
void transpose_bf16(int64_t rows, int64_t cols, const uint16_t* in, int64_t ld_in, float* out,
                    int64_t ld_out);

}  // namespace linattn::kernels
