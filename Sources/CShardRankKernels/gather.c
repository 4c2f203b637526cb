// The gather of a Lookup: random rows of a table copied into the response, with prefetch.
#include "CShardRankKernels.h"

#include <string.h>

static inline void prefetch_row(const char *row, int64_t row_bytes) {
    for (int64_t off = 0; off < row_bytes; off += 64) __builtin_prefetch(row + off, 0, 3);
}

int64_t srk_gather_rows(void *dst, const void *base, int64_t row_bytes, const int64_t *rows, int64_t n) {
    const char *b = (const char *)base;
    char *out = (char *)dst;
    int64_t copied = 0;
    int64_t ahead = n < SRK_GATHER_AHEAD ? n : SRK_GATHER_AHEAD;
    for (int64_t i = 0; i < ahead; i++)
        if (rows[i] >= 0) prefetch_row(b + rows[i] * row_bytes, row_bytes);
    for (int64_t i = 0; i < n; i++) {
        if (i + SRK_GATHER_AHEAD < n && rows[i + SRK_GATHER_AHEAD] >= 0)
            prefetch_row(b + rows[i + SRK_GATHER_AHEAD] * row_bytes, row_bytes);
        if (rows[i] < 0) continue;
        memcpy(out + copied * row_bytes, b + rows[i] * row_bytes, (size_t)row_bytes);
        copied++;
    }
    return copied;
}
