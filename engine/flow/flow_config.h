// Hyperparameters of the conditional affine-coupling flow and the layout of its parameters
// inside one contiguous buffer.
#pragma once

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

namespace mirad {

struct FlowConfig {
  int64_t dim = 0;         // D: feature channels per position
  int64_t cond_dim = 64;   // C: positional-encoding channels (0 = unconditional)
  int64_t n_blocks = 8;    // K coupling blocks
  int64_t hidden = 0;      // subnet width; 0 means 2*D (CFlow's subnet_fc)
  double clamp = 1.9;      // a in s = a*tanh(s/a)
  uint64_t seed = 0;       // permutations and initial weights

  int64_t d1() const { return dim / 2; }          // pass-through half, conditions the subnet
  int64_t d2() const { return dim - dim / 2; }    // transformed half
  int64_t hidden_width() const { return hidden > 0 ? hidden : 2 * dim; }

  // Throws InputError on zero sizes or out-of-range values.
  void validate() const;
  nlohmann::json to_json() const;
  // Unknown keys are an error: a typo must not become a silent default.
  static FlowConfig from_json(const nlohmann::json& j);
};

// Offsets of one coupling block's parameters. W1 is H x (d1 + C) row-major: columns [0, d1)
// act on x1 and [d1, d1 + C) on the condition, so one GEMM pair reads [x1, c] without a concat.
struct BlockOffsets {
  int64_t w1, b1, w2, b2;
};

struct FlowLayout {
  std::vector<BlockOffsets> blocks;
  int64_t log_scale = 0;  // ActNorm log-scale (D)
  int64_t bias = 0;       // ActNorm bias (D)
  int64_t n_params = 0;

  explicit FlowLayout(const FlowConfig& c);
};

}  // namespace mirad
