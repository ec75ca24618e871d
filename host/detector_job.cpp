// Detector jobs: input size, features (computed or reused after checks), refinement into a
// model, and prediction with a saved model.
#include "host/detector_job.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <set>

#include "core/error.h"
#include "engine/io/json_io.h"
#include "engine/training/patch_bank.h"
#include "engine/io/safetensors.h"
#include "engine/io/sha256.h"
#include "core/threads.h"
#include "host/episode_scheduler.h"
#include "host/image.h"
#include "kernels/map_ops.h"

namespace mirad {

namespace fs = std::filesystem;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string canonical_string(const fs::path& p) {
  std::error_code ec;
  const fs::path c = fs::weakly_canonical(fs::absolute(p, ec), ec);
  return (ec ? p : c).string();
}

// The banks of a features set (one per tap) over its usable images.
struct Banks {
  std::vector<std::unique_ptr<PatchBank>> owned;
  std::vector<const PatchBank*> ptrs;
};

Banks make_banks(const Features& f, int64_t cond_dim, Device device,
                 const std::vector<ChannelNorm>& norms = {}) {
  Banks b;
  for (size_t t = 0; t < f.shapes.size(); ++t) {
    b.owned.push_back(std::make_unique<PatchBank>(*f.cache, int(t), cond_dim, device,
                                                  norms.empty() ? ChannelNorm{} : norms[t],
                                                  Stream{}, f.usable));
    b.ptrs.push_back(b.owned.back().get());
  }
  return b;
}

// The backbone arithmetic a request gets: features.precision on CUDA, FP32 on the CPU.
std::string effective_precision(const FeatureRequest& req) {
  parse_backbone_precision(req.settings.precision);  // refuses an unknown name
  return req.device == Device::cuda ? req.settings.precision : "fp32";
}

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
    row_of[canonical_string(listed[r].get<std::string>())] = int64_t(r);
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
    auto it = row_of.find(canonical_string(images[i]));
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

}  // namespace

int apply_thread_budget(int threads) {
  const int n = threads > 0 ? threads : available_cores();
  set_compute_threads(n);
  return n;
}

InputSize choose_input_size(const std::vector<fs::path>& images, int64_t short_side) {
  CHECK_INPUT(!images.empty(), "no images");
  std::map<std::pair<int, int>, int64_t> count;  // (height, width) -> images
  for (const auto& p : images) {
    try {
      const ImageInfo info = read_image_info(p);
      ++count[{info.height, info.width}];
    } catch (const InputError&) {
      // Unreadable headers are reported (or fatal under --strict) when decoding.
    }
  }
  std::pair<int, int> best{int(short_side), int(short_side)};
  int64_t best_n = 0;
  for (const auto& [hw, n] : count)
    if (n > best_n) best = hw, best_n = n;
  InputSize s;
  const double h = best.first, w = best.second;
  if (h <= w) {
    s.height = int(short_side);
    s.width = int(std::lround(double(short_side) * w / h));
  } else {
    s.width = int(short_side);
    s.height = int(std::lround(double(short_side) * h / w));
  }
  CHECK_INPUT(s.height <= 4096 && s.width <= 4096,
              "input size {} x {} (short side {} at aspect {}:{}) exceeds 4096 px", s.height,
              s.width, short_side, best.second, best.first);
  return s;
}

Features compute_features(const std::vector<fs::path>& images, const FeatureRequest& req,
                          const JobProgress& progress) {
  CHECK_INPUT(!images.empty(), "no images to embed");
  if (!req.features_file.empty()) return load_features_file(images, req, progress);
  const auto t0 = std::chrono::steady_clock::now();
  Features f;
  f.backbone_dir = resolve_backbone(req.settings.backbone);
  f.backbone.path = f.backbone_dir.string();
  f.backbone.weights_sha256 = sha256_file(f.backbone_dir / "weights.safetensors");
  if (!req.expected_weights_sha256.empty())
    CHECK_INPUT(f.backbone.weights_sha256 == req.expected_weights_sha256,
                "backbone {}: weights sha256 {} differ from the model's {} (the model was trained "
                "with other weights; pass --backbone with the original ones)",
                f.backbone_dir.string(), f.backbone.weights_sha256, req.expected_weights_sha256);
  FeatureExtractorOptions fo;
  fo.taps = req.settings.taps;
  fo.batch_size = req.settings.batch;
  fo.image_height = req.size.height, fo.image_width = req.size.width;
  fo.smooth = req.settings.smooth;
  fo.threads = req.threads;
  fo.backbone.precision = parse_backbone_precision(req.settings.precision);
  fo.normalize = req.normalize;
  fo.budget = req.budget;
  if (req.mean && req.std) {
    Normalization n;
    n.mean = *req.mean, n.std = *req.std;
    fo.normalization = n;
  }
  FeatureExtractor fx(f.backbone_dir, req.device, fo);
  f.backbone.name = fx.backbone().graph().model_name;
  f.backbone.input_height = req.size.height, f.backbone.input_width = req.size.width;
  f.backbone.mean = fx.preprocess().norm.mean;
  f.backbone.std = fx.preprocess().norm.std;
  f.backbone.smooth = req.settings.smooth;
  f.precision = effective_precision(req);
  f.tap_names = fx.tap_names();
  f.tap_ops = fx.tap_ops();
  f.shapes = fx.tap_shapes();
  f.cache = fx.extract(
      images,
      [&](int64_t done, int64_t total) {
        if (progress) progress("features", done, total, NAN);
      },
      req.strict ? nullptr : &f.failures);
  std::set<int64_t> bad;
  for (const auto& e : f.failures) bad.insert(e.index);
  for (int64_t i = 0; i < int64_t(images.size()); ++i)
    if (!bad.count(i)) f.usable.push_back(i);
  std::sort(f.failures.begin(), f.failures.end(),
            [](const DecodeFailure& a, const DecodeFailure& b) { return a.index < b.index; });
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

TrainResult run_train_job(const TrainJob& job, const JobProgress& progress) {
  CHECK_INPUT(!job.images.empty(), "the training set is empty");
  // Said before the features: "only 1 of 1 could be decoded" would blame an image that is fine.
  CHECK_INPUT(job.images.size() >= 2, "the training set has {} image; at least 2 are needed",
              job.images.size());
  for (const auto& p : job.images) require_utf8_path(p, "training image");
  const Device device = parse_device(job.config.device);
  // A person's review, matched by path.
  std::map<std::string, int64_t> index;
  for (size_t i = 0; i < job.images.size(); ++i) index[canonical_string(job.images[i])] = int64_t(i);
  auto lookup = [&](const fs::path& p, const char* list) {
    auto it = index.find(canonical_string(p));
    CHECK_INPUT(it != index.end(), "--{} lists {}, which is not in the training set", list,
                printable(p.string()));
    return it->second;
  };
  std::set<int64_t> keep, reject;
  for (const auto& p : job.keep) keep.insert(lookup(p, "keep"));
  for (const auto& p : job.reject) reject.insert(lookup(p, "reject"));
  for (int64_t i : keep)
    CHECK_INPUT(!reject.count(i), "{} is listed in both --keep and --reject",
                printable(job.images[i].string()));
  job.config.check_training_budget();

  TrainResult res;
  // The checkpoint folder is taken, and its checkpoint read, before any feature work: a second
  // run on the folder or a damaged checkpoint is refused at once, not after the backbone pass.
  std::optional<RefineCheckpoint> resume;
  if (!job.checkpoint.empty()) {
    res.checkpoint_lock = lock_refine_checkpoint(job.checkpoint);
    resume = load_refine_checkpoint(job.checkpoint);
  }
  FeatureRequest req;
  req.settings = job.config.features;
  req.size = choose_input_size(job.images, job.config.features.short_side);
  req.device = device;
  req.threads = job.threads;
  req.strict = job.strict;
  req.features_file = job.features_file;
  req.normalize = job.normalize;
  Features f = compute_features(job.images, req, progress);
  res.feature_seconds = f.seconds;
  res.features_from_file = f.from_file;
  res.skipped = f.failures;
  CHECK_INPUT(f.usable.size() >= 2, "only {} of {} training images could be decoded; at least "
              "2 are needed", f.usable.size(), job.images.size());
  std::map<int64_t, int64_t> bank_of;
  for (size_t b = 0; b < f.usable.size(); ++b) {
    bank_of[f.usable[b]] = int64_t(b);
    res.bank_images.push_back(job.images[f.usable[b]]);
  }
  const auto t0 = std::chrono::steady_clock::now();
  Banks banks = make_banks(f, job.config.flow.cond_dim, device);
  RefineOptions ro;
  for (int64_t i : keep)
    if (bank_of.count(i)) ro.always_keep.push_back(bank_of[i]);
  for (int64_t i : reject)
    if (bank_of.count(i)) ro.always_reject.push_back(bank_of[i]);
  ro.baseline = job.baseline;
  ro.workers = job.threads > 0 ? job.threads : available_cores();
  ro.progress = [&](const std::string& phase, int64_t done, int64_t total, double loss) {
    if (progress) progress(phase, done, total, loss);
  };
  if (!job.checkpoint.empty()) {
    if (resume) {
      ro.resume = &*resume;
      res.resumed_from_round = resume->rounds_done;
    }
    ro.checkpoint = [&](const RefineCheckpoint& c) { save_refine_checkpoint(job.checkpoint, c); };
  }
  res.refinement = refine(banks.ptrs, job.config, EpisodeScheduler::factory(), device, ro);
  res.refine_seconds = seconds_since(t0);

  const RefinementResult& rr = res.refinement;
  auto assemble = [&](const ModelSet& ms, const ScoreStats& stats, double threshold,
                      const std::string& detail) {
    DetectorModel m;
    m.config = job.config;
    // The arithmetic the features really had (the CPU backend is always FP32), so that predict
    // on any device computes its features the way the model's were computed where it can.
    m.config.features.precision = f.precision;
    m.backbone = f.backbone;
    for (size_t t = 0; t < f.shapes.size(); ++t) {
      TapModel tm;
      tm.name = f.tap_names[t];
      tm.op = f.tap_ops[t];
      tm.channels = f.shapes[t].channels;
      tm.height = f.shapes[t].height;
      tm.width = f.shapes[t].width;
      tm.norm = banks.owned[t]->norm();
      tm.params = ms.taps[t];
      m.taps.push_back(std::move(tm));
    }
    m.stats = stats;
    m.threshold = threshold;
    m.threshold_detail = detail;
    return m;
  };
  res.model = assemble(rr.model, rr.stats, rr.threshold, rr.threshold_detail);
  for (int64_t b : rr.retained) res.model.retained.push_back(res.bank_images[b].string());
  for (const auto& r : rr.rejected)
    res.model.rejected.push_back({res.bank_images[r.image].string(), r.round, r.score, r.tau, r.weight});
  nlohmann::json rounds = nlohmann::json::array();
  for (const auto& rec : rr.rounds)
    rounds.push_back({{"round", rec.round},
                      {"scored", rec.scored.size()},
                      {"tau", std::isfinite(rec.tau) ? nlohmann::json(rec.tau) : nlohmann::json(nullptr)},
                      {"rule", rec.rule_detail},
                      {"rejected", rec.rejected.size()},
                      {"nonfinite", rec.nonfinite},
                      {"min_keep_reached", rec.min_keep_reached},
                      {"train_loss", rec.train_loss},
                      {"seconds", rec.seconds}});
  nlohmann::json skipped = nlohmann::json::array();
  for (const auto& s : res.skipped)
    skipped.push_back({{"path", job.images[s.index].string()}, {"error", s.message}});
  nlohmann::json flagged = nlohmann::json::array();
  for (int64_t b : rr.flagged) flagged.push_back(res.bank_images[b].string());
  res.model.training = {{"images", job.images.size()},
                        {"stop_reason", rr.stop_reason},
                        {"rounds", rounds},
                        {"skipped", skipped},
                        {"nonfinite_loss_images", flagged},
                        {"feature_seconds", res.feature_seconds},
                        {"refine_seconds", res.refine_seconds}};
  if (rr.has_baseline) {
    res.baseline = assemble(rr.baseline, rr.baseline_stats, rr.baseline_threshold,
                            "baseline: every training image, no rejection");
    for (const auto& p : res.bank_images) res.baseline->retained.push_back(p.string());
  }
  return res;
}

Predictor::Predictor(DetectorModel model, Device device, int threads, const std::string& backbone)
    : m_model(std::move(model)), m_device(device), m_threads(threads), m_backbone(backbone) {}

std::vector<Prediction> Predictor::predict(const std::vector<fs::path>& images, bool maps,
                                           bool strict, const JobProgress& progress) const {
  CHECK_INPUT(!images.empty(), "no images to score");
  const DetectorModel& m = m_model;
  FeatureRequest req;
  req.settings = m.config.features;
  if (!m_backbone.empty()) req.settings.backbone = m_backbone;
  req.size = {int(m.backbone.input_height), int(m.backbone.input_width)};
  req.device = m_device;
  req.threads = m_threads;
  req.strict = strict;
  req.mean = m.backbone.mean;
  req.std = m.backbone.std;
  req.expected_weights_sha256 = m.backbone.weights_sha256;
  Features f = compute_features(images, req, progress);
  for (size_t t = 0; t < f.shapes.size(); ++t)
    CHECK_INPUT(f.shapes[t].channels == m.taps[t].channels && f.shapes[t].height == m.taps[t].height &&
                    f.shapes[t].width == m.taps[t].width,
                "model/backbone mismatch: tap {} gives {} x {} x {}, the model has {} x {} x {}",
                m.taps[t].name, f.shapes[t].channels, f.shapes[t].height, f.shapes[t].width,
                m.taps[t].channels, m.taps[t].height, m.taps[t].width);
  // config.json records each tap's op beside its name; the graph resolves the name, so an op
  // that differs is an edited file or another graph, never to be ignored (issue 13, 13).
  for (size_t t = 0; t < f.tap_ops.size(); ++t)
    CHECK_INPUT(f.tap_ops[t] == m.taps[t].op,
                "model: taps[{}].op is {} but the backbone's tap '{}' is op {} (config.json was "
                "edited, or the backbone is another graph)", t, m.taps[t].op,
                m.config.features.taps[t], f.tap_ops[t]);
  std::vector<Prediction> out(images.size());
  for (size_t i = 0; i < images.size(); ++i) out[i].path = images[i], out[i].score = NAN;
  for (const auto& e : f.failures) out[e.index].error = e.message;
  if (f.usable.empty()) return out;
  std::vector<ChannelNorm> norms;
  ModelSet ms;
  for (const auto& t : m.taps) norms.push_back(t.norm), ms.taps.push_back(t.params);
  Banks banks = make_banks(f, m.config.flow.cond_dim, m_device, norms);
  std::vector<int64_t> ids(f.usable.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int64_t(i);
  if (progress) progress("scoring", 0, int64_t(ids.size()), NAN);
  // The whole test set is scored where its features are: on CUDA the NLLs, the fused maps and
  // the image parts stay on the device, and only scores (and finished maps) come back.
  const DeviceTapMaps tm = score_maps_on_device(ms, banks.ptrs, ids, m_device);
  Buffer<float> fused;
  const auto scores = score_images(tm, m.stats, m.config.score, &fused);
  const Grid g = fused_grid(tm.grids);
  Buffer<float> up(0, m_device), blurred(0, m_device);
  for (size_t b = 0; b < ids.size(); ++b) {
    Prediction& p = out[f.usable[b]];
    p.score = scores[b];
    p.anomalous = !(scores[b] <= m.threshold);  // NaN/Inf are anomalous
    if (!maps) continue;
    const ImageInfo info = read_image_info(p.path);
    p.height = info.height, p.width = info.width;
    const size_t cells = size_t(p.height) * p.width;
    up.reserve_discard(cells);
    mapops::resize_bilinear(1, g.height, g.width, fused.data() + b * g.size(), p.height, p.width,
                            up.data(), m_device);
    // Smoothing scales with the image: map_sigma px at a 256-px short side.
    const double sigma = m.config.score.map_sigma * double(std::min(p.height, p.width)) / 256.0;
    const float* done = up.data();
    if (sigma > 0) {
      blurred.reserve_discard(cells);
      mapops::gaussian_blur(1, p.height, p.width, float(sigma), up.data(), blurred.data(),
                            m_device);
      done = blurred.data();
    }
    p.map.resize(cells);
    mem::copy(p.map.data(), Device::cpu, done, m_device, sizeof(float) * cells, {});
    if (m_device == Device::cuda) mem::synchronize({});
  }
  if (progress) progress("scoring", int64_t(ids.size()), int64_t(ids.size()), NAN);
  return out;
}

}  // namespace mirad
