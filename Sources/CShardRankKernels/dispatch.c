#include "CShardRankKernels.h"
int32_t srk_cpu_features(void) { return 1; }
