// Runtime dispatch, the top-k heap and the fused search loop.
#include "CShardRankKernels.h"
#include "search_vnni.h"
#include <math.h>
#include <pthread.h>
#include <string.h>

extern const srk_kernels srk_kernels_baseline;
#if defined(__x86_64__)
extern const srk_kernels srk_kernels_avx2;
extern const srk_kernels srk_kernels_avx512;
#endif

// ---- CPU features (computed once; the only process-wide state, immutable afterwards) ---
static pthread_once_t srk_once = PTHREAD_ONCE_INIT;
static int32_t srk_supported = 1;
static int32_t srk_vnni = 0;

static void srk_detect(void) {
    int32_t mask = 1 << SRK_ISA_BASELINE;
#if defined(__x86_64__)
    __builtin_cpu_init();
    // __builtin_cpu_supports also checks that the OS saves the YMM/ZMM state (XCR0).
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
        mask |= 1 << SRK_ISA_AVX2;
    if ((mask & (1 << SRK_ISA_AVX2)) && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq"))
        mask |= 1 << SRK_ISA_AVX512;
    srk_vnni = (mask & (1 << SRK_ISA_AVX512)) && __builtin_cpu_supports("avx512vnni");
#endif
    srk_supported = mask;
}

int32_t srk_isa_supported(void) {
    pthread_once(&srk_once, srk_detect);
    return srk_supported;
}

int32_t srk_vnni_supported(void) {
    pthread_once(&srk_once, srk_detect);
    return srk_vnni;
}

int32_t srk_isa_best(void) {
    int32_t m = srk_isa_supported();
    if (m & (1 << SRK_ISA_AVX512)) return SRK_ISA_AVX512;
    if (m & (1 << SRK_ISA_AVX2)) return SRK_ISA_AVX2;
    return SRK_ISA_BASELINE;
}

const srk_kernels *srk_kernels_for(int32_t isa) {
    if (isa < 0 || isa >= SRK_ISA_COUNT || !(srk_isa_supported() & (1 << isa))) return NULL;
    switch (isa) {
#if defined(__x86_64__)
    case SRK_ISA_AVX512: return &srk_kernels_avx512;
    case SRK_ISA_AVX2: return &srk_kernels_avx2;
#endif
    default: return &srk_kernels_baseline;
    }
}

float srk_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t em = h & 0x7fffu;
    uint32_t bits;
    if (em >= 0x7c00u) bits = 0x7f800000u | ((em & 0x3ffu) << 13);
    else if (em >= 0x0400u) bits = (em << 13) + ((127u - 15u) << 23);
    else { float f = (float)em * 0x1p-24f; memcpy(&bits, &f, 4); }
    bits |= sign;
    float f; memcpy(&f, &bits, 4);
    return f;
}

// ---- Top-k heap ----------------------------------------------------------------------
// worse(a, b): a ranks below b (lower score, or equal score and higher id).
static inline int srk_worse(float sa, uint64_t ia, float sb, uint64_t ib) {
    return sa < sb || (sa == sb && ia > ib);
}

static inline void srk_sift_down(srk_topk *h, int64_t i) {
    float *s = h->scores; uint64_t *id = h->ids; int64_t n = h->count;
    float xs = s[i]; uint64_t xi = id[i];
    for (;;) {
        int64_t l = 2 * i + 1;
        if (l >= n) break;
        int64_t c = l;
        if (l + 1 < n && srk_worse(s[l + 1], id[l + 1], s[l], id[l])) c = l + 1;
        if (!srk_worse(s[c], id[c], xs, xi)) break;
        s[i] = s[c]; id[i] = id[c]; i = c;
    }
    s[i] = xs; id[i] = xi;
}

static inline void srk_push(srk_topk *h, float score, uint64_t id) {
    if (score != score || h->capacity <= 0) return;
    float *s = h->scores; uint64_t *ids = h->ids;
    if (h->count < h->capacity) {
        int64_t i = h->count++;
        while (i > 0) {
            int64_t p = (i - 1) / 2;
            if (!srk_worse(score, id, s[p], ids[p])) break;
            s[i] = s[p]; ids[i] = ids[p]; i = p;
        }
        s[i] = score; ids[i] = id;
    } else if (srk_worse(s[0], ids[0], score, id)) {
        s[0] = score; ids[0] = id;
        srk_sift_down(h, 0);
    }
}

void srk_topk_push(srk_topk *h, float score, uint64_t id) { srk_push(h, score, id); }

static inline int srk_excluded(uint64_t id, const uint64_t *ex, int64_t n) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = (lo + hi) >> 1;
        if (ex[mid] < id) lo = mid + 1; else hi = mid;
    }
    return lo < n && ex[lo] == id;
}

void srk_topk_push_many(srk_topk *h, const float *scores, const uint64_t *ids, uint64_t base_id,
                        int64_t n, const uint64_t *exclude, int64_t nexclude) {
    if (h->capacity <= 0) return;
    int64_t i = 0;
    // Fill phase: every item is offered until the heap is full.
    for (; i < n && h->count < h->capacity; i++) {
        uint64_t id = ids ? ids[i] : base_id + (uint64_t)i;
        if (nexclude && srk_excluded(id, exclude, nexclude)) continue;
        srk_push(h, scores[i], id);
    }
    // Steady state: a cheap threshold test rejects almost everything.
    float thr = h->count ? h->scores[0] : 0;
    typedef float srk_v16 __attribute__((vector_size(64), aligned(4)));
    typedef int32_t srk_m16 __attribute__((vector_size(64)));
    for (; i + 16 <= n; i += 16) {
        // 16 at a time: skip the whole run when none reaches the threshold.
        srk_v16 v;
        memcpy(&v, scores + i, sizeof v);
        srk_m16 ge = v >= thr;
        srk_m16 any = ge;
        int hit = 0;
        for (int t = 0; t < 16; t++) hit |= any[t];
        if (!hit) continue;
        for (int t = 0; t < 16; t++) {
            float sc = scores[i + t];
            if (!(sc >= thr)) continue;
            uint64_t id = ids ? ids[i + t] : base_id + (uint64_t)(i + t);
            if (nexclude && srk_excluded(id, exclude, nexclude)) continue;
            srk_push(h, sc, id);
            thr = h->scores[0];
        }
    }
    for (; i < n; i++) {
        float sc = scores[i];
        if (!(sc >= thr)) continue; // also drops NaN
        uint64_t id = ids ? ids[i] : base_id + (uint64_t)i;
        if (nexclude && srk_excluded(id, exclude, nexclude)) continue;
        srk_push(h, sc, id);
        thr = h->scores[0];
    }
}

void srk_topk_sort(srk_topk *h) {
    // Heap-sort: repeatedly move the worst to the end -> best first.
    int64_t n = h->count;
    for (int64_t end = n - 1; end > 0; end--) {
        float ts = h->scores[0]; uint64_t ti = h->ids[0];
        h->scores[0] = h->scores[end]; h->ids[0] = h->ids[end];
        h->scores[end] = ts; h->ids[end] = ti;
        h->count = end;
        srk_sift_down(h, 0);
    }
    h->count = n;
}

// ---- Fused search --------------------------------------------------------------------
static const size_t srk_elem_size[SRK_DTYPE_COUNT] = { 4, 2, 1 };

int32_t srk_stream_flags(int32_t dtype, int64_t nq, int64_t bytes) {
    // Measured (docs/kernels.md): +20-35 % for an int8 scan of 64 MB, +0-15 % for f16; for f32
    // neutral from DRAM and -20 % from L3, so f32 never streams. Many queries: compute-bound.
    return (dtype != SRK_DTYPE_F32 && nq < 4 && bytes >= ((int64_t)32 << 20)) ? SRK_DOT_STREAM : 0;
}

// Splits query q (d <= SRK_VNNI_MAX_DIM floats) into the prefilter's int8 digits; 0 when the
// query is all zeros, not finite or of extreme magnitude (the caller then scans exactly).
static int srk_i8_query_make(const float *q, int64_t d, srk_i8_query *out) {
    double m = 0;
    for (int64_t j = 0; j < d; j++) {
        if (!isfinite(q[j])) return 0;
        double a = fabs((double)q[j]);
        if (a > m) m = a;
    }
    // Far from float's normal range the products below would lose the precision the bound
    // assumes: leave such queries to the exact scan.
    if (m < 1e-25 || m > 1e25) return 0;
    memset(out->hi, 0, sizeof out->hi);
    memset(out->lo, 0, sizeof out->lo);
    const double sq = m / 127.0, u = sq / 256.0;
    double e2 = 0, l1 = 0;
    int64_t shi = 0, slo = 0;
    for (int64_t j = 0; j < d; j++) {
        double x = (double)q[j];
        double h = nearbyint(x / sq);
        if (h > 127) h = 127; else if (h < -127) h = -127;
        double e = x - sq * h;                      // |e| <= sq / 2 (+ rounding)
        double l = nearbyint(e / u);
        if (l > 127) l = 127; else if (l < -127) l = -127;
        double r = x - u * (256.0 * h + l);         // the residual the bound must cover
        e2 += r * r;
        l1 += fabs(x);
        out->hi[j] = (int8_t)h; out->lo[j] = (int8_t)l;
        shi += (int64_t)h; slo += (int64_t)l;
    }
    out->correction = (int32_t)(128 * (256 * shi + slo));
    out->unit = (float)u;
    // |sum r_j e2_j| <= ||r||_2 ||e2||_2 <= 128 sqrt(d) ||e2||_2. Rounding: the exact kernel's
    // f32 sum is within d * 2^-24 * sum|q_j r_j| <= d * 2^-24 * 128 * l1 of the real value, and
    // the prefilter's float conversion and products (unit rounded to float, s up to 2^31)
    // within a few 2^-24 of |s * unit| <= 128 * l1 + ...: 1e-5 * 128 * l1 * max(1, d / 64)
    // covers both with a wide margin.
    double rounding = 1e-5 * 128.0 * l1 * (d > 64 ? (double)d / 64.0 : 1.0);
    out->slack = (float)((128.0 * sqrt((double)d) * sqrt(e2) + rounding) * (1.0 + 1e-6) + 1e-30);
    return 1;
}

void srk_search(const srk_kernels *k, int32_t dtype, const float *queries, int64_t nq,
                const void *rows, const float *scales, const uint64_t *ids, int64_t n, int64_t d,
                const uint64_t *exclude, int64_t nexclude, srk_topk *heaps, float *scratch,
                int32_t mode) {
    srk_dot_fn dot = k->dot[dtype];
    const char *base = (const char *)rows;
    size_t rowBytes = (size_t)d * srk_elem_size[dtype];
#if defined(__x86_64__)
    // int8 rows on a CPU with VNNI: the prefilter (search_vnni.c) scores every row with integer
    // arithmetic and an error bound; only rows that can reach each query's top-k are scored
    // exactly. Same results as the exact scan below, at a fraction of its arithmetic.
    if (dtype == SRK_DTYPE_I8 && scales && mode != SRK_SEARCH_EXACT && k->isa == SRK_ISA_AVX512 &&
        d >= 1 && d <= SRK_VNNI_MAX_DIM && nq >= 1 && nq <= 64 && srk_vnni_supported()) {
        srk_i8_query qs[nq];
        int ok = 1;
        for (int64_t qi = 0; qi < nq && ok; qi++) ok = srk_i8_query_make(queries + qi * d, d, &qs[qi]);
        if (ok) {
            int32_t cand[SRK_SEARCH_BLOCK];
            int64_t idx[SRK_SEARCH_BLOCK];
            uint64_t cid[SRK_SEARCH_BLOCK];
            for (int64_t i0 = 0; i0 < n; i0 += SRK_SEARCH_BLOCK) {
                int64_t m = n - i0 < SRK_SEARCH_BLOCK ? n - i0 : SRK_SEARCH_BLOCK;
                const int8_t *blk = (const int8_t *)(base + (size_t)i0 * rowBytes);
                for (int64_t qi = 0; qi < nq; qi++) {
                    srk_topk *h = &heaps[qi];
                    if (h->capacity <= 0) continue;
                    float thr = h->count < h->capacity ? -INFINITY : h->scores[0];
                    int64_t c = srk_i8_vnni_candidates(blk, scales + i0, m, d, &qs[qi], thr, cand);
                    if (c == 0) continue;
                    for (int64_t t = 0; t < c; t++) { idx[t] = cand[t]; cid[t] = ids[i0 + cand[t]]; }
                    float *exact = scratch + qi * SRK_SEARCH_BLOCK;
                    dot(queries + qi * d, 1, d, blk, scales + i0, idx, c, d, exact, SRK_SEARCH_BLOCK, 0);
                    srk_topk_push_many(h, exact, cid, 0, c, exclude, nexclude);
                }
            }
            return;
        }
    }
#endif
    int32_t flags = srk_stream_flags(dtype, nq, (int64_t)rowBytes * n);
    for (int64_t i0 = 0; i0 < n; i0 += SRK_SEARCH_BLOCK) {
        int64_t m = n - i0 < SRK_SEARCH_BLOCK ? n - i0 : SRK_SEARCH_BLOCK;
        dot(queries, nq, d, base + (size_t)i0 * rowBytes, scales ? scales + i0 : NULL, NULL,
            m, d, scratch, SRK_SEARCH_BLOCK, flags);
        for (int64_t qi = 0; qi < nq; qi++)
            srk_topk_push_many(&heaps[qi], scratch + qi * SRK_SEARCH_BLOCK, ids + i0, 0, m,
                               exclude, nexclude);
    }
}
