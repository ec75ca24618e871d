// The two op parameters that the backbone's graph description (engine/backbone/backbone_graph.h)
// hands to the kernels: the fused activation and the per-side padding. They live here, below the
// graph parser, so that kernels/ never includes the layer above it.
#pragma once

#include <cstdint>

namespace mirad {

enum class Activation { none, relu, relu6 };

// Zero (conv, average pool) or -inf (max pool) cells added around the input, per side.
struct Pads {
  int64_t top = 0, bottom = 0, left = 0, right = 0;
  bool symmetric() const { return top == bottom && left == right; }
  bool any() const { return top || bottom || left || right; }
};

}  // namespace mirad
