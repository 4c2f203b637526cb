// Private to CShardRankKernels: the AVX-512 VNNI prefilter of the int8 search (search_vnni.c).
#ifndef SRK_SEARCH_VNNI_H
#define SRK_SEARCH_VNNI_H
#include <stdint.h>

/// Largest dimension the prefilter handles (two 64-byte digit vectors; keeps every int32 sum
/// of VPDPBUSD, 256 * A + B and the correction below 2^31).
#define SRK_VNNI_MAX_DIM 128

/// A query split into two int8 digits: q_j = unit * (256 * hi[j] + lo[j]) + e2_j.
typedef struct {
    int8_t hi[SRK_VNNI_MAX_DIM];   ///< zero past d
    int8_t lo[SRK_VNNI_MAX_DIM];   ///< zero past d
    int32_t correction;            ///< 128 * (256 * sum(hi) + sum(lo)): the rows are offset to u8
    float unit;                    ///< max|q| / (127 * 256)
    float slack;                   ///< per unit of row scale: >= |sum r_j e2_j| + rounding of both scores
} srk_i8_query;

/// Appends to `cand` the indices i < n (ascending) whose upper bound on the exact score
/// scales[i] * dot(q, row i) reaches `thr` (>=); returns how many. `rows`: n * d int8.
int64_t srk_i8_vnni_candidates(const int8_t *rows, const float *scales, int64_t n, int64_t d,
                               const srk_i8_query *q, float thr, int32_t *cand);
#endif
