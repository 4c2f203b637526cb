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

#if defined(__x86_64__)
// The query's lookup tables for 1 or 2 dimensions per subspace, 16 codewords in one vector:
// table s holds q_s . codeword_c, shifted by its minimum (summed into *bias); *range is the
// largest max - min. A first pass finds the minima and the step (range / 255), a second one
// recomputes the tables and quantises them as the scalar path does (multiply, add 0.5, truncate).
__attribute__((target("avx512f,avx512bw,avx512vl")))
static void ann_luts_avx512(const float *codebooks, const float *qpad, int64_t m, int64_t dsub, uint8_t *lut,
                            float *bias, float *range) {
    float lo_s[SRK_PQ4_MAX_M];
    float b = 0, r = 0;
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
#define ANN_LUT_ROW(s, v) do { \
        if (dsub == 1) { v = _mm512_mul_ps(_mm512_set1_ps(qpad[s]), _mm512_loadu_ps(codebooks + (s) * 16)); } \
        else { const __m512 a_ = _mm512_loadu_ps(codebooks + (s) * 32), b_ = _mm512_loadu_ps(codebooks + (s) * 32 + 16); \
               v = _mm512_fmadd_ps(_mm512_set1_ps(qpad[2 * (s)]), _mm512_permutex2var_ps(a_, even, b_), \
                                   _mm512_mul_ps(_mm512_set1_ps(qpad[2 * (s) + 1]), _mm512_permutex2var_ps(a_, odd, b_))); } \
    } while (0)
    for (int64_t s = 0; s < m; s++) {
        __m512 v;
        ANN_LUT_ROW(s, v);
        const float lo = _mm512_reduce_min_ps(v), hi = _mm512_reduce_max_ps(v);
        lo_s[s] = lo;
        b += lo;
        if (hi - lo > r) r = hi - lo;
    }
    const float inv = 1.0f / (r > 0 ? r / 255.0f : 1.0f);
    const __m512 vinv = _mm512_set1_ps(inv), half = _mm512_set1_ps(0.5f), top = _mm512_set1_ps(255.0f);
    for (int64_t s = 0; s < m; s++) {
        __m512 v;
        ANN_LUT_ROW(s, v);
        v = _mm512_min_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v, _mm512_set1_ps(lo_s[s])), vinv), half), top);
        _mm_storeu_si128((__m128i *)(lut + 16 * s), _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(v)));
    }
#undef ANN_LUT_ROW
    *bias = b;
    *range = r;
}
#endif

// ---- The per-query search ----------------------------------------------------------------

// The best `keep` (score, row) pairs of a stream, kept in a buffer of `cap` > keep: an item
// enters when it beats `thr`; a full buffer is cut back by `ann_res_cut` to (about) its `keep`
// best, and `thr` becomes the best score it dropped. Cheaper than a heap (no data-dependent
// sift per item).
typedef struct { float *s; uint32_t *r; int64_t n, cap, keep; float thr; int32_t isa; } ann_res;

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

// Exact cut to the `keep` best; `thr` becomes the keep-th best (quickselect leaves it there).
static void ann_res_shrink(ann_res *h) {
    if (h->n <= h->keep) return;
    ann_select(h, h->keep);
    h->n = h->keep;
    h->thr = h->s[h->keep - 1];
}

#define ANN_BINS 256
// Up to this many best items are selected by sorted insertion; more by quickselect.
#define ANN_SMALL_K 64

// Sorts n (score, id) pairs best first, in place (scores and ids in separate arrays): insertion
// sort for short arrays, heapsort (a min-heap, its minimum moved to the end) for long ones.
static void ann_sort_desc(float *s, uint32_t *r, int64_t n) {
    if (n <= ANN_SMALL_K) {
        for (int64_t i = 1; i < n; i++) {
            float v = s[i]; uint32_t x = r[i]; int64_t j = i;
            while (j > 0 && s[j - 1] < v) { s[j] = s[j - 1]; r[j] = r[j - 1]; j--; }
            s[j] = v; r[j] = x;
        }
        return;
    }
    for (int64_t end = n, start = n / 2 - 1; end > 1;) {
        int64_t root;
        if (start >= 0) root = start--;
        else {
            end--;
            float ts = s[0]; s[0] = s[end]; s[end] = ts;
            uint32_t tr = r[0]; r[0] = r[end]; r[end] = tr;
            root = 0;
        }
        for (;;) { // sift down in the min-heap s[0..end)
            int64_t c = 2 * root + 1;
            if (c >= end) break;
            if (c + 1 < end && s[c + 1] < s[c]) c++;
            if (!(s[c] < s[root])) break;
            float ts = s[c]; s[c] = s[root]; s[root] = ts;
            uint32_t tr = r[c]; r[c] = r[root]; r[root] = tr;
            root = c;
        }
    }
}

// Cuts a buffer of n > keep items back to the items of the best histogram bins that hold at
// least `keep` of them (usually keep + a few), in three linear passes: min/max, a 256-bin
// histogram of the scores, and a branch-free compaction that also finds the best score it
// drops, which becomes `thr`. Every dropped item has at least `keep` kept items above it, so
// the best `keep` of the stream are never lost. Bins are monotone in the score, so equal
// scores share a fate. Falls back to the exact quickselect when the scores do not spread
// (all equal, or one bin holding most of them) — then at most `slack` items over `keep` stay.
#if defined(__x86_64__)
// ann_res_cut's three passes with AVX-512: vector min/max, the histogram (scalar increments of
// vector-computed bins), and a compaction by compress + full-width store (in place: the write
// position never passes the read position, so a 16-lane store only overwrites items already
// read), the dropped scores' maximum kept in a vector.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
static int ann_res_cut_avx512(ann_res *h, int64_t slack) {
    const int64_t n = h->n, keep = h->keep;
    float *s = h->s; uint32_t *r = h->r;
    __m512 vlo = _mm512_set1_ps(INFINITY), vhi = _mm512_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(s + i);
        vlo = _mm512_min_ps(vlo, v); vhi = _mm512_max_ps(vhi, v);
    }
    const __mmask16 tail = (__mmask16)((1u << (n - i)) - 1);
    if (tail) {
        const __m512 v = _mm512_maskz_loadu_ps(tail, s + i);
        vlo = _mm512_mask_min_ps(vlo, tail, vlo, v); vhi = _mm512_mask_max_ps(vhi, tail, vhi, v);
    }
    const float lo = _mm512_reduce_min_ps(vlo), hi = _mm512_reduce_max_ps(vhi);
    const float scale = (float)(ANN_BINS - 1) / (hi - lo);
    if (!(hi > lo) || !(scale < 1e30f)) return 0;
    uint32_t hist[ANN_BINS];
    memset(hist, 0, sizeof hist);
    const __m512 vl = _mm512_set1_ps(lo), vs = _mm512_set1_ps(scale);
    int32_t bins[16] __attribute__((aligned(64)));
    for (i = 0; i + 16 <= n; i += 16) {
        _mm512_store_si512(bins, _mm512_cvttps_epi32(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(s + i), vl), vs)));
        for (int j = 0; j < 16; j++) hist[bins[j]]++;
    }
    for (; i < n; i++) hist[(int32_t)((s[i] - lo) * scale)]++;
    int64_t above = 0;
    int32_t b = ANN_BINS - 1;
    while (above + hist[b] < keep) above += hist[b--];
    if (above + hist[b] > keep + slack) return 0;
    const __m512i vb = _mm512_set1_epi32(b);
    __m512 vdrop = _mm512_set1_ps(-INFINITY);
    int64_t w = 0;
    for (i = 0; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(s + i);
        const __m512i x = _mm512_loadu_si512(r + i);
        const __mmask16 take = _mm512_cmpge_epi32_mask(_mm512_cvttps_epi32(_mm512_mul_ps(_mm512_sub_ps(v, vl), vs)), vb);
        vdrop = _mm512_mask_max_ps(vdrop, (__mmask16)~take, vdrop, v);
        _mm512_storeu_ps(s + w, _mm512_maskz_compress_ps(take, v));
        _mm512_storeu_si512(r + w, _mm512_maskz_compress_epi32(take, x));
        w += __builtin_popcount(take);
    }
    float dropped = _mm512_reduce_max_ps(vdrop);
    for (; i < n; i++) {
        const float si = s[i];
        const int t = (int32_t)((si - lo) * scale) >= b;
        s[w] = si; r[w] = r[i];
        w += t;
        dropped = (!t && si > dropped) ? si : dropped;
    }
    h->n = w;
    h->thr = dropped;
    return 1;
}
#endif

static void ann_res_cut(ann_res *h, int64_t slack) {
    const int64_t n = h->n, keep = h->keep;
    if (n <= keep) return;
#if defined(__x86_64__)
    if (h->isa == SRK_ISA_AVX512) { if (!ann_res_cut_avx512(h, slack)) ann_res_shrink(h); return; }
#endif
    float *s = h->s; uint32_t *r = h->r;
    float lo = s[0], hi = s[0];
    for (int64_t i = 1; i < n; i++) { lo = s[i] < lo ? s[i] : lo; hi = s[i] > hi ? s[i] : hi; }
    const float scale = (float)(ANN_BINS - 1) / (hi - lo);
    if (!(hi > lo) || !(scale < 1e30f)) { ann_res_shrink(h); return; }
    uint32_t hist[ANN_BINS];
    memset(hist, 0, sizeof hist);
    for (int64_t i = 0; i < n; i++) hist[(int32_t)((s[i] - lo) * scale)]++;
    int64_t above = 0;
    int32_t b = ANN_BINS - 1;
    while (above + hist[b] < keep) above += hist[b--];
    if (above + hist[b] > keep + slack) { ann_res_shrink(h); return; }
    // Keep bins >= b, i.e. scores whose bin index is >= b.
    float dropped = -INFINITY;
    int64_t w = 0;
    for (int64_t i = 0; i < n; i++) {
        const float si = s[i];
        const int take = (int32_t)((si - lo) * scale) >= b;
        s[w] = si; r[w] = r[i];
        w += take;
        dropped = (!take && si > dropped) ? si : dropped;
    }
    h->n = w;
    h->thr = dropped;
}

static inline void ann_res_add(ann_res *h, float s, uint32_t r) {
    h->s[h->n] = s; h->r[h->n] = r;
    if (++h->n == h->cap) ann_res_cut(h, (h->cap - h->keep) / 2);
}

// The `keep` best of a stream kept sorted best first by insertion (for small keep, such as the
// lists to probe or the final top-k): an item is offered only when the array is not full or it
// beats the last entry; equal scores keep the earlier item.
static inline void ann_sorted_offer(float *s, uint32_t *r, int64_t *n, int64_t keep, float v, uint32_t x) {
    int64_t j = *n < keep ? (*n)++ : keep - 1;
    while (j > 0 && s[j - 1] < v) { s[j] = s[j - 1]; r[j] = r[j - 1]; j--; }
    s[j] = v; r[j] = x;
}

#if defined(__x86_64__)
// The coarse scores from `l` on, 16 at a time: only the lanes above the threshold (rarely any,
// once the first lists are in) go through the sorted insertion. Returns where it stopped.
__attribute__((target("avx512f")))
static int64_t ann_coarse_offer_avx512(const float *c, int64_t l, int64_t nlist, float *ps, uint32_t *pl, int64_t nprobe,
                                       float *thr) {
    int64_t np = nprobe;
    for (; l + 16 <= nlist; l += 16) {
        __mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(c + l), _mm512_set1_ps(*thr), _CMP_GT_OQ);
        while (m) {
            const int v = __builtin_ctz(m);
            m &= m - 1;
            if (c[l + v] > *thr) { ann_sorted_offer(ps, pl, &np, nprobe, c[l + v], (uint32_t)(l + v)); *thr = ps[nprobe - 1]; }
        }
    }
    return l;
}
#endif

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
    int64_t *idx;      // 2 * rerank (the final cut may keep a few more than rerank)
    uint32_t *seen;    // seen_slots: open addressing, row + 1 (0 = empty)
    float *exact;      // 2 * rerank
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
    ANN_TAKE(idx, int64_t, 2 * rerank);
    ANN_TAKE(seen, uint32_t, ann_seen_slots(rerank));
    ANN_TAKE(exact, float, 2 * rerank);
#undef ANN_TAKE
    return off;
}

int64_t srk_ivfpq_scratch_bytes(const srk_ivfpq *ix, int64_t nprobe, int64_t rerank) {
    return ann_layout(ix, nprobe, rerank, NULL, NULL) + 64;
}

int64_t srk_ivfpq_search(const srk_kernels *k, int32_t isa, const srk_ivfpq *ix, const float *q,
                         int32_t dtype, const void *rows, const float *scales, const uint64_t *ids,
                         const uint32_t *exclude_rows, int64_t nexclude, int64_t nprobe, int64_t rerank,
                         srk_topk *out, void *scratch, int64_t *rows_out) {
    const int64_t d = ix->d, m = ix->m, dsub = ix->dsub, nlist = ix->nlist;
    if (nprobe > nlist) nprobe = nlist;
    if (nprobe < 1 || rerank < 1 || nlist < 1) return 0;
    ann_scratch sc;
    ann_layout(ix, nprobe, rerank, (char *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63), &sc);

    // 1. Coarse scores q.c_l, and the nprobe best lists: by q.c_l + |q| * bonus_l when the index
    //    has per-list bonuses (members far from their centroid, such as the high-norm items of
    //    skewed data, can beat the centroid's score by about |q| * |residual|). sc.coarse holds
    //    the ordering score; the list's base for the approximate scores stays q.c_l.
    k->dot[SRK_DTYPE_F32](q, 1, d, ix->centroids, NULL, NULL, nlist, d, sc.coarse, nlist, 0);
    float qnorm = 0;
    if (ix->list_bonus) {
        for (int64_t j = 0; j < d; j++) qnorm += q[j] * q[j];
        qnorm = sqrtf(qnorm);
        const float *bonus = ix->list_bonus;
        for (int64_t l = 0; l < nlist; l++) sc.coarse[l] += qnorm * bonus[l];
    }
    int64_t np = 0;
    if (nprobe <= ANN_SMALL_K) {
        float thr = -INFINITY; // the nprobe-th best once np == nprobe
        int64_t l = 0;
        for (; l < nlist && np < nprobe; l++) ann_sorted_offer(sc.probe_s, sc.probe_l, &np, nprobe, sc.coarse[l], (uint32_t)l);
        if (np == nprobe) thr = sc.probe_s[nprobe - 1];
#if defined(__x86_64__)
        if (isa == SRK_ISA_AVX512) l = ann_coarse_offer_avx512(sc.coarse, l, nlist, sc.probe_s, sc.probe_l, nprobe, &thr);
#endif
        for (; l < nlist; l++) {
            const float v = sc.coarse[l];
            if (v > thr) { ann_sorted_offer(sc.probe_s, sc.probe_l, &np, nprobe, v, (uint32_t)l); thr = sc.probe_s[nprobe - 1]; }
        }
    } else {
        ann_res ph = { sc.probe_s, sc.probe_l, 0, 2 * nprobe, nprobe, -INFINITY, isa };
        for (int64_t l = 0; l < nlist; l++) {
            float v = sc.coarse[l];
            if (v > ph.thr) ann_res_add(&ph, v, (uint32_t)l);
        }
        ann_res_shrink(&ph);
        np = ph.n;
        ann_sort_desc(sc.probe_s, sc.probe_l, np);
    }

    // 2. The query's lookup tables, quantised to u8 with one step for all subspaces.
    float delta_range = 0, bias = 0;
    // q' = R q (the codes describe rotated residuals), zero-padded to m * dsub.
    k->dot[SRK_DTYPE_F32](q, 1, d, ix->rotation, NULL, NULL, d, d, sc.qpad, d, 0);
    for (int64_t j = d; j < m * dsub; j++) sc.qpad[j] = 0.0f;
#if defined(__x86_64__)
    if (isa == SRK_ISA_AVX512 && (dsub == 1 || dsub == 2)) {
        ann_luts_avx512(ix->codebooks, sc.qpad, m, dsub, sc.lut, &bias, &delta_range);
    } else
#endif
    {
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
        const float inv = 1.0f / (delta_range > 0 ? delta_range / 255.0f : 1.0f);
        for (int64_t i = 0; i < m * 16; i++) {
            float v = sc.lutf[i] * inv + 0.5f; // >= 0.5: truncation rounds to nearest
            sc.lut[i] = (uint8_t)(v > 255.0f ? 255 : (int32_t)v);
        }
    }
    const float delta = delta_range > 0 ? delta_range / 255.0f : 1.0f;
    const float inv = 1.0f / delta;

    // 3. Scan the probed lists, best list first (the threshold rises fastest), keeping the
    //    `rerank` best approximate scores of rows that are not excluded.
    ann_res ch = { sc.cand_s, sc.cand_r, 0, 2 * rerank, rerank, -INFINITY, isa };
    const int32_t max_acc = (int32_t)(m * 255);
    int64_t scanned = 0;
    for (int64_t pi = 0; pi < np; pi++) {
        const uint32_t l = sc.probe_l[pi];
        const int64_t p0 = ix->list_offsets[l], p1 = ix->list_offsets[l + 1];
        if (p1 <= p0) continue;
        const float base = (ix->list_bonus ? sc.probe_s[pi] - qnorm * ix->list_bonus[l] : sc.probe_s[pi]) + bias;
        // Integer threshold: a vector can enter only if base + delta * acc > the heap's worst.
        int32_t t = -1;
        if (ch.thr > -INFINITY) {
            float tq = (ch.thr - base) * inv;
            if (tq >= (float)max_acc) continue; // nothing in this list can enter
            t = tq < 0 ? -1 : (int32_t)tq;
        }
        const int64_t nblocks = (p1 - p0) / SRK_PQ4_BLOCK;
        if (pi + 1 < np) {
            // The next list: its first code blocks, and all its row numbers (read at random
            // positions, for the candidates that pass, so the hardware prefetcher misses them).
            const uint32_t nl = sc.probe_l[pi + 1];
            const int64_t n0 = ix->list_offsets[nl], n1 = ix->list_offsets[nl + 1];
            __builtin_prefetch(ix->codes + (n0 / SRK_PQ4_BLOCK) * 16 * m, 0, 3);
            for (int64_t o = 0; o < n1 - n0; o += 16) __builtin_prefetch(ix->rows + n0 + o, 0, 3);
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

    // 4. Exact re-rank of the candidates with the dot kernel (gathered rows, prefetched): the
    //    best `rerank` approximate ones, and the few more that share the cut's histogram bin.
    ann_res_cut(&ch, rerank / 8);
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
    if (want > 0 && want < nc && want > ANN_SMALL_K) {
        ann_res sel = { sc.cand_s, sc.seen, nc, nc, want, -INFINITY, isa };
        for (int64_t i = 0; i < nc; i++) { sc.cand_s[i] = sc.exact[i]; sc.seen[i] = (uint32_t)i; }
        ann_select(&sel, want);
        kth = sc.cand_s[want - 1];
    } else if (want > 0 && want < nc) {
        // The `want` best exact scores by sorted insertion (scores in cand_s, candidate numbers
        // in seen, both free now), the threshold skipping most of them.
        int64_t nt = 0;
        for (int64_t i = 0; i < nc; i++) {
            const float v = sc.exact[i];
            if (nt < want || v > sc.cand_s[want - 1]) ann_sorted_offer(sc.cand_s, sc.seen, &nt, want, v, (uint32_t)i);
        }
        kth = sc.cand_s[want - 1];
    }
    int64_t npushed = 0; // candidates offered, in sc.idx (free since the dot kernel ran)
    for (int64_t i = 0; i < nc; i++) {
        if (!(sc.exact[i] >= kth)) continue;
        if (out->count == out->capacity && out->capacity > 0 && sc.exact[i] < out->scores[0]) continue;
        srk_topk_push(out, sc.exact[i], ids[sc.cand_r[i]]);
        if (rows_out) sc.idx[npushed++] = i;
    }
    if (rows_out) {
        // Each kept hit's row, from the candidates offered (their ids are distinct: one row each):
        // a small open-addressing table id -> candidate in sc.seen (free now; >= 2x npushed slots).
        srk_topk_sort(out);
        memset(sc.seen, 0, (size_t)slots * sizeof(uint32_t));
        for (int64_t p = 0; p < npushed; p++) {
            const int64_t i = sc.idx[p];
            uint64_t hsh = (ids[sc.cand_r[i]] * 0x9E3779B97F4A7C15ull) >> 32;
            for (;; hsh++) {
                uint32_t *slot = &sc.seen[hsh & (uint64_t)(slots - 1)];
                if (*slot == 0) { *slot = (uint32_t)i + 1; break; }
            }
        }
        for (int64_t j = 0; j < out->count; j++) {
            rows_out[j] = -1;
            uint64_t hsh = (out->ids[j] * 0x9E3779B97F4A7C15ull) >> 32;
            for (;; hsh++) {
                const uint32_t v = sc.seen[hsh & (uint64_t)(slots - 1)];
                if (v == 0) break;
                if (ids[sc.cand_r[v - 1]] == out->ids[j]) { rows_out[j] = (int64_t)sc.cand_r[v - 1]; break; }
            }
        }
    }
    return scanned;
}
