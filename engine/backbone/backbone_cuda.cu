// CUDA backend of the backbone runner: cuDNN convolutions (descriptors and the algorithm found
// once per plan shape, one handle bound to the backbone's stream, one reusable workspace),
// explicit padding for TF-SAME's asymmetric pads (cuDNN pads symmetrically only), and the
// custom kernels of kernels/backbone_ops_cuda.cu for bias + activation, add, pooling, softmax.
// In FP32 and TF32 the activations stay plain NCHW float, so taps are straight copies. In FP16
// and BF16 (BackbonePrecision) they are 16-bit NHWC, cuDNN's tensor-core layout: the input is
// converted on entry, each tap converted back to float32 NCHW on its way out, and the
// non-convolution ops are the NHWC kernels of kernels/backbone_ops_half_cuda.cu.

// fmt 9 turns constexpr off under nvcc yet keeps its consteval format-string check, which then
// fails in core/error.h; g++ units have it on, so this matches them (as the other .cu files).
#ifndef FMT_USE_CONSTEXPR
#define FMT_USE_CONSTEXPR 1
#endif

#include <cudnn.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "engine/backbone/backbone_impl.h"
#include "core/buffer.h"
#include "core/cuda_error.h"
#include "core/cuda_launch.cuh"
#include "engine/io/safetensors.h"
#include "kernels/backbone_ops.h"
#include "kernels/backbone_ops_half.h"

namespace mirad {
namespace {

// 256 bytes: cudaMalloc's own alignment, which cuDNN's vectorised kernels may rely on.
constexpr std::size_t kAlign = 256;
constexpr int kInputRef = -1;
// Workspace cap for one convolution: algorithms wanting more are skipped.
constexpr std::size_t kMaxWorkspace = std::size_t(1) << 30;

using cuda::to_cuda;

// cuDNN's legacy descriptors take int dimensions.
int to_int(int64_t v, const char* what) {
  CHECK_INPUT(v >= 0 && v <= std::numeric_limits<int>::max(),
              "backbone on CUDA: {} = {} does not fit cuDNN's int descriptors", what, v);
  return static_cast<int>(v);
}

// The descriptors of one convolution in one plan, destroyed with it.
struct ConvDescs {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnConvolutionFwdAlgo_t algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
  std::size_t workspace = 0;

  ConvDescs() = default;
  ConvDescs(const ConvDescs&) = delete;
  ConvDescs& operator=(const ConvDescs&) = delete;
  ~ConvDescs() {
    // Destructors must not throw: report and carry on.
    auto report = [](cudnnStatus_t st, const char* what) {
      if (st != CUDNN_STATUS_SUCCESS)
        std::fprintf(stderr, "%s failed: %s\n", what, cudnnGetErrorString(st));
    };
    if (x) report(cudnnDestroyTensorDescriptor(x), "cudnnDestroyTensorDescriptor");
    if (y) report(cudnnDestroyTensorDescriptor(y), "cudnnDestroyTensorDescriptor");
    if (w) report(cudnnDestroyFilterDescriptor(w), "cudnnDestroyFilterDescriptor");
    if (conv) report(cudnnDestroyConvolutionDescriptor(conv), "cudnnDestroyConvolutionDescriptor");
  }
};

// to_nhwc / to_nchw: the 16-bit path's layout changes (the input on entry; before a RESHAPE
// of a spatial map, whose flattening order is NCHW's).
enum class StepKind {
  pad, conv, bias_act, add, act, max_pool, avg_pool, global_pool, softmax, to_nhwc, to_nchw
};

struct Step {
  StepKind kind;
  int in0 = 0, in1 = 0, out = 0;  // arena ids or kInputRef
  TensorShape in_shape;           // pad, global_pool, softmax: the input's shape
  Pads pads;                      // pad
  bbops::PoolGeom pool{};         // max_pool, avg_pool
  int act = bbops::kActNone;      // bias_act, add, act
  int64_t count = 0, channels = 0, hw = 0;
  const void* weight = nullptr;   // conv: float OIHW, or 16-bit OHWI on the 16-bit path
  const float* bias = nullptr;    // bias_act
  std::unique_ptr<ConvDescs> conv;
};

struct CudaPlan {
  std::vector<Step> steps;
  std::vector<int> op_end;
  std::vector<std::pair<TensorShape, int>> values;  // each op's output and its buffer
  std::vector<std::size_t> offsets;
  std::size_t arena_bytes = 0, workspace_bytes = 0;
};

class CudaBackbone final : public BackboneBackend {
 public:
  CudaBackbone(Graph graph, const SafeTensors& weights, Stream stream,
               const BackboneOptions& options)
      : m_graph(std::move(graph)),
        m_stream(stream),
        m_options(options),
        m_half(options.precision == BackbonePrecision::fp16 ||
               options.precision == BackbonePrecision::bf16),
        m_half_type(options.precision == BackbonePrecision::bf16 ? bbops::Half::bf16
                                                                 : bbops::Half::fp16) {
    CUDNN_CHECK_THROW(cudnnCreate(&m_cudnn));
    const cudnnStatus_t st = cudnnSetStream(m_cudnn, to_cuda(stream));
    if (st != CUDNN_STATUS_SUCCESS) {
      cudnnDestroy(m_cudnn);  // the constructor throws, so no destructor will run
      throw std::runtime_error(std::string("cudnnSetStream failed: ") + cudnnGetErrorString(st));
    }
    try {
      for (const GraphOp& op : m_graph.ops) {
        if (m_half && !op.weight.empty()) {
          if (!m_weights16.count(op.weight))
            m_weights16.emplace(op.weight, half_weight(op, weights.at(op.weight)));
        } else if (!op.weight.empty() && !m_weights.count(op.weight)) {
          m_weights.emplace(op.weight, Buffer<float>::from_host(weights.at(op.weight).data,
                                                                Device::cuda, stream));
        }
        if (!op.bias.empty() && !m_weights.count(op.bias))  // biases stay float32
          m_weights.emplace(
              op.bias, Buffer<float>::from_host(weights.at(op.bias).data, Device::cuda, stream));
      }
    } catch (...) {
      cudnnDestroy(m_cudnn);
      throw;
    }
  }
  ~CudaBackbone() override {
    m_plans.clear();
    if (m_cudnn) {
      const cudnnStatus_t st = cudnnDestroy(m_cudnn);
      if (st != CUDNN_STATUS_SUCCESS)
        std::fprintf(stderr, "cudnnDestroy failed: %s\n", cudnnGetErrorString(st));
    }
  }

  const Graph& graph() const override { return m_graph; }
  std::size_t arena_bytes() const override { return m_arena.bytes() + m_workspace.bytes(); }
  std::size_t n_plans() const override { return m_plans.size(); }

  void run(const float* input, const TensorShape& shape, int last_op, std::span<const int> taps,
           std::span<float* const> outputs) override {
    // A host pointer here would fault inside a kernel, far from the mistake; say it now.
    check_device_pointer(input, "input");
    for (std::size_t k = 0; k < outputs.size(); ++k)
      check_device_pointer(outputs[k], "output for tap " + std::to_string(taps[k]));
    CudaPlan& plan = plan_for(shape, last_op);
    auto ptr = [&](int ref) -> void* {
      return ref == kInputRef ? const_cast<float*>(input)
                              : static_cast<void*>(m_arena.data() + plan.offsets[ref]);
    };
    int step = 0;
    for (int op = 0; op <= last_op; ++op) {
      for (; step < plan.op_end[op]; ++step) exec(plan.steps[step], ptr);
      for (std::size_t k = 0; k < taps.size(); ++k) {
        if (taps[k] != op) continue;
        const auto& [s, ref] = plan.values[op];
        if (m_half)
          bbops::nhwc_half_to_float_cuda(m_half_type, s.n, s.c, s.h, s.w,
                                         static_cast<const uint16_t*>(ptr(ref)), outputs[k],
                                         m_stream);
        else
          CUDA_CHECK_THROW(cudaMemcpyAsync(outputs[k], ptr(ref), s.numel() * sizeof(float),
                                           cudaMemcpyDeviceToDevice, to_cuda(m_stream)));
      }
    }
  }

 private:
  void check_device_pointer(const void* p, const std::string& what) const {
    cudaPointerAttributes attr{};
    CUDA_CHECK_THROW(cudaPointerGetAttributes(&attr, p));
    CHECK_INPUT(attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged,
                "{}: the {} is not CUDA device memory (the backbone runs on cuda)", m_graph.file,
                what);
  }

  template <typename Ptr>
  void exec(Step& s, Ptr&& ptr) {
    if (s.kind == StepKind::conv) {
      const float one = 1.f, zero = 0.f;  // float scalars: the compute type is float on all paths
      ConvDescs& d = *s.conv;
      CUDNN_CHECK_THROW(cudnnConvolutionForward(m_cudnn, &one, d.x, ptr(s.in0), d.w, s.weight,
                                                d.conv, d.algo, m_workspace.data(), d.workspace,
                                                &zero, d.y, ptr(s.out)));
      return;
    }
    if (m_half) return exec_half(s, ptr);
    auto f = [&](int ref) { return static_cast<float*>(ptr(ref)); };
    switch (s.kind) {
      case StepKind::pad:
        bbops::pad_cuda(s.in_shape.n, s.in_shape.c, s.in_shape.h, s.in_shape.w, s.pads, 0.f,
                        f(s.in0), f(s.out), m_stream);
        break;
      case StepKind::bias_act:
        bbops::bias_act_cuda(s.count / (s.channels * s.hw), s.channels, s.hw, s.bias, s.act,
                             f(s.out), m_stream);
        break;
      case StepKind::add:
        bbops::add_act_cuda(s.count, f(s.in0), f(s.in1), s.act, f(s.out), m_stream);
        break;
      case StepKind::act:
        bbops::act_cuda(s.count, f(s.in0), s.act, f(s.out), m_stream);
        break;
      case StepKind::max_pool:
        bbops::max_pool_cuda(s.pool, f(s.in0), f(s.out), m_stream);
        break;
      case StepKind::avg_pool:
        bbops::avg_pool_cuda(s.pool, f(s.in0), f(s.out), m_stream);
        break;
      case StepKind::global_pool:
        bbops::global_avg_pool_cuda(s.in_shape.n * s.in_shape.c, s.in_shape.h * s.in_shape.w,
                                    f(s.in0), f(s.out), m_stream);
        break;
      case StepKind::softmax:
        bbops::softmax_cuda(s.in_shape.n, s.in_shape.c, s.in_shape.h * s.in_shape.w, f(s.in0),
                            f(s.out), m_stream);
        break;
      case StepKind::conv:
      case StepKind::to_nhwc:
      case StepKind::to_nchw:
        throw std::logic_error("backbone on CUDA: a 16-bit layout step in a float32 plan");
    }
  }

  // The same steps on 16-bit NHWC activations.
  template <typename Ptr>
  void exec_half(Step& s, Ptr&& ptr) {
    const bbops::Half t = m_half_type;
    auto h = [&](int ref) { return static_cast<uint16_t*>(ptr(ref)); };
    const TensorShape& is = s.in_shape;
    switch (s.kind) {
      case StepKind::to_nhwc:
        bbops::to_nhwc_half_cuda(t, is.n, is.c, is.h, is.w, static_cast<const float*>(ptr(s.in0)),
                                 h(s.out), m_stream);
        break;
      case StepKind::to_nchw:
        bbops::nhwc_to_nchw_half_cuda(t, is.n, is.c, is.h, is.w, h(s.in0), h(s.out), m_stream);
        break;
      case StepKind::pad:
        bbops::pad_nhwc_half_cuda(t, is.n, is.c, is.h, is.w, s.pads, 0.f, h(s.in0), h(s.out),
                                  m_stream);
        break;
      case StepKind::bias_act:
        bbops::bias_act_nhwc_half_cuda(t, s.count, s.channels, s.bias, s.act, h(s.out), m_stream);
        break;
      case StepKind::add:
        bbops::add_act_half_cuda(t, s.count, h(s.in0), h(s.in1), s.act, h(s.out), m_stream);
        break;
      case StepKind::act:
        bbops::act_half_cuda(t, s.count, h(s.in0), s.act, h(s.out), m_stream);
        break;
      case StepKind::max_pool:
        bbops::max_pool_nhwc_half_cuda(t, s.pool, h(s.in0), h(s.out), m_stream);
        break;
      case StepKind::avg_pool:
        bbops::avg_pool_nhwc_half_cuda(t, s.pool, h(s.in0), h(s.out), m_stream);
        break;
      case StepKind::global_pool:
        bbops::global_avg_pool_nhwc_half_cuda(t, is.n, is.h * is.w, is.c, h(s.in0), h(s.out),
                                              m_stream);
        break;
      case StepKind::softmax:  // over the channels, innermost in NHWC
        bbops::softmax_half_cuda(t, is.n * is.h * is.w, is.c, 1, h(s.in0), h(s.out), m_stream);
        break;
      case StepKind::conv:
        break;  // run by exec()
    }
  }

  // A conv or FC weight as the 16-bit path wants it: rounded once on the host, and a conv's
  // OIHW reordered to OHWI (cuDNN's NHWC filter layout; an FC's [O, K] is already that).
  Buffer<uint16_t> half_weight(const GraphOp& op, const HostTensor& w) const {
    std::vector<uint16_t> out(w.data.size());
    const bool fc = op.type == OpType::fully_connected;
    const int64_t o = op.out_channels, kh = fc ? 1 : op.kernel_h, kw = fc ? 1 : op.kernel_w;
    CHECK_INPUT(o > 0 && kh > 0 && kw > 0 && int64_t(w.data.size()) % (o * kh * kw) == 0,
                "{}: weight '{}' has {} values, not a multiple of {} x {} x {}", m_graph.file,
                op.weight, w.data.size(), o, kh, kw);
    const int64_t ci = int64_t(w.data.size()) / (o * kh * kw);
    for (int64_t a = 0; a < o; ++a)
      for (int64_t c = 0; c < ci; ++c)
        for (int64_t y = 0; y < kh; ++y)
          for (int64_t x = 0; x < kw; ++x)
            out[((a * kh + y) * kw + x) * ci + c] =
                bbops::to_half_bits(m_half_type, w.data[((a * ci + c) * kh + y) * kw + x]);
    return Buffer<uint16_t>::from_host(out, Device::cuda, m_stream);
  }

  CudaPlan& plan_for(const TensorShape& shape, int last_op) {
    return m_plans.get(
        shape, last_op, [&](const TensorShape& s, int last) { return build(s, last); },
        [&](const CudaPlan& plan) {
          // Growing frees the old buffers; cudaFree waits for the device, so earlier work that
          // still reads them finishes first.
          m_arena.reserve_discard(plan.arena_bytes);
          m_workspace.reserve_discard(plan.workspace_bytes);
        });
  }

  struct Builder {
    CudaPlan& plan;
    std::size_t elem;  // bytes per activation: 4, or 2 on the 16-bit path
    ArenaPlanner arena;
    int step() const { return static_cast<int>(plan.steps.size()); }
    int fresh(const TensorShape& s) { return arena.add(s.numel() * elem, step()); }
    void use(int ref) {
      if (ref >= 0) arena.use(ref, step());
    }
    Step& push(StepKind kind) {
      plan.steps.push_back(Step{});
      plan.steps.back().kind = kind;
      return plan.steps.back();
    }
  };

  std::unique_ptr<CudaPlan> build(const TensorShape& input, int last_op) {
    const std::vector<TensorShape> shapes = infer_shapes(m_graph, input, last_op);
    auto plan = std::make_unique<CudaPlan>();
    Builder b{*plan, m_half ? sizeof(uint16_t) : sizeof(float), {}};
    int input_ref = kInputRef;
    if (m_half) {  // the float32 NCHW input, converted once
      input_ref = b.fresh(input);
      Step& s = b.push(StepKind::to_nhwc);
      s.in0 = kInputRef, s.out = input_ref, s.in_shape = input;
    }
    for (int i = 0; i <= last_op; ++i) {
      const GraphOp& op = m_graph.ops[i];
      auto src = [&](int k) {
        return op.input_ops[k] < 0 ? std::pair<TensorShape, int>{input, input_ref}
                                   : plan->values[op.input_ops[k]];
      };
      const auto [xs, xref] = src(0);
      const TensorShape& ys = shapes[i];
      int yref = 0;
      switch (op.type) {
        case OpType::conv2d:
        case OpType::depthwise_conv2d:
          yref = conv(b, op, xs, xref, ys, resolve_pads(op, xs.h, xs.w));
          break;
        case OpType::fully_connected: {
          // A 1x1 convolution over the flattened input seen as [N, K, 1, 1]; the weight's K
          // runs over C*H*W in NCHW order.
          const TensorShape flat{xs.n, xs.c * xs.h * xs.w, 1, 1, 4};
          yref = conv(b, op, flat, flattened(b, xs, xref), TensorShape{ys.n, ys.c, 1, 1, 4},
                      Pads{});
          break;
        }
        case OpType::add: {
          const int other = src(1).second;
          b.use(xref);
          b.use(other);
          yref = b.fresh(ys);
          Step& s = b.push(StepKind::add);
          s.in0 = xref, s.in1 = other, s.out = yref;
          s.count = ys.numel();
          s.act = bbops::act_code(op.act);
          break;
        }
        case OpType::relu:
        case OpType::relu6: {
          b.use(xref);
          yref = b.fresh(ys);
          Step& s = b.push(StepKind::act);
          s.in0 = xref, s.out = yref, s.count = ys.numel();
          s.act = op.type == OpType::relu ? bbops::kActRelu : bbops::kActRelu6;
          break;
        }
        case OpType::max_pool2d:
        case OpType::avg_pool2d: {
          b.use(xref);
          yref = b.fresh(ys);
          if (op.global_pool) {
            Step& s = b.push(StepKind::global_pool);
            s.in0 = xref, s.out = yref, s.in_shape = xs;
            break;
          }
          Step& s = b.push(op.type == OpType::max_pool2d ? StepKind::max_pool : StepKind::avg_pool);
          s.in0 = xref, s.out = yref;
          s.pool = {xs.n,        xs.c,        xs.h,
                    xs.w,        op.kernel_h, op.kernel_w,
                    op.stride_h, op.stride_w, resolve_pads(op, xs.h, xs.w),
                    ys.h,        ys.w,        op.count_include_pad};
          break;
        }
        case OpType::reshape:
          yref = flattened(b, xs, xref);
          break;
        case OpType::softmax: {
          b.use(xref);
          yref = b.fresh(ys);
          Step& s = b.push(StepKind::softmax);
          s.in0 = xref, s.out = yref, s.in_shape = xs;
          break;
        }
      }
      plan->values.push_back({ys, yref});
      plan->op_end.push_back(b.step());
    }
    plan->arena_bytes = b.arena.finish(kAlign);
    plan->offsets.resize(b.arena.size());
    for (int id = 0; id < b.arena.size(); ++id) plan->offsets[id] = b.arena.offset(id);
    for (const Step& s : plan->steps)
      if (s.conv) plan->workspace_bytes = std::max(plan->workspace_bytes, s.conv->workspace);
    return plan;
  }

  // x (shape xs, buffer xref) in NCHW order, the order of a flattening ([N, C*H*W]): NCHW is
  // already that in memory, and so is NHWC when h = w = 1 or c = 1, so the same buffer, kept
  // alive to here; the 16-bit path's NHWC maps are reordered first.
  int flattened(Builder& b, const TensorShape& xs, int xref) {
    b.use(xref);
    if (!m_half || xs.c == 1 || xs.h * xs.w == 1) return xref;
    const int yref = b.fresh(xs);
    Step& s = b.push(StepKind::to_nchw);
    s.in0 = xref, s.out = yref, s.in_shape = xs;
    return yref;
  }

  // Plans a convolution (or FC as 1x1) of x (shape xs, buffer xref) into a new buffer; returns
  // it. Asymmetric pads are applied by a pad step into a temporary, then cuDNN runs unpadded.
  int conv(Builder& b, const GraphOp& op, const TensorShape& xs, int xref, const TensorShape& ys,
           const Pads& p) {
    TensorShape cs = xs;
    int cref = xref;
    Pads cudnn_pads = p;
    if (!p.symmetric()) {
      cs.h += p.top + p.bottom;
      cs.w += p.left + p.right;
      b.use(xref);
      cref = b.fresh(cs);
      Step& s = b.push(StepKind::pad);
      s.in0 = xref, s.out = cref, s.in_shape = xs, s.pads = p;
      cudnn_pads = Pads{};
    }
    b.use(cref);
    const int yref = b.fresh(ys);
    auto d = std::make_unique<ConvDescs>();
    const bool fc = op.type == OpType::fully_connected;
    const int64_t groups = fc ? 1 : op.groups;
    const int64_t kh = fc ? 1 : op.kernel_h, kw = fc ? 1 : op.kernel_w;
    CUDNN_CHECK_THROW(cudnnCreateTensorDescriptor(&d->x));
    CUDNN_CHECK_THROW(cudnnCreateTensorDescriptor(&d->y));
    CUDNN_CHECK_THROW(cudnnCreateFilterDescriptor(&d->w));
    CUDNN_CHECK_THROW(cudnnCreateConvolutionDescriptor(&d->conv));
    // 16-bit: NHWC tensors and OHWI filters of FP16 or BF16, float32 compute (cuDNN's
    // "pseudo half" configurations, which run on tensor cores).
    const cudnnTensorFormat_t format = m_half ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
    const cudnnDataType_t dtype = !m_half ? CUDNN_DATA_FLOAT
                                  : m_half_type == bbops::Half::bf16 ? CUDNN_DATA_BFLOAT16
                                                                     : CUDNN_DATA_HALF;
    CUDNN_CHECK_THROW(cudnnSetTensor4dDescriptor(d->x, format, dtype, to_int(cs.n, "n"),
                                                 to_int(cs.c, "c"), to_int(cs.h, "h"),
                                                 to_int(cs.w, "w")));
    CUDNN_CHECK_THROW(cudnnSetTensor4dDescriptor(d->y, format, dtype, to_int(ys.n, "n"),
                                                 to_int(ys.c, "c"), to_int(ys.h, "h"),
                                                 to_int(ys.w, "w")));
    CUDNN_CHECK_THROW(cudnnSetFilter4dDescriptor(
        d->w, dtype, format, to_int(op.out_channels, "o"), to_int(cs.c / groups, "c"),
        to_int(kh, "kh"), to_int(kw, "kw")));
    CUDNN_CHECK_THROW(cudnnSetConvolution2dDescriptor(
        d->conv, to_int(cudnn_pads.top, "pad"), to_int(cudnn_pads.left, "pad"),
        to_int(fc ? 1 : op.stride_h, "stride"), to_int(fc ? 1 : op.stride_w, "stride"),
        to_int(fc ? 1 : op.dilation_h, "dilation"), to_int(fc ? 1 : op.dilation_w, "dilation"),
        CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_CHECK_THROW(cudnnSetConvolutionGroupCount(d->conv, to_int(groups, "groups")));
    // FMA math keeps float32 convolutions exact to float32 (no TF32 rounding of the inputs);
    // the 16-bit path asks for tensor cores.
    const cudnnMathType_t math = m_half ? CUDNN_TENSOR_OP_MATH
                                 : tensor_cores() ? CUDNN_DEFAULT_MATH
                                                  : CUDNN_FMA_MATH;
    CUDNN_CHECK_THROW(cudnnSetConvolutionMathType(d->conv, math));
    int n = 0, c = 0, h = 0, w = 0;
    CUDNN_CHECK_THROW(cudnnGetConvolution2dForwardOutputDim(d->conv, d->x, d->w, &n, &c, &h, &w));
    CHECK_THROW(n == ys.n && c == ys.c && h == ys.h && w == ys.w);
    // Plans of other batch sizes, and repeated layers, share shapes: time each shape once.
    const AlgoKey key{cs.n,
                      cs.c,
                      cs.h,
                      cs.w,
                      op.out_channels,
                      kh,
                      kw,
                      cudnn_pads.top,
                      cudnn_pads.left,
                      fc ? 1 : op.stride_h,
                      fc ? 1 : op.stride_w,
                      fc ? 1 : op.dilation_h,
                      fc ? 1 : op.dilation_w,
                      groups};
    auto found = m_algos.find(key);
    if (found == m_algos.end()) found = m_algos.emplace(key, choose_algorithm(*d)).first;
    d->algo = found->second.algo;
    d->workspace = found->second.workspace;
    CUDNN_CHECK_THROW(cudnnSetConvolutionMathType(d->conv, found->second.math));

    Step& s = b.push(StepKind::conv);
    s.in0 = cref, s.out = yref;
    s.weight = m_half ? static_cast<const void*>(m_weights16.at(op.weight).data())
                      : static_cast<const void*>(m_weights.at(op.weight).data());
    s.conv = std::move(d);
    if (!op.bias.empty() || op.act != Activation::none) {
      b.use(yref);
      Step& ba = b.push(StepKind::bias_act);
      ba.out = yref;
      ba.count = ys.numel();
      ba.channels = ys.c;
      ba.hw = ys.h * ys.w;
      ba.bias = op.bias.empty() ? nullptr : m_weights.at(op.bias).data();
      ba.act = bbops::act_code(op.act);
    }
    return yref;
  }

  struct AlgoChoice {
    cudnnConvolutionFwdAlgo_t algo;
    cudnnMathType_t math;
    std::size_t workspace;
  };
  using AlgoKey = std::array<int64_t, 14>;

  // TF32, FP16 or BF16: tensor-core math is what was asked for.
  bool tensor_cores() const { return m_options.precision != BackbonePrecision::fp32; }

  // Times every algorithm once (cudnnFind allocates its own buffers) and keeps the fastest
  // that succeeds within the workspace cap and, in FP32, avoids tensor-op math.
  AlgoChoice choose_algorithm(ConvDescs& d) {
    int max_count = 0;
    CUDNN_CHECK_THROW(cudnnGetConvolutionForwardAlgorithmMaxCount(m_cudnn, &max_count));
    std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(std::max(max_count, 1));
    int returned = 0;
    CUDNN_CHECK_THROW(cudnnFindConvolutionForwardAlgorithm(
        m_cudnn, d.x, d.w, d.conv, d.y, static_cast<int>(perf.size()), &returned, perf.data()));
    auto usable = [&](const cudnnConvolutionFwdAlgoPerf_t& r) {
      if (r.status != CUDNN_STATUS_SUCCESS || r.memory > kMaxWorkspace) return false;
      return tensor_cores() || (r.mathType != CUDNN_TENSOR_OP_MATH &&
                                      r.mathType != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION);
    };
    const cudnnConvolutionFwdAlgoPerf_t* best = nullptr;
    for (int k = 0; k < returned && !best; ++k)  // sorted fastest first
      if (usable(perf[k])) best = &perf[k];
    if (!best) {
      // Find refused everything (it can, under memory pressure): take the heuristics' pick.
      CUDNN_CHECK_THROW(cudnnGetConvolutionForwardAlgorithm_v7(
          m_cudnn, d.x, d.w, d.conv, d.y, static_cast<int>(perf.size()), &returned, perf.data()));
      for (int k = 0; k < returned && !best; ++k)
        if (usable(perf[k])) best = &perf[k];
    }
    if (!best) throw std::runtime_error("cuDNN found no usable forward convolution algorithm");
    AlgoChoice c{best->algo, best->mathType, best->memory};
    // A result may report DEFAULT math, which on Ampere and later permits TF32: pin FMA in
    // FP32, and size the workspace for the math type actually set.
    if (!tensor_cores()) c.math = CUDNN_FMA_MATH;
    CUDNN_CHECK_THROW(cudnnSetConvolutionMathType(d.conv, c.math));
    std::size_t bytes = 0;
    CUDNN_CHECK_THROW(
        cudnnGetConvolutionForwardWorkspaceSize(m_cudnn, d.x, d.w, d.conv, d.y, c.algo, &bytes));
    c.workspace = std::max(c.workspace, bytes);
    return c;
  }

  Graph m_graph;
  Stream m_stream;
  BackboneOptions m_options;
  cudnnHandle_t m_cudnn = nullptr;
  bool m_half = false;  // FP16 or BF16: 16-bit NHWC activations
  bbops::Half m_half_type = bbops::Half::fp16;
  std::map<std::string, Buffer<float>> m_weights;       // float32 weights and every bias
  std::map<std::string, Buffer<uint16_t>> m_weights16;  // 16-bit path: conv and FC weights
  PlanCache<CudaPlan> m_plans;
  std::map<AlgoKey, AlgoChoice> m_algos;
  Buffer<uint8_t> m_arena{0, Device::cuda};
  Buffer<uint8_t> m_workspace{0, Device::cuda};
};

}  // namespace

std::unique_ptr<BackboneBackend> make_cuda_backbone(Graph graph, const SafeTensors& weights,
                                                    Stream stream, const BackboneOptions& options) {
  return std::make_unique<CudaBackbone>(std::move(graph), weights, stream, options);
}

}  // namespace mirad
