// NVTX ranges so Nsight shows decode, copy, backbone and training phases by name; free (empty)
// in builds without CUDA.
#pragma once

#if defined(MIRAD_HAVE_CUDA) && __has_include(<nvtx3/nvToolsExt.h>)
#include <nvtx3/nvToolsExt.h>
namespace mirad {
struct NvtxRange {
  explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
  ~NvtxRange() { nvtxRangePop(); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};
}  // namespace mirad
#else
namespace mirad {
struct NvtxRange {
  explicit NvtxRange(const char*) {}
};
}  // namespace mirad
#endif

#define MIRAD_NVTX_CAT2(a, b) a##b
#define MIRAD_NVTX_CAT(a, b) MIRAD_NVTX_CAT2(a, b)
// Marks the rest of the enclosing scope as one named range.
#define NVTX_RANGE(name) ::mirad::NvtxRange MIRAD_NVTX_CAT(nvtx_range_, __LINE__)(name)
#define NVTX_RANGE_FN() NVTX_RANGE(__func__)
