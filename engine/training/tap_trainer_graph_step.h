// TapTrainer::GraphStep, the state of captured training steps; private to the trainer's files.
#pragma once

#include <cstdint>
#include <vector>

#include "core/buffer.h"
#include "engine/training/cuda_graph.h"
#include "engine/training/patch_bank.h"
#include "engine/training/tap_trainer.h"

namespace mirad {

// What one captured step needs beyond the trainer's buffers: the graph, the host staging of the
// step's bank rows (pinned, so the graph's copy is a true async DMA), their device copy, one
// gathered batch per gather of the step, and per-step loss sums.
struct TapTrainer::GraphStep {
  StreamGraph graph;
  StreamEvent copied;      // the step's index copy has run: the staging may be refilled
  int64_t rows = 0;        // rows per drawn batch (fixed: a graph has fixed shapes)
  int64_t n_batches = 0;   // drawn batches: plain 1; MAML 2 per task
  bool batched = false;    // MAML with batched tasks: the supports of all tasks form one
                           // gathered batch, the queries another
  int64_t gathers = 0, gather_rows = 0;  // gathered batches and rows in each
  float alpha = 0;         // the inner step the graph was captured with
  PinnedBuffer<int64_t> idx_host;
  Buffer<int64_t> idx_dev;
  std::vector<PatchBatch> batches;
  Buffer<float> ones;      // for loss sums by dot products
  Buffer<double> losses;   // this step's loss sums (plain: 1; MAML: one per task)
};

}  // namespace mirad
