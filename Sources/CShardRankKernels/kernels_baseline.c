// Baseline variant: portable clang vectors of 4 floats (SSE2 on x86-64), no FMA, binary16
// converted with integer arithmetic. Runs on any CPU the package builds for.
#include "CShardRankKernels.h"

#define SRK_W 4
#define SRK_SFX(name) name##_baseline
#define SRK_FMA(a, b, c) ((a) * (b) + (c))
#define SRK_VARIANT_ISA SRK_ISA_BASELINE
#define SRK_VARIANT_NAME "baseline"

typedef uint32_t srk_vu4 __attribute__((vector_size(16)));
typedef int32_t srk_vi4 __attribute__((vector_size(16)));
typedef float srk_vf4 __attribute__((vector_size(16)));
typedef uint16_t srk_vh4 __attribute__((vector_size(8)));

// Exact binary16 -> binary32 for 4 lanes (F. Giesen's branch-free method).
static inline __attribute__((always_inline)) srk_vf4 srk_h2f_4(const uint16_t *p) {
    srk_vh4 h; __builtin_memcpy(&h, p, sizeof h);
    srk_vu4 x = __builtin_convertvector(h, srk_vu4);
    srk_vu4 o = (x & 0x7fffu) << 13;
    srk_vu4 e = o & (0x7c00u << 13);
    o += (127u - 15u) << 23;
    srk_vi4 isInfNan = (srk_vi4)(e == (0x7c00u << 13));
    srk_vi4 isSub = (srk_vi4)(e == 0u);
    o += (srk_vu4)(isInfNan & (int32_t)((128u - 16u) << 23));
    o += (srk_vu4)(isSub & (int32_t)(1u << 23));
    srk_vf4 f = (srk_vf4)o;
    const float magic = 0x1p-14f; // 113 << 23 as float
    srk_vf4 fsub = f - magic;
    srk_vi4 r = ((srk_vi4)fsub & isSub) | ((srk_vi4)f & ~isSub);
    r |= (srk_vi4)((x & 0x8000u) << 16);
    return (srk_vf4)r;
}
#define SRK_LOAD_F16(p) srk_h2f_4(p)
static inline __attribute__((always_inline)) srk_vf4 srk_splat_4(float x) { return (srk_vf4){x, x, x, x}; }
#define SRK_SPLAT(x) srk_splat_4(x)
#include "kernels_impl.h"
