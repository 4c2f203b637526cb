#pragma once
#include <stdint.h>
/// Returns a bitmask of the ISA variants this CPU can run (bit 0: baseline).
int32_t srk_cpu_features(void);
