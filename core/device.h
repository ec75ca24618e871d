// Backend identity and explicit streams; the public API stays free of CUDA headers.
#pragma once

#include <cstdint>
#include <string>

namespace mirad {

enum class Device { cpu, cuda };

inline const char* device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }

// A CUDA stream handle (cudaStream_t) or null for the default stream / CPU work. Every
// operation takes one explicitly: no library call hides a stream choice.
struct Stream {
  void* handle = nullptr;
};

// True when this build has the CUDA backend compiled in.
bool cuda_compiled();
// True when the CUDA backend is compiled and at least one device is usable.
bool cuda_available();
// Parses "cpu" / "cuda" (config and CLI).
Device parse_device(const std::string& name);

}  // namespace mirad
