// Detector model folders: JSON + safetensors, written through a temp folder and a rename.
#include "engine/detector/detector_model.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "engine/io/file_io.h"
#include "engine/io/json_fields.h"
#include "engine/io/json_io.h"
#include "engine/io/json_number.h"
#include "engine/detector/model_consistency.h"
#include "engine/io/output_dir.h"
#include "engine/io/safetensors.h"
#include "engine/io/sha256.h"

namespace mirad {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "mirad-detector";
constexpr uint64_t kMaxConfigBytes = uint64_t(256) << 20;

nlohmann::json scale_json(const RobustScale& s) { return {{"median", s.median}, {"iqr", s.iqr}}; }

RobustScale scale_from(const nlohmann::json& j, const std::string& where) {
  RobustScale s;
  JsonFields f(j, where, {"median", "iqr"});
  CHECK_INPUT(f.has("median") && f.has("iqr"), "{} needs median and iqr", where);
  f.number("median", s.median, -1e300, 1e300);
  f.number("iqr", s.iqr, 1e-300, 1e300);
  return s;
}

std::vector<double> numbers(const nlohmann::json& j, const std::string& where, size_t n) {
  CHECK_INPUT(j.is_array() && j.size() == n, "{} must be an array of {} numbers", where, n);
  std::vector<double> v;
  for (const auto& e : j) {
    CHECK_INPUT(e.is_number() && std::isfinite(e.get<double>()), "{} holds a non-number", where);
    v.push_back(e.get<double>());
  }
  return v;
}

nlohmann::json model_json(const DetectorModel& m, const std::string& flow_sha) {
  nlohmann::json taps = nlohmann::json::array();
  for (size_t t = 0; t < m.taps.size(); ++t) {
    const TapModel& tm = m.taps[t];
    taps.push_back({{"name", tm.name},
                    {"op", tm.op},
                    {"channels", tm.channels},
                    {"height", tm.height},
                    {"width", tm.width},
                    {"flow", tm.params.flow.to_json()},
                    {"norm", {{"mean", tm.norm.mean}, {"std", tm.norm.std}}},
                    {"score", scale_json(m.stats.taps.at(t))}});
  }
  nlohmann::json rejected = nlohmann::json::array();
  for (const auto& r : m.rejected)
    rejected.push_back({{"path", r.path},
                        {"round", r.round},
                        {"score", json_number(r.score)},
                        {"tau", json_number(r.tau)},
                        {"weight", r.weight}});
  const BackboneInfo& b = m.backbone;
  return {
      {"format", kFormat},
      {"schema_version", DetectorModel::kSchemaVersion},
      {"config", m.config.to_json()},
      {"backbone",
       {{"name", b.name},
        {"path", b.path},
        {"weights_sha256", b.weights_sha256},
        {"input_height", b.input_height},
        {"input_width", b.input_width},
        {"mean", b.mean},
        {"std", b.std},
        {"smooth", b.smooth}}},
      {"taps", taps},
      {"score",
       {{"top", scale_json(m.stats.top)},
        {"mean", scale_json(m.stats.mean)},
        {"map_lo", m.stats.map_lo},
        {"map_hi", m.stats.map_hi}}},
      {"threshold", {{"value", m.threshold}, {"detail", m.threshold_detail}}},
      {"retained", m.retained},
      {"rejected", rejected},
      {"training", m.training},
      {"flow_file", {{"name", "flow.safetensors"}, {"sha256", flow_sha}}},
  };
}

bool is_mirad_model(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec) || fs::is_symlink(dir, ec)) return false;
  try {
    const auto j = read_json_file(dir / "config.json", kMaxConfigBytes);
    return j.is_object() && j.contains("format") && j.at("format") == kFormat;
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace

std::vector<Grid> DetectorModel::grids() const {
  std::vector<Grid> g;
  for (const auto& t : taps) g.push_back({t.height, t.width});
  return g;
}

OutputKind model_output_kind() {
  return {"a mirad model folder", is_mirad_model, [](const fs::path& rel, bool is_dir) {
            return !is_dir && (rel == "config.json" || rel == "flow.safetensors");
          }};
}

void check_model_output(const fs::path& dir) {
  CHECK_INPUT(!dir.empty(), "model: empty output path");
  std::error_code ec;
  const fs::path target = fs::absolute(dir, ec);
  check_replaceable(target, model_output_kind(), "model:");
  const fs::path parent = target.parent_path();
  struct stat st {};
  CHECK_INPUT(::stat(parent.c_str(), &st) == 0, "model: cannot write into the folder {} ({})",
              parent.string(), std::strerror(errno));
  CHECK_INPUT(S_ISDIR(st.st_mode), "model: {} is not a folder", parent.string());
  // Writable? As the process itself (root passes this test; its writes succeed, too).
  CHECK_INPUT(::access(parent.c_str(), W_OK | X_OK) == 0,
              "model: cannot write into the folder {} ({})", parent.string(),
              std::strerror(errno));
}

void write_detector_files(const fs::path& dir, const DetectorModel& m) {
  CHECK_INPUT(m.taps.size() == m.stats.taps.size() && !m.taps.empty(),
              "model: {} taps but {} tap statistics", m.taps.size(), m.stats.taps.size());
  std::map<std::string, HostTensor> tensors;
  for (size_t t = 0; t < m.taps.size(); ++t) {
    const TapParams& p = m.taps[t].params;
    const int64_t n = FlowLayout(p.flow).n_params;
    CHECK_INPUT(int64_t(p.theta.size()) == n && int64_t(p.theta0.size()) == n,
                "model: tap {} has {} / {} parameters, its flow {}", t, p.theta.size(),
                p.theta0.size(), n);
    tensors[fmt::format("tap{}.theta", t)] = HostTensor{{n}, p.theta};
    tensors[fmt::format("tap{}.theta0", t)] = HostTensor{{n}, p.theta0};
  }
  const auto bytes = serialize_safetensors(tensors, {{"format", kFormat}});
  write_file_atomic(dir / "flow.safetensors", bytes);
  const auto doc = model_json(m, sha256_hex(bytes));
  write_file_atomic(dir / "config.json", doc.dump(1) + "\n");
}

void save_detector(const fs::path& dir, const DetectorModel& m) {
  CHECK_INPUT(!dir.empty(), "model: empty output path");
  CHECK_INPUT(m.taps.size() == m.stats.taps.size() && !m.taps.empty(),
              "model: {} taps but {} tap statistics", m.taps.size(), m.stats.taps.size());
  // Built in a hidden folder beside the target, then swapped in: a reader sees the old model
  // or the new one, never a mix, and a kill leaves only a temporary that the next run removes.
  StagedDir staged(dir, model_output_kind(), "model:");
  write_detector_files(staged.path(), m);
  staged.commit();
}

DetectorModel load_detector(const fs::path& dir) {
  std::error_code ec;
  CHECK_INPUT(fs::is_directory(dir, ec), "model: {} is not a folder (a mirad model is a folder "
              "with config.json and flow.safetensors)", dir.string());
  const auto j = read_json_file(dir / "config.json", kMaxConfigBytes);
  const std::string where = (dir / "config.json").string();
  CHECK_INPUT(j.is_object() && j.contains("format") && j.at("format") == kFormat,
              "model: {} is not a mirad detector (format is not '{}')", where, kFormat);
  CHECK_INPUT(j.contains("schema_version") && j.at("schema_version").is_number_integer(),
              "model: {} has no schema_version", where);
  const int version = j.at("schema_version").get<int>();
  CHECK_INPUT(version == DetectorModel::kSchemaVersion,
              "model: {} has schema version {}; this mirad reads version {} (retrain, or use the "
              "mirad that wrote it)", where, version, DetectorModel::kSchemaVersion);
  JsonFields top(j, where, {"format", "schema_version", "config", "backbone", "taps", "score",
                            "threshold", "retained", "rejected", "training", "flow_file"});
  for (const char* k : {"config", "backbone", "taps", "score", "threshold", "flow_file"})
    CHECK_INPUT(top.has(k), "model: {} lacks '{}'", where, k);
  DetectorModel m;
  m.config = DetectorConfig::from_json(j.at("config"));
  {
    const auto& b = j.at("backbone");
    JsonFields f(b, where + ": backbone",
                 {"name", "path", "weights_sha256", "input_height", "input_width", "mean", "std",
                  "smooth"});
    f.string("name", m.backbone.name);
    f.string("path", m.backbone.path);
    f.string("weights_sha256", m.backbone.weights_sha256);
    f.integer("input_height", m.backbone.input_height, int64_t(1), int64_t(16384));
    f.integer("input_width", m.backbone.input_width, int64_t(1), int64_t(16384));
    f.boolean("smooth", m.backbone.smooth);
    CHECK_INPUT(b.contains("mean") && b.contains("std"), "model: {} backbone lacks mean/std", where);
    const auto mean = numbers(b.at("mean"), where + ": backbone.mean", 3);
    const auto sd = numbers(b.at("std"), where + ": backbone.std", 3);
    for (int c = 0; c < 3; ++c) {
      // Inputs are divided by it: a 0 would make every image's features Inf and fail it.
      CHECK_INPUT(sd[c] > 0, "model: {} backbone.std[{}] is {}; each std must be > 0", where, c,
                  sd[c]);
      m.backbone.mean[c] = mean[c], m.backbone.std[c] = sd[c];
    }
  }
  const auto& taps = j.at("taps");
  CHECK_INPUT(taps.is_array() && !taps.empty() && taps.size() <= 64,
              "model: {} taps must be a non-empty array", where);
  for (size_t t = 0; t < taps.size(); ++t) {
    const std::string tw = fmt::format("{}: taps[{}]", where, t);
    JsonFields f(taps[t], tw, {"name", "op", "channels", "height", "width", "flow", "norm", "score"});
    TapModel tm;
    f.string("name", tm.name);
    f.integer("op", tm.op, 0, 1 << 20);
    f.integer("channels", tm.channels, int64_t(1), int64_t(1) << 20);
    f.integer("height", tm.height, int64_t(1), int64_t(1) << 16);
    f.integer("width", tm.width, int64_t(1), int64_t(1) << 16);
    CHECK_INPUT(f.has("flow") && f.has("norm") && f.has("score"), "model: {} is incomplete", tw);
    tm.params.flow = FlowConfig::from_json(taps[t].at("flow"));
    CHECK_INPUT(tm.params.flow.dim == tm.channels, "model: {} flow dim {} != channels {}", tw,
                tm.params.flow.dim, tm.channels);
    const auto& n = taps[t].at("norm");
    JsonFields nf(n, tw + ".norm", {"mean", "std"});
    CHECK_INPUT(nf.has("mean") && nf.has("std"), "model: {}.norm needs mean and std", tw);
    for (double v : numbers(n.at("mean"), tw + ".norm.mean", tm.channels)) tm.norm.mean.push_back(float(v));
    for (double v : numbers(n.at("std"), tw + ".norm.std", tm.channels)) {
      CHECK_INPUT(v > 0, "model: {}.norm.std holds {}", tw, v);
      tm.norm.std.push_back(float(v));
    }
    m.stats.taps.push_back(scale_from(taps[t].at("score"), tw + ".score"));
    m.taps.push_back(std::move(tm));
  }
  {
    const auto& s = j.at("score");
    JsonFields f(s, where + ": score", {"top", "mean", "map_lo", "map_hi"});
    CHECK_INPUT(f.has("top") && f.has("mean"), "model: {} score needs top and mean", where);
    m.stats.top = scale_from(s.at("top"), where + ": score.top");
    m.stats.mean = scale_from(s.at("mean"), where + ": score.mean");
    f.number("map_lo", m.stats.map_lo, -1e300, 1e300);
    f.number("map_hi", m.stats.map_hi, -1e300, 1e300);
  }
  {
    JsonFields f(j.at("threshold"), where + ": threshold", {"value", "detail"});
    CHECK_INPUT(f.has("value"), "model: {} threshold has no value", where);
    f.number("value", m.threshold, -1e300, 1e300);
    f.string("detail", m.threshold_detail);
  }
  if (top.has("retained")) top.strings("retained", m.retained);
  if (top.has("rejected")) {
    const auto& r = j.at("rejected");
    CHECK_INPUT(r.is_array(), "model: {} rejected must be an array", where);
    for (const auto& e : r) {
      JsonFields f(e, where + ": rejected[]", {"path", "round", "score", "tau", "weight"});
      RejectedFile rf;
      f.string("path", rf.path);
      f.integer("round", rf.round, 0, 1000);
      rf.score = e.contains("score") && e.at("score").is_number() ? e.at("score").get<double>() : NAN;
      rf.tau = e.contains("tau") && e.at("tau").is_number() ? e.at("tau").get<double>() : NAN;
      f.number("weight", rf.weight, 0.0, 1.0);
      m.rejected.push_back(rf);
    }
  }
  if (top.has("training")) m.training = j.at("training");
  check_model_consistency(m, where);
  // The flow file must be the one this config was written with.
  std::string flow_sha;
  {
    JsonFields f(j.at("flow_file"), where + ": flow_file", {"name", "sha256"});
    std::string name;
    f.string("name", name);
    f.string("sha256", flow_sha);
    CHECK_INPUT(name == "flow.safetensors", "model: {} names flow file '{}'", where, name);
  }
  const auto bytes = read_file_bytes(dir / "flow.safetensors", uint64_t(16) << 30);
  CHECK_INPUT(sha256_hex(bytes) == flow_sha,
              "model: {}/flow.safetensors does not match its config.json (sha256 differs): the "
              "folder was modified or mixed with another model", dir.string());
  const SafeTensors st = parse_safetensors(bytes, (dir / "flow.safetensors").string());
  for (size_t t = 0; t < m.taps.size(); ++t) {
    const int64_t n = FlowLayout(m.taps[t].params.flow).n_params;
    const std::array<int64_t, 1> shape{n};
    for (const char* which : {"theta", "theta0"}) {
      const HostTensor& h = st.at(fmt::format("tap{}.{}", t, which), shape);
      for (float v : h.data)
        CHECK_INPUT(std::isfinite(v), "model: {}/flow.safetensors tap {} {} holds NaN or Inf",
                    dir.string(), t, which);
      (std::string(which) == "theta" ? m.taps[t].params.theta : m.taps[t].params.theta0) = h.data;
    }
  }
  return m;
}

}  // namespace mirad
