// One ISA variant of the kernels, written once with clang vector extensions.
//
// Included by kernels_<isa>.c inside `#pragma clang attribute push(target(...))`, after
// defining:
//   SRK_W            vector width in floats (4, 8 or 16)
//   SRK_SFX(name)    name suffixed with the variant
//   SRK_FMA(a,b,c)   a*b+c on vectors (fused where the ISA has FMA)
//   SRK_LOAD_F16(p)  loads SRK_W binary16 values from p as a float vector
//   SRK_SPLAT(x)     a vector with every lane x
//   SRK_VARIANT_ISA, SRK_VARIANT_NAME  the table's isa id and name
// Everything here is static; the only exported symbol is the table SRK_SFX(srk_kernels).
//
// Summation order: lanes accumulate columns j, j+W, j+2W, ... then a fixed tree; columns
// past the last full vector are added in order at the end. Results equal the sequential
// scalar sum exactly whenever all partial sums are exactly representable (e.g.
// integer-valued inputs below 2^24) and otherwise differ by normal rounding only.

#define W SRK_W
typedef float vf_t __attribute__((vector_size(W * 4)));
typedef int8_t vb_t __attribute__((vector_size(W)));
typedef uint16_t vh_t __attribute__((vector_size(W * 2)));

#define INLINE static inline __attribute__((always_inline))

INLINE vf_t ldf(const float *p) { vf_t v; __builtin_memcpy(&v, p, sizeof v); return v; }
INLINE vf_t ldb(const int8_t *p) { vb_t v; __builtin_memcpy(&v, p, sizeof v); return __builtin_convertvector(v, vf_t); }
INLINE vf_t ldh(const uint16_t *p) { return SRK_LOAD_F16(p); }
INLINE void stf(float *p, vf_t v) { __builtin_memcpy(p, &v, sizeof v); }

#define SHUF __builtin_shufflevector

// Transposing reduction: W accumulators (one per row) -> one vector of W row sums.
// Each stage folds every segment in half and interleaves pairs, preserving row order.
INLINE vf_t hsum_rows(const vf_t *a) {
#if W == 16
    vf_t b[8], c[4], e[2];
    for (int i = 0; i < 8; i++)
        b[i] = SHUF(a[2*i], a[2*i+1], 0,1,2,3,4,5,6,7, 16,17,18,19,20,21,22,23)
             + SHUF(a[2*i], a[2*i+1], 8,9,10,11,12,13,14,15, 24,25,26,27,28,29,30,31);
    for (int i = 0; i < 4; i++)
        c[i] = SHUF(b[2*i], b[2*i+1], 0,1,2,3, 8,9,10,11, 16,17,18,19, 24,25,26,27)
             + SHUF(b[2*i], b[2*i+1], 4,5,6,7, 12,13,14,15, 20,21,22,23, 28,29,30,31);
    for (int i = 0; i < 2; i++)
        e[i] = SHUF(c[2*i], c[2*i+1], 0,1,4,5,8,9,12,13,16,17,20,21,24,25,28,29)
             + SHUF(c[2*i], c[2*i+1], 2,3,6,7,10,11,14,15,18,19,22,23,26,27,30,31);
    return SHUF(e[0], e[1], 0,2,4,6,8,10,12,14,16,18,20,22,24,26,28,30)
         + SHUF(e[0], e[1], 1,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31);
#elif W == 8
    vf_t b[4], c[2];
    for (int i = 0; i < 4; i++)
        b[i] = SHUF(a[2*i], a[2*i+1], 0,1,2,3, 8,9,10,11) + SHUF(a[2*i], a[2*i+1], 4,5,6,7, 12,13,14,15);
    for (int i = 0; i < 2; i++)
        c[i] = SHUF(b[2*i], b[2*i+1], 0,1,4,5,8,9,12,13) + SHUF(b[2*i], b[2*i+1], 2,3,6,7,10,11,14,15);
    return SHUF(c[0], c[1], 0,2,4,6,8,10,12,14) + SHUF(c[0], c[1], 1,3,5,7,9,11,13,15);
#elif W == 4
    vf_t b0 = SHUF(a[0], a[1], 0,1,4,5) + SHUF(a[0], a[1], 2,3,6,7);
    vf_t b1 = SHUF(a[2], a[3], 0,1,4,5) + SHUF(a[2], a[3], 2,3,6,7);
    return SHUF(b0, b1, 0,2,4,6) + SHUF(b0, b1, 1,3,5,7);
#else
#error "unsupported SRK_W"
#endif
}

// Exact binary16 -> binary32 in scalar code (tails).
INLINE float h2f(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t em = h & 0x7fffu;
    uint32_t bits;
    if (em >= 0x7c00u) bits = 0x7f800000u | ((em & 0x3ffu) << 13);        // Inf / NaN
    else if (em >= 0x0400u) bits = (em << 13) + ((127u - 15u) << 23);       // normal
    else { float f = (float)em * 0x1p-24f; __builtin_memcpy(&bits, &f, 4); } // zero / subnormal
    bits |= sign;
    float f; __builtin_memcpy(&f, &bits, 4);
    return f;
}

// ---- W rows at a time: one query against row pointers rp[0..W) --------------------------
// `D` is the dimension; call sites pass a literal for the common sizes so the column loop
// is fully unrolled.
#define DEFINE_GROUP(NAME, T, LOADV, LOADS)                                                  \
INLINE vf_t NAME(const float *q, const T *const *rp, int64_t D) {                            \
    vf_t acc[W];                                                                             \
    _Pragma("clang loop unroll(full)")                                                       \
    for (int r = 0; r < W; r++) {                                                            \
        const T *p = rp[r];                                                                  \
        vf_t a0 = (vf_t){0}, a1 = (vf_t){0};                                                 \
        int64_t j = 0;                                                                       \
        for (; j + 2 * W <= D; j += 2 * W) {                                                 \
            a0 = SRK_FMA(ldf(q + j), LOADV(p + j), a0);                                      \
            a1 = SRK_FMA(ldf(q + j + W), LOADV(p + j + W), a1);                              \
        }                                                                                    \
        if (j + W <= D) { a0 = SRK_FMA(ldf(q + j), LOADV(p + j), a0); }                      \
        acc[r] = a0 + a1;                                                                    \
    }                                                                                        \
    vf_t s = hsum_rows(acc);                                                                 \
    int64_t j0 = D - D % W;                                                                  \
    if (j0 < D) {                                                                            \
        for (int r = 0; r < W; r++) {                                                        \
            float t = 0;                                                                     \
            for (int64_t j = j0; j < D; j++) t += q[j] * LOADS(rp[r][j]);                    \
            s[r] += t;                                                                       \
        }                                                                                    \
    }                                                                                        \
    return s;                                                                                \
}                                                                                            \
INLINE vf_t NAME##_sq(const T *const *rp, int64_t D) {                                       \
    vf_t acc[W];                                                                             \
    for (int r = 0; r < W; r++) {                                                            \
        const T *p = rp[r];                                                                  \
        vf_t a0 = (vf_t){0};                                                                 \
        int64_t j = 0;                                                                       \
        for (; j + W <= D; j += W) { vf_t x = LOADV(p + j); a0 = SRK_FMA(x, x, a0); }       \
        acc[r] = a0;                                                                         \
    }                                                                                        \
    vf_t s = hsum_rows(acc);                                                                 \
    int64_t j0 = D - D % W;                                                                  \
    for (int r = 0; r < W; r++) {                                                            \
        float t = 0;                                                                         \
        for (int64_t j = j0; j < D; j++) { float x = LOADS(rp[r][j]); t += x * x; }          \
        s[r] += t;                                                                           \
    }                                                                                        \
    return s;                                                                                \
}

#define ID_F(x) (x)
#define I8_F(x) ((float)(x))
DEFINE_GROUP(group_f32, float, ldf, ID_F)
DEFINE_GROUP(group_f16, uint16_t, ldh, h2f)
DEFINE_GROUP(group_i8, int8_t, ldb, I8_F)

// ---- QB queries × RB rows at a time (QB·RB = W accumulators, one hsum_rows per tile) ------
// Each row vector is loaded (and converted) once and used by QB queries, each query vector
// once for RB rows: 2 FMAs per load instead of 1. Lane a = qi·RB + ri of the result holds
// query qi · row ri.
#if W == 16
#define QB 4
#elif W == 8
#define QB 2
#else
#define QB 1
#endif
#define RB (W / QB)

#define DEFINE_TILE(NAME, T, LOADV, LOADS)                                                   \
INLINE vf_t NAME(const float *q, int64_t ldq, const T *const *rp, int64_t D) {               \
    vf_t acc[W];                                                                             \
    _Pragma("clang loop unroll(full)")                                                       \
    for (int a = 0; a < W; a++) acc[a] = (vf_t){0};                                          \
    int64_t j = 0;                                                                           \
    for (; j + W <= D; j += W) {                                                             \
        vf_t x[RB];                                                                          \
        _Pragma("clang loop unroll(full)")                                                   \
        for (int ri = 0; ri < RB; ri++) x[ri] = LOADV(rp[ri] + j);                           \
        _Pragma("clang loop unroll(full)")                                                   \
        for (int qi = 0; qi < QB; qi++) {                                                    \
            vf_t qv = ldf(q + qi * ldq + j);                                                 \
            _Pragma("clang loop unroll(full)")                                               \
            for (int ri = 0; ri < RB; ri++)                                                  \
                acc[qi * RB + ri] = SRK_FMA(qv, x[ri], acc[qi * RB + ri]);                   \
        }                                                                                    \
    }                                                                                        \
    vf_t s = hsum_rows(acc);                                                                 \
    if (j < D) {                                                                             \
        for (int qi = 0; qi < QB; qi++)                                                      \
            for (int ri = 0; ri < RB; ri++) {                                                \
                float t = 0;                                                                 \
                for (int64_t jj = j; jj < D; jj++) t += q[qi * ldq + jj] * LOADS(rp[ri][jj]); \
                s[qi * RB + ri] += t;                                                        \
            }                                                                                \
    }                                                                                        \
    return s;                                                                                \
}

DEFINE_TILE(tile_f32, float, ldf, ID_F)
DEFINE_TILE(tile_f16, uint16_t, ldh, h2f)
DEFINE_TILE(tile_i8, int8_t, ldb, I8_F)

// How many groups ahead to prefetch gathered rows.
#define PF_GROUPS 2
// How many groups ahead to prefetch a contiguous scan (SRK_DOT_STREAM): measured best for
// int8 (+30%) and f16 (+15%) search over 1M rows; f32 is bandwidth-bound either way.
#define PF_STREAM_GROUPS 4

// Driver: rows in groups of W (last group padded by repeating its last row); queries in
// QB-query tiles, then one at a time, against the group while its rows are hot in L1.
// Gathered rows are prefetched PF_GROUPS groups ahead.
#define DEFINE_DOT(NAME, T, GROUP, TILE, IS_I8)                                              \
INLINE void NAME##_d(const float *q, int64_t nq, int64_t ldq, const T *rows,                 \
                     const float *scales, const int64_t *idx, int64_t n, int64_t d,          \
                     float *out, int64_t ldo, int32_t flags, int64_t D) {                    \
    const int64_t groupBytes = W * d * (int64_t)sizeof(T);                                   \
    int64_t i0 = 0;                                                                          \
    if (!idx && nq < QB) {                                                                   \
        /* Contiguous rows, too few queries for a tile (the usual 1×N dot): full groups     \
           address row r at the constant offset r·D from the group start, so the compiler   \
           keeps no table of 16 row pointers on the stack and reloads none per row.         \
           Same GROUP, same sums as the general loop below (which takes the last,           \
           partial group). Measured +33-53 % at 1k×64 (L2), +4-14 % at 10k×64 (L3). */    \
        for (; i0 + W <= n; i0 += W) {                                                       \
            const T *b = rows + i0 * d;                                                      \
            if (flags & SRK_DOT_STREAM) {                                                    \
                uintptr_t pb = (uintptr_t)b + PF_STREAM_GROUPS * groupBytes;                 \
                for (int64_t off = 0; off < groupBytes; off += 64)                           \
                    __builtin_prefetch((const void *)(pb + off), 0, 3);                      \
            }                                                                                \
            const T *g[W];                                                                   \
            _Pragma("clang loop unroll(full)")                                               \
            for (int r = 0; r < W; r++) g[r] = b + r * D;                                    \
            for (int64_t qi = 0; qi < nq; qi++) {                                            \
                vf_t s = GROUP(q + qi * ldq, g, D);                                          \
                if (IS_I8) s *= ldf(scales + i0);                                            \
                stf(out + qi * ldo + i0, s);                                                 \
            }                                                                                \
        }                                                                                    \
    }                                                                                        \
    const T *rp[W];                                                                          \
    for (int64_t i = i0; i < n; i += W) {                                                    \
        int64_t m = n - i < W ? n - i : W;                                                   \
        vf_t sc = (vf_t){0} + 1.0f;                                                          \
        for (int r = 0; r < W; r++) {                                                        \
            int64_t rr = i + (r < m ? r : m - 1);                                            \
            int64_t row = idx ? idx[rr] : rr;                                                \
            rp[r] = rows + row * d;                                                          \
            if (IS_I8) sc[r] = scales[row];                                                  \
        }                                                                                    \
        if (idx) {                                                                           \
            /* the first group also starts the fetches of groups 1..PF_GROUPS */             \
            int64_t pf = i == 0 ? W : i + PF_GROUPS * W;                                     \
            int64_t pe = i + PF_GROUPS * W + W < n ? i + PF_GROUPS * W + W : n;              \
            for (int64_t t = pf; t < pe; t++) {                                              \
                const char *base = (const char *)(rows + idx[t] * d);                        \
                for (int64_t off = 0; off < d * (int64_t)sizeof(T); off += 64)               \
                    __builtin_prefetch(base + off, 0, 3);                                    \
                if (IS_I8) __builtin_prefetch(scales + idx[t], 0, 3);                        \
            }                                                                                \
        } else if (flags & SRK_DOT_STREAM) {                                                 \
            /* a long contiguous scan: fetch PF_STREAM_GROUPS groups ahead, past the end of  \
               this call's rows too (the caller streams on; prefetches never fault) */        \
            uintptr_t pb = (uintptr_t)(rows + i * d) + PF_STREAM_GROUPS * groupBytes;        \
            for (int64_t off = 0; off < groupBytes; off += 64)                               \
                __builtin_prefetch((const void *)(pb + off), 0, 3);                          \
        }                                                                                    \
        int64_t qi = 0;                                                                      \
        if (QB > 1) {                                                                        \
            for (; qi + QB <= nq; qi += QB) {                                                \
                for (int r0 = 0; r0 < m; r0 += RB) {                                         \
                    vf_t s = TILE(q + qi * ldq, ldq, rp + r0, D);                            \
                    for (int a = 0; a < W; a++) {                                            \
                        int r = r0 + a % RB;                                                 \
                        if (r < m) out[(qi + a / RB) * ldo + i + r] = IS_I8 ? s[a] * sc[r] : s[a]; \
                    }                                                                        \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
        for (; qi < nq; qi++) {                                                              \
            vf_t s = GROUP(q + qi * ldq, rp, D);                                             \
            if (IS_I8) s *= sc;                                                              \
            float *o = out + qi * ldo + i;                                                   \
            if (m == W) stf(o, s); else for (int r = 0; r < m; r++) o[r] = s[r];             \
        }                                                                                    \
    }                                                                                        \
}                                                                                            \
static void NAME(const float *q, int64_t nq, int64_t ldq, const void *rows_,                 \
                 const float *scales, const int64_t *idx, int64_t n, int64_t d,              \
                 float *out, int64_t ldo, int32_t flags) {                                   \
    const T *rows = (const T *)rows_;                                                        \
    switch (d) { /* literal dimensions let the compiler unroll the column loop */            \
    case 32:  NAME##_d(q, nq, ldq, rows, scales, idx, n, d, out, ldo, flags, 32); break;     \
    case 64:  NAME##_d(q, nq, ldq, rows, scales, idx, n, d, out, ldo, flags, 64); break;     \
    case 128: NAME##_d(q, nq, ldq, rows, scales, idx, n, d, out, ldo, flags, 128); break;    \
    case 256: NAME##_d(q, nq, ldq, rows, scales, idx, n, d, out, ldo, flags, 256); break;    \
    default:  NAME##_d(q, nq, ldq, rows, scales, idx, n, d, out, ldo, flags, d); break;      \
    }                                                                                        \
}                                                                                            \
static void NAME##_sqnorm(const void *rows_, const float *scales, const int64_t *idx,        \
                          int64_t n, int64_t d, float *out) {                                \
    const T *rows = (const T *)rows_;                                                        \
    const T *rp[W];                                                                          \
    for (int64_t i = 0; i < n; i += W) {                                                     \
        int64_t m = n - i < W ? n - i : W;                                                   \
        vf_t sc = (vf_t){0} + 1.0f;                                                          \
        for (int r = 0; r < W; r++) {                                                        \
            int64_t rr = i + (r < m ? r : m - 1);                                            \
            int64_t row = idx ? idx[rr] : rr;                                                \
            rp[r] = rows + row * d;                                                          \
            if (IS_I8) sc[r] = scales[row];                                                  \
        }                                                                                    \
        vf_t s = GROUP##_sq(rp, d);                                                          \
        if (IS_I8) s *= sc * sc;                                                             \
        for (int r = 0; r < m; r++) out[i + r] = s[r];                                       \
    }                                                                                        \
}

DEFINE_DOT(dot_f32, float, group_f32, tile_f32, 0)
DEFINE_DOT(dot_f16, uint16_t, group_f16, tile_f16, 0)
DEFINE_DOT(dot_i8, int8_t, group_i8, tile_i8, 1)

// ---- GEMM C = A * B^T with B packed once (the MLP's constant weights) ---------------------
// B (n x k, one output per row: the PyTorch weight layout) is packed into panels of NR = 2W
// columns, k-major: panel p, row kk holds B[p*NR + 0..NR-1][kk] (zero past n). The
// micro-kernel keeps MR x 2 vectors of C in registers and streams one panel from L1/L2.
#if W == 16
#define MR 12
#else
#define MR 6
#endif
#define NR (2 * W)

static int64_t gemm_packed_size(int64_t n, int64_t k) { return (n + NR - 1) / NR * NR * k; }

static void gemm_pack_b(int64_t n, int64_t k, const float *b, int64_t ldb, float *out) {
    for (int64_t j0 = 0; j0 < n; j0 += NR) {
        float *panel = out + j0 * k;
        for (int64_t jj = 0; jj < NR; jj++) {
            int64_t j = j0 + jj;
            for (int64_t kk = 0; kk < k; kk++) panel[kk * NR + jj] = j < n ? b[j * ldb + kk] : 0.0f;
        }
    }
}

// Blocking: A is packed in blocks of MC rows × KC columns as MR-row micro-panels (k-major), so
// the micro-kernel broadcasts from one contiguous buffer; each B panel slice (KC × NR, ≤ 32 KiB)
// then stays in L1 while it is swept over the MC/MR micro-panels of the block.
enum { KC = 256, MC = 4 * MR };

INLINE void gemm_micro(int64_t kb, const float *ak, const float *bk, float *c, int64_t ldc,
                       int64_t mb, int64_t nb, int accumulate) {
    vf_t acc0[MR], acc1[MR];
    _Pragma("clang loop unroll(full)")
    for (int r = 0; r < MR; r++) { acc0[r] = (vf_t){0}; acc1[r] = (vf_t){0}; }
    for (int64_t kk = 0; kk < kb; kk++, bk += NR, ak += MR) {
        vf_t b0 = ldf(bk), b1 = ldf(bk + W);
        _Pragma("clang loop unroll(full)")
        for (int r = 0; r < MR; r++) {
            vf_t av = SRK_SPLAT(ak[r]);
            acc0[r] = SRK_FMA(av, b0, acc0[r]);
            acc1[r] = SRK_FMA(av, b1, acc1[r]);
        }
    }
    for (int r = 0; r < mb; r++) {
        float *cr = c + r * ldc;
        if (nb == NR) {
            if (accumulate) { acc0[r] += ldf(cr); acc1[r] += ldf(cr + W); }
            stf(cr, acc0[r]); stf(cr + W, acc1[r]);
        } else {
            float tmp[NR];
            stf(tmp, acc0[r]); stf(tmp + W, acc1[r]);
            for (int64_t jj = 0; jj < nb; jj++) cr[jj] = accumulate ? cr[jj] + tmp[jj] : tmp[jj];
        }
    }
}

static void gemm_nt_packed(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                           const float *bp, float *c, int64_t ldc) {
    float apack[MC * KC] __attribute__((aligned(64)));
    for (int64_t k0 = 0; k0 < k; k0 += KC) {
        int64_t kb = k - k0 < KC ? k - k0 : KC;
        for (int64_t i0 = 0; i0 < m; i0 += MC) {
            int64_t mc = m - i0 < MC ? m - i0 : MC;
            // Pack: micro-panel p holds rows i0 + p*MR .. +MR (the last row repeated past m).
            for (int64_t p = 0; p * MR < mc; p++) {
                float *dst = apack + p * MR * kb;
                for (int r = 0; r < MR; r++) {
                    int64_t row = p * MR + r < mc ? p * MR + r : mc - 1;
                    const float *ar = a + (i0 + row) * lda + k0;
                    for (int64_t kk = 0; kk < kb; kk++) dst[kk * MR + r] = ar[kk];
                }
            }
            for (int64_t j0 = 0; j0 < n; j0 += NR) {
                int64_t nb = n - j0 < NR ? n - j0 : NR;
                const float *bk = bp + j0 * k + k0 * NR;
                for (int64_t p = 0; p * MR < mc; p++) {
                    int64_t mb = mc - p * MR < MR ? mc - p * MR : MR;
                    gemm_micro(kb, apack + p * MR * kb, bk, c + (i0 + p * MR) * ldc + j0, ldc, mb, nb, k0 > 0);
                }
            }
        }
    }
}
#undef MR
#undef NR
// ---- Row decode (f32 out) ----------------------------------------------------------
static void decode_f32(const void *src, float scale, float *dst, int64_t n) {
    (void)scale;
    __builtin_memcpy(dst, src, (size_t)n * sizeof(float));
}

static void decode_f16(const void *src, float scale, float *dst, int64_t n) {
    (void)scale;
    const uint16_t *h = (const uint16_t *)src;
    int64_t j = 0;
    for (; j + W <= n; j += W) stf(dst + j, ldh(h + j));
    for (; j < n; j++) { uint16_t b; __builtin_memcpy(&b, h + j, 2); dst[j] = srk_f16_to_f32(b); }
}

static void decode_i8(const void *src, float scale, float *dst, int64_t n) {
    const int8_t *b = (const int8_t *)src;
    const vf_t s = SRK_SPLAT(scale);
    int64_t j = 0;
    for (; j + W <= n; j += W) stf(dst + j, ldb(b + j) * s);
    for (; j < n; j++) dst[j] = (float)b[j] * scale;
}

const srk_kernels SRK_SFX(srk_kernels) = {
    .isa = SRK_VARIANT_ISA,
    .name = SRK_VARIANT_NAME,
    .dot = { dot_f32, dot_f16, dot_i8 },
    .sqnorm = { dot_f32_sqnorm, dot_f16_sqnorm, dot_i8_sqnorm },
    .decode = { decode_f32, decode_f16, decode_i8 },
    .gemm_packed_size = gemm_packed_size,
    .gemm_pack_b = gemm_pack_b,
    .gemm_nt_packed = gemm_nt_packed,
};

#undef QB
#undef RB
#undef W
#undef INLINE
#undef SHUF
