internal import CShardRankBLAS
public import ShardRankKernels

/// OpenBLAS as an MLP GEMM backend, for the kernel benchmarks and tests (the anchor the native
/// micro-kernel is measured against). Only they link this module and libopenblas; the serving
/// binary does not.
extension GEMMBackend {
    /// OpenBLAS `cblas_sgemm`, single-threaded per call (parallelism comes from the pool).
    public static let openBLAS = GEMMBackend.external(ExternalGEMM(name: "openblas") { m, n, k, a, lda, b, ldb, c, ldc in
        srk_blas_sgemm_nt(m, n, k, a, lda, b, ldb, c, ldc)
    })
}
