// Backbone graph JSON (docs/GRAPH_FORMAT.md): strict parsing, weight checks and per-op shape
// inference, shared by every backend of the backbone runner.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/backbone_op_types.h"

namespace mirad {

class SafeTensors;

enum class OpType {
  conv2d,
  depthwise_conv2d,
  add,
  relu,
  relu6,
  max_pool2d,
  avg_pool2d,
  fully_connected,
  reshape,
  softmax,
};
// The JSON spelling ("CONV_2D", ...).
const char* op_type_name(OpType t);

const char* activation_name(Activation a);

enum class PadMode { valid, same, explicit_pads };

// A tensor's shape: NCHW (rank 4), or [N, C] (rank 2, after RESHAPE or FULLY_CONNECTED; then
// h = w = 1). Batch-first everywhere, float32.
struct TensorShape {
  int64_t n = 0, c = 0, h = 1, w = 1;
  int rank = 4;

  int64_t numel() const { return n * c * h * w; }
  std::vector<int64_t> dims() const;
  std::string str() const;
  bool operator==(const TensorShape&) const = default;
};

struct GraphOp {
  OpType type = OpType::relu;
  std::vector<std::string> inputs;  // RESHAPE's optional second input is kept but unused
  std::string output;
  // CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED: safetensors names; empty bias = zero.
  std::string weight, bias;
  int64_t out_channels = 0;  // conv/FC output channels, read from the weight
  int64_t in_channels = 0;   // conv: input channels the weight takes; FC: flattened input size
  int64_t groups = 1;        // DEPTHWISE_CONV_2D: the input channels (set at load)
  int64_t kernel_h = 1, kernel_w = 1;  // conv: from the weight; pools: the "kernel" field
  int64_t stride_h = 1, stride_w = 1;
  int64_t dilation_h = 1, dilation_w = 1;
  PadMode pad_mode = PadMode::valid;
  Pads pads;  // explicit_pads only; SAME pads depend on the input size (resolve_pads)
  Activation act = Activation::none;
  bool global_pool = false;        // AVERAGE_POOL_2D without a kernel
  bool count_include_pad = false;  // AVERAGE_POOL_2D
  // Producer of each data input: an op index, or -1 for the graph input.
  std::vector<int> input_ops;
};

struct GraphPreprocess {
  std::optional<std::array<double, 3>> mean, std;
  int64_t resize = 0, crop = 0;  // 0 = not given
};

struct Graph {
  std::string file;        // where it came from, for messages
  std::string model_name;  // the optional "name" field
  std::string source;
  std::string input, output;
  int output_op = -1;                                 // the op producing `output`
  std::optional<std::array<int64_t, 3>> input_shape;  // CHW
  std::optional<GraphPreprocess> preprocess;
  std::map<std::string, int> taps;  // named op indices
  std::vector<GraphOp> ops;
  // Channels the graph input must have: input_shape[0], else what the first op reading the
  // input needs (its weight, for a conv). 0 = any (no op constrains it).
  int64_t input_channels = 0;
};

// Bounds on graph geometry, far above any real CNN (kernels <= 11, strides <= 4, pads <= 5,
// channels <= 4096; ResNet-50's stem at a 4096 x 4096 input holds 2^28 values), checked at
// parse/load time and in infer_shapes, before anything is allocated: a hostile graph (a stride
// of 2^40, pads of 100000) is an InputError, not a oneDNN failure or a 140 GB spill file.
inline constexpr int64_t kMaxGraphKernel = 1024;  // kernel side, dilated extent included
inline constexpr int64_t kMaxGraphStride = 1024;
inline constexpr int64_t kMaxGraphDilation = 1024;
inline constexpr int64_t kMaxGraphPad = 1024;        // explicit pads, per side
inline constexpr int64_t kMaxGraphChannels = 65536;  // conv/FC outputs, conv inputs, groups
inline constexpr int64_t kMaxGraphSpatial = 65536;   // H and W of the input and every op output
inline constexpr int64_t kMaxGraphTensorElements = int64_t(1) << 30;  // C*H*W of one image
inline constexpr int64_t kMaxGraphOps = 100000;
inline constexpr uint64_t kMaxGraphFileBytes = uint64_t(64) << 20;  // graph.json (~100 KB real)

// Parses graph JSON text; `file` names it in messages. InputError for: malformed JSON (or
// nested deeper than kMaxJsonDepth, or a key given twice), geometry above the bounds above,
// unknown top-level fields, an unknown op type or an unknown field of an op (naming the op
// index and the field), a missing required field, bad values (stride/dilation/kernel < 1,
// negative pads, both "padding" and "pads", an unknown padding or activation, wrong input counts),
// an input used before it is produced, an output produced twice, an "output" no op produces, and
// taps out of range. Weights are not looked at here (check_weights).
Graph parse_graph(std::string_view json_text, std::string_view file);
// parse_graph on the file; InputError for a path that is not a regular file, or one larger
// than kMaxGraphFileBytes.
Graph load_graph(const std::filesystem::path& path);

// Load-time checks against the weights, filling in what the weights define (conv kernel
// sizes, out_channels, depthwise groups, input_channels): every named tensor exists with the
// shape the op needs ([O, I/groups, kh, kw] for convs, [O] for biases, [O, K] for FC), channel
// counts agree along the graph, and "out_channels"/"groups" fields agree with the weights.
// With input_shape, the whole graph's shapes are also inferred. InputError naming the op
// index, the tensor and the weights file.
void check_weights(Graph& graph, const SafeTensors& weights);

// TensorFlow SAME: total = max((ceil(in/s) - 1) * s + k_eff - in, 0), floor(total/2) before.
Pads same_pads(int64_t h, int64_t w, int64_t kh_eff, int64_t kw_eff, int64_t sh, int64_t sw);
// The pads op `op` uses on an h x w input (conv or windowed pool).
Pads resolve_pads(const GraphOp& op, int64_t h, int64_t w);

// Output shape of every op 0..last_op for a graph input of shape `input` (rank 4). InputError
// naming the op index for a channel count the graph does not take, a spatial size too small
// for a kernel, mismatched ADD inputs or a FULLY_CONNECTED input of the wrong size.
std::vector<TensorShape> infer_shapes(const Graph& graph, const TensorShape& input, int last_op);

}  // namespace mirad
