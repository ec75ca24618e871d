// Refinement checkpoints on disk: exact (doubles as 17-digit text, floats in safetensors), so a
// resumed run continues bit for bit. checkpoint.json is the one commit point: it names the
// tensors file of its generation, written first under a new name, so a kill at any moment
// leaves the previous complete pair or the new one (issue 13, finding 3).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <set>

#include "core/error.h"
#include "engine/io/file_io.h"
#include "engine/io/json_io.h"
#include "engine/detector/refinement.h"
#include "engine/io/safetensors.h"
#include "engine/io/sha256.h"

namespace mirad {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kFormat = "mirad-refine-checkpoint";
constexpr int kVersion = 1;
constexpr const char* kJsonName = "checkpoint.json";
// The tensors file of checkpoints written before generations; a JSON without "tensors_file"
// still names it.
constexpr const char* kLegacyTensorsName = "checkpoint.safetensors";
constexpr const char* kLockName = "checkpoint.lock";

// A generation's tensors file is named by its content: checkpoint.<16 hex of sha256>.safetensors.
// A new round never overwrites the file the current checkpoint.json names.
std::string tensors_name(const std::string& sha) {
  return "checkpoint." + sha.substr(0, 16) + ".safetensors";
}
bool is_hex16(std::string_view s) {
  return s.size() == 16 &&
         std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}
bool is_tensors_name(std::string_view n) {
  constexpr std::string_view pre = "checkpoint.", post = ".safetensors";
  if (n == kLegacyTensorsName) return true;
  return n.size() == pre.size() + 16 + post.size() && n.starts_with(pre) && n.ends_with(post) &&
         is_hex16(n.substr(pre.size(), 16));
}
// write_file_atomic's temporaries of our files: ".<name>.XXXXXX" (mkstemp: 6 of [A-Za-z0-9]).
// A SIGKILL mid-write leaves one behind (4 MB in the probe); nothing else is ever removed.
bool is_our_temporary(std::string_view n) {
  if (n.size() < 8 || n[0] != '.' || n[n.size() - 7] != '.') return false;
  const std::string_view suffix = n.substr(n.size() - 6), base = n.substr(1, n.size() - 8);
  const bool random = std::all_of(suffix.begin(), suffix.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  });
  return random && (base == kJsonName || is_tensors_name(base));
}
// Removes the files of our own naming in dir that `keep` does not name: old generations'
// tensors (keep = the current one) and temporaries. Errors are ignored: a leftover costs disk
// space only, and the next save tries again.
void remove_our_files(const fs::path& dir, bool tensors, const std::string& keep) {
  std::error_code ec;
  std::vector<fs::path> doomed;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string n = it->path().filename().string();
    if (n != keep && (is_our_temporary(n) || (tensors && is_tensors_name(n))) &&
        it->symlink_status(ec).type() == fs::file_type::regular)
      doomed.push_back(it->path());
  }
  for (const auto& p : doomed) fs::remove(p, ec);
}

// Doubles as text with 17 significant digits round-trip exactly, Inf and NaN included.
std::string d2s(double v) { return fmt::format("{:.17g}", v); }
double s2d(const json& j) {
  CHECK_INPUT(j.is_string(), "checkpoint: malformed number");
  const std::string s = j.get<std::string>();
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  CHECK_INPUT(end && *end == '\0' && !s.empty(), "checkpoint: malformed number '{}'", s);
  return v;
}
json dvec(const std::vector<double>& v) {
  json a = json::array();
  for (double x : v) a.push_back(d2s(x));
  return a;
}
std::vector<double> dvec_from(const json& j) {
  std::vector<double> v;
  for (const auto& e : j) v.push_back(s2d(e));
  return v;
}
// Integers exactly as the writer stores them. nlohmann's get<int>() casts a double such as 1e300
// to int, which is undefined behaviour (UBSan, found by tests/fuzz/fuzz_checkpoint), and wraps
// an out-of-range integer silently.
template <typename T>
T int_from(const json& j) {
  CHECK_INPUT(j.is_number_integer(), "checkpoint: expected an integer, got {}", json_excerpt(j));
  if (j.is_number_unsigned()) {
    const uint64_t v = j.get<uint64_t>();
    CHECK_INPUT(v <= uint64_t(std::numeric_limits<T>::max()),
                "checkpoint: integer {} out of range", v);
    return T(v);
  }
  const int64_t v = j.get<int64_t>();
  CHECK_INPUT(v >= int64_t(std::numeric_limits<T>::min()) &&
                  (v < 0 || uint64_t(v) <= uint64_t(std::numeric_limits<T>::max())),
              "checkpoint: integer {} out of range", v);
  return T(v);
}
template <typename T>
std::vector<T> ints_from(const json& j) {
  CHECK_INPUT(j.is_array(), "checkpoint: expected an array of integers, got {}", json_excerpt(j));
  std::vector<T> v;
  for (const auto& e : j) v.push_back(int_from<T>(e));
  return v;
}

json scale_json(const RobustScale& s) { return {d2s(s.median), d2s(s.iqr)}; }
RobustScale scale_from(const json& j) { return {s2d(j.at(0)), s2d(j.at(1))}; }

json modelset_json(const ModelSet& m, const std::string& name,
                   std::map<std::string, HostTensor>& tensors) {
  json taps = json::array();
  for (size_t t = 0; t < m.taps.size(); ++t) {
    const TapParams& p = m.taps[t];
    const std::string base = fmt::format("{}.tap{}", name, t);
    tensors[base + ".theta0"] = HostTensor{{int64_t(p.theta0.size())}, p.theta0};
    tensors[base + ".theta"] = HostTensor{{int64_t(p.theta.size())}, p.theta};
    json slots = json::array();
    for (const auto& [slot, v] : p.optimizer.slots) {
      tensors[base + ".opt." + slot] = HostTensor{{int64_t(v.size())}, v};
      slots.push_back(slot);
    }
    taps.push_back({{"flow", p.flow.to_json()},
                    {"optimizer_type", p.optimizer.type},
                    {"optimizer_step", p.optimizer.step},
                    {"optimizer_slots", slots}});
  }
  return taps;
}

ModelSet modelset_from(const json& taps, const std::string& name, const SafeTensors& st) {
  ModelSet m;
  for (size_t t = 0; t < taps.size(); ++t) {
    const std::string base = fmt::format("{}.tap{}", name, t);
    TapParams p;
    p.flow = FlowConfig::from_json(taps[t].at("flow"));
    // Every vector must have the flow's parameter count: the flow kernels index them by it.
    const std::array<int64_t, 1> n_params{FlowLayout(p.flow).n_params};
    p.theta0 = st.at(base + ".theta0", n_params).data;
    p.theta = st.at(base + ".theta", n_params).data;
    p.optimizer.type = taps[t].at("optimizer_type").get<std::string>();
    p.optimizer.step = int_from<int64_t>(taps[t].at("optimizer_step"));
    for (const auto& slot : taps[t].at("optimizer_slots"))
      p.optimizer.slots[slot.get<std::string>()] =
          st.at(base + ".opt." + slot.get<std::string>(), n_params).data;
    m.taps.push_back(std::move(p));
  }
  return m;
}

bool sorted_unique(const std::vector<int64_t>& v) {
  return std::adjacent_find(v.begin(), v.end(), [](int64_t a, int64_t b) { return a >= b; }) ==
         v.end();
}
bool unique(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  return sorted_unique(v);
}
bool non_negative(const std::vector<int64_t>& v) {
  return std::all_of(v.begin(), v.end(), [](int64_t i) { return i >= 0; });
}

// What a checkpoint's own fields must agree on, whatever run it belongs to. The tensors are
// hash-checked but checkpoint.json is not: an edit (duplicated or overlapping indices,
// rounds_done = 1e6, loop_done flipped) must be refused here, not continued into another model
// with exit 0 (issue 13, finding 14). refine() checks the rest against its own run.
void check_checkpoint_consistency(const RefineCheckpoint& c, const std::string& where) {
  auto require = [&](bool ok, const std::string& what) {
    CHECK_INPUT(ok, "checkpoint: {} is inconsistent: {} (edited or damaged?); remove the folder "
                "to start over", where, what);
  };
  require(c.rounds_done >= 0 && size_t(c.rounds_done) == c.rounds.size(),
          fmt::format("rounds_done is {} but {} rounds are recorded", c.rounds_done,
                      c.rounds.size()));
  for (size_t r = 0; r < c.rounds.size(); ++r) {
    const RoundRecord& rec = c.rounds[r];
    const std::string at = fmt::format("round {}", r + 1);
    require(rec.round == int(r + 1), fmt::format("{} is numbered {}", at, rec.round));
    require(sorted_unique(rec.scored) && non_negative(rec.scored),
            at + " scored images are not distinct ascending indices");
    require(rec.scores.size() == rec.scored.size() &&
                (rec.weights.empty() || rec.weights.size() == rec.scored.size()),
            at + " has not one score (and weight) per scored image");
    const std::set<int64_t> scored(rec.scored.begin(), rec.scored.end());
    require(unique(rec.rejected) && std::all_of(rec.rejected.begin(), rec.rejected.end(),
                                                [&](int64_t i) { return scored.count(i) > 0; }),
            at + " rejects an image twice, or one it did not score");
    require(rec.nonfinite >= 0 && rec.nonfinite <= int64_t(rec.scored.size()),
            at + " counts more non-finite scores than images");
  }
  require(sorted_unique(c.retained) && non_negative(c.retained),
          "retained images are not distinct ascending indices");
  std::vector<int64_t> rejected;
  for (const Rejection& r : c.rejected) {
    rejected.push_back(r.image);
    require(r.round >= 0 && r.round <= c.rounds_done,
            fmt::format("an image is rejected in round {} of {}", r.round, c.rounds_done));
  }
  require(unique(rejected) && non_negative(rejected), "an image is rejected twice");
  const std::set<int64_t> kept(c.retained.begin(), c.retained.end());
  require(std::none_of(rejected.begin(), rejected.end(), [&](int64_t i) { return kept.count(i); }),
          "an image is both retained and rejected");
  require(std::all_of(c.weights.begin(), c.weights.end(),
                      [](double w) { return w >= 0 && w <= 1; }),
          "a weight is outside [0, 1]");
  require(sorted_unique(c.last_down) && non_negative(c.last_down),
          "down-weighted images are not distinct ascending indices");
  require(sorted_unique(c.last_scored) && non_negative(c.last_scored),
          "the last scored images are not distinct ascending indices");
  require(c.last_maps.n_images == (c.last_maps.grids.empty() ? 0 : int64_t(c.last_scored.size())),
          "the last maps are not one per last scored image");
  require(c.prev.size() == c.has_prev.size() &&
              std::all_of(c.has_prev.begin(), c.has_prev.end(), [](uint8_t h) { return h <= 1; }),
          "has_prev is not one 0 or 1 per fold model");
  require(unique(c.flagged) && non_negative(c.flagged), "flagged images repeat");
  require(!c.final_ready || c.loop_done, "final_ready without loop_done");
  require(!c.loop_done || c.rounds_done >= 1, "loop_done before any round");
  require(c.has_baseline == !c.baseline.taps.empty() &&
              (!c.has_baseline || c.baseline_stats.taps.size() == c.baseline.taps.size()),
          "has_baseline does not match the baseline stored");
}

}  // namespace

void save_refine_checkpoint(const fs::path& dir, const RefineCheckpoint& c) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  CHECK_INPUT(fs::is_directory(dir, ec), "checkpoint: cannot create the folder {}", dir.string());
  std::map<std::string, HostTensor> tensors;
  json prev = json::array();
  for (size_t k = 0; k < c.prev.size(); ++k)
    prev.push_back(modelset_json(c.prev[k], fmt::format("prev{}", k), tensors));
  json rounds = json::array();
  for (const auto& r : c.rounds)
    rounds.push_back({{"round", r.round},           {"scored", r.scored},
                      {"scores", dvec(r.scores)},   {"weights", dvec(r.weights)},
                      {"tau", d2s(r.tau)},          {"rule_detail", r.rule_detail},
                      {"rejected", r.rejected},     {"nonfinite", r.nonfinite},
                      {"min_keep_reached", r.min_keep_reached},
                      {"train_loss", d2s(r.train_loss)}, {"seconds", d2s(r.seconds)}});
  json rejected = json::array();
  for (const auto& r : c.rejected)
    rejected.push_back({r.image, r.round, d2s(r.score), d2s(r.tau), d2s(r.weight)});
  json grids = json::array();
  for (size_t t = 0; t < c.last_maps.grids.size(); ++t) {
    grids.push_back({c.last_maps.grids[t].height, c.last_maps.grids[t].width});
    tensors[fmt::format("maps.tap{}", t)] =
        HostTensor{{int64_t(c.last_maps.nll[t].size())}, c.last_maps.nll[t]};
  }
  json bstats = {{"taps", json::array()}, {"top", scale_json(c.baseline_stats.top)},
                 {"mean", scale_json(c.baseline_stats.mean)},
                 {"map", {d2s(c.baseline_stats.map_lo), d2s(c.baseline_stats.map_hi)}}};
  for (const auto& s : c.baseline_stats.taps) bstats["taps"].push_back(scale_json(s));
  json doc = {{"format", kFormat},
              {"version", kVersion},
              {"run_key", c.run_key},
              {"rounds_done", c.rounds_done},
              {"loop_done", c.loop_done},
              {"final_ready", c.final_ready},
              {"stop_reason", c.stop_reason},
              {"rounds", rounds},
              {"rejected", rejected},
              {"retained", c.retained},
              {"weights", dvec(c.weights)},
              {"last_down", c.last_down},
              {"prev", prev},
              {"has_prev", c.has_prev},
              {"maps", {{"grids", grids}, {"n_images", c.last_maps.n_images}}},
              {"last_scored", c.last_scored},
              {"last_model", modelset_json(c.last_model, "last", tensors)},
              {"flagged", c.flagged},
              {"has_baseline", c.has_baseline},
              {"baseline", modelset_json(c.baseline, "baseline", tensors)},
              {"baseline_stats", bstats},
              {"baseline_threshold", d2s(c.baseline_threshold)}};
  const auto bytes = serialize_safetensors(tensors, {{"format", kFormat}});
  const std::string sha = sha256_hex(bytes);
  const std::string name = tensors_name(sha);
  doc["tensors_sha256"] = sha;
  doc["tensors_file"] = name;
  // The new generation's tensors under their own name, then the JSON that names them: until
  // that rename, checkpoint.json and the tensors it names are the previous complete pair.
  write_file_atomic(dir / name, bytes);
  write_file_atomic(dir / kJsonName, doc.dump() + "\n");
  remove_our_files(dir, true, name);
}

std::optional<RefineCheckpoint> load_refine_checkpoint(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir / "checkpoint.json", ec)) return std::nullopt;
  const std::string where = (dir / "checkpoint.json").string();
  const json j = read_json_file(dir / "checkpoint.json", uint64_t(1) << 30, 16);
  // Every JSON access below sits in the try: a missing key or a value of another type (here
  // "format": 5 or no "tensors_sha256", found by tests/fuzz/fuzz_checkpoint) is a damaged file,
  // not an internal error.
  try {
    // Compared as JSON values: value("version", 0) would cast 1e300 to int (undefined).
    CHECK_INPUT(j.is_object() && j.contains("format") && j["format"] == kFormat &&
                    j.contains("version") && j["version"].is_number_integer() &&
                    j["version"] == kVersion,
                "checkpoint: {} is not a version-{} mirad refinement checkpoint", where, kVersion);
    const std::string sha = j.at("tensors_sha256").get<std::string>();
    const std::string name =
        j.contains("tensors_file") ? j.at("tensors_file").get<std::string>() : kLegacyTensorsName;
    CHECK_INPUT(is_tensors_name(name), "checkpoint: {} names the tensors file '{}', which is "
                "not one of mirad's", where, printable(name));
    const auto bytes = read_file_bytes(dir / name, uint64_t(64) << 30);
    CHECK_INPUT(sha256_hex(bytes) == sha,
                "checkpoint: {} and {} do not belong together (edited or copied from another "
                "checkpoint?); remove the folder to start over", where, name);
    const SafeTensors st = parse_safetensors(bytes, (dir / name).string());
    RefineCheckpoint c;
    c.run_key = j.at("run_key").get<std::string>();
    c.rounds_done = int_from<int>(j.at("rounds_done"));
    c.loop_done = j.at("loop_done").get<bool>();
    c.final_ready = j.at("final_ready").get<bool>();
    c.stop_reason = j.at("stop_reason").get<std::string>();
    for (const auto& r : j.at("rounds")) {
      RoundRecord rec;
      rec.round = int_from<int>(r.at("round"));
      rec.scored = ints_from<int64_t>(r.at("scored"));
      rec.scores = dvec_from(r.at("scores"));
      rec.weights = dvec_from(r.at("weights"));
      rec.tau = s2d(r.at("tau"));
      rec.rule_detail = r.at("rule_detail").get<std::string>();
      rec.rejected = ints_from<int64_t>(r.at("rejected"));
      rec.nonfinite = int_from<int64_t>(r.at("nonfinite"));
      rec.min_keep_reached = r.at("min_keep_reached").get<bool>();
      rec.train_loss = s2d(r.at("train_loss"));
      rec.seconds = s2d(r.at("seconds"));
      c.rounds.push_back(std::move(rec));
    }
    for (const auto& r : j.at("rejected"))
      c.rejected.push_back({int_from<int64_t>(r.at(0)), int_from<int>(r.at(1)), s2d(r.at(2)),
                            s2d(r.at(3)), s2d(r.at(4))});
    c.retained = ints_from<int64_t>(j.at("retained"));
    c.weights = dvec_from(j.at("weights"));
    c.last_down = ints_from<int64_t>(j.at("last_down"));
    const auto& prev = j.at("prev");
    for (size_t k = 0; k < prev.size(); ++k)
      c.prev.push_back(modelset_from(prev[k], fmt::format("prev{}", k), st));
    c.has_prev = ints_from<uint8_t>(j.at("has_prev"));
    const auto& maps = j.at("maps");
    c.last_maps.n_images = int_from<int64_t>(maps.at("n_images"));
    CHECK_INPUT(c.last_maps.n_images >= 0 && c.last_maps.n_images <= (int64_t(1) << 31),
                "checkpoint: {} holds {} images", where, c.last_maps.n_images);
    for (size_t t = 0; t < maps.at("grids").size(); ++t) {
      const json& grid = maps["grids"][t];
      const Grid g{int_from<int64_t>(grid.at(0)), int_from<int64_t>(grid.at(1))};
      // Bounded first, so that the product below cannot overflow.
      CHECK_INPUT(g.height >= 0 && g.width >= 0 && g.height <= 65536 && g.width <= 65536,
                  "checkpoint: {} has a {}x{} map grid", where, g.height, g.width);
      c.last_maps.grids.push_back(g);
      c.last_maps.nll.push_back(st.at(fmt::format("maps.tap{}", t)).data);
      CHECK_INPUT(c.last_maps.nll.back().size() == size_t(c.last_maps.n_images) * size_t(g.size()),
                  "checkpoint: {} tap {} maps do not fit their grid", where, t);
    }
    c.last_scored = ints_from<int64_t>(j.at("last_scored"));
    c.last_model = modelset_from(j.at("last_model"), "last", st);
    c.flagged = ints_from<int64_t>(j.at("flagged"));
    c.has_baseline = j.at("has_baseline").get<bool>();
    c.baseline = modelset_from(j.at("baseline"), "baseline", st);
    const auto& bs = j.at("baseline_stats");
    for (const auto& s : bs.at("taps")) c.baseline_stats.taps.push_back(scale_from(s));
    c.baseline_stats.top = scale_from(bs.at("top"));
    c.baseline_stats.mean = scale_from(bs.at("mean"));
    c.baseline_stats.map_lo = s2d(bs.at("map").at(0));
    c.baseline_stats.map_hi = s2d(bs.at("map").at(1));
    c.baseline_threshold = s2d(j.at("baseline_threshold"));
    check_checkpoint_consistency(c, where);
    return c;
  } catch (const nlohmann::json::exception& e) {
    throw InputError(fmt::format("checkpoint: {} is malformed ({})", where, e.what()));
  }
}

void remove_refine_checkpoint(const fs::path& dir) {
  std::error_code ec;
  // The JSON first: from then on the folder holds no checkpoint, whatever else is left.
  fs::remove(dir / kJsonName, ec);
  remove_our_files(dir, true, "");
  fs::remove(dir, ec);  // only when empty (a held lock file keeps it until the lock goes)
}

std::unique_ptr<FolderLock> lock_refine_checkpoint(const fs::path& dir) {
  auto lock = std::make_unique<FolderLock>(dir, kLockName, "checkpoint");
  // Nobody else writes here while we hold the lock: a temporary is a killed run's leftover.
  remove_our_files(dir, false, "");
  return lock;
}

}  // namespace mirad
