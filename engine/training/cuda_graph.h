// Owned CUDA streams and events, and StreamGraph: a sequence of stream work captured once as a
// CUDA graph and replayed with one launch, so a training step's hundred small kernels cost one
// launch and no host round-trip. Every type is an inert shell on the CPU and in builds without
// CUDA (the public API stays free of CUDA headers).
#pragma once

#include <functional>
#include <utility>

#include "core/device.h"

namespace mirad {

// A non-blocking stream of its own (CUDA); the null stream elsewhere. Move-only.
class OwnedStream {
 public:
  OwnedStream() = default;
  explicit OwnedStream(Device device);
  ~OwnedStream();
  OwnedStream(OwnedStream&& o) noexcept : m_stream(o.m_stream) { o.m_stream = {}; }
  OwnedStream& operator=(OwnedStream&& o) noexcept;
  OwnedStream(const OwnedStream&) = delete;
  OwnedStream& operator=(const OwnedStream&) = delete;
  Stream get() const { return m_stream; }

 private:
  Stream m_stream{};
};

// An event for host waits on stream progress (CUDA); a no-op elsewhere. Move-only.
class StreamEvent {
 public:
  StreamEvent() = default;
  explicit StreamEvent(Device device);
  ~StreamEvent();
  StreamEvent(StreamEvent&& o) noexcept : m_event(o.m_event) { o.m_event = nullptr; }
  StreamEvent& operator=(StreamEvent&& o) noexcept {
    std::swap(m_event, o.m_event);
    return *this;
  }
  StreamEvent(const StreamEvent&) = delete;
  StreamEvent& operator=(const StreamEvent&) = delete;
  void record(Stream s);      // also inside a capture: it becomes a node of the graph
  void synchronize() const;   // waits for the last recorded point (returns at once if none)

 private:
  void* m_event = nullptr;
};

// What one captured graph launches, by node kind: how many launches a replay saves, and how
// many are library kernels against mirad's own element-wise and reduction kernels. The runtime
// API names only kernels of our own module; a kernel node from another library (cuBLAS's
// GEMMs: cudaGraphKernelNodeGetParams refuses them) is counted in unnamed_kernels. In a
// training step cuBLAS is the only such library, so unnamed_kernels is the GEMM count there;
// gemm_kernels counts named kernels that say gemm/xmma/cutlass, should a runtime name them.
struct GraphCensus {
  int64_t nodes = 0, kernels = 0, gemm_kernels = 0, unnamed_kernels = 0, copies = 0,
          memsets = 0, other = 0;
};

class StreamGraph {
 public:
  StreamGraph() = default;
  ~StreamGraph();
  StreamGraph(const StreamGraph&) = delete;
  StreamGraph& operator=(const StreamGraph&) = delete;

  bool ready() const { return m_exec != nullptr; }
  // Captures the work `body` queues on `stream` (a non-null stream of its own). body must not
  // synchronise with the host or allocate with cudaMalloc (stream-ordered pool allocations are
  // fine); run it once uncaptured first so every buffer exists. Throws (and leaves the graph
  // not ready) if the capture or instantiation fails.
  void capture(Stream stream, const std::function<void()>& body);
  // Replays the captured work on `stream`.
  void launch(Stream stream) const;
  void reset();
  // The census of the last capture.
  const GraphCensus& census() const { return m_census; }

 private:
  void* m_exec = nullptr;
  GraphCensus m_census;
};

// Whether graphs can be captured here: a CUDA build with a device.
bool stream_graphs_supported(Device device);

}  // namespace mirad
