// The OpenBLAS wrapper (benchmarks and tests only; see CShardRankBLAS.h).
#include "CShardRankBLAS.h"
#include <pthread.h>

// Declared here rather than through cblas.h so that no OpenBLAS header is needed to build.
enum { SRK_CblasRowMajor = 101, SRK_CblasNoTrans = 111, SRK_CblasTrans = 112 };
extern void cblas_sgemm(int order, int transA, int transB, int m, int n, int k, float alpha,
                        const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
extern void openblas_set_num_threads(int n);
extern char *openblas_get_corename(void);

static pthread_once_t srk_blas_once = PTHREAD_ONCE_INIT;
static void srk_blas_init(void) { openblas_set_num_threads(1); }

void srk_blas_sgemm_nt(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                       const float *b, int64_t ldb, float *c, int64_t ldc) {
    pthread_once(&srk_blas_once, srk_blas_init);
    cblas_sgemm(SRK_CblasRowMajor, SRK_CblasNoTrans, SRK_CblasTrans, (int)m, (int)n, (int)k, 1.0f,
                a, (int)lda, b, (int)ldb, 0.0f, c, (int)ldc);
}

const char *srk_blas_corename(void) {
    pthread_once(&srk_blas_once, srk_blas_init);
    return openblas_get_corename();
}
