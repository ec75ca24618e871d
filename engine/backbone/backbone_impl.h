// Internal interface between Backbone and its backends (CPU: oneDNN, CUDA: cuDNN), and the
// liveness-based arena planner they share. Not part of the public API.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <tuple>
#include <vector>

#include "engine/backbone/backbone.h"
#include "core/device.h"
#include "engine/backbone/backbone_graph.h"

namespace mirad {

class SafeTensors;

// A backend runs an already validated request: the input shape fits the graph, the taps are
// in range and last_op = max(taps).
class BackboneBackend {
 public:
  virtual ~BackboneBackend() = default;
  virtual const Graph& graph() const = 0;
  // Runs ops 0..last_op on `input`; once op taps[k] has run, its output is written, plain
  // NCHW (or [N, K]), to outputs[k].
  virtual void run(const float* input, const TensorShape& input_shape, int last_op,
                   std::span<const int> taps, std::span<float* const> outputs) = 0;
  virtual std::size_t arena_bytes() const = 0;
  virtual std::size_t n_plans() const = 0;
};

std::unique_ptr<BackboneBackend> make_cpu_backbone(Graph graph, const SafeTensors& weights,
                                                   const BackboneOptions& options);
#ifdef MIRAD_HAVE_CUDA
std::unique_ptr<BackboneBackend> make_cuda_backbone(Graph graph, const SafeTensors& weights,
                                                    Stream stream, const BackboneOptions& options);
#endif

// Plans are cached per (N, C, H, W, last op). The cap bounds memory for callers that feed
// many image sizes; past it the cache is simply cleared (plans are cheap to rebuild next to
// a forward pass over a new size).
using PlanKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int>;
inline PlanKey plan_key(const TensorShape& s, int last_op) {
  return {s.n, s.c, s.h, s.w, last_op};
}
inline constexpr std::size_t kMaxCachedPlans = 32;

// The plan cache of one backend, under the rule above.
template <class Plan>
class PlanCache {
 public:
  // The cached plan for (shape, last_op); else build(shape, last_op)'s new one, cached once
  // prepare(plan) has sized the backend's buffers for it (a plan whose buffers could not be
  // had is not kept).
  template <class Build, class Prepare>
  Plan& get(const TensorShape& shape, int last_op, Build&& build, Prepare&& prepare) {
    const PlanKey key = plan_key(shape, last_op);
    auto it = m_plans.find(key);
    if (it != m_plans.end()) return *it->second;
    if (m_plans.size() >= kMaxCachedPlans) m_plans.clear();
    std::unique_ptr<Plan> plan = build(shape, last_op);
    prepare(*plan);
    return *m_plans.emplace(key, std::move(plan)).first->second;
  }
  std::size_t size() const { return m_plans.size(); }
  void clear() { m_plans.clear(); }

 private:
  std::map<PlanKey, std::unique_ptr<Plan>> m_plans;
};

// Assigns arena offsets to buffers with known lifetimes (in step numbers): buffers whose
// lifetimes overlap never share bytes, others may. Greedy by size, largest first, each at the
// lowest offset that fits, which is within a few percent of optimal on CNN chains.
class ArenaPlanner {
 public:
  // A new buffer of `bytes`, written at step `step`; returns its id.
  int add(std::size_t bytes, int step);
  // Buffer `id` is read (or written) at `step`: it must stay alive until then.
  void use(int id, int step);
  // Lays the buffers out with `alignment`-byte offsets; returns the arena size in bytes.
  std::size_t finish(std::size_t alignment);
  std::size_t offset(int id) const { return m_buffers[id].offset; }
  std::size_t bytes(int id) const { return m_buffers[id].bytes; }
  int size() const { return static_cast<int>(m_buffers.size()); }

 private:
  struct Buf {
    std::size_t bytes;
    int first, last;
    std::size_t offset = 0;
  };
  std::vector<Buf> m_buffers;
};

}  // namespace mirad
