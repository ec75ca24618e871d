// libFuzzer target: backbone graph JSON (parse_graph, the parser behind load_graph). An input
// holding kPartSeparator continues with a weights.safetensors file: the graph is then checked
// against those weights (check_weights, which infers every shape when the graph has
// input_shape) and, when its activations stay small, run on the CPU backend.
#include <optional>

#include "engine/backbone/backbone.h"
#include "engine/backbone/backbone_graph.h"
#include "engine/io/safetensors.h"
#include "fuzz_util.h"

using namespace mirad;
using namespace mirad::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  setup();
  const Parts parts = split_parts(as_text(data, size));
  std::optional<Graph> graph;
  expect_only_input_errors([&] { graph = parse_graph(parts.first, "fuzz-graph.json"); });
  if (!graph || !parts.has_second) return 0;

  expect_only_input_errors([&] {
    const auto& w = parts.second;
    const SafeTensors weights = parse_safetensors(
        {reinterpret_cast<const uint8_t*>(w.data()), w.size()}, "fuzz-weights.safetensors");
    check_weights(*graph, weights);
    if (graph->ops.empty()) return;
    // A small input; the graph's own input_shape when it has one and it is small.
    TensorShape in{1, graph->input_channels > 0 ? graph->input_channels : 3, 13, 11, 4};
    if (graph->input_shape && (*graph->input_shape)[1] * (*graph->input_shape)[2] <= 64 * 64)
      in.h = (*graph->input_shape)[1], in.w = (*graph->input_shape)[2];
    const int last = int(graph->ops.size()) - 1;
    const auto shapes = infer_shapes(*graph, in, last);
    // Running allocates every activation: only graphs that stay small run (bounded time and
    // memory per input); the bounds on geometry are exercised by infer_shapes above.
    int64_t total = in.numel();
    for (const auto& s : shapes) total += s.numel();
    if (in.c > 64 || total > (int64_t(1) << 20)) return;
    Backbone net(std::move(*graph), weights, Device::cpu);
    std::vector<float> input(static_cast<std::size_t>(in.numel()), 0.5f);
    const int taps[] = {last};
    const auto out = net.forward(input.data(), in, taps);
    require(out.size() == 1 && out[0].shape == shapes.back(), "forward's shape != infer_shapes'");
  });
  return 0;
}
