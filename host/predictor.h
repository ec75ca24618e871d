// A predictor that scores new images with a saved model: scores, decisions, and anomaly maps at
// each image's own resolution.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "core/device.h"
#include "engine/detector/detector_model.h"
#include "host/job_progress.h"

namespace mirad {

struct Features;

struct Prediction {
  std::filesystem::path path;
  double score = 0;
  bool anomalous = false;
  std::string error;       // set when the image could not be decoded (score NaN)
  int height = 0, width = 0;
  std::vector<float> map;  // height x width fused map, smoothed (when maps were asked for)
};

class Predictor {
 public:
  // backbone: a folder or cache name to use instead of the model's recorded one; either way
  // its weights must have the model's sha256.
  Predictor(DetectorModel model, Device device, int threads, const std::string& backbone = {});
  const DetectorModel& model() const { return m_model; }
  std::vector<Prediction> predict(const std::vector<std::filesystem::path>& images, bool maps,
                                  bool strict, const JobProgress& progress = {}) const;
  // Scores rows `rows` of features a job already has (their images `paths`, one per row), with
  // no backbone pass: `mirad clean` makes its evidence heatmaps from the training features. The
  // features must be this model's (same backbone, input size and taps: the job that trained it).
  std::vector<Prediction> predict_features(const Features& f, const std::vector<int64_t>& rows,
                                           const std::vector<std::filesystem::path>& paths,
                                           bool maps, const JobProgress& progress = {}) const;

 private:
  DetectorModel m_model;
  Device m_device;
  int m_threads;
  std::string m_backbone;
};

}  // namespace mirad
