// The features-file format (`mirad embed`): its metadata, and reading it back after checking that
// it holds exactly these images, made the way this run would make them.
#include "host/features_file.h"

#include <chrono>
#include <map>
#include <set>

#include "core/error.h"
#include "engine/io/json_io.h"
#include "engine/io/safetensors.h"
#include "engine/io/sha256.h"
#include "engine/io/path_key.h"

namespace mirad {

namespace fs = std::filesystem;

Features load_features_file(const std::vector<fs::path>& images, const FeatureRequest& req,
                            const JobProgress& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string name = req.features_file.string();
  const SafeTensors st = load_safetensors(req.features_file);
  const auto& meta = st.metadata();
  auto get = [&](const char* key) -> const std::string& {
    auto it = meta.find(key);
    CHECK_INPUT(it != meta.end(),
                "features file {}: no '{}' in its metadata (written by an older mirad embed? "
                "re-run mirad embed)", name, key);
    return it->second;
  };
  CHECK_INPUT(get("format") == "mirad-features", "features file {}: not a mirad features file",
              name);
  CHECK_INPUT(get("version") == "2",
              "features file {}: version {} (this mirad reads version 2; re-run mirad embed)",
              name, get("version"));
  Features f;
  f.from_file = true;
  f.backbone_dir = get("backbone");
  f.backbone.path = get("backbone");
  f.backbone.name = get("backbone_name");
  f.backbone.weights_sha256 = get("backbone_sha256");
  if (!req.expected_weights_sha256.empty())
    CHECK_INPUT(f.backbone.weights_sha256 == req.expected_weights_sha256,
                "features file {}: made with backbone weights {}, the model needs {}", name,
                f.backbone.weights_sha256, req.expected_weights_sha256);
  const auto size = parse_json_bounded(get("input_size"), name + ": input_size");
  CHECK_INPUT(size.is_array() && size.size() == 2 && size[0].is_number_integer() &&
                  size[1].is_number_integer(),
              "features file {}: input_size must be [height, width]", name);
  f.backbone.input_height = size[0].get<int>(), f.backbone.input_width = size[1].get<int>();
  CHECK_INPUT(f.backbone.input_height == req.size.height && f.backbone.input_width == req.size.width,
              "features file {}: made at input {} x {}, this run needs {} x {} (short side {}); "
              "re-run mirad embed with --size {}x{}", name, f.backbone.input_height,
              f.backbone.input_width, req.size.height, req.size.width, req.settings.short_side,
              req.size.height, req.size.width);
  const auto norm = parse_json_bounded(get("normalization"), name + ": normalization");
  CHECK_INPUT(norm.is_object() && norm.contains("mean") && norm.contains("std") &&
                  norm["mean"].is_array() && norm["mean"].size() == 3 && norm["std"].is_array() &&
                  norm["std"].size() == 3,
              "features file {}: malformed normalization", name);
  for (int c = 0; c < 3; ++c) {
    CHECK_INPUT(norm["mean"][c].is_number() && norm["std"][c].is_number(),
                "features file {}: malformed normalization", name);
    f.backbone.mean[c] = norm["mean"][c].get<double>();
    f.backbone.std[c] = norm["std"][c].get<double>();
  }
  if (req.mean && req.std)
    CHECK_INPUT(f.backbone.mean == *req.mean && f.backbone.std == *req.std,
                "features file {}: normalised differently from the model", name);
  const std::string smoothing = get("smoothing");
  f.backbone.smooth = smoothing == "avg3x3";
  CHECK_INPUT(f.backbone.smooth == req.settings.smooth,
              "features file {}: smoothing '{}' but this run asks for {}", name, smoothing,
              req.settings.smooth ? "avg3x3" : "none");
  // Files from before the precision option were all made in FP32.
  f.precision = meta.count("precision") ? meta.at("precision") : "fp32";
  CHECK_INPUT(f.precision == effective_precision(req),
              "features file {}: made with {} backbone arithmetic but this run uses {} "
              "(re-run mirad embed with --precision {}, or set features.precision)",
              name, printable(f.precision), effective_precision(req), effective_precision(req));
  const auto taps = parse_json_bounded(get("tap_order"), name + ": tap_order");
  CHECK_INPUT(taps.is_array(), "features file {}: tap_order must be an array", name);
  std::vector<std::string> tap_names;
  for (const auto& t : taps) {
    CHECK_INPUT(t.is_object() && t.contains("name") && t["name"].is_string() &&
                    t.contains("op") && t["op"].is_number_integer(),
                "features file {}: malformed tap_order", name);
    tap_names.push_back(t["name"].get<std::string>());
    f.tap_ops.push_back(t["op"].get<int>());
  }
  CHECK_INPUT(tap_names == req.settings.taps,
              "features file {}: taps [{}] but this run asks for [{}]", name,
              fmt::format("{}", fmt::join(tap_names, ", ")),
              fmt::format("{}", fmt::join(req.settings.taps, ", ")));
  f.tap_names = tap_names;
  // The image list and every image's content: a cache of other (or since edited) images must
  // not be scored as if it were these.
  const auto listed = parse_json_bounded(get("images"), name + ": images");
  const auto hashes = parse_json_bounded(get("image_sha256"), name + ": image_sha256");
  CHECK_INPUT(listed.is_array() && hashes.is_array() && listed.size() == hashes.size(),
              "features file {}: malformed image list", name);
  // The file may hold more images than this run needs (a whole category embedded once);
  // each needed image must be in it, with the same content.
  std::map<std::string, int64_t> row_of;
  for (size_t r = 0; r < listed.size(); ++r) {
    CHECK_INPUT(listed[r].is_string() && hashes[r].is_string(),
                "features file {}: malformed image list", name);
    row_of[path_key(listed[r].get<std::string>())] = int64_t(r);
  }
  std::set<int64_t> failed_rows;
  if (meta.count("failed")) {
    const auto fl = parse_json_bounded(meta.at("failed"), name + ": failed");
    CHECK_INPUT(fl.is_array(), "features file {}: malformed failed list", name);
    for (const auto& e : fl) {
      CHECK_INPUT(e.is_number_integer() && e.get<int64_t>() >= 0 &&
                      e.get<int64_t>() < int64_t(listed.size()),
                  "features file {}: malformed failed list", name);
      failed_rows.insert(e.get<int64_t>());
    }
  }
  const int64_t N = int64_t(images.size());
  std::vector<int64_t> rows(N);
  for (int64_t i = 0; i < N; ++i) {
    auto it = row_of.find(path_key(images[i]));
    CHECK_INPUT(it != row_of.end(), "features file {}: does not hold {} (embed it too)", name,
                printable(images[i].string()));
    rows[i] = it->second;
    CHECK_INPUT(sha256_file(images[i]) == hashes[rows[i]].get<std::string>(),
                "features file {}: {} changed since it was embedded (sha256 differs); re-run "
                "mirad embed", name, printable(images[i].string()));
    if (progress) progress("checking features", i + 1, N, NAN);
  }
  const int64_t total_rows = int64_t(listed.size());
  for (const auto& tn : tap_names) {
    const HostTensor& h = st.at(tn);
    CHECK_INPUT(h.shape.size() == 4 && h.shape[0] == total_rows,
                "features file {}: tap {} has a shape of rank {} / {} images, the list {}", name,
                tn, h.shape.size(), h.shape.empty() ? 0 : h.shape[0], total_rows);
    f.shapes.push_back({h.shape[1], h.shape[2], h.shape[3]});
  }
  f.cache = std::make_unique<FeatureCache>(f.shapes, N, Device::cpu);
  for (size_t t = 0; t < tap_names.size(); ++t) {
    const HostTensor& h = st.at(tap_names[t]);
    const int64_t numel = f.shapes[t].numel();
    for (int64_t i = 0; i < N; ++i)
      f.cache->store(i, int(t), h.data.data() + rows[i] * numel, Device::cpu);
  }
  for (int64_t i = 0; i < N; ++i) {
    if (failed_rows.count(rows[i]))
      f.failures.push_back({i, "could not be decoded when embedded"});
    else
      f.usable.push_back(i);
  }
  CHECK_INPUT(!req.strict || f.failures.empty(),
              "features file {}: {} images could not be decoded when embedded (--strict)", name,
              f.failures.size());
  f.seconds = seconds_since(t0);
  return f;
}

std::map<std::string, std::string> features_metadata(const Features& f,
                                                     const std::vector<fs::path>& images,
                                                     const std::vector<std::string>& image_sha256) {
  nlohmann::json paths = nlohmann::json::array(), order = nlohmann::json::array(),
                 failed = nlohmann::json::array();
  for (const auto& p : images) paths.push_back(p.string());
  for (size_t t = 0; t < f.tap_names.size(); ++t)
    order.push_back({{"name", f.tap_names[t]},
                     {"op", f.tap_ops[t]},
                     {"shape", {f.shapes[t].channels, f.shapes[t].height, f.shapes[t].width}}});
  for (const auto& e : f.failures) failed.push_back(e.index);
  return {{"format", "mirad-features"},
          {"version", "2"},
          {"backbone", f.backbone_dir.string()},
          {"backbone_name", f.backbone.name},
          {"backbone_sha256", f.backbone.weights_sha256},
          {"input_size", nlohmann::json({f.backbone.input_height, f.backbone.input_width}).dump()},
          {"normalization", nlohmann::json({{"mean", f.backbone.mean}, {"std", f.backbone.std}}).dump()},
          {"smoothing", f.backbone.smooth ? "avg3x3" : "none"},
          {"precision", f.precision},
          {"tap_order", order.dump()},
          {"images", paths.dump()},
          {"image_sha256", nlohmann::json(image_sha256).dump()},
          {"failed", failed.dump()}};
}

}  // namespace mirad
