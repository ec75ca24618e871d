// CUDA streams, events and graphs behind CUDA-free declarations.
#include "engine/training/cuda_graph.h"

#include <string>
#include <vector>

#include "core/error.h"
#ifdef MIRAD_HAVE_CUDA
#include "core/cuda_error.h"
#endif

namespace mirad {

#ifdef MIRAD_HAVE_CUDA

namespace {
cudaStream_t raw(Stream s) { return static_cast<cudaStream_t>(s.handle); }
}  // namespace

OwnedStream::OwnedStream(Device device) {
  if (device != Device::cuda) return;
  cudaStream_t s = nullptr;
  CUDA_CHECK_THROW(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  m_stream.handle = s;
}

OwnedStream::~OwnedStream() {
  if (m_stream.handle) {
    CUDA_CHECK_PRINT(cudaStreamSynchronize(raw(m_stream)));
    CUDA_CHECK_PRINT(cudaStreamDestroy(raw(m_stream)));
  }
}

OwnedStream& OwnedStream::operator=(OwnedStream&& o) noexcept {
  if (this != &o) {
    OwnedStream tmp(std::move(o));
    std::swap(m_stream, tmp.m_stream);
  }
  return *this;
}

StreamEvent::StreamEvent(Device device) {
  if (device != Device::cuda) return;
  cudaEvent_t e = nullptr;
  CUDA_CHECK_THROW(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  m_event = e;
}

StreamEvent::~StreamEvent() {
  if (m_event) CUDA_CHECK_PRINT(cudaEventDestroy(static_cast<cudaEvent_t>(m_event)));
}

void StreamEvent::record(Stream s) {
  if (!m_event) return;
  const auto e = static_cast<cudaEvent_t>(m_event);
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  CUDA_CHECK_THROW(cudaStreamIsCapturing(raw(s), &capturing));
  // A plain record inside a capture only orders work within the graph and leaves the event
  // unusable from the host (cudaEventSynchronize: "invalid argument", seen on the H200). An
  // external record becomes a graph node that records the event at every replay.
  if (capturing == cudaStreamCaptureStatusActive)
    CUDA_CHECK_THROW(cudaEventRecordWithFlags(e, raw(s), cudaEventRecordExternal));
  else
    CUDA_CHECK_THROW(cudaEventRecord(e, raw(s)));
}

void StreamEvent::synchronize() const {
  if (m_event) CUDA_CHECK_THROW(cudaEventSynchronize(static_cast<cudaEvent_t>(m_event)));
}

StreamGraph::~StreamGraph() { reset(); }

void StreamGraph::reset() {
  if (m_exec) CUDA_CHECK_PRINT(cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(m_exec)));
  m_exec = nullptr;
}

namespace {

GraphCensus census_of(cudaGraph_t graph) {
  GraphCensus c;
  size_t n = 0;
  if (cudaGraphGetNodes(graph, nullptr, &n) != cudaSuccess) return cudaGetLastError(), c;
  std::vector<cudaGraphNode_t> nodes(n);
  if (cudaGraphGetNodes(graph, nodes.data(), &n) != cudaSuccess) return cudaGetLastError(), c;
  c.nodes = int64_t(n);
  for (cudaGraphNode_t node : nodes) {
    cudaGraphNodeType type;
    if (cudaGraphNodeGetType(node, &type) != cudaSuccess) {
      cudaGetLastError();
      ++c.other;
      continue;
    }
    if (type == cudaGraphNodeTypeKernel) {
      ++c.kernels;
      cudaKernelNodeParams p{};
      const char* name = nullptr;
      if (cudaGraphKernelNodeGetParams(node, &p) == cudaSuccess && p.func &&
          cudaFuncGetName(&name, p.func) == cudaSuccess && name) {
        const std::string s(name);
        if (s.find("gemm") != std::string::npos || s.find("Gemm") != std::string::npos ||
            s.find("xmma") != std::string::npos || s.find("cutlass") != std::string::npos)
          ++c.gemm_kernels;
      } else {
        cudaGetLastError();  // a library kernel the runtime cannot name
        ++c.unnamed_kernels;
      }
    } else if (type == cudaGraphNodeTypeMemcpy) {
      ++c.copies;
    } else if (type == cudaGraphNodeTypeMemset) {
      ++c.memsets;
    } else {
      ++c.other;
    }
  }
  return c;
}

}  // namespace

void StreamGraph::capture(Stream stream, const std::function<void()>& body) {
  CHECK_THROW(stream.handle != nullptr);  // the legacy null stream cannot be captured
  reset();
  // Thread-local mode: other threads' unrelated CUDA calls do not invalidate this capture.
  CUDA_CHECK_THROW(cudaStreamBeginCapture(raw(stream), cudaStreamCaptureModeThreadLocal));
  cudaGraph_t graph = nullptr;
  try {
    body();
  } catch (...) {
    cudaStreamEndCapture(raw(stream), &graph);  // close the capture before rethrowing
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    throw;
  }
  CUDA_CHECK_THROW(cudaStreamEndCapture(raw(stream), &graph));
  m_census = census_of(graph);
  cudaGraphExec_t exec = nullptr;
  const cudaError_t st = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  CUDA_CHECK_THROW(st);
  m_exec = exec;
}

void StreamGraph::launch(Stream stream) const {
  CHECK_THROW(m_exec != nullptr);
  CUDA_CHECK_THROW(cudaGraphLaunch(static_cast<cudaGraphExec_t>(m_exec), raw(stream)));
}

bool stream_graphs_supported(Device device) { return device == Device::cuda && cuda_available(); }

#else  // no CUDA: inert shells

OwnedStream::OwnedStream(Device) {}
OwnedStream::~OwnedStream() = default;
OwnedStream& OwnedStream::operator=(OwnedStream&& o) noexcept {
  std::swap(m_stream, o.m_stream);
  return *this;
}
StreamEvent::StreamEvent(Device) {}
StreamEvent::~StreamEvent() = default;
void StreamEvent::record(Stream) {}
void StreamEvent::synchronize() const {}
StreamGraph::~StreamGraph() = default;
void StreamGraph::reset() {}
void StreamGraph::capture(Stream, const std::function<void()>&) {
  throw InputError("CUDA graphs need a CUDA build and device");
}
void StreamGraph::launch(Stream) const { CHECK_THROW(false); }
bool stream_graphs_supported(Device) { return false; }

#endif

}  // namespace mirad
