// The gather of a Lookup: random rows of a table copied into the response, with prefetch.
#include "CShardRankKernels.h"

#include <string.h>

// One loop body, instantiated for the common row sizes (f32/f16/int8 rows of 16...128 dims:
// 64, 128, 256, 512 bytes) so the compiler unrolls the prefetches and inlines the copy as a few
// vector moves instead of a `memcpy` call per row, and once for any other size.
#define SRK_GATHER_LOOP(RB)                                                                        \
    do {                                                                                           \
        const int64_t rb_ = (RB);                                                                  \
        for (int64_t i = 0; i < ahead; i++)                                                        \
            if (rows[i] >= 0) prefetch_row(b + rows[i] * rb_, rb_);                                \
        for (int64_t i = 0; i < n; i++) {                                                          \
            if (i + SRK_GATHER_AHEAD < n && rows[i + SRK_GATHER_AHEAD] >= 0)                       \
                prefetch_row(b + rows[i + SRK_GATHER_AHEAD] * rb_, rb_);                           \
            if (rows[i] < 0) continue;                                                             \
            memcpy(out + copied * rb_, b + rows[i] * rb_, (size_t)rb_);                            \
            copied++;                                                                              \
        }                                                                                          \
    } while (0)

static inline __attribute__((always_inline)) void prefetch_row(const char *row, int64_t row_bytes) {
    for (int64_t off = 0; off < row_bytes; off += 64) __builtin_prefetch(row + off, 0, 3);
}

#define SRK_GATHER_FN(NAME, ATTR)                                                                  \
    ATTR static int64_t NAME(char *out, const char *b, int64_t row_bytes, const int64_t *rows,     \
                             int64_t n) {                                                          \
        int64_t copied = 0;                                                                        \
        const int64_t ahead = n < SRK_GATHER_AHEAD ? n : SRK_GATHER_AHEAD;                         \
        switch (row_bytes) {                                                                       \
        case 64: SRK_GATHER_LOOP(64); break;                                                       \
        case 128: SRK_GATHER_LOOP(128); break;                                                     \
        case 256: SRK_GATHER_LOOP(256); break;                                                     \
        case 512: SRK_GATHER_LOOP(512); break;                                                     \
        default: SRK_GATHER_LOOP(row_bytes); break;                                                \
        }                                                                                          \
        return copied;                                                                             \
    }

SRK_GATHER_FN(gather_baseline, )
#if defined(__x86_64__)
SRK_GATHER_FN(gather_avx2, __attribute__((target("avx2"))))
SRK_GATHER_FN(gather_avx512, __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))))
#endif

typedef int64_t (*gather_fn)(char *, const char *, int64_t, const int64_t *, int64_t);

static gather_fn gather_variant(int32_t isa) {
    switch (isa) {
#if defined(__x86_64__)
    case SRK_ISA_AVX512: return gather_avx512;
    case SRK_ISA_AVX2: return gather_avx2;
#endif
    default: return gather_baseline;
    }
}

int64_t srk_gather_rows_isa(int32_t isa, void *dst, const void *base, int64_t row_bytes, const int64_t *rows,
                            int64_t n) {
    if (srk_kernels_for(isa) == NULL) return -1;  // not a variant this CPU runs
    return gather_variant(isa)((char *)dst, (const char *)base, row_bytes, rows, n);
}

int64_t srk_gather_rows(void *dst, const void *base, int64_t row_bytes, const int64_t *rows, int64_t n) {
    return gather_variant(srk_isa_best())((char *)dst, (const char *)base, row_bytes, rows, n);
}
