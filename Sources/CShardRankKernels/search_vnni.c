// int8 search prefilter with AVX-512 VNNI (VPDPBUSD). Compiled for every x86-64 build; only
// called when srk_vnni_supported() says the CPU has it (see dispatch.c, srk_search).
//
// The exact int8 search scores row r against an f32 query q as s = scale_r * sum_j q_j r_j in
// f32 arithmetic; converting 64 int8 values to f32 costs more than reading them. Here the query
// is split into two int8 digits, q = u * (256 qhi + qlo) + e2 (u = max|q| / (127 * 256), the
// residual |e2_j| <= u / 2), so that sum_j r_j q_j = u * (256 A + B) + sum_j r_j e2_j with
// A = sum r qhi and B = sum r qlo computed exactly in int32 by VPDPBUSD. The caller passes a
// slack >= |sum_j r_j e2_j| + the f32 rounding of both computations (Cauchy-Schwarz:
// ||r||_2 <= 128 sqrt(d)), so `upper` below bounds the exact kernel's score from above; only
// rows whose upper bound reaches the running top-k threshold are scored exactly (by the
// ordinary kernel) and offered to the heap. The results are therefore those of the exact scan.
#if defined(__x86_64__)
#include "CShardRankKernels.h"
#include "search_vnni.h"
#include <immintrin.h>

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni"))), apply_to = function)

// 16 int32 accumulators (one per row) -> one vector of 16 row sums, rows in order.
static inline __attribute__((always_inline)) __m512i hsum16_epi32(const __m512i *a) {
    const __m512i i0 = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
    const __m512i i1 = _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    const __m512i j0 = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
    const __m512i j1 = _mm512_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    const __m512i k0 = _mm512_setr_epi32(0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29);
    const __m512i k1 = _mm512_setr_epi32(2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
    const __m512i l0 = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i l1 = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    __m512i b[8], c[4], e[2];
    for (int i = 0; i < 8; i++)
        b[i] = _mm512_add_epi32(_mm512_permutex2var_epi32(a[2 * i], i0, a[2 * i + 1]),
                                _mm512_permutex2var_epi32(a[2 * i], i1, a[2 * i + 1]));
    for (int i = 0; i < 4; i++)
        c[i] = _mm512_add_epi32(_mm512_permutex2var_epi32(b[2 * i], j0, b[2 * i + 1]),
                                _mm512_permutex2var_epi32(b[2 * i], j1, b[2 * i + 1]));
    for (int i = 0; i < 2; i++)
        e[i] = _mm512_add_epi32(_mm512_permutex2var_epi32(c[2 * i], k0, c[2 * i + 1]),
                                _mm512_permutex2var_epi32(c[2 * i], k1, c[2 * i + 1]));
    return _mm512_add_epi32(_mm512_permutex2var_epi32(e[0], l0, e[1]), _mm512_permutex2var_epi32(e[0], l1, e[1]));
}

// How far ahead (in rows) a scan prefetches; the caller streams block after block, so this
// runs past the end of a block on purpose (prefetches never fault).
#define SRK_VNNI_PF_ROWS 64

int64_t srk_i8_vnni_candidates(const int8_t *rows, const float *scales, int64_t n, int64_t d,
                               const srk_i8_query *q, float thr, int32_t *cand) {
    const int64_t c0 = d < 64 ? d : 64, c1 = d > 64 ? d - 64 : 0;
    const __mmask64 m0 = c0 == 64 ? ~(__mmask64)0 : (((__mmask64)1 << c0) - 1);
    const __mmask64 m1 = c1 == 64 ? ~(__mmask64)0 : (((__mmask64)1 << c1) - 1);
    const __m512i h0 = _mm512_loadu_si512(q->hi), l0 = _mm512_loadu_si512(q->lo);
    const __m512i h1 = _mm512_loadu_si512(q->hi + 64), l1 = _mm512_loadu_si512(q->lo + 64);
    const __m512i x80 = _mm512_set1_epi8((char)0x80), corr = _mm512_set1_epi32(q->correction);
    const __m512 unit = _mm512_set1_ps(q->unit), slack = _mm512_set1_ps(q->slack), t = _mm512_set1_ps(thr);
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    int64_t count = 0;
    for (int64_t i = 0; i < n; i += 16) {
        const int64_t m = n - i < 16 ? n - i : 16;
        const char *pf = (const char *)(rows + (i + SRK_VNNI_PF_ROWS) * d);
        for (int64_t off = 0; off < 16 * d; off += 64) __builtin_prefetch(pf + off, 0, 3);
        __m512i acc[16];
        for (int r = 0; r < 16; r++) {
            const int8_t *p = rows + (i + (r < m ? r : m - 1)) * d;
            // (r + 128) as u8 times the signed digits; the 128 * sum(digits) part is in corr.
            __m512i x = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m0, p), x80);
            __m512i a = _mm512_dpbusd_epi32(_mm512_setzero_si512(), x, h0);
            __m512i b = _mm512_dpbusd_epi32(_mm512_setzero_si512(), x, l0);
            if (c1) {
                x = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m1, p + 64), x80);
                a = _mm512_dpbusd_epi32(a, x, h1);
                b = _mm512_dpbusd_epi32(b, x, l1);
            }
            acc[r] = _mm512_add_epi32(_mm512_slli_epi32(a, 8), b);
        }
        const __mmask16 live = m == 16 ? (__mmask16)0xffff : (__mmask16)((1u << m) - 1);
        __m512 s = _mm512_cvtepi32_ps(_mm512_sub_epi32(hsum16_epi32(acc), corr));
        __m512 sr = _mm512_maskz_loadu_ps(live, scales + i);
        // upper = sr * unit * s + |sr| * slack >= the exact score (see the top of the file)
        __m512 upper = _mm512_fmadd_ps(_mm512_mul_ps(sr, unit), s, _mm512_mul_ps(_mm512_abs_ps(sr), slack));
        __mmask16 hit = _mm512_mask_cmp_ps_mask(live, upper, t, _CMP_GE_OQ);
        if (hit) {
            _mm512_mask_compressstoreu_epi32(cand + count, hit, _mm512_add_epi32(lane, _mm512_set1_epi32((int32_t)i)));
            count += __builtin_popcount((unsigned)hit);
        }
    }
    return count;
}

#pragma clang attribute pop
#endif
