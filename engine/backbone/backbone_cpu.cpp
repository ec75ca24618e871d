// CPU backend of the backbone runner: oneDNN primitives in the layouts oneDNN prefers for
// this CPU (NHWC or channel-blocked), reorders only where a layout has to change, weights
// reordered once per plan layout, and an OpenBLAS im2col+GEMM convolution kept for comparison
// (CpuConvAlgo::gemm). Threads: oneDNN's OpenMP default and OpenBLAS's own, untouched.
#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <unordered_map>

#include "engine/backbone/backbone_impl.h"
#include "core/buffer.h"
#include "core/error.h"
#include "engine/io/safetensors.h"

#if DNNL_VERSION_MAJOR != 2
#error "backbone_cpu.cpp targets the oneDNN 2.x API (Debian's libdnnl-dev); 3.x changed it"
#endif

namespace mirad {
namespace {

using dnnl::algorithm;
using dnnl::memory;
using dnnl::prop_kind;
using tag = memory::format_tag;
using dt = memory::data_type;

// Arena offsets: a cache line, so that no two tensors share one.
constexpr std::size_t kAlign = 64;
// Default images per chunk of a batch (BackboneOptions::cpu_batch_chunk). Measured with
// MobileNetV2 on 1 and 2 cores (bench_backbone.cpp): one image at a time was fastest, 16 at
// once 1.4x slower per image, as every layer's maps then spill out of cache.
constexpr int64_t kAutoChunk = 1;
// The buffer reference of the graph input; arena buffers are ids >= 0.
constexpr int kInputRef = -1;

memory::dims dims_of(const TensorShape& s) {
  if (s.rank == 2) return {s.n, s.c};
  return {s.n, s.c, s.h, s.w};
}
memory::desc plain_desc(const TensorShape& s) {
  return memory::desc(dims_of(s), dt::f32, s.rank == 2 ? tag::nc : tag::nchw);
}
memory::desc any_desc(const TensorShape& s) {
  return memory::desc(dims_of(s), dt::f32, tag::any);
}

dnnl::post_ops act_post_ops(Activation act) {
  dnnl::post_ops po;
  if (act == Activation::relu) po.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f);
  // clip(x) = min(max(x, alpha), beta): relu6 fused into the producing primitive.
  if (act == Activation::relu6) po.append_eltwise(1.f, algorithm::eltwise_clip, 0.f, 6.f);
  return po;
}

// A tensor while a plan is built: its shape, its layout and the buffer that holds it.
struct Value {
  TensorShape shape;
  memory::desc desc;
  int ref;  // arena id, kInputRef or an output
};

// What the plan runs: a oneDNN primitive with its arguments, or a host function.
struct RunCtx;
struct Step {
  std::optional<dnnl::primitive> prim;
  std::unordered_map<int, memory> args;
  std::function<void(const RunCtx&)> fn;
};

struct RunCtx {
  uint8_t* arena;
  const std::vector<std::size_t>* offsets;
  const float* input;
  float* ptr(int ref) const {
    return ref == kInputRef ? const_cast<float*>(input)
                            : reinterpret_cast<float*>(arena + (*offsets)[ref]);
  }
};

struct TapCopy {
  dnnl::reorder prim;
  memory src, dst;
};

struct CpuPlan {
  std::vector<Step> steps;
  std::vector<int> op_end;    // steps [op_end[i-1], op_end[i]) compute op i
  std::vector<Value> values;  // output of each op
  std::vector<std::size_t> offsets;
  std::size_t arena_bytes = 0;
  // Every memory object that points into a buffer, rebound when its buffer moves.
  std::vector<std::pair<memory, int>> bindings;
  const uint8_t* bound_arena = nullptr;
  std::map<int, TapCopy> tap_copies;  // per op index, built on first use
};

class CpuBackbone final : public BackboneBackend {
 public:
  CpuBackbone(Graph graph, const SafeTensors& weights, const BackboneOptions& options)
      : m_graph(std::move(graph)),
        m_options(options),
        m_engine(dnnl::engine::kind::cpu, 0),
        m_stream(m_engine) {
    // Keep only what the graph uses; the loader's map may hold more.
    for (const GraphOp& op : m_graph.ops) {
      if (!op.weight.empty()) m_weights[op.weight] = weights.at(op.weight);
      if (!op.bias.empty()) m_weights[op.bias] = weights.at(op.bias);
    }
  }

  const Graph& graph() const override { return m_graph; }
  std::size_t arena_bytes() const override { return m_arena.size(); }
  std::size_t n_plans() const override { return m_plans.size(); }

  void run(const float* input, const TensorShape& shape, int last_op, std::span<const int> taps,
           std::span<float* const> outputs) override {
    const int64_t chunk = m_options.cpu_batch_chunk > 0 ? m_options.cpu_batch_chunk : kAutoChunk;
    if (shape.n <= chunk) return run_chunk(input, shape, last_op, taps, outputs);
    // Images are independent, so a batch is the concatenation of its chunks' results: each
    // tap's output of image n is the n-th equal slice of that tap.
    const std::vector<TensorShape> tap_shapes = [&] {
      const auto all = infer_shapes(m_graph, shape, last_op);
      std::vector<TensorShape> v;
      for (int t : taps) v.push_back(all[t]);
      return v;
    }();
    const int64_t per_image = shape.c * shape.h * shape.w;
    std::vector<float*> outs(outputs.size());
    for (int64_t n0 = 0; n0 < shape.n; n0 += chunk) {
      TensorShape part = shape;
      part.n = std::min(chunk, shape.n - n0);
      for (std::size_t k = 0; k < outputs.size(); ++k)
        outs[k] = outputs[k] + n0 * (tap_shapes[k].numel() / shape.n);
      run_chunk(input + n0 * per_image, part, last_op, taps, outs);
    }
  }

 private:
  void run_chunk(const float* input, const TensorShape& shape, int last_op,
                 std::span<const int> taps, std::span<float* const> outputs) {
    CpuPlan& plan = plan_for(shape, last_op);
    RunCtx ctx{m_arena.data(), &plan.offsets, input};
    if (plan.bound_arena != m_arena.data()) {
      for (auto& [mem, ref] : plan.bindings)
        if (ref >= 0) mem.set_data_handle(ctx.ptr(ref));
      plan.bound_arena = m_arena.data();
    }
    for (auto& [mem, ref] : plan.bindings)
      if (ref == kInputRef) mem.set_data_handle(const_cast<float*>(input));

    int step = 0;
    for (int op = 0; op <= last_op; ++op) {
      for (; step < plan.op_end[op]; ++step) {
        Step& s = plan.steps[step];
        if (s.prim) {
          s.prim->execute(m_stream, s.args);
        } else {
          m_stream.wait();  // host code reads what the primitives wrote
          s.fn(ctx);
        }
      }
      for (std::size_t k = 0; k < taps.size(); ++k) {
        if (taps[k] != op) continue;
        TapCopy& tc = tap_copy(plan, op, ctx);
        tc.dst.set_data_handle(outputs[k]);
        tc.prim.execute(m_stream, tc.src, tc.dst);
      }
    }
    m_stream.wait();
  }

  CpuPlan& plan_for(const TensorShape& shape, int last_op) {
    return m_plans.get(
        shape, last_op, [&](const TensorShape& s, int last) { return build(s, last); },
        [&](const CpuPlan& plan) { m_arena.reserve_discard(plan.arena_bytes); });
  }

  TapCopy& tap_copy(CpuPlan& plan, int op, const RunCtx& ctx) {
    auto it = plan.tap_copies.find(op);
    if (it != plan.tap_copies.end()) return it->second;
    const Value& v = plan.values[op];
    memory src(v.desc, m_engine, DNNL_MEMORY_NONE);
    src.set_data_handle(ctx.ptr(v.ref));
    plan.bindings.push_back({src, v.ref});
    memory dst(plain_desc(v.shape), m_engine, DNNL_MEMORY_NONE);
    TapCopy tc{dnnl::reorder(src, dst), src, dst};
    return plan.tap_copies.emplace(op, std::move(tc)).first->second;
  }

  // ---- plan building ----
  struct Builder {
    CpuPlan& plan;
    ArenaPlanner arena;
    dnnl::engine& engine;
    int step() const { return static_cast<int>(plan.steps.size()); }

    // A memory object over `v`'s buffer; registered so the run rebinds it. Marks `v` used by
    // the step being built.
    memory mem(const Value& v) {
      if (v.ref >= 0) arena.use(v.ref, step());
      memory m(v.desc, engine, DNNL_MEMORY_NONE);
      plan.bindings.push_back({m, v.ref});
      return m;
    }
    Value fresh(const TensorShape& s, const memory::desc& d) {
      return {s, d, arena.add(d.get_size(), step())};
    }
    // `v` in layout `want`, reordering into a new buffer when it is in another one.
    Value as(const Value& v, const memory::desc& want) {
      if (v.desc == want) return v;
      Value out = fresh(v.shape, want);
      Step s;
      memory src = mem(v), dst = mem(out);
      s.prim = dnnl::reorder(src, dst);
      s.args = {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}};
      plan.steps.push_back(std::move(s));
      return out;
    }
    void push(dnnl::primitive p, std::unordered_map<int, memory> args) {
      Step s;
      s.prim = std::move(p);
      s.args = std::move(args);
      plan.steps.push_back(std::move(s));
    }
  };

  std::unique_ptr<CpuPlan> build(const TensorShape& input, int last_op) {
    const std::vector<TensorShape> shapes = infer_shapes(m_graph, input, last_op);
    auto plan = std::make_unique<CpuPlan>();
    Builder b{*plan, {}, m_engine};
    const Value in{input, plain_desc(input), kInputRef};
    for (int i = 0; i <= last_op; ++i) {
      const GraphOp& op = m_graph.ops[i];
      auto src = [&](int k) { return op.input_ops[k] < 0 ? in : plan->values[op.input_ops[k]]; };
      Value out;
      try {
        switch (op.type) {
          case OpType::conv2d:
          case OpType::depthwise_conv2d:
            out = use_gemm(op) ? conv_gemm(b, i, src(0), shapes[i])
                               : conv_onednn(b, i, src(0), shapes[i]);
            break;
          case OpType::fully_connected:
            out = fully_connected(b, i, src(0), shapes[i]);
            break;
          case OpType::add:
            out = add(b, op, src(0), src(1));
            break;
          case OpType::relu:
          case OpType::relu6:
            out =
                eltwise(b, src(0), op.type == OpType::relu ? Activation::relu : Activation::relu6);
            break;
          case OpType::max_pool2d:
          case OpType::avg_pool2d:
            out = pool(b, op, src(0), shapes[i]);
            break;
          case OpType::reshape: {
            // Flattening is free on plain NCHW: the same buffer, seen as [N, C*H*W].
            const Value v = b.as(src(0), plain_desc(src(0).shape));
            out = {shapes[i], plain_desc(shapes[i]), v.ref};
            if (v.ref >= 0) b.arena.use(v.ref, b.step());
            break;
          }
          case OpType::softmax: {
            const Value x = src(0);
            Value y = b.fresh(x.shape, x.desc);
            dnnl::softmax_forward::desc d(prop_kind::forward_inference, x.desc, 1);
            memory xm = b.mem(x), ym = b.mem(y);
            b.push(dnnl::softmax_forward({d, m_engine}), {{DNNL_ARG_SRC, xm}, {DNNL_ARG_DST, ym}});
            out = y;
            break;
          }
        }
      } catch (const dnnl::error& e) {
        // A configuration oneDNN cannot run is a bug or a gap here, not bad input.
        throw std::runtime_error(fmt::format("{}: op {} ({}) on input {}: oneDNN: {} (status {})",
                                             m_graph.file, i, op_type_name(op.type), input.str(),
                                             e.what(), int(e.status)));
      }
      plan->values.push_back(out);
      plan->op_end.push_back(b.step());
    }
    plan->arena_bytes = b.arena.finish(kAlign);
    plan->offsets.resize(b.arena.size());
    for (int id = 0; id < b.arena.size(); ++id) plan->offsets[id] = b.arena.offset(id);
    return plan;
  }

  bool use_gemm(const GraphOp&) const {
    // Measured (bench_backbone.cpp, BM_ConvAlgo): oneDNN is faster for every op type, so
    // `automatic` never takes the GEMM path.
    return m_options.cpu_conv == CpuConvAlgo::gemm;
  }

  // The op's weight in a oneDNN layout `want`, reordered from OIHW once per layout.
  memory weights_as(int op_index, const memory::desc& user, const memory::desc& want) {
    auto& cache = m_reordered[op_index];
    for (auto& [d, m] : cache)
      if (d == want) return m;
    HostTensor& w = m_weights.at(m_graph.ops[op_index].weight);
    memory src(user, m_engine, w.data.data());
    memory dst(want, m_engine);
    dnnl::reorder(src, dst).execute(m_stream, src, dst);
    m_stream.wait();
    cache.push_back({want, dst});
    return dst;
  }

  memory bias_mem(const GraphOp& op) {
    HostTensor& bias = m_weights.at(op.bias);
    return memory({{op.out_channels}, dt::f32, tag::x}, m_engine, bias.data.data());
  }

  Value conv_onednn(Builder& b, int index, const Value& x, const TensorShape& out_shape) {
    const GraphOp& op = m_graph.ops[index];
    const Pads p = resolve_pads(op, x.shape.h, x.shape.w);
    const int64_t g = op.groups, O = op.out_channels, Cg = x.shape.c / g;
    const memory::desc w_user =
        g == 1 ? memory::desc({O, Cg, op.kernel_h, op.kernel_w}, dt::f32, tag::oihw)
               : memory::desc({g, O / g, Cg, op.kernel_h, op.kernel_w}, dt::f32, tag::goihw);
    const memory::desc w_any(w_user.dims(), dt::f32, tag::any);
    const memory::dims strides{op.stride_h, op.stride_w};
    // oneDNN counts dilation from 0 (0 = dense), the graph from 1.
    const memory::dims dil{op.dilation_h - 1, op.dilation_w - 1};
    const memory::dims pad_l{p.top, p.left}, pad_r{p.bottom, p.right};
    dnnl::primitive_attr attr;
    attr.set_post_ops(act_post_ops(op.act));
    // src and dst "any": the primitive picks its fastest layout (NHWC with brgemm on AVX-512);
    // the graph input (NCHW) is reordered once into it.
    const memory::desc b_md = op.bias.empty() ? memory::desc() : memory::desc({O}, dt::f32, tag::x);
    dnnl::convolution_forward::desc d =
        op.bias.empty()
            ? dnnl::convolution_forward::desc(
                  prop_kind::forward_inference, algorithm::convolution_direct, any_desc(x.shape),
                  w_any, any_desc(out_shape), strides, dil, pad_l, pad_r)
            : dnnl::convolution_forward::desc(
                  prop_kind::forward_inference, algorithm::convolution_direct, any_desc(x.shape),
                  w_any, b_md, any_desc(out_shape), strides, dil, pad_l, pad_r);
    dnnl::convolution_forward::primitive_desc pd(d, attr, m_engine);
    const Value xs = b.as(x, pd.src_desc());
    Value y = b.fresh(out_shape, pd.dst_desc());
    std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC, b.mem(xs)},
        {DNNL_ARG_WEIGHTS, weights_as(index, w_user, pd.weights_desc())},
        {DNNL_ARG_DST, b.mem(y)}};
    if (!op.bias.empty()) args[DNNL_ARG_BIAS] = bias_mem(op);
    b.push(dnnl::convolution_forward(pd), std::move(args));
    return y;
  }

  // The comparison path: NHWC im2col (rows = output pixels, columns = (group, ky, kx, c)) times
  // the weight packed as [O][ky][kx][c], one OpenBLAS SGEMM per group, bias as the GEMM's
  // initial C, activation after. A 1x1 stride-1 unpadded conv needs no im2col at all.
  Value conv_gemm(Builder& b, int index, const Value& x, const TensorShape& out_shape) {
    const GraphOp& op = m_graph.ops[index];
    const Pads p = resolve_pads(op, x.shape.h, x.shape.w);
    const int64_t N = x.shape.n, C = x.shape.c, H = x.shape.h, W = x.shape.w;
    const int64_t G = op.groups, O = op.out_channels, Cg = C / G, Og = O / G;
    const int64_t KH = op.kernel_h, KW = op.kernel_w, OH = out_shape.h, OW = out_shape.w;
    const int64_t Kg = KH * KW * Cg;
    const float* packed = packed_weights(index, Cg);
    const float* bias = op.bias.empty() ? nullptr : m_weights.at(op.bias).data.data();
    const int act = op.act == Activation::relu ? 1 : op.act == Activation::relu6 ? 2 : 0;

    const Value xs = b.as(x, memory::desc(dims_of(x.shape), dt::f32, tag::nhwc));
    Value y = b.fresh(out_shape, memory::desc(dims_of(out_shape), dt::f32, tag::nhwc));
    const bool direct =
        KH == 1 && KW == 1 && op.stride_h == 1 && op.stride_w == 1 && !p.any() && G == 1;
    const int col = direct ? -1 : b.arena.add(std::size_t(OH * OW * G * Kg) * 4, b.step());
    const int xref = xs.ref, yref = y.ref;
    if (xref >= 0) b.arena.use(xref, b.step());
    const GraphOp o = op;
    Step s;
    s.fn = [=](const RunCtx& ctx) {
      const float* xp = ctx.ptr(xref);
      float* yp = ctx.ptr(yref);
      const int64_t M = direct ? N * OH * OW : OH * OW;
      for (int64_t n = 0; n < (direct ? 1 : N); ++n) {
        const float* A = xp;
        if (!direct) {
          float* colp = ctx.ptr(col);
          const float* xn = xp + n * H * W * C;
          for (int64_t oy = 0; oy < OH; ++oy)
            for (int64_t ox = 0; ox < OW; ++ox) {
              float* row = colp + (oy * OW + ox) * G * Kg;
              for (int64_t g = 0; g < G; ++g)
                for (int64_t ky = 0; ky < KH; ++ky) {
                  const int64_t iy = oy * o.stride_h - p.top + ky * o.dilation_h;
                  for (int64_t kx = 0; kx < KW; ++kx) {
                    const int64_t ix = ox * o.stride_w - p.left + kx * o.dilation_w;
                    float* dst = row + g * Kg + (ky * KW + kx) * Cg;
                    if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                      std::fill(dst, dst + Cg, 0.f);
                    else
                      std::memcpy(dst, xn + (iy * W + ix) * C + g * Cg, Cg * 4);
                  }
                }
            }
          A = colp;
        }
        float* Y = yp + n * (direct ? 0 : OH * OW * O);
        for (int64_t m = 0; m < M; ++m) {
          if (bias)
            std::memcpy(Y + m * O, bias, O * 4);
          else
            std::fill(Y + m * O, Y + (m + 1) * O, 0.f);
        }
        for (int64_t g = 0; g < G; ++g)
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, Og, Kg, 1.f, A + g * Kg, G * Kg,
                      packed + g * Og * Kg, Kg, 1.f, Y + g * Og, O);
        if (act)
          for (int64_t i = 0; i < M * O; ++i)
            Y[i] = act == 1 ? std::max(Y[i], 0.f) : std::clamp(Y[i], 0.f, 6.f);
      }
    };
    b.plan.steps.push_back(std::move(s));
    return y;
  }

  const float* packed_weights(int index, int64_t Cg) {
    auto it = m_packed.find(index);
    if (it != m_packed.end()) return it->second.data();
    const GraphOp& op = m_graph.ops[index];
    const std::vector<float>& w = m_weights.at(op.weight).data;
    const int64_t O = op.out_channels, KH = op.kernel_h, KW = op.kernel_w;
    std::vector<float> packed(w.size());
    for (int64_t o = 0; o < O; ++o)
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t ky = 0; ky < KH; ++ky)
          for (int64_t kx = 0; kx < KW; ++kx)
            packed[((o * KH + ky) * KW + kx) * Cg + c] = w[((o * Cg + c) * KH + ky) * KW + kx];
    return m_packed.emplace(index, std::move(packed)).first->second.data();
  }

  Value fully_connected(Builder& b, int index, const Value& x, const TensorShape& out_shape) {
    const GraphOp& op = m_graph.ops[index];
    // The weight's K runs over C*H*W in NCHW order, so the input is made plain and flat.
    const Value xp = b.as(x, plain_desc(x.shape));
    const TensorShape flat{x.shape.n, x.shape.c * x.shape.h * x.shape.w, 1, 1, 2};
    const Value xf{flat, plain_desc(flat), xp.ref};
    const memory::desc w_user({op.out_channels, flat.c}, dt::f32, tag::oi);
    const memory::desc w_any({op.out_channels, flat.c}, dt::f32, tag::any);
    dnnl::primitive_attr attr;
    attr.set_post_ops(act_post_ops(op.act));
    const memory::desc b_md({op.out_channels}, dt::f32, tag::x);
    auto d = op.bias.empty()
                 ? dnnl::inner_product_forward::desc(prop_kind::forward_inference, xf.desc, w_any,
                                                     plain_desc(out_shape))
                 : dnnl::inner_product_forward::desc(prop_kind::forward_inference, xf.desc, w_any,
                                                     b_md, plain_desc(out_shape));
    dnnl::inner_product_forward::primitive_desc pd(d, attr, m_engine);
    Value y = b.fresh(out_shape, pd.dst_desc());
    std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC, b.mem(xf)},
        {DNNL_ARG_WEIGHTS, weights_as(index, w_user, pd.weights_desc())},
        {DNNL_ARG_DST, b.mem(y)}};
    if (!op.bias.empty()) args[DNNL_ARG_BIAS] = bias_mem(op);
    b.push(dnnl::inner_product_forward(pd), std::move(args));
    return y;
  }

  Value add(Builder& b, const GraphOp& op, const Value& a, const Value& c) {
    const Value c2 = b.as(c, a.desc);
    Value y = b.fresh(a.shape, a.desc);
    dnnl::primitive_attr attr;
    attr.set_post_ops(act_post_ops(op.act));
    dnnl::binary::desc d(algorithm::binary_add, a.desc, c2.desc, y.desc);
    b.push(dnnl::binary({d, attr, m_engine}),
           {{DNNL_ARG_SRC_0, b.mem(a)}, {DNNL_ARG_SRC_1, b.mem(c2)}, {DNNL_ARG_DST, b.mem(y)}});
    return y;
  }

  Value eltwise(Builder& b, const Value& x, Activation act) {
    Value y = b.fresh(x.shape, x.desc);
    const bool relu = act == Activation::relu;
    dnnl::eltwise_forward::desc d(prop_kind::forward_inference,
                                  relu ? algorithm::eltwise_relu : algorithm::eltwise_clip, x.desc,
                                  0.f, relu ? 0.f : 6.f);
    b.push(dnnl::eltwise_forward({d, m_engine}),
           {{DNNL_ARG_SRC, b.mem(x)}, {DNNL_ARG_DST, b.mem(y)}});
    return y;
  }

  Value pool(Builder& b, const GraphOp& op, const Value& x, const TensorShape& out_shape) {
    memory::dims kernel, strides{1, 1}, pad_l{0, 0}, pad_r{0, 0};
    if (op.global_pool) {
      kernel = {x.shape.h, x.shape.w};
    } else {
      const Pads p = resolve_pads(op, x.shape.h, x.shape.w);
      kernel = {op.kernel_h, op.kernel_w};
      strides = {op.stride_h, op.stride_w};
      pad_l = {p.top, p.left};
      pad_r = {p.bottom, p.right};
    }
    // oneDNN's max pooling never lets a padded cell win, and its two average modes are
    // count_include_pad true and false: the graph's semantics exactly.
    const algorithm alg = op.type == OpType::max_pool2d ? algorithm::pooling_max
                          : op.count_include_pad        ? algorithm::pooling_avg_include_padding
                                                        : algorithm::pooling_avg_exclude_padding;
    dnnl::pooling_forward::desc d(prop_kind::forward_inference, alg, x.desc, any_desc(out_shape),
                                  strides, kernel, pad_l, pad_r);
    dnnl::pooling_forward::primitive_desc pd(d, m_engine);
    Value y = b.fresh(out_shape, pd.dst_desc());
    b.push(dnnl::pooling_forward(pd), {{DNNL_ARG_SRC, b.mem(x)}, {DNNL_ARG_DST, b.mem(y)}});
    return y;
  }

  Graph m_graph;
  BackboneOptions m_options;
  dnnl::engine m_engine;
  dnnl::stream m_stream;
  std::map<std::string, HostTensor> m_weights;
  std::map<int, std::vector<std::pair<memory::desc, memory>>> m_reordered;
  std::map<int, std::vector<float>> m_packed;
  PlanCache<CpuPlan> m_plans;
  Buffer<uint8_t> m_arena{0, Device::cpu};
};

}  // namespace

std::unique_ptr<BackboneBackend> make_cpu_backbone(Graph graph, const SafeTensors& weights,
                                                   const BackboneOptions& options) {
  try {
    return std::make_unique<CpuBackbone>(std::move(graph), weights, options);
  } catch (const dnnl::error& e) {
    throw std::runtime_error(fmt::format("oneDNN: {} (status {})", e.what(), int(e.status)));
  }
}

}  // namespace mirad
