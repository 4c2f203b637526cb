// CShardRankBLAS: the OpenBLAS GEMM wrapper, for the kernel benchmarks and tests only. The
// serving binary (`shardrank`) does not link it, so it does not need libopenblas at run time.
#ifndef CSHARDRANKBLAS_H
#define CSHARDRANKBLAS_H
#include <stdint.h>

/// C = A * B^T via OpenBLAS cblas_sgemm, run on the calling thread only (OpenBLAS's own
/// threading is switched off once, at first use).
void srk_blas_sgemm_nt(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                       const float *b, int64_t ldb, float *c, int64_t ldc);
/// The OpenBLAS core name (e.g. "SkylakeX"), static storage.
const char *srk_blas_corename(void);

#endif
