// AVX2 + FMA + F16C variant (8 floats per vector). Only called when srk_isa_supported()
// reports it (see dispatch.c).
#if defined(__x86_64__)
#include "CShardRankKernels.h"
#include <immintrin.h>

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#define SRK_W 8
#define SRK_SFX(name) name##_avx2
#define SRK_FMA(a, b, c) ((vf_t)_mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(c)))
#define SRK_LOAD_F16(p) ((vf_t)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p))))
#define SRK_SPLAT(x) ((vf_t)_mm256_set1_ps(x))
#define SRK_VARIANT_ISA SRK_ISA_AVX2
#define SRK_VARIANT_NAME "avx2"
#include "kernels_impl.h"
#pragma clang attribute pop
#endif
