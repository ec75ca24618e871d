// Backbone: runs a CNN graph (engine/backbone/backbone_graph.h) on a batch and returns the feature maps at the
// requested taps, on the CPU (oneDNN) or CUDA (cuDNN + custom kernels) backend.
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/buffer.h"
#include "core/device.h"
#include "engine/backbone/backbone_graph.h"

namespace mirad {

class SafeTensors;
class BackboneBackend;

// How the CPU backend runs convolutions. `automatic` picks per op type from measurements
// (tools/bench/bench_backbone.cpp: oneDNN won on every shape measured, so it is oneDNN);
// the others force one path, for tests and benchmarks.
enum class CpuConvAlgo { automatic, onednn, gemm };

// CUDA convolution arithmetic.
// - fp32: exact float32 (FMA math), matching the CPU backend to float rounding. The default.
// - tf32: float32 activations, tensor-core products with inputs rounded to 10 mantissa bits.
// - fp16 / bf16: activations stored as 16-bit floats in NHWC (cuDNN's tensor-core layout),
//   products on tensor cores, sums and every non-convolution op in float32; each op's result
//   is rounded when stored (FP16: 11 significant bits, range +-65504; BF16: 8 bits, float's
//   range), a convolution's twice (its output, then after bias + activation). An overflow
//   becomes NaN at the next activation rather than a clamped 6, so it is caught downstream.
//   Inputs and taps stay float32 NCHW, so callers see no difference but the rounding.
enum class BackbonePrecision { fp32, tf32, fp16, bf16 };
// "fp32", "tf32", "fp16", "bf16"; InputError naming the choices for anything else.
BackbonePrecision parse_backbone_precision(const std::string& name);
const char* backbone_precision_name(BackbonePrecision p);

struct BackboneOptions {
  CpuConvAlgo cpu_conv = CpuConvAlgo::automatic;
  // CPU: run a batch in chunks of this many images, layer by layer within a chunk, so that
  // the activations stay in cache (a 16-image batch of 112x112x96 maps is 77 MB a tensor).
  // 0 = automatic (see backbone_cpu.cpp).
  int cpu_batch_chunk = 0;
  // CUDA: the arithmetic of the convolutions (the CPU backend is always exact FP32).
  BackbonePrecision precision = BackbonePrecision::fp32;
};

// One tap's output: NCHW, or [N, K] after RESHAPE / FULLY_CONNECTED, on the backbone's device.
struct BackboneTensor {
  TensorShape shape;
  Buffer<float> data;
};

// A loaded backbone on one device. Shapes are inferred per input size, and the execution plan
// of each (input shape, deepest tap) is built once and cached: cuDNN algorithms and
// descriptors, oneDNN primitives and reordered weights. All activations of a plan live in one
// arena, laid out by liveness so that dead tensors' memory is reused, and the arena is kept
// (grown, never shrunk) across calls. Not thread-safe: one Backbone per thread or stream.
class Backbone {
 public:
  // Loads dir/graph.json and dir/weights.safetensors.
  Backbone(const std::filesystem::path& dir, Device device, Stream stream = {},
           BackboneOptions options = {});
  // From a parsed graph and its weights (check_weights runs here; `graph` may be fresh from
  // parse_graph). The weights the graph uses are copied, so `weights` may be dropped after.
  Backbone(Graph graph, const SafeTensors& weights, Device device, Stream stream = {},
           BackboneOptions options = {});
  ~Backbone();
  Backbone(Backbone&&) noexcept;
  Backbone& operator=(Backbone&&) noexcept;
  Backbone(const Backbone&) = delete;
  Backbone& operator=(const Backbone&) = delete;

  const Graph& graph() const;
  Device device() const { return m_device; }
  Stream stream() const { return m_stream; }
  int n_ops() const { return static_cast<int>(graph().ops.size()); }
  // The op index of a named tap ("stride8"); InputError listing the names if unknown.
  int tap(const std::string& name) const;

  // Output shapes of `taps` (op indices) for an input of shape [N, C, H, W]. InputError for
  // an input the graph cannot take (naming the op that refuses it) or a tap out of range.
  std::vector<TensorShape> tap_shapes(const TensorShape& input, std::span<const int> taps) const;

  // Runs ops 0..max(taps) on `input` (N x C x H x W float32, NCHW, contiguous, on device())
  // and returns each tap's output, in the order of `taps` (repeats allowed). Waits for the
  // device before returning.
  std::vector<BackboneTensor> forward(const float* input, const TensorShape& input_shape,
                                      std::span<const int> taps);
  // As forward(), into caller memory: outputs[k] holds tap_shapes()[k].numel() floats on
  // device(). On CUDA this is queued on stream() and returns without waiting; `input` and the
  // outputs must stay valid until the stream gets there. On the CPU it is synchronous.
  void forward_into(const float* input, const TensorShape& input_shape, std::span<const int> taps,
                    std::span<float* const> outputs);

  // Bytes held by the activation arena (and, on CUDA, the cuDNN workspace); for tests that
  // check the memory is reused across calls.
  std::size_t arena_bytes() const;
  // Execution plans cached so far.
  std::size_t n_plans() const;

 private:
  void check_forward(const float* input, const TensorShape& input_shape,
                     std::span<const int> taps) const;

  Device m_device = Device::cpu;
  Stream m_stream;
  std::unique_ptr<BackboneBackend> m_impl;
};

}  // namespace mirad
