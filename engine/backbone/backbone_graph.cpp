// Graph JSON parsing (strict: unknown fields and op types are errors), load-time checks against
// the weights, and per-op shape inference.
#include "engine/backbone/backbone_graph.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "engine/io/file_io.h"
#include "engine/io/json_io.h"
#include "engine/io/safetensors.h"

namespace mirad {

namespace fs = std::filesystem;
using nlohmann::json;

const char* op_type_name(OpType t) {
  switch (t) {
    case OpType::conv2d:
      return "CONV_2D";
    case OpType::depthwise_conv2d:
      return "DEPTHWISE_CONV_2D";
    case OpType::add:
      return "ADD";
    case OpType::relu:
      return "RELU";
    case OpType::relu6:
      return "RELU6";
    case OpType::max_pool2d:
      return "MAX_POOL_2D";
    case OpType::avg_pool2d:
      return "AVERAGE_POOL_2D";
    case OpType::fully_connected:
      return "FULLY_CONNECTED";
    case OpType::reshape:
      return "RESHAPE";
    case OpType::softmax:
      return "SOFTMAX";
  }
  return "?";
}

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::none:
      return "none";
    case Activation::relu:
      return "relu";
    case Activation::relu6:
      return "relu6";
  }
  return "?";
}

std::vector<int64_t> TensorShape::dims() const {
  if (rank == 2) return {n, c};
  return {n, c, h, w};
}

std::string TensorShape::str() const {
  return fmt::format("[{}]", fmt::join(dims(), ", "));
}

namespace {

struct OpSpec {
  OpType type;
  std::set<std::string> fields;  // besides op, inputs, output
  int min_inputs, max_inputs;
};

const std::map<std::string, OpSpec>& op_specs() {
  static const std::set<std::string> conv = {"weight",   "bias",   "stride", "padding",     "pads",
                                             "dilation", "groups", "act",    "out_channels"};
  static const std::map<std::string, OpSpec> specs = {
      {"CONV_2D", {OpType::conv2d, conv, 1, 1}},
      {"DEPTHWISE_CONV_2D", {OpType::depthwise_conv2d, conv, 1, 1}},
      {"ADD", {OpType::add, {"act"}, 2, 2}},
      {"RELU", {OpType::relu, {}, 1, 1}},
      {"RELU6", {OpType::relu6, {}, 1, 1}},
      {"MAX_POOL_2D", {OpType::max_pool2d, {"kernel", "stride", "padding", "pads"}, 1, 1}},
      {"AVERAGE_POOL_2D",
       {OpType::avg_pool2d, {"kernel", "stride", "padding", "pads", "count_include_pad"}, 1, 1}},
      {"FULLY_CONNECTED",
       {OpType::fully_connected, {"weight", "bias", "act", "out_channels"}, 1, 1}},
      // The second input names a TFLite shape tensor that need not exist; only flattening is
      // supported, so it is accepted and ignored.
      {"RESHAPE", {OpType::reshape, {}, 1, 2}},
      {"SOFTMAX", {OpType::softmax, {}, 1, 1}},
  };
  return specs;
}

// Builds messages "file: op i (TYPE): ..." for one op.
struct OpContext {
  std::string_view file;
  int index;
  const char* type;  // null while the op type is not known yet

  template <typename... Args>
  [[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) const {
    throw InputError(fmt::format("{}: op {}{}: {}", file, index,
                                 type ? fmt::format(" ({})", type) : std::string(),
                                 fmt::format(f, std::forward<Args>(args)...)));
  }
};

// A positive integer up to `max`: the bounds (graph.h) keep absurd geometry (a stride of
// 2^40) from reaching oneDNN or cuDNN, whose failures would read as internal errors.
int64_t positive_int(const json& v, const OpContext& ctx, const char* field, int64_t max) {
  if (!v.is_number_integer() || v.get<int64_t>() < 1)
    ctx.fail("'{}' must be a positive integer or a pair of them, got {}", field, json_excerpt(v));
  if (v.get<int64_t>() > max)
    ctx.fail("'{}' = {} is above the limit of {}", field, json_excerpt(v), max);
  return v.get<int64_t>();
}

// A field given as an int (both dimensions) or as [h, w].
std::pair<int64_t, int64_t> int_pair(const json& op, const char* field, int64_t dflt, int64_t max,
                                     const OpContext& ctx) {
  if (!op.contains(field)) return {dflt, dflt};
  const json& v = op[field];
  if (v.is_array()) {
    if (v.size() != 2) ctx.fail("'{}' must be an int or [h, w], got {}", field, json_excerpt(v));
    return {positive_int(v[0], ctx, field, max), positive_int(v[1], ctx, field, max)};
  }
  const int64_t x = positive_int(v, ctx, field, max);
  return {x, x};
}

std::string string_field(const json& op, const char* field, const OpContext& ctx) {
  if (!op.contains(field)) ctx.fail("missing '{}'", field);
  if (!op[field].is_string() || op[field].get<std::string>().empty())
    ctx.fail("'{}' must be a non-empty string, got {}", field, json_excerpt(op[field]));
  return op[field].get<std::string>();
}

void parse_padding(const json& op, GraphOp& g, const OpContext& ctx) {
  const bool has_padding = op.contains("padding"), has_pads = op.contains("pads");
  if (has_padding && has_pads) ctx.fail("give either 'padding' or 'pads', not both");
  if (has_pads) {
    const json& p = op["pads"];
    if (!p.is_array() || p.size() != 4)
      ctx.fail("'pads' must be [top, bottom, left, right], got {}", json_excerpt(p));
    int64_t v[4];
    for (int k = 0; k < 4; ++k) {
      if (!p[k].is_number_integer() || p[k].get<int64_t>() < 0)
        ctx.fail("'pads' must hold non-negative integers, got {}", json_excerpt(p));
      if (p[k].get<int64_t>() > kMaxGraphPad)
        ctx.fail("'pads' {} exceed the limit of {} per side", json_excerpt(p), kMaxGraphPad);
      v[k] = p[k].get<int64_t>();
    }
    g.pad_mode = PadMode::explicit_pads;
    g.pads = {v[0], v[1], v[2], v[3]};
    return;
  }
  if (!has_padding) return;  // VALID: no padding, as TF's and PyTorch's defaults
  const json& p = op["padding"];
  const std::string s = p.is_string() ? p.get<std::string>() : "";
  if (s == "SAME")
    g.pad_mode = PadMode::same;
  else if (s == "VALID")
    g.pad_mode = PadMode::valid;
  else
    ctx.fail("unknown padding {} (expected \"SAME\", \"VALID\" or explicit \"pads\")",
             json_excerpt(p));
}

Activation parse_act(const json& op, const OpContext& ctx) {
  if (!op.contains("act")) return Activation::none;
  const json& a = op["act"];
  const std::string s = a.is_string() ? a.get<std::string>() : "";
  if (s == "none") return Activation::none;
  if (s == "relu") return Activation::relu;
  if (s == "relu6") return Activation::relu6;
  ctx.fail("unknown act {} (expected \"none\", \"relu\" or \"relu6\")", json_excerpt(a));
}

GraphOp parse_op(const json& op, int index, std::string_view file) {
  OpContext ctx{file, index, nullptr};
  if (!op.is_object()) ctx.fail("not a JSON object");
  if (!op.contains("op") || !op["op"].is_string()) ctx.fail("missing the string field 'op'");
  const std::string type = op["op"].get<std::string>();
  const auto spec_it = op_specs().find(type);
  if (spec_it == op_specs().end()) ctx.fail("unknown op type '{}'", type);
  const OpSpec& spec = spec_it->second;
  ctx.type = op_type_name(spec.type);

  for (auto it = op.begin(); it != op.end(); ++it) {
    const std::string& k = it.key();
    if (k != "op" && k != "inputs" && k != "output" && !spec.fields.count(k))
      ctx.fail("unknown field '{}'", k);
  }

  GraphOp g;
  g.type = spec.type;
  if (!op.contains("inputs") || !op["inputs"].is_array()) ctx.fail("missing the array 'inputs'");
  for (const json& in : op["inputs"]) {
    if (!in.is_string() || in.get<std::string>().empty())
      ctx.fail("'inputs' must hold tensor names, got {}", json_excerpt(op["inputs"]));
    g.inputs.push_back(in.get<std::string>());
  }
  const int n_in = static_cast<int>(g.inputs.size());
  if (n_in < spec.min_inputs || n_in > spec.max_inputs) {
    if (spec.min_inputs == spec.max_inputs)
      ctx.fail("takes {} input(s), got {}", spec.min_inputs, n_in);
    ctx.fail("takes {} to {} inputs, got {}", spec.min_inputs, spec.max_inputs, n_in);
  }
  g.output = string_field(op, "output", ctx);

  switch (g.type) {
    case OpType::conv2d:
    case OpType::depthwise_conv2d:
      g.weight = string_field(op, "weight", ctx);
      if (op.contains("bias")) g.bias = string_field(op, "bias", ctx);
      std::tie(g.stride_h, g.stride_w) = int_pair(op, "stride", 1, kMaxGraphStride, ctx);
      std::tie(g.dilation_h, g.dilation_w) = int_pair(op, "dilation", 1, kMaxGraphDilation, ctx);
      g.groups =
          op.contains("groups") ? positive_int(op["groups"], ctx, "groups", kMaxGraphChannels) : 0;
      g.out_channels = op.contains("out_channels") ? positive_int(op["out_channels"], ctx,
                                                                  "out_channels", kMaxGraphChannels)
                                                   : 0;
      g.kernel_h = g.kernel_w = 0;  // from the weight, in check_weights
      parse_padding(op, g, ctx);
      g.act = parse_act(op, ctx);
      break;
    case OpType::fully_connected:
      g.weight = string_field(op, "weight", ctx);
      if (op.contains("bias")) g.bias = string_field(op, "bias", ctx);
      g.out_channels = op.contains("out_channels") ? positive_int(op["out_channels"], ctx,
                                                                  "out_channels", kMaxGraphChannels)
                                                   : 0;
      g.act = parse_act(op, ctx);
      break;
    case OpType::add:
      g.act = parse_act(op, ctx);
      break;
    case OpType::max_pool2d:
    case OpType::avg_pool2d: {
      if (!op.contains("kernel")) {
        if (g.type == OpType::max_pool2d) ctx.fail("missing 'kernel'");
        // Global average pool: a stride or padding would be meaningless, so refuse them.
        for (const char* f : {"stride", "padding", "pads", "count_include_pad"})
          if (op.contains(f)) ctx.fail("'{}' given without 'kernel' (global pooling)", f);
        g.global_pool = true;
        break;
      }
      std::tie(g.kernel_h, g.kernel_w) = int_pair(op, "kernel", 1, kMaxGraphKernel, ctx);
      // A window pool without a stride is almost certainly a converter bug (TF and PyTorch
      // disagree on the default), so it must be spelled out.
      if (!op.contains("stride")) ctx.fail("missing 'stride'");
      std::tie(g.stride_h, g.stride_w) = int_pair(op, "stride", 1, kMaxGraphStride, ctx);
      parse_padding(op, g, ctx);
      if (g.pad_mode == PadMode::explicit_pads &&
          (g.pads.top >= g.kernel_h || g.pads.bottom >= g.kernel_h || g.pads.left >= g.kernel_w ||
           g.pads.right >= g.kernel_w))
        // Else a window could lie wholly in the padding: a max of nothing, an average of 0/0.
        ctx.fail("pads [{}, {}, {}, {}] must be smaller than the kernel {}x{}", g.pads.top,
                 g.pads.bottom, g.pads.left, g.pads.right, g.kernel_h, g.kernel_w);
      if (op.contains("count_include_pad")) {
        if (!op["count_include_pad"].is_boolean())
          ctx.fail("'count_include_pad' must be true or false");
        g.count_include_pad = op["count_include_pad"].get<bool>();
      }
      break;
    }
    case OpType::relu:
    case OpType::relu6:
    case OpType::reshape:
    case OpType::softmax:
      break;
  }
  return g;
}

}  // namespace

Graph parse_graph(std::string_view text, std::string_view file) {
  const json j = parse_json_bounded(text, std::string(file));
  CHECK_INPUT(j.is_object(), "{}: a graph must be a JSON object", file);
  static const std::set<std::string> kTop = {"format", "version", "name",        "source",
                                             "input",  "output",  "input_shape", "preprocess",
                                             "taps",   "ops"};
  for (auto it = j.begin(); it != j.end(); ++it)
    CHECK_INPUT(kTop.count(it.key()), "{}: unknown top-level field '{}'", file, it.key());

  Graph g;
  g.file = std::string(file);
  if (j.contains("format"))
    CHECK_INPUT(j["format"] == "mirad-graph", "{}: format {} is not \"mirad-graph\"", file,
                json_excerpt(j["format"]));
  if (j.contains("version"))
    CHECK_INPUT(j["version"] == 1, "{}: version {} is not supported (this reader knows 1)", file,
                json_excerpt(j["version"]));
  auto opt_string = [&](const char* key, std::string& out) {
    if (!j.contains(key)) return;
    CHECK_INPUT(j[key].is_string(), "{}: '{}' must be a string", file, key);
    out = j[key].get<std::string>();
  };
  opt_string("name", g.model_name);
  opt_string("source", g.source);
  for (const char* key : {"input", "output"})
    CHECK_INPUT(j.contains(key) && j[key].is_string() && !j[key].get<std::string>().empty(),
                "{}: missing the tensor name '{}'", file, key);
  g.input = j["input"].get<std::string>();
  g.output = j["output"].get<std::string>();

  if (j.contains("input_shape")) {
    const json& s = j["input_shape"];
    CHECK_INPUT(s.is_array() && s.size() == 3 &&
                    std::all_of(s.begin(), s.end(),
                                [](const json& v) { return v.is_number_integer() && v > 0; }),
                "{}: input_shape must be [C, H, W] of positive integers, got {}", file,
                json_excerpt(s));
    g.input_shape =
        std::array<int64_t, 3>{s[0].get<int64_t>(), s[1].get<int64_t>(), s[2].get<int64_t>()};
    CHECK_INPUT((*g.input_shape)[0] <= kMaxGraphChannels &&
                    (*g.input_shape)[1] <= kMaxGraphSpatial &&
                    (*g.input_shape)[2] <= kMaxGraphSpatial,
                "{}: input_shape {} is above the limits ({} channels, {} pixels a side)", file,
                json_excerpt(s), kMaxGraphChannels, kMaxGraphSpatial);
    g.input_channels = (*g.input_shape)[0];
  }

  if (j.contains("preprocess")) {
    const json& p = j["preprocess"];
    CHECK_INPUT(p.is_object(), "{}: preprocess must be an object", file);
    GraphPreprocess pre;
    for (auto it = p.begin(); it != p.end(); ++it) {
      const std::string& k = it.key();
      if (k == "mean" || k == "std") {
        const json& v = it.value();
        CHECK_INPUT(
            v.is_array() && v.size() == 3 &&
                std::all_of(v.begin(), v.end(), [](const json& x) { return x.is_number(); }),
            "{}: preprocess.{} must be 3 numbers, got {}", file, k, json_excerpt(v));
        std::array<double, 3> a{v[0].get<double>(), v[1].get<double>(), v[2].get<double>()};
        if (k == "std")
          CHECK_INPUT(a[0] > 0 && a[1] > 0 && a[2] > 0, "{}: preprocess.std must be positive",
                      file);
        (k == "mean" ? pre.mean : pre.std) = a;
      } else if (k == "resize" || k == "crop") {
        CHECK_INPUT(
            it.value().is_number_integer() && it.value() > 0 && it.value() <= kMaxGraphSpatial,
            "{}: preprocess.{} must be a positive integer up to {}", file, k, kMaxGraphSpatial);
        (k == "resize" ? pre.resize : pre.crop) = it.value().get<int64_t>();
      } else {
        throw InputError(fmt::format(
            "{}: unknown preprocess field '{}' (expected mean, std, resize, crop)", file, k));
      }
    }
    g.preprocess = pre;
  }

  CHECK_INPUT(j.contains("ops") && j["ops"].is_array() && !j["ops"].empty(),
              "{}: missing a non-empty array 'ops'", file);
  CHECK_INPUT(j["ops"].size() <= static_cast<std::size_t>(kMaxGraphOps),
              "{}: {} ops, above the limit of {}", file, j["ops"].size(), kMaxGraphOps);
  std::map<std::string, int> producer = {{g.input, -1}};
  const json& ops = j["ops"];
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const int index = static_cast<int>(i);
    GraphOp op = parse_op(ops[i], index, file);
    OpContext ctx{file, index, op_type_name(op.type)};
    const std::size_t n_data = op.type == OpType::reshape ? 1 : op.inputs.size();
    for (std::size_t k = 0; k < n_data; ++k) {
      auto it = producer.find(op.inputs[k]);
      if (it == producer.end())
        ctx.fail("input '{}' is not the graph input nor the output of an earlier op", op.inputs[k]);
      op.input_ops.push_back(it->second);
    }
    if (!producer.emplace(op.output, index).second)
      ctx.fail("output '{}' is already produced by {}", op.output,
               producer[op.output] < 0 ? std::string("the graph input")
                                       : fmt::format("op {}", producer[op.output]));
    g.ops.push_back(std::move(op));
  }
  auto out_it = producer.find(g.output);
  CHECK_INPUT(out_it != producer.end() && out_it->second >= 0,
              "{}: output '{}' is not produced by any op", file, g.output);
  g.output_op = out_it->second;

  if (j.contains("taps")) {
    CHECK_INPUT(j["taps"].is_object(), "{}: taps must map names to op indices", file);
    for (auto it = j["taps"].begin(); it != j["taps"].end(); ++it) {
      const json& v = it.value();
      CHECK_INPUT(v.is_number_integer() && v >= 0 && v < static_cast<int64_t>(g.ops.size()),
                  "{}: tap '{}' = {} is not an op index (0..{})", file, it.key(), json_excerpt(v),
                  g.ops.size() - 1);
      g.taps[it.key()] = v.get<int>();
    }
  }
  return g;
}

Graph load_graph(const fs::path& path) {
  return parse_graph(read_file_text(path, kMaxGraphFileBytes), path.string());
}

void check_weights(Graph& g, const SafeTensors& weights) {
  // Channels of each op's output (0 = not known until the input shape is), and of the input.
  std::vector<int64_t> channels(g.ops.size(), 0);
  std::vector<int> rank(g.ops.size(), 4);
  for (std::size_t i = 0; i < g.ops.size(); ++i) {
    GraphOp& op = g.ops[i];
    OpContext ctx{g.file, static_cast<int>(i), op_type_name(op.type)};
    const int src = op.input_ops.empty() ? -1 : op.input_ops[0];
    const int64_t c_in = src < 0 ? g.input_channels : channels[src];
    const int r_in = src < 0 ? 4 : rank[src];
    auto tensor = [&](const std::string& name) -> const HostTensor& {
      if (!weights.contains(name)) ctx.fail("weights {} have no tensor '{}'", weights.name(), name);
      return weights.at(name);
    };
    auto check_bias = [&](int64_t out) {
      if (op.bias.empty()) return;
      const HostTensor& b = tensor(op.bias);
      if (b.shape != std::vector<int64_t>{out})
        ctx.fail("bias '{}' in {} has shape [{}], expected [{}]", op.bias, weights.name(),
                 fmt::join(b.shape, ", "), out);
    };
    auto check_out_channels = [&](int64_t out) {
      if (op.out_channels && op.out_channels != out)
        ctx.fail("out_channels = {} but weight '{}' in {} has {} output channels", op.out_channels,
                 op.weight, weights.name(), out);
      op.out_channels = out;
    };

    switch (op.type) {
      case OpType::conv2d:
      case OpType::depthwise_conv2d: {
        if (r_in != 4) ctx.fail("needs an NCHW input, got a flattened one");
        const HostTensor& w = tensor(op.weight);
        if (w.shape.size() != 4)
          ctx.fail("weight '{}' in {} has shape [{}], expected [O, I/groups, kh, kw]", op.weight,
                   weights.name(), fmt::join(w.shape, ", "));
        const int64_t O = w.shape[0], I_g = w.shape[1];
        if (O < 1 || I_g < 1 || w.shape[2] < 1 || w.shape[3] < 1)
          ctx.fail("weight '{}' in {} has an empty shape [{}]", op.weight, weights.name(),
                   fmt::join(w.shape, ", "));
        if (O > kMaxGraphChannels || I_g > kMaxGraphChannels || w.shape[2] > kMaxGraphKernel ||
            w.shape[3] > kMaxGraphKernel)
          ctx.fail("weight '{}' in {} has shape [{}], above the limits ({} channels, kernel {})",
                   op.weight, weights.name(), fmt::join(w.shape, ", "), kMaxGraphChannels,
                   kMaxGraphKernel);
        // The dilated extent sets SAME padding; bounded, it cannot ask for huge pads either.
        if ((w.shape[2] - 1) * op.dilation_h + 1 > kMaxGraphKernel ||
            (w.shape[3] - 1) * op.dilation_w + 1 > kMaxGraphKernel)
          ctx.fail("kernel {}x{} dilated by {}x{} spans more than {} pixels", w.shape[2],
                   w.shape[3], op.dilation_h, op.dilation_w, kMaxGraphKernel);
        int64_t cin = c_in;
        if (op.type == OpType::depthwise_conv2d) {
          if (I_g != 1)
            ctx.fail("weight '{}' in {} has shape [{}], expected [C*multiplier, 1, kh, kw]",
                     op.weight, weights.name(), fmt::join(w.shape, ", "));
          if (cin == 0) cin = op.groups;  // the input's channels, if "groups" says them
          if (cin == 0)
            ctx.fail(
                "reads the graph input, whose channels are unknown: give 'groups' or the "
                "graph's input_shape");
          if (op.groups && op.groups != cin)
            ctx.fail("groups = {} but the input has {} channels (depthwise: groups = channels)",
                     op.groups, cin);
          op.groups = cin;
          if (O % cin != 0)
            ctx.fail(
                "weight '{}' in {} has {} output channels, not a multiple of the {} input "
                "channels",
                op.weight, weights.name(), O, cin);
        } else {
          if (op.groups == 0) op.groups = 1;
          if (cin == 0) cin = I_g * op.groups;
          if (I_g * op.groups != cin)
            ctx.fail(
                "weight '{}' in {} has shape [{}]: {} input channels per group x {} groups "
                "!= {} input channels",
                op.weight, weights.name(), fmt::join(w.shape, ", "), I_g, op.groups, cin);
          if (O % op.groups != 0)
            ctx.fail("weight '{}' in {}: {} output channels do not split into {} groups", op.weight,
                     weights.name(), O, op.groups);
        }
        if (src < 0 && g.input_channels == 0) g.input_channels = cin;
        op.kernel_h = w.shape[2];
        op.kernel_w = w.shape[3];
        op.in_channels = cin;
        check_out_channels(O);
        check_bias(O);
        channels[i] = O;
        break;
      }
      case OpType::fully_connected: {
        const HostTensor& w = tensor(op.weight);
        if (w.shape.size() != 2 || w.shape[0] < 1 || w.shape[1] < 1)
          ctx.fail("weight '{}' in {} has shape [{}], expected [O, I]", op.weight, weights.name(),
                   fmt::join(w.shape, ", "));
        const int64_t O = w.shape[0], K = w.shape[1];
        if (O > kMaxGraphChannels || K > kMaxGraphTensorElements)
          ctx.fail("weight '{}' in {} has shape [{}], above the limits ({} outputs, {} inputs)",
                   op.weight, weights.name(), fmt::join(w.shape, ", "), kMaxGraphChannels,
                   kMaxGraphTensorElements);
        // A flattened input's size is known now; an NCHW one's only with its spatial size.
        if (c_in && r_in == 2 && c_in != K)
          ctx.fail("weight '{}' in {} takes {} inputs, but the input has {}", op.weight,
                   weights.name(), K, c_in);
        if (c_in && r_in == 4 && K % c_in != 0)
          ctx.fail("weight '{}' in {} takes {} inputs, not a multiple of the input's {} channels",
                   op.weight, weights.name(), K, c_in);
        check_out_channels(O);
        check_bias(O);
        op.in_channels = K;
        channels[i] = O;
        rank[i] = 2;
        break;
      }
      case OpType::add: {
        const int src2 = op.input_ops[1];
        const int64_t c2 = src2 < 0 ? g.input_channels : channels[src2];
        const int r2 = src2 < 0 ? 4 : rank[src2];
        if (c_in && c2 && (c_in != c2 || r_in != r2))
          ctx.fail("adds tensors of {} and {} channels", c_in, c2);
        channels[i] = c_in ? c_in : c2;
        rank[i] = r_in;
        break;
      }
      case OpType::max_pool2d:
      case OpType::avg_pool2d:
        if (r_in != 4) ctx.fail("needs an NCHW input, got a flattened one");
        channels[i] = c_in;
        break;
      case OpType::reshape:
        // [N, C*H*W]: the size is known only with the input's spatial size.
        channels[i] = r_in == 2 ? c_in : 0;
        rank[i] = 2;
        break;
      case OpType::relu:
      case OpType::relu6:
      case OpType::softmax:
        channels[i] = c_in;
        rank[i] = r_in;
        break;
    }
  }
  if (g.input_shape) {
    const auto& s = *g.input_shape;
    infer_shapes(g, TensorShape{1, s[0], s[1], s[2], 4}, static_cast<int>(g.ops.size()) - 1);
  }
}

Pads same_pads(int64_t h, int64_t w, int64_t kh_eff, int64_t kw_eff, int64_t sh, int64_t sw) {
  auto one = [](int64_t in, int64_t k, int64_t s) {
    const int64_t out = (in + s - 1) / s;
    const int64_t total = std::max<int64_t>((out - 1) * s + k - in, 0);
    return std::pair<int64_t, int64_t>{total / 2, total - total / 2};
  };
  const auto [t, b] = one(h, kh_eff, sh);
  const auto [l, r] = one(w, kw_eff, sw);
  return {t, b, l, r};
}

Pads resolve_pads(const GraphOp& op, int64_t h, int64_t w) {
  switch (op.pad_mode) {
    case PadMode::valid:
      return {};
    case PadMode::explicit_pads:
      return op.pads;
    case PadMode::same:
      return same_pads(h, w, (op.kernel_h - 1) * op.dilation_h + 1,
                       (op.kernel_w - 1) * op.dilation_w + 1, op.stride_h, op.stride_w);
  }
  return {};
}

std::vector<TensorShape> infer_shapes(const Graph& g, const TensorShape& input, int last_op) {
  CHECK_THROW(last_op >= 0 && last_op < static_cast<int>(g.ops.size()));
  CHECK_INPUT(input.rank == 4 && input.n > 0 && input.c > 0 && input.h > 0 && input.w > 0,
              "{}: input shape {} must be a non-empty [N, C, H, W]", g.file, input.str());
  CHECK_INPUT(g.input_channels == 0 || input.c == g.input_channels,
              "{}: input has {} channels, the graph takes {}", g.file, input.c, g.input_channels);
  CHECK_INPUT(
      input.c <= kMaxGraphChannels && input.h <= kMaxGraphSpatial && input.w <= kMaxGraphSpatial,
      "{}: input shape {} is above the limits ({} channels, {} pixels a side)", g.file, input.str(),
      kMaxGraphChannels, kMaxGraphSpatial);
  std::vector<TensorShape> shapes(last_op + 1);
  for (int i = 0; i <= last_op; ++i) {
    const GraphOp& op = g.ops[i];
    OpContext ctx{g.file, i, op_type_name(op.type)};
    auto in_shape = [&](int k) { return op.input_ops[k] < 0 ? input : shapes[op.input_ops[k]]; };
    const TensorShape in = in_shape(0);
    TensorShape out = in;
    switch (op.type) {
      case OpType::conv2d:
      case OpType::depthwise_conv2d:
      case OpType::max_pool2d:
      case OpType::avg_pool2d: {
        if (in.rank != 4) ctx.fail("needs an NCHW input, got {}", in.str());
        if (op.global_pool) {
          out.h = out.w = 1;
          break;
        }
        CHECK_THROW(op.kernel_h > 0);  // check_weights has run
        const bool conv = op.type == OpType::conv2d || op.type == OpType::depthwise_conv2d;
        if (conv) {
          CHECK_THROW(op.in_channels > 0);
          if (in.c != op.in_channels)
            ctx.fail("input {} has {} channels, the weight takes {}", in.str(), in.c,
                     op.in_channels);
          out.c = op.out_channels;
        }
        const int64_t kh = (op.kernel_h - 1) * op.dilation_h + 1;
        const int64_t kw = (op.kernel_w - 1) * op.dilation_w + 1;
        const Pads p = resolve_pads(op, in.h, in.w);
        const int64_t ph = in.h + p.top + p.bottom, pw = in.w + p.left + p.right;
        if (ph < kh || pw < kw)
          ctx.fail("input {} (padded to {}x{}) is smaller than the {}x{} kernel", in.str(), ph, pw,
                   kh, kw);
        out.h = (ph - kh) / op.stride_h + 1;
        out.w = (pw - kw) / op.stride_w + 1;
        break;
      }
      case OpType::add: {
        const TensorShape b = in_shape(1);
        if (!(b == in)) ctx.fail("adds tensors of shapes {} and {}", in.str(), b.str());
        break;
      }
      case OpType::fully_connected: {
        const int64_t k = in.c * in.h * in.w;
        CHECK_THROW(op.in_channels > 0);
        if (k != op.in_channels)
          ctx.fail("input {} flattens to {} values, the weight takes {}", in.str(), k,
                   op.in_channels);
        out = TensorShape{in.n, op.out_channels, 1, 1, 2};
        break;
      }
      case OpType::reshape:
        out = TensorShape{in.n, in.c * in.h * in.w, 1, 1, 2};
        break;
      case OpType::relu:
      case OpType::relu6:
      case OpType::softmax:
        break;
    }
    // Checked per image, before any plan or arena is sized from these shapes: explicit pads
    // can grow a map op after op.
    if (out.h > kMaxGraphSpatial || out.w > kMaxGraphSpatial ||
        out.c * out.h * out.w > kMaxGraphTensorElements)
      ctx.fail("output {} is above the limits ({} pixels a side, {} values per image)", out.str(),
               kMaxGraphSpatial, kMaxGraphTensorElements);
    shapes[i] = out;
  }
  return shapes;
}

}  // namespace mirad
