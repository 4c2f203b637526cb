// CShardRankKernels: ISA-specific compute kernels behind one runtime-dispatch table.
//
// Every symbol carries the `srk_` prefix. Only ShardRankKernels imports this module
// (`internal import`); no type from here appears in a public Swift signature.
//
// Conventions: row-major matrices, explicit dimension `d`, 64-bit counts. Pointers are
// borrowed for the duration of the call only; nothing is retained. All functions are
// reentrant and thread-safe (no global mutable state besides the once-initialised
// CPU feature word).
#pragma once
#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Instruction-set variants. Each is a complete copy of the kernels compiled with
/// `__attribute__((target(...)))`; the baseline one needs only SSE2.
enum {
    SRK_ISA_BASELINE = 0, ///< SSE2 (x86-64 baseline) / portable C vectors elsewhere
    SRK_ISA_AVX2 = 1,     ///< AVX2 + FMA + F16C
    SRK_ISA_AVX512 = 2,   ///< AVX-512 F/BW/VL/DQ + FMA + F16C
    SRK_ISA_COUNT = 3
};

/// Row element types.
enum {
    SRK_DTYPE_F32 = 0,  ///< float
    SRK_DTYPE_F16 = 1,  ///< IEEE binary16 bit patterns (uint16_t, little-endian)
    SRK_DTYPE_I8 = 2,   ///< int8_t with one float scale per row
    SRK_DTYPE_COUNT = 3
};

/// srk_dot_fn flag: the rows are part of a long contiguous scan that continues past `n`;
/// prefetch ahead of the hardware prefetcher (no effect on gathered rows, which are always
/// prefetched).
#define SRK_DOT_STREAM 1

/// The flags a scan of `bytes` of contiguous `dtype` rows against `nq` queries should pass:
/// SRK_DOT_STREAM where measured to help (f16/int8, few queries, beyond the caches), else 0.
int32_t srk_stream_flags(int32_t dtype, int64_t nq, int64_t bytes);

/// out[qi * ldo + i] = dot(q + qi * ldq, row(i)) * scale(row(i)) for qi < nq, i < n.
/// row(i) = rows + (idx ? idx[i] : i) * d elements; scale is 1 except for SRK_DTYPE_I8
/// where it is scales[idx ? idx[i] : i]. `rows`: element type given by the table slot.
/// `flags`: 0 or SRK_DOT_STREAM.
typedef void (*srk_dot_fn)(const float *q, int64_t nq, int64_t ldq,
                           const void *rows, const float *scales, const int64_t *idx,
                           int64_t n, int64_t d, float *out, int64_t ldo, int32_t flags);

/// out[i] = |row(i)|^2 (including the int8 scale squared).
typedef void (*srk_sqnorm_fn)(const void *rows, const float *scales, const int64_t *idx,
                              int64_t n, int64_t d, float *out);

/// Floats needed to hold B (n x k) packed for this variant's GEMM.
typedef int64_t (*srk_gemm_packed_size_fn)(int64_t n, int64_t k);
/// Packs B[n x k] (row-major, leading dimension ldb) into `out` (packed_size floats).
typedef void (*srk_gemm_pack_b_fn)(int64_t n, int64_t k, const float *b, int64_t ldb, float *out);
/// C[m x n] = A[m x k] * B^T where `bp` is B packed by the same variant's pack_b.
typedef void (*srk_gemm_nt_packed_fn)(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                                      const float *bp, float *c, int64_t ldc);

/// Decodes `n` elements of one row (dtype of the table) at `src` into f32 at `dst`; int8 values
/// are multiplied by `scale` (ignored for f32/f16). `src` needs no alignment.
typedef void (*srk_decode_fn)(const void *src, float scale, float *dst, int64_t n);

typedef struct srk_kernels {
    int32_t isa;
    const char *name;
    srk_dot_fn dot[SRK_DTYPE_COUNT];
    srk_sqnorm_fn sqnorm[SRK_DTYPE_COUNT];
    srk_decode_fn decode[SRK_DTYPE_COUNT];
    // Hand-written register-blocked GEMM of this ISA (B packed once, e.g. at model load).
    srk_gemm_packed_size_fn gemm_packed_size;
    srk_gemm_pack_b_fn gemm_pack_b;
    srk_gemm_nt_packed_fn gemm_nt_packed;
} srk_kernels;

/// Bitmask (1 << SRK_ISA_x) of the variants this CPU and OS can run. Baseline is always set.
int32_t srk_isa_supported(void);
/// The best supported variant.
int32_t srk_isa_best(void);
/// The kernel table of `isa`, or NULL if this CPU cannot run it.
const srk_kernels *srk_kernels_for(int32_t isa);

// ---- Top-k heap ---------------------------------------------------------------------
/// A bounded min-heap keeping the `capacity` best (score, id) pairs. "Better" means a
/// higher score, ties broken towards the lower id. The root is the worst kept item.
/// Storage is owned by the caller (`scores`/`ids`: `capacity` elements each).
typedef struct srk_topk {
    float *scores;
    uint64_t *ids;
    int64_t count;
    int64_t capacity;
} srk_topk;

/// Offers one item; NaN scores are ignored.
void srk_topk_push(srk_topk *h, float score, uint64_t id);
/// Offers n items (ids[i] or base_id + i when ids is NULL), skipping ids present in the
/// sorted ascending array `exclude` (nexclude elements, may be NULL when 0).
void srk_topk_push_many(srk_topk *h, const float *scores, const uint64_t *ids, uint64_t base_id,
                        int64_t n, const uint64_t *exclude, int64_t nexclude);
/// Sorts the heap contents in place, best first; the heap is then no longer a heap
/// (reset count to reuse).
void srk_topk_sort(srk_topk *h);

// ---- Fused search --------------------------------------------------------------------
/// Number of rows scored per block inside srk_search; scratch must hold nq * this floats.
#define SRK_SEARCH_BLOCK 256

/// For each query qi < nq, offers every row i < n (id ids[i]) with score
/// dot(q_qi, row i) (* scales[i] for int8) to heaps[qi], skipping excluded ids.
/// `queries`: nq * d floats. `rows`: n * d elements of `dtype`. `scratch`: nq * SRK_SEARCH_BLOCK floats.
/// `mode`: SRK_SEARCH_AUTO, or SRK_SEARCH_EXACT to score every row with `k`'s dot kernel even
/// where the int8 VNNI prefilter applies (int8 rows, d <= 128, the AVX-512 table, a CPU with
/// AVX-512 VNNI). The prefilter only skips rows that provably cannot enter a heap, and scores
/// the others with the same dot kernel, so both modes give the same heaps.
void srk_search(const srk_kernels *k, int32_t dtype, const float *queries, int64_t nq,
                const void *rows, const float *scales, const uint64_t *ids, int64_t n, int64_t d,
                const uint64_t *exclude, int64_t nexclude, srk_topk *heaps, float *scratch,
                int32_t mode);
#define SRK_SEARCH_AUTO 0
#define SRK_SEARCH_EXACT 1

/// 1 when the CPU has AVX-512 VNNI (and the AVX-512 variant runs), else 0.
int32_t srk_vnni_supported(void);

// ---- Gather ---------------------------------------------------------------------------
/// Copies rows `rows[i]` (those >= 0, in order) of the row-major table at `base` (`row_bytes`
/// per row) contiguously into `dst`; returns how many rows it copied. Rows `SRK_GATHER_AHEAD`
/// positions ahead are prefetched, so the cache misses of a random-id gather overlap instead
/// of stalling one row at a time. Bounds are the caller's: every row >= 0 must be in the table.
int64_t srk_gather_rows(void *dst, const void *base, int64_t row_bytes, const int64_t *rows, int64_t n);
/// `srk_gather_rows` with the variant of `isa` (SRK_ISA_*; tests compare them): -1 when this CPU
/// cannot run it. Rows of 64, 128, 256 and 512 bytes take loops specialised for that size.
int64_t srk_gather_rows_isa(int32_t isa, void *dst, const void *base, int64_t row_bytes, const int64_t *rows,
                            int64_t n);
#define SRK_GATHER_AHEAD 8

// ---- ANN: inverted file + 4-bit product quantisation (ann_ivfpq.c) --------------------
/// Vectors per fast-scan block.
#define SRK_PQ4_BLOCK 32
/// Largest number of subspaces (every per-vector sum m * 255 stays below 2^16).
#define SRK_PQ4_MAX_M 128

/// Scores `nblocks` blocks of 32 PQ4-coded vectors against a u8 lookup table, with the
/// variant of `isa` (SRK_ISA_*, which the caller has checked the CPU supports).
/// `codes`: nblocks * 16 * m bytes, m a multiple of 4 and <= SRK_PQ4_MAX_M; in block b, group
/// g < m/2 is 32 bytes at codes + b*16*m + g*32 whose byte i is
/// code_{2g}(vector 32b+i) | code_{2g+1}(vector 32b+i) << 4.
/// `lut`: m * 16 bytes, lut[s*16 + c] the value of code c in subspace s.
/// `out`: nblocks * 32 values; out[v] = sum over s of lut[s*16 + code_s(v)], exactly.
void srk_pq4_scan(int32_t isa, const uint8_t *codes, int64_t nblocks, int64_t m, const uint8_t *lut, uint16_t *out);

/// A borrowed view of an IVF-PQ4 index over the rows of one table slice (see ann_ivfpq.c).
typedef struct srk_ivfpq {
    int64_t d;                    ///< vector dimension
    int64_t nlist;                ///< lists (k-means centroids)
    int64_t m;                    ///< subspaces: a multiple of 4, <= SRK_PQ4_MAX_M
    int64_t dsub;                 ///< dimensions per subspace; m * dsub >= d (the rest are zero)
    int64_t max_list;             ///< the longest list, in positions
    const float *centroids;       ///< nlist * d
    const float *codebooks;       ///< m * 16 * dsub: codeword c of subspace s at (s*16 + c) * dsub
    const float *rotation;        ///< d * d, row-major, orthogonal: codes describe rotation * residual
    const int64_t *list_offsets;  ///< nlist + 1 positions, multiples of SRK_PQ4_BLOCK
    const uint8_t *codes;         ///< list_offsets[nlist] / 32 blocks of 16 * m bytes
    const uint32_t *rows;         ///< list_offsets[nlist] row numbers; UINT32_MAX = padding
    const float *list_bonus;      ///< nlist values or NULL: lists are probed in the order of q.c_l + |q| * list_bonus[l]
} srk_ivfpq;

/// Bytes of scratch one srk_ivfpq_search call needs (any alignment; reusable across calls).
int64_t srk_ivfpq_scratch_bytes(const srk_ivfpq *ix, int64_t nprobe, int64_t rerank);

/// One query: probes the `nprobe` lists that score highest (q.c_l, plus |q| times the list's
/// bonus when the index has one: a bound on how far its members reach beyond the centroid), keeps the `rerank` best
/// approximate candidates among rows not in `exclude_rows` (sorted ascending, `nexclude`
/// values), scores them exactly with `k`'s dot kernel over the table's rows (`dtype`, `rows`,
/// `scales` for int8) and offers each to `out` with id ids[row]. `isa` picks the fast-scan
/// variant. Returns the number of list positions scanned. With `rows_out` (NULL: not wanted;
/// then `out` must be empty on entry), `out` is left sorted best first (srk_topk_sort) and
/// rows_out[j] is the row of its j-th hit (`out->count` values), so a caller needs no id lookup.
int64_t srk_ivfpq_search(const srk_kernels *k, int32_t isa, const srk_ivfpq *ix, const float *q,
                         int32_t dtype, const void *rows, const float *scales, const uint64_t *ids,
                         const uint32_t *exclude_rows, int64_t nexclude, int64_t nprobe, int64_t rerank,
                         srk_topk *out, void *scratch, int64_t *rows_out);

/// Converts one binary16 bit pattern to float (exact, handles subnormals/Inf/NaN).
float srk_f16_to_f32(uint16_t h);

/// A spin-wait hint (x86 `pause`, AArch64 `yield`, nothing elsewhere) for WorkerPool's
/// bounded spins: it lets the sibling hyperthread run and avoids the memory-order
/// mis-speculation penalty when the polled value changes.
static inline void srk_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#ifdef __cplusplus
}
#endif
