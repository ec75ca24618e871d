// Graph JSON parsing and load-time checks: every malformed graph or weight mismatch is an
// InputError that names the op index (and field or tensor); SAME padding follows TensorFlow.
// Suite names start with "backbone" so that ctest -R backbone selects them.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "core/error.h"
#include "engine/backbone/backbone_graph.h"
#include "engine/io/safetensors.h"

namespace mirad {
namespace {

// A valid two-op graph; cases below break one thing each.
const char* kGood = R"({"input": "x", "output": "z", "ops": [
  {"op": "CONV_2D", "inputs": ["x"], "output": "y", "weight": "w", "bias": "b", "stride": 2,
   "padding": "SAME", "act": "relu6", "groups": 1, "out_channels": 4},
  {"op": "DEPTHWISE_CONV_2D", "inputs": ["y"], "output": "z", "weight": "dw", "stride": 1,
   "padding": "VALID", "groups": 4}]})";

SafeTensors good_weights() {
  std::map<std::string, HostTensor> t;
  t["w"] = {{4, 3, 3, 3}, std::vector<float>(108, 0.1f)};
  t["b"] = {{4}, std::vector<float>(4, 0.f)};
  t["dw"] = {{4, 1, 3, 3}, std::vector<float>(36, 0.1f)};
  return SafeTensors("w.safetensors", t, {});
}

std::string replace(std::string s, const std::string& from, const std::string& to) {
  const auto at = s.find(from);
  EXPECT_NE(at, std::string::npos) << "test bug: '" << from << "' not in the graph";
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return s;
}

// The InputError from parsing and checking `json` against `weights`; "" if none.
std::string load_error(const std::string& json, const SafeTensors& weights = good_weights()) {
  try {
    Graph g = parse_graph(json, "g.json");
    check_weights(g, weights);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(backbone_graph, GoodGraphParsesWithWeightsFilledIn) {
  Graph g = parse_graph(kGood, "g.json");
  check_weights(g, good_weights());
  ASSERT_EQ(g.ops.size(), 2u);
  EXPECT_EQ(g.output_op, 1);
  EXPECT_EQ(g.input_channels, 3);
  EXPECT_EQ(g.ops[0].kernel_h, 3);
  EXPECT_EQ(g.ops[0].pad_mode, PadMode::same);
  EXPECT_EQ(g.ops[0].act, Activation::relu6);
  EXPECT_EQ(g.ops[1].groups, 4);
  EXPECT_EQ(g.ops[1].input_ops, std::vector<int>{0});
  const auto shapes = infer_shapes(g, TensorShape{2, 3, 15, 10, 4}, 1);
  EXPECT_EQ(shapes[0], (TensorShape{2, 4, 8, 5, 4}));
  EXPECT_EQ(shapes[1], (TensorShape{2, 4, 6, 3, 4}));
}

TEST(backbone_graph, OptionalTopLevelFields) {
  const std::string json =
      replace(kGood, R"({"input": "x",)",
              R"({"format": "mirad-graph", "version": 1, "name": "tiny", "source": "test",
          "input_shape": [3, 16, 16], "taps": {"stride2": 0, "out": 1},
          "preprocess": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "resize": 18, "crop": 16},
          "input": "x",)");
  Graph g = parse_graph(json, "g.json");
  check_weights(g, good_weights());
  EXPECT_EQ(g.model_name, "tiny");
  EXPECT_EQ(g.taps.at("stride2"), 0);
  ASSERT_TRUE(g.preprocess && g.preprocess->mean);
  EXPECT_EQ(g.preprocess->crop, 16);
}

TEST(backbone_graph, SamePaddingFollowsTensorFlow) {
  // total = max((ceil(in/s) - 1) * s + k - in, 0); floor(total/2) before, the rest after.
  EXPECT_EQ(same_pads(224, 224, 3, 3, 2, 2).top, 0);  // total 1: all after
  EXPECT_EQ(same_pads(224, 224, 3, 3, 2, 2).bottom, 1);
  EXPECT_EQ(same_pads(225, 225, 3, 3, 2, 2).top, 1);  // total 2: symmetric
  EXPECT_EQ(same_pads(225, 225, 3, 3, 2, 2).bottom, 1);
  EXPECT_EQ(same_pads(7, 7, 3, 3, 1, 1).top, 1);
  EXPECT_EQ(same_pads(10, 10, 5, 5, 2, 2).top, 1);  // total 3
  EXPECT_EQ(same_pads(10, 10, 5, 5, 2, 2).bottom, 2);
  EXPECT_EQ(same_pads(5, 5, 1, 1, 2, 2).bottom, 0);  // 1x1 never pads
  EXPECT_EQ(same_pads(6, 9, 2, 3, 4, 4).left, 1);    // stride > kernel: total 2 on the width
}

struct BadGraph {
  const char* name;
  std::string json;
  const char* must_mention;
};
void PrintTo(const BadGraph& b, std::ostream* os) {
  *os << b.name;
}

std::vector<BadGraph> bad_graphs() {
  const std::string g = kGood;
  return {
      {"not_json", "{\"input\": ", "not valid JSON"},
      {"unknown_top_level", replace(g, R"("input": "x")", R"("inputs": "x", "input": "x")"),
       "unknown top-level field 'inputs'"},
      {"bad_version", replace(g, R"("input": "x")", R"("version": 2, "input": "x")"), "version 2"},
      {"no_ops", R"({"input": "x", "output": "y", "ops": []})", "'ops'"},
      {"unknown_op_type", replace(g, "DEPTHWISE_CONV_2D", "DEPTHWISE_CONV_3D"),
       "op 1: unknown op type 'DEPTHWISE_CONV_3D'"},
      {"unknown_op_field", replace(g, R"("stride": 1,)", R"("strides": 1,)"),
       "op 1 (DEPTHWISE_CONV_2D): unknown field 'strides'"},
      {"field_of_other_op", replace(g, R"("stride": 1,)", R"("stride": 1, "kernel": 3,)"),
       "op 1 (DEPTHWISE_CONV_2D): unknown field 'kernel'"},
      {"missing_weight", replace(g, R"("weight": "dw",)", ""),
       "op 1 (DEPTHWISE_CONV_2D): missing 'weight'"},
      {"zero_stride", replace(g, R"("stride": 2)", R"("stride": 0)"), "op 0 (CONV_2D): 'stride'"},
      {"stride_triple", replace(g, R"("stride": 2)", R"("stride": [1, 2, 3])"),
       "op 0 (CONV_2D): 'stride'"},
      {"padding_and_pads",
       replace(g, R"("padding": "VALID")", R"("padding": "VALID", "pads": [0, 0, 0, 0])"),
       "op 1 (DEPTHWISE_CONV_2D): give either"},
      {"negative_pads", replace(g, R"("padding": "VALID")", R"("pads": [0, -1, 0, 0])"),
       "non-negative"},
      {"unknown_padding", replace(g, R"("padding": "VALID")", R"("padding": "same")"),
       "unknown padding \"same\""},
      {"unknown_act", replace(g, R"("act": "relu6")", R"("act": "gelu")"),
       "op 0 (CONV_2D): unknown act \"gelu\""},
      {"input_before_produced", replace(g, R"("inputs": ["x"])", R"("inputs": ["y"])"),
       "op 0 (CONV_2D): input 'y' is not the graph input nor the output of an earlier op"},
      {"output_twice", replace(g, R"("output": "z", "weight")", R"("output": "y", "weight")"),
       "op 1 (DEPTHWISE_CONV_2D): output 'y' is already produced by op 0"},
      {"output_not_produced", replace(g, R"("output": "z", "ops")", R"("output": "q", "ops")"),
       "output 'q' is not produced"},
      {"too_many_inputs", replace(g, R"("inputs": ["y"])", R"("inputs": ["y", "x"])"),
       "op 1 (DEPTHWISE_CONV_2D): takes 1 input(s), got 2"},
      {"tap_out_of_range", replace(g, R"("input": "x")", R"("taps": {"deep": 5}, "input": "x")"),
       "tap 'deep' = 5"},
      {"pool_without_stride",
       R"({"input": "x", "output": "y", "ops": [{"op": "MAX_POOL_2D", "inputs": ["x"], "output": "y", "kernel": 3}]})",
       "op 0 (MAX_POOL_2D): missing 'stride'"},
      {"pool_pads_reach_kernel",
       R"({"input": "x", "output": "y", "ops": [{"op": "MAX_POOL_2D", "inputs": ["x"], "output": "y", "kernel": 2, "stride": 1, "pads": [2, 0, 0, 0]}]})",
       "must be smaller than the kernel"},
      {"global_pool_with_stride",
       R"({"input": "x", "output": "y", "ops": [{"op": "AVERAGE_POOL_2D", "inputs": ["x"], "output": "y", "stride": 2}]})",
       "'stride' given without 'kernel'"},
      {"add_one_input",
       R"({"input": "x", "output": "y", "ops": [{"op": "ADD", "inputs": ["x"], "output": "y"}]})",
       "op 0 (ADD): takes 2 input(s), got 1"},
      // Load-time checks against the weights.
      {"missing_tensor", replace(g, R"("weight": "dw")", R"("weight": "dw2")"),
       "op 1 (DEPTHWISE_CONV_2D): weights w.safetensors have no tensor 'dw2'"},
      {"out_channels_mismatch", replace(g, R"("out_channels": 4)", R"("out_channels": 5)"),
       "op 0 (CONV_2D): out_channels = 5 but weight 'w'"},
      {"groups_mismatch", replace(g, R"("groups": 4)", R"("groups": 2)"),
       "op 1 (DEPTHWISE_CONV_2D): groups = 2 but the input has 4 channels"},
      {"conv_groups_do_not_divide",
       replace(replace(g, R"("groups": 1)", R"("groups": 2)"), R"("input": "x")",
               R"("input_shape": [3, 8, 8], "input": "x")"),
       "op 0 (CONV_2D): weight 'w' in w.safetensors has shape [4, 3, 3, 3]"},
      {"bias_wrong_shape", replace(g, R"("bias": "b")", R"("bias": "w")"),
       "op 0 (CONV_2D): bias 'w' in w.safetensors has shape [4, 3, 3, 3], expected [4]"},
      {"weight_wrong_rank", replace(g, R"("weight": "w")", R"("weight": "b")"),
       "op 0 (CONV_2D): weight 'b' in w.safetensors has shape [4], expected [O, I/groups, kh, kw]"},
      {"channel_chain_mismatch", replace(g, R"("weight": "dw")", R"("weight": "w")"),
       "op 1 (DEPTHWISE_CONV_2D): weight 'w' in w.safetensors has shape [4, 3, 3, 3], expected "
       "[C*multiplier, 1, kh, kw]"},
      {"depthwise_on_input_without_groups",
       R"({"input": "x", "output": "y", "ops": [{"op": "DEPTHWISE_CONV_2D", "inputs": ["x"], "output": "y", "weight": "dw"}]})",
       "give 'groups' or the graph's input_shape"},
      {"input_shape_too_small",
       replace(g, R"("input": "x")", R"("input_shape": [3, 2, 2], "input": "x")"),
       "op 1 (DEPTHWISE_CONV_2D): input [1, 4, 1, 1] (padded to 1x1) is smaller than the 3x3 "
       "kernel"},
  };
}

class backbone_graph_errors : public ::testing::TestWithParam<BadGraph> {};

TEST_P(backbone_graph_errors, NameOpAndProblem) {
  const BadGraph& b = GetParam();
  const std::string msg = load_error(b.json);
  ASSERT_FALSE(msg.empty()) << b.name << " loaded without error";
  EXPECT_NE(msg.find(b.must_mention), std::string::npos) << "message: " << msg;
  EXPECT_EQ(msg.rfind("g.json", 0), 0u) << "message should start with the file: " << msg;
}

INSTANTIATE_TEST_SUITE_P(Cases, backbone_graph_errors, ::testing::ValuesIn(bad_graphs()),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(backbone_graph, ForwardTimeShapeErrorsNameTheOp) {
  Graph g = parse_graph(kGood, "g.json");
  check_weights(g, good_weights());
  auto error = [&](TensorShape s) {
    try {
      infer_shapes(g, s, 1);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error({1, 4, 9, 9, 4}).find("input has 4 channels, the graph takes 3"),
            std::string::npos);
  EXPECT_NE(error({1, 3, 4, 4, 4}).find("op 1 (DEPTHWISE_CONV_2D)"), std::string::npos);
  EXPECT_EQ(error({1, 3, 5, 5, 4}), "");  // 3x3 after the stride-2 conv: just enough

  // ADD of mismatched shapes.
  Graph a = parse_graph(R"({"input": "x", "output": "s", "ops": [
    {"op": "MAX_POOL_2D", "inputs": ["x"], "output": "p", "kernel": 2, "stride": 2},
    {"op": "ADD", "inputs": ["p", "x"], "output": "s"}]})",
                        "a.json");
  check_weights(a, SafeTensors());
  try {
    infer_shapes(a, {1, 3, 2, 2, 4}, 1);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "a.json: op 1 (ADD): adds tensors of shapes [1, 3, 1, 1] and [1, 3, 2, 2]"),
              std::string::npos)
        << e.what();
  }
  // Up to op 0 only, any size works: later ops are not inferred.
  EXPECT_NO_THROW(infer_shapes(a, {1, 3, 2, 3, 4}, 0));

  // An FC whose flattened input has the wrong size.
  Graph h = parse_graph(R"({"input": "x", "output": "f", "ops": [
    {"op": "RESHAPE", "inputs": ["x"], "output": "r"},
    {"op": "FULLY_CONNECTED", "inputs": ["r"], "output": "f", "weight": "fw"}]})",
                        "h.json");
  std::map<std::string, HostTensor> t;
  t["fw"] = {{2, 12}, std::vector<float>(24)};
  check_weights(h, SafeTensors("fc.safetensors", t, {}));
  try {
    infer_shapes(h, {1, 3, 2, 3, 4}, 1);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(
        std::string(e.what()).find(
            "op 1 (FULLY_CONNECTED): input [1, 18] flattens to 18 values, the weight takes 12"),
        std::string::npos)
        << e.what();
  }
  EXPECT_EQ(infer_shapes(h, {1, 3, 2, 2, 4}, 1).at(1), (TensorShape{1, 2, 1, 1, 2}));
}

}  // namespace
}  // namespace mirad
