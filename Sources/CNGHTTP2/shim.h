// CNGHTTP2: the libnghttp2 C API (Debian libnghttp2-dev, >= 1.52.0-1+deb12u3).
// Static inline shims only, for what Swift cannot call directly; a .c file here would not be compiled.
#pragma once
#include <nghttp2/nghttp2.h>

/// The version string of the libnghttp2 that is loaded at run time.
static inline const char *CNGHTTP2_runtime_version(void) {
    nghttp2_info *info = nghttp2_version(0);
    return info ? info->version_str : "unknown";
}
