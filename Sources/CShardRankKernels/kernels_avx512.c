// AVX-512 variant (F/BW/VL/DQ, 16 floats per vector). Compiled for every x86-64 build; only
// called when srk_isa_supported() reports it (see dispatch.c).
#if defined(__x86_64__)
#include "CShardRankKernels.h"
#include <immintrin.h>

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"))), apply_to = function)
#define SRK_W 16
#define SRK_SFX(name) name##_avx512
#define SRK_FMA(a, b, c) ((vf_t)_mm512_fmadd_ps((__m512)(a), (__m512)(b), (__m512)(c)))
#define SRK_LOAD_F16(p) ((vf_t)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p))))
#define SRK_SPLAT(x) ((vf_t)_mm512_set1_ps(x))
#define SRK_VARIANT_ISA SRK_ISA_AVX512
#define SRK_VARIANT_NAME "avx512"
#include "kernels_impl.h"
#pragma clang attribute pop
#endif
