// Backbone's public face: loading, request validation, dispatch to a backend; and the arena
// planner the backends share.
#include "engine/backbone/backbone.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "engine/backbone/backbone_impl.h"
#include "core/error.h"
#include "engine/io/safetensors.h"

namespace mirad {

namespace fs = std::filesystem;

BackbonePrecision parse_backbone_precision(const std::string& name) {
  for (BackbonePrecision p : {BackbonePrecision::fp32, BackbonePrecision::tf32,
                              BackbonePrecision::fp16, BackbonePrecision::bf16})
    if (name == backbone_precision_name(p)) return p;
  throw InputError(fmt::format("backbone precision must be fp32, tf32, fp16 or bf16 (got '{}')",
                               name));
}

const char* backbone_precision_name(BackbonePrecision p) {
  switch (p) {
    case BackbonePrecision::fp32: return "fp32";
    case BackbonePrecision::tf32: return "tf32";
    case BackbonePrecision::fp16: return "fp16";
    case BackbonePrecision::bf16: return "bf16";
  }
  return "?";
}

int ArenaPlanner::add(std::size_t bytes, int step) {
  m_buffers.push_back({bytes, step, step});
  return static_cast<int>(m_buffers.size()) - 1;
}

void ArenaPlanner::use(int id, int step) {
  Buf& b = m_buffers.at(id);
  b.first = std::min(b.first, step);
  b.last = std::max(b.last, step);
}

std::size_t ArenaPlanner::finish(std::size_t alignment) {
  auto round_up = [&](std::size_t v) { return (v + alignment - 1) / alignment * alignment; };
  std::vector<int> order(m_buffers.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return m_buffers[a].bytes > m_buffers[b].bytes; });
  std::vector<int> placed;
  std::size_t total = 0;
  for (int id : order) {
    Buf& b = m_buffers[id];
    // Intervals of already placed buffers that are alive at the same time, by offset.
    std::vector<std::pair<std::size_t, std::size_t>> busy;
    for (int p : placed) {
      const Buf& o = m_buffers[p];
      if (o.first <= b.last && b.first <= o.last) busy.push_back({o.offset, o.offset + o.bytes});
    }
    std::sort(busy.begin(), busy.end());
    std::size_t at = 0;
    for (const auto& [lo, hi] : busy) {
      if (at + b.bytes <= lo) break;  // fits in the gap before this one
      at = std::max(at, round_up(hi));
    }
    b.offset = at;
    total = std::max(total, round_up(at + b.bytes));
    placed.push_back(id);
  }
  return total;
}

namespace {

// Load-time check: every weight and bias the graph uses is finite. A NaN would not surface
// later: relu6 turns it into a finite 6 (fmin/fmax drop NaN), so features would look normal.
void check_finite_weights(const Graph& g, const SafeTensors& weights) {
  std::set<std::string> checked;
  for (std::size_t i = 0; i < g.ops.size(); ++i)
    for (const std::string* name : {&g.ops[i].weight, &g.ops[i].bias}) {
      if (name->empty() || !checked.insert(*name).second) continue;
      const HostTensor& t = weights.at(*name);
      for (std::size_t k = 0; k < t.data.size(); ++k)
        CHECK_INPUT(std::isfinite(t.data[k]),
                    "{}: tensor '{}' (op {}) holds {} at index {}: weights must be finite",
                    weights.name(), *name, i, t.data[k], k);
    }
}

}  // namespace

Backbone::Backbone(const fs::path& dir, Device device, Stream stream, BackboneOptions options)
    : Backbone(load_graph(dir / "graph.json"), load_safetensors(dir / "weights.safetensors"),
               device, stream, options) {}

Backbone::Backbone(Graph graph, const SafeTensors& weights, Device device, Stream stream,
                   BackboneOptions options)
    : m_device(device), m_stream(stream) {
  CHECK_INPUT(options.cpu_batch_chunk >= 0, "backbone {}: cpu_batch_chunk must be >= 0, got {}",
              graph.file, options.cpu_batch_chunk);
  check_weights(graph, weights);
  check_finite_weights(graph, weights);
  if (device == Device::cpu) {
    m_impl = make_cpu_backbone(std::move(graph), weights, options);
    return;
  }
#ifdef MIRAD_HAVE_CUDA
  CHECK_INPUT(cuda_available(),
              "backbone {}: device 'cuda' requested but no CUDA device is "
              "available",
              graph.file);
  m_impl = make_cuda_backbone(std::move(graph), weights, stream, options);
#else
  throw InputError(fmt::format(
      "backbone {}: device 'cuda' requested but this build has no CUDA backend", graph.file));
#endif
}

Backbone::~Backbone() = default;
Backbone::Backbone(Backbone&&) noexcept = default;
Backbone& Backbone::operator=(Backbone&&) noexcept = default;

const Graph& Backbone::graph() const {
  return m_impl->graph();
}

int Backbone::tap(const std::string& name) const {
  const auto& taps = graph().taps;
  auto it = taps.find(name);
  if (it != taps.end()) return it->second;
  std::vector<std::string> names;
  for (const auto& [k, v] : taps) names.push_back(k);
  throw InputError(
      fmt::format("{}: no tap named '{}' (the graph names: {})", graph().file, name,
                  names.empty() ? std::string("none") : fmt::format("{}", fmt::join(names, ", "))));
}

std::vector<TensorShape> Backbone::tap_shapes(const TensorShape& input,
                                              std::span<const int> taps) const {
  CHECK_INPUT(!taps.empty(), "{}: no taps requested", graph().file);
  for (int t : taps)
    CHECK_INPUT(t >= 0 && t < n_ops(), "{}: tap {} is not an op index (0..{})", graph().file, t,
                n_ops() - 1);
  const int last = *std::max_element(taps.begin(), taps.end());
  const std::vector<TensorShape> all = infer_shapes(graph(), input, last);
  std::vector<TensorShape> out;
  for (int t : taps) out.push_back(all[t]);
  return out;
}

void Backbone::check_forward(const float* input, const TensorShape& input_shape,
                             std::span<const int> taps) const {
  CHECK_INPUT(input != nullptr, "{}: null input", graph().file);
  (void)tap_shapes(input_shape, taps);  // checks taps and every op's shape on the way
}

void Backbone::forward_into(const float* input, const TensorShape& input_shape,
                            std::span<const int> taps, std::span<float* const> outputs) {
  check_forward(input, input_shape, taps);
  CHECK_INPUT(outputs.size() == taps.size(), "{}: {} outputs for {} taps", graph().file,
              outputs.size(), taps.size());
  for (std::size_t k = 0; k < outputs.size(); ++k)
    CHECK_INPUT(outputs[k] != nullptr, "{}: null output for tap {}", graph().file, taps[k]);
  const int last = *std::max_element(taps.begin(), taps.end());
  m_impl->run(input, input_shape, last, taps, outputs);
}

std::vector<BackboneTensor> Backbone::forward(const float* input, const TensorShape& input_shape,
                                              std::span<const int> taps) {
  check_forward(input, input_shape, taps);
  const std::vector<TensorShape> shapes = tap_shapes(input_shape, taps);
  std::vector<BackboneTensor> out;
  std::vector<float*> ptrs;
  for (const TensorShape& s : shapes) {
    out.push_back({s, Buffer<float>(static_cast<std::size_t>(s.numel()), m_device)});
    ptrs.push_back(out.back().data.data());
  }
  const int last = *std::max_element(taps.begin(), taps.end());
  m_impl->run(input, input_shape, last, taps, ptrs);
  if (m_device == Device::cuda) mem::synchronize(m_stream);
  return out;
}

std::size_t Backbone::arena_bytes() const {
  return m_impl->arena_bytes();
}
std::size_t Backbone::n_plans() const {
  return m_impl->n_plans();
}

}  // namespace mirad
