// CShardRankSystem: libc facilities Swift's Glibc module does not export. Static inline only.
#pragma once
#include <malloc.h>

/// Keeps glibc from serving large, short-lived allocations (response buffers of 64 KiB-4 MiB)
/// with fresh mmap/munmap pairs: raises the mmap threshold and keeps freed memory for reuse.
static inline void CShardRankSystem_tune_malloc(void) {
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
}
