// Approximate inner-product search: an inverted file (IVF) of k-means lists whose members are
// coded with 4-bit product quantisation (PQ4) of their residuals, scanned with in-register
// lookup tables ("fast scan"), followed by an exact re-rank of the best approximate candidates
// with the ordinary dot kernel. See docs/kernels.md for the method and its measurements.
//
// Score model: a vector x in list l is c_l + r (c_l the list's centroid). For a query q,
// q.x = q.c_l + sum_s q_s . r_s over the m subspaces s (dsub dimensions each); r_s is replaced
// by its codeword, so q_s . r_s comes from a 16-entry table per subspace, computed once per
// query. The tables are quantised to u8 (a per-subspace offset and one global step `delta`), so
// a vector's approximate score is q.c_l + bias + delta * sum_s lut[s][code_s], the sum an exact
// 16-bit integer. The `rerank` best approximate candidates are then scored exactly: the final
// scores are the exact kernel's, only the candidate set is approximate.
#include "CShardRankKernels.h"
#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

// ---- PQ4 fast scan ---------------------------------------------------------------------

static void pq4_scan_scalar(const uint8_t *codes, int64_t nblocks, int64_t m, const uint8_t *lut, uint16_t *out) {
    const int64_t groups = m / 2;
    for (int64_t b = 0; b < nblocks; b++) {
        const uint8_t *blk = codes + b * 16 * m;
        for (int v = 0; v < SRK_PQ4_BLOCK; v++) {
            uint32_t acc = 0;
            for (int64_t g = 0; g < groups; g++) {
                uint8_t c = blk[g * SRK_PQ4_BLOCK + v];
                acc += lut[(2 * g) * 16 + (c & 15)] + lut[(2 * g + 1) * 16 + (c >> 4)];
            }
            out[b * SRK_PQ4_BLOCK + v] = (uint16_t)acc;
        }
    }
}

#if defined(__x86_64__)
// 16-bit lane j of an accumulator holds vectors 2j (low byte) and 2j+1 (high byte). Adding the
// shuffled bytes as 16-bit words sums the even vector's bytes plus 256 x the odd one's (mod
// 2^16), and a second accumulator sums the odd bytes alone; the even sums are the difference.
// Exact because every per-vector total is at most m * 255 < 2^16 (m <= SRK_PQ4_MAX_M).

__attribute__((target("avx2")))
static void pq4_scan_avx2(const uint8_t *codes, int64_t nblocks, int64_t m, const uint8_t *lut, uint16_t *out) {
    const int64_t groups = m / 2;
    __m256i tab[SRK_PQ4_MAX_M];
    for (int64_t s = 0; s < m; s++) tab[s] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(lut + 16 * s)));
    const __m256i low = _mm256_set1_epi8(0x0f);
    for (int64_t b = 0; b < nblocks; b++) {
        const uint8_t *blk = codes + b * 16 * m;
        __m256i acc = _mm256_setzero_si256(), odd = _mm256_setzero_si256();
        for (int64_t g = 0; g < groups; g++) {
            __m256i x = _mm256_loadu_si256((const __m256i *)(blk + g * SRK_PQ4_BLOCK));
            __m256i r0 = _mm256_shuffle_epi8(tab[2 * g], _mm256_and_si256(x, low));
            __m256i r1 = _mm256_shuffle_epi8(tab[2 * g + 1], _mm256_and_si256(_mm256_srli_epi16(x, 4), low));
            acc = _mm256_add_epi16(acc, _mm256_add_epi16(r0, r1));
            odd = _mm256_add_epi16(odd, _mm256_add_epi16(_mm256_srli_epi16(r0, 8), _mm256_srli_epi16(r1, 8)));
        }
        __m256i even = _mm256_sub_epi16(acc, _mm256_slli_epi16(odd, 8));
        __m256i u0 = _mm256_unpacklo_epi16(even, odd), u1 = _mm256_unpackhi_epi16(even, odd);
        _mm256_storeu_si256((__m256i *)(out + b * SRK_PQ4_BLOCK), _mm256_permute2x128_si256(u0, u1, 0x20));
        _mm256_storeu_si256((__m256i *)(out + b * SRK_PQ4_BLOCK + 16), _mm256_permute2x128_si256(u0, u1, 0x31));
    }
}

// One 64-byte load covers groups g and g+1 of a block (4 subspaces): 128-bit lanes 0-1 are
// vectors 0-31 of group g, lanes 2-3 the same vectors of group g+1; the two 256-bit halves
// are added at the end.
__attribute__((target("avx512f,avx512bw,avx512vl,avx2")))
static void pq4_scan_avx512(const uint8_t *codes, int64_t nblocks, int64_t m, const uint8_t *lut, uint16_t *out) {
    const int64_t quads = m / 4;
    __m512i tlo[SRK_PQ4_MAX_M / 4], thi[SRK_PQ4_MAX_M / 4];
    for (int64_t p = 0; p < quads; p++) {
        __m256i a = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(lut + 16 * (4 * p))));
        __m256i b = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(lut + 16 * (4 * p + 1))));
        __m256i c = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(lut + 16 * (4 * p + 2))));
        __m256i d = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(lut + 16 * (4 * p + 3))));
        tlo[p] = _mm512_inserti64x4(_mm512_castsi256_si512(a), c, 1);
        thi[p] = _mm512_inserti64x4(_mm512_castsi256_si512(b), d, 1);
    }
    const __m512i low = _mm512_set1_epi8(0x0f);
    for (int64_t b = 0; b < nblocks; b++) {
        const uint8_t *blk = codes + b * 16 * m;
        if (b + 4 < nblocks) _mm_prefetch((const char *)(blk + 4 * 16 * m), _MM_HINT_T0);
        __m512i acc = _mm512_setzero_si512(), odd = _mm512_setzero_si512();
        for (int64_t p = 0; p < quads; p++) {
            __m512i x = _mm512_loadu_si512(blk + p * 64);
            __m512i r0 = _mm512_shuffle_epi8(tlo[p], _mm512_and_si512(x, low));
            __m512i r1 = _mm512_shuffle_epi8(thi[p], _mm512_and_si512(_mm512_srli_epi16(x, 4), low));
            acc = _mm512_add_epi16(acc, _mm512_add_epi16(r0, r1));
            odd = _mm512_add_epi16(odd, _mm512_add_epi16(_mm512_srli_epi16(r0, 8), _mm512_srli_epi16(r1, 8)));
        }
        __m512i even512 = _mm512_sub_epi16(acc, _mm512_slli_epi16(odd, 8));
        __m256i even = _mm256_add_epi16(_mm512_castsi512_si256(even512), _mm512_extracti64x4_epi64(even512, 1));
        __m256i o = _mm256_add_epi16(_mm512_castsi512_si256(odd), _mm512_extracti64x4_epi64(odd, 1));
        __m256i u0 = _mm256_unpacklo_epi16(even, o), u1 = _mm256_unpackhi_epi16(even, o);
        _mm256_storeu_si256((__m256i *)(out + b * SRK_PQ4_BLOCK), _mm256_permute2x128_si256(u0, u1, 0x20));
        _mm256_storeu_si256((__m256i *)(out + b * SRK_PQ4_BLOCK + 16), _mm256_permute2x128_si256(u0, u1, 0x31));
    }
}
#endif

// Bit v set when a[v] > t, for the 32 values of a block (t in -1...65535).
static inline uint32_t ann_mask32_scalar(const uint16_t *a, int32_t t) {
    uint32_t mask = 0;
    for (int v = 0; v < SRK_PQ4_BLOCK; v++) mask |= (uint32_t)((int32_t)a[v] > t) << v;
    return mask;
}

#if defined(__x86_64__)
__attribute__((target("avx512f,avx512bw")))
static inline uint32_t ann_mask32_avx512(const uint16_t *a, int32_t t) {
    if (t < 0) return 0xffffffffu;
    return (uint32_t)_mm512_cmpgt_epu16_mask(_mm512_loadu_si512(a), _mm512_set1_epi16((short)(uint16_t)t));
}
#endif

void srk_pq4_scan(int32_t isa, const uint8_t *codes, int64_t nblocks, int64_t m, const uint8_t *lut, uint16_t *out) {
#if defined(__x86_64__)
    if (isa == SRK_ISA_AVX512) { pq4_scan_avx512(codes, nblocks, m, lut, out); return; }
    if (isa == SRK_ISA_AVX2) { pq4_scan_avx2(codes, nblocks, m, lut, out); return; }
#endif
    (void)isa;
    pq4_scan_scalar(codes, nblocks, m, lut, out);
}

// ---- The per-query search ----------------------------------------------------------------

// The best `keep` (score, row) pairs of a stream, kept in a buffer of 2 * keep: an item enters
// when it beats `thr`; a full buffer is cut back to its `keep` best by quickselect, and `thr`
// becomes the keep-th best score. Cheaper than a heap (no data-dependent sift per item).
typedef struct { float *s; uint32_t *r; int64_t n, cap, keep; float thr; } ann_res;

static inline void ann_swap(ann_res *h, int64_t a, int64_t b) {
    float ts = h->s[a]; h->s[a] = h->s[b]; h->s[b] = ts;
    uint32_t tr = h->r[a]; h->r[a] = h->r[b]; h->r[b] = tr;
}

// Moves the `keep` best of the first n items to the front (best not sorted), keep < n.
// Quickselect with a branch-free Lomuto partition (every element is swapped; the store index
// advances by the comparison), so the data-dependent branches do not mispredict.
static void ann_select(ann_res *h, int64_t keep) {
    int64_t lo = 0, hi = h->n - 1, want = keep - 1;
    float *s = h->s; uint32_t *r = h->r;
    while (lo < hi) {
        int64_t mid = lo + ((hi - lo) >> 1);
        // median of three to hi, then partition descending
        if (s[mid] > s[lo]) ann_swap(h, mid, lo);
        if (s[hi] > s[lo]) ann_swap(h, hi, lo);
        if (s[mid] > s[hi]) ann_swap(h, mid, hi);
        const float pivot = s[hi];
        int64_t store = lo;
        for (int64_t i = lo; i < hi; i++) {
            float si = s[i]; uint32_t ri = r[i];
            s[i] = s[store]; r[i] = r[store];
            s[store] = si; r[store] = ri;
            store += si > pivot;
        }
        ann_swap(h, store, hi);
        if (store == want) break;
        if (store < want) lo = store + 1; else hi = store - 1;
    }
}

static void ann_res_shrink(ann_res *h) {
    if (h->n <= h->keep) return;
    ann_select(h, h->keep);
    h->n = h->keep;
    h->thr = h->s[h->keep - 1]; // quickselect leaves the keep-th best there, the better ones before it
}

static inline void ann_res_add(ann_res *h, float s, uint32_t r) {
    h->s[h->n] = s; h->r[h->n] = r;
    if (++h->n == h->cap) ann_res_shrink(h);
}

static inline int ann_row_excluded(uint32_t row, const uint32_t *ex, int64_t n) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = (lo + hi) >> 1;
        if (ex[mid] < row) lo = mid + 1; else hi = mid;
    }
    return lo < n && ex[lo] == row;
}

// Pointers into one caller-provided scratch area.
typedef struct {
    float *coarse;     // nlist
    float *probe_s;    // 2 * nprobe
    uint32_t *probe_l; // 2 * nprobe
    float *qpad;       // m * dsub
    float *lutf;       // m * 16
    uint8_t *lut;      // m * 16
    uint16_t *acc;     // max_list
    float *cand_s;     // 2 * rerank
    uint32_t *cand_r;  // 2 * rerank
    int64_t *idx;      // rerank
    uint32_t *seen;    // seen_slots: open addressing, row + 1 (0 = empty)
    float *exact;      // rerank
} ann_scratch;

// Slots of the per-query set that drops duplicate candidates (a power of two >= 4 * rerank).
static inline int64_t ann_seen_slots(int64_t rerank) {
    int64_t n = 64;
    while (n < 4 * rerank) n <<= 1;
    return n;
}

static inline int64_t ann_align(int64_t x) { return (x + 63) & ~(int64_t)63; }

static int64_t ann_layout(const srk_ivfpq *ix, int64_t nprobe, int64_t rerank, char *base, ann_scratch *sc) {
    int64_t off = 0;
#define ANN_TAKE(field, type, count) \
    do { if (sc) sc->field = (type *)(base + off); off += ann_align((int64_t)sizeof(type) * (count)); } while (0)
    ANN_TAKE(coarse, float, ix->nlist);
    ANN_TAKE(probe_s, float, 2 * nprobe);
    ANN_TAKE(probe_l, uint32_t, 2 * nprobe);
    ANN_TAKE(qpad, float, ix->m * ix->dsub);
    ANN_TAKE(lutf, float, ix->m * 16);
    ANN_TAKE(lut, uint8_t, ix->m * 16);
    ANN_TAKE(acc, uint16_t, ix->max_list + SRK_PQ4_BLOCK);
    ANN_TAKE(cand_s, float, 2 * rerank);
    ANN_TAKE(cand_r, uint32_t, 2 * rerank);
    ANN_TAKE(idx, int64_t, rerank);
    ANN_TAKE(seen, uint32_t, ann_seen_slots(rerank));
    ANN_TAKE(exact, float, rerank);
#undef ANN_TAKE
    return off;
}

int64_t srk_ivfpq_scratch_bytes(const srk_ivfpq *ix, int64_t nprobe, int64_t rerank) {
    return ann_layout(ix, nprobe, rerank, NULL, NULL) + 64;
}

int64_t srk_ivfpq_search(const srk_kernels *k, int32_t isa, const srk_ivfpq *ix, const float *q,
                         int32_t dtype, const void *rows, const float *scales, const uint64_t *ids,
                         const uint32_t *exclude_rows, int64_t nexclude, int64_t nprobe, int64_t rerank,
                         srk_topk *out, void *scratch) {
    const int64_t d = ix->d, m = ix->m, dsub = ix->dsub, nlist = ix->nlist;
    if (nprobe > nlist) nprobe = nlist;
    if (nprobe < 1 || rerank < 1 || nlist < 1) return 0;
    ann_scratch sc;
    ann_layout(ix, nprobe, rerank, (char *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63), &sc);

    // 1. Coarse scores q.c_l, and the nprobe best lists.
    k->dot[SRK_DTYPE_F32](q, 1, d, ix->centroids, NULL, NULL, nlist, d, sc.coarse, nlist, 0);
    ann_res ph = { sc.probe_s, sc.probe_l, 0, 2 * nprobe, nprobe, -INFINITY };
    for (int64_t l = 0; l < nlist; l++) {
        float s = sc.coarse[l];
        if (s > ph.thr) ann_res_add(&ph, s, (uint32_t)l);
    }
    ann_res_shrink(&ph);

    // 2. The query's lookup tables, quantised to u8 with one step for all subspaces.
    float delta_range = 0, bias = 0;
    // q' = R q (the codes describe rotated residuals), zero-padded to m * dsub.
    k->dot[SRK_DTYPE_F32](q, 1, d, ix->rotation, NULL, NULL, d, d, sc.qpad, d, 0);
    for (int64_t j = d; j < m * dsub; j++) sc.qpad[j] = 0.0f;
    for (int64_t s = 0; s < m; s++) {
        float *row = sc.lutf + s * 16;
        const float *cw = ix->codebooks + s * 16 * dsub;
        const float *qs = sc.qpad + s * dsub;
        if (dsub == 2) {
            for (int c = 0; c < 16; c++) row[c] = qs[0] * cw[2 * c] + qs[1] * cw[2 * c + 1];
        } else {
            for (int c = 0; c < 16; c++) {
                float v = 0;
                for (int64_t t = 0; t < dsub; t++) v += qs[t] * cw[c * dsub + t];
                row[c] = v;
            }
        }
        float lo = row[0], hi = row[0];
        for (int c = 1; c < 16; c++) { lo = row[c] < lo ? row[c] : lo; hi = row[c] > hi ? row[c] : hi; }
        for (int c = 0; c < 16; c++) row[c] -= lo;
        bias += lo;
        if (hi - lo > delta_range) delta_range = hi - lo;
    }
    const float delta = delta_range > 0 ? delta_range / 255.0f : 1.0f;
    const float inv = 1.0f / delta;
    for (int64_t i = 0; i < m * 16; i++) {
        float v = sc.lutf[i] * inv + 0.5f; // >= 0.5: truncation rounds to nearest
        sc.lut[i] = (uint8_t)(v > 255.0f ? 255 : (int32_t)v);
    }

    // 3. Scan the probed lists, best list first (the threshold rises fastest), keeping the
    //    `rerank` best approximate scores of rows that are not excluded.
    // Order the probe heap best first (small: nprobe entries, insertion sort).
    int64_t np = ph.n;
    for (int64_t i = 1; i < np; i++) {
        float s = sc.probe_s[i]; uint32_t l = sc.probe_l[i]; int64_t j = i;
        while (j > 0 && sc.probe_s[j - 1] < s) { sc.probe_s[j] = sc.probe_s[j - 1]; sc.probe_l[j] = sc.probe_l[j - 1]; j--; }
        sc.probe_s[j] = s; sc.probe_l[j] = l;
    }
    ann_res ch = { sc.cand_s, sc.cand_r, 0, 2 * rerank, rerank, -INFINITY };
    const int32_t max_acc = (int32_t)(m * 255);
    int64_t scanned = 0;
    for (int64_t pi = 0; pi < np; pi++) {
        const uint32_t l = sc.probe_l[pi];
        const int64_t p0 = ix->list_offsets[l], p1 = ix->list_offsets[l + 1];
        if (p1 <= p0) continue;
        const float base = sc.probe_s[pi] + bias;
        // Integer threshold: a vector can enter only if base + delta * acc > the heap's worst.
        int32_t t = -1;
        if (ch.thr > -INFINITY) {
            float tq = (ch.thr - base) * inv;
            if (tq >= (float)max_acc) continue; // nothing in this list can enter
            t = tq < 0 ? -1 : (int32_t)tq;
        }
        const int64_t nblocks = (p1 - p0) / SRK_PQ4_BLOCK;
        if (pi + 1 < np) {
            const uint32_t nl = sc.probe_l[pi + 1];
            __builtin_prefetch(ix->codes + (ix->list_offsets[nl] / SRK_PQ4_BLOCK) * 16 * m, 0, 3);
            __builtin_prefetch(ix->rows + ix->list_offsets[nl], 0, 3);
        }
        srk_pq4_scan(isa, ix->codes + (p0 / SRK_PQ4_BLOCK) * 16 * m, nblocks, m, sc.lut, sc.acc);
        scanned += p1 - p0;
        const uint32_t *prow = ix->rows + p0;
        for (int64_t i0 = 0; i0 < p1 - p0; i0 += SRK_PQ4_BLOCK) {
            // Which of these 32 pass the threshold (branch-free; usually none).
            const uint16_t *a = sc.acc + i0;
#if defined(__x86_64__)
            uint32_t mask = isa == SRK_ISA_AVX512 ? ann_mask32_avx512(a, t) : ann_mask32_scalar(a, t);
#else
            uint32_t mask = ann_mask32_scalar(a, t);
#endif
            while (mask) {
                int v = __builtin_ctz(mask);
                mask &= mask - 1;
                uint32_t row = prow[i0 + v];
                if (row == UINT32_MAX) continue; // padding
                if (nexclude && ann_row_excluded(row, exclude_rows, nexclude)) continue;
                float approx = base + delta * (float)a[v];
                if (!(approx > ch.thr)) continue;
                int64_t before = ch.n;
                ann_res_add(&ch, approx, row);
                if (ch.n < before) { // cut back: the threshold rose
                    float tq = (ch.thr - base) * inv;
                    t = tq < 0 ? -1 : tq >= (float)max_acc ? max_acc : (int32_t)tq;
                }
            }
        }
    }

    // 4. Exact re-rank of the candidates with the dot kernel (gathered rows, prefetched).
    ann_res_shrink(&ch);
    if (ch.n == 0) return scanned;
    // A spilled row may be a candidate twice (once per list): score it once.
    const int64_t slots = ann_seen_slots(rerank);
    memset(sc.seen, 0, (size_t)slots * sizeof(uint32_t));
    int64_t nc = 0;
    for (int64_t i = 0; i < ch.n; i++) {
        const uint32_t row = ch.r[i];
        uint64_t hsh = ((uint64_t)row * 0x9E3779B97F4A7C15ull) >> 32;
        for (;;) {
            uint32_t *slot = &sc.seen[hsh & (uint64_t)(slots - 1)];
            if (*slot == 0) { *slot = row + 1; sc.cand_r[nc] = row; sc.idx[nc] = (int64_t)row; nc++; break; }
            if (*slot == row + 1) break;
            hsh++;
        }
    }
    k->dot[dtype](q, 1, d, rows, scales, sc.idx, nc, d, sc.exact, nc, 0);
    // Only scores that can enter the top-k need their ids (a cache miss per row; the tie-break
    // needs them): select the k best exact scores first (ann_select on (score, candidate)), then
    // offer those with a score >= the k-th best.
    const int64_t want = out->capacity - out->count;
    float kth = -INFINITY;
    if (want > 0 && want < nc) {
        ann_res sel = { sc.cand_s, sc.seen, nc, nc, want, -INFINITY };
        for (int64_t i = 0; i < nc; i++) { sc.cand_s[i] = sc.exact[i]; sc.seen[i] = (uint32_t)i; }
        ann_select(&sel, want);
        kth = sc.cand_s[want - 1];
    }
    for (int64_t i = 0; i < nc; i++) {
        if (!(sc.exact[i] >= kth)) continue;
        if (out->count == out->capacity && out->capacity > 0 && sc.exact[i] < out->scores[0]) continue;
        srk_topk_push(out, sc.exact[i], ids[sc.cand_r[i]]);
    }
    return scanned;
}
