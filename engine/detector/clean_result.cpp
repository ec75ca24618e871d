// The cleaning-result files: clean.json and rejected.csv, written and read back.
#include "engine/detector/clean_result.h"

#include <cmath>

#include "core/error.h"
#include "engine/io/csv.h"
#include "engine/io/file_io.h"
#include "engine/io/json_io.h"
#include "engine/io/json_number.h"

namespace mirad {

namespace fs = std::filesystem;

namespace {

double number_or_nan(const nlohmann::json& v) { return v.is_null() ? NAN : v.get<double>(); }

nlohmann::json to_json(const CleanRejection& r) {
  nlohmann::json e = {{"path", r.path},
                      {"score", json_number(r.score)},
                      {"round", r.round},
                      {"tau", json_number(r.tau)},
                      {"reason", rejection_reason(r)}};
  if (r.weight) e["weight"] = *r.weight;
  if (!r.heatmap.empty()) e["heatmap"] = r.heatmap;
  if (r.truly_defective) e["truly_defective"] = *r.truly_defective;
  return e;
}

CleanRejection rejection_from_json(const nlohmann::json& e) {
  CleanRejection r;
  r.path = e.at("path").get<std::string>();
  // A null score is a non-finite one: the most anomalous (DESIGN.md §4), so +Inf.
  r.score = e.at("score").is_null() ? INFINITY : e.at("score").get<double>();
  r.round = e.at("round").get<int>();
  r.tau = number_or_nan(e.at("tau"));
  if (e.contains("weight")) r.weight = e.at("weight").get<double>();
  if (e.contains("heatmap")) r.heatmap = e.at("heatmap").get<std::string>();
  if (e.contains("truly_defective")) r.truly_defective = e.at("truly_defective").get<bool>();
  return r;
}

}  // namespace

std::string rejection_reason(const CleanRejection& r) {
  if (r.round == 0) return "review";
  return std::isfinite(r.score) ? "score above tau" : "non-finite score";
}

nlohmann::json to_json(const CleaningFigures& c) {
  return {{"contaminated", c.contaminated},
          {"rejected", c.rejected},
          {"true_rejections", c.counts.tp},
          {"false_rejections", c.counts.fp},
          {"missed", c.counts.fn},
          {"precision", c.counts.precision},
          {"recall", c.counts.recall},
          {"f1", c.counts.f1},
          {"false_rejection_rate", c.counts.false_rejection_rate}};
}

nlohmann::json to_json(const std::optional<CleaningFigures>& c) {
  return c ? to_json(*c) : nlohmann::json(nullptr);
}

CleaningFigures cleaning_figures_from_json(const nlohmann::json& j, const std::string& what) {
  try {
    CleaningFigures c;
    c.contaminated = j.at("contaminated").get<int64_t>();
    c.rejected = j.at("rejected").get<int64_t>();
    c.counts.tp = j.at("true_rejections").get<int64_t>();
    c.counts.fp = j.at("false_rejections").get<int64_t>();
    c.counts.fn = j.at("missed").get<int64_t>();
    c.counts.precision = number_or_nan(j.at("precision"));
    c.counts.recall = number_or_nan(j.at("recall"));
    c.counts.f1 = number_or_nan(j.at("f1"));
    c.counts.false_rejection_rate = number_or_nan(j.at("false_rejection_rate"));
    return c;
  } catch (const nlohmann::json::exception& e) {
    throw InputError(fmt::format("{}: malformed cleaning figures ({})", what, e.what()));
  }
}

nlohmann::json to_json(const CleanResult& r) {
  nlohmann::json rejected = nlohmann::json::array(), skipped = nlohmann::json::array();
  for (const auto& e : r.rejected) rejected.push_back(to_json(e));
  for (const auto& s : r.skipped) skipped.push_back({{"path", s.path}, {"error", s.error}});
  nlohmann::json doc = {{"format", kCleanFormat},
                        {"version", 1},
                        {"data", r.data},
                        {"layout", r.layout},
                        {"images", r.images},
                        {"retained", r.retained},
                        {"rejected", rejected},
                        {"skipped", skipped},
                        {"nonfinite_loss_images", r.nonfinite_loss_images},
                        {"stop_reason", r.stop_reason},
                        {"min_keep_reached", r.stop_reason == "min_keep"},
                        {"rounds", to_json(r.rounds)},
                        {"cleaning", to_json(r.cleaning)},
                        {"config", r.config.to_json()},
                        {"model", r.model},
                        {"seconds", r.seconds},
                        {"feature_seconds", r.feature_seconds},
                        {"refine_seconds", r.refine_seconds}};
  if (r.exported)
    doc["exported"] = {{"folder", r.exported->folder},
                       {"images", r.exported->images},
                       {"hardlinks", r.exported->hardlinks}};
  return doc;
}

CleanResult clean_result_from_json(const nlohmann::json& j, const std::string& what) {
  CHECK_INPUT(j.is_object() && j.value("format", "") == kCleanFormat,
              "{}: not a mirad cleaning result (clean.json)", what);
  CHECK_INPUT(j.value("version", 0) == 1, "{}: version {} (this mirad reads version 1)", what,
              json_excerpt(j.value("version", nlohmann::json(nullptr))));
  try {
    CleanResult r;
    r.data = j.at("data").get<std::string>();
    r.layout = j.at("layout").get<std::string>();
    r.images = j.at("images").get<int64_t>();
    r.retained = j.at("retained").get<int64_t>();
    for (const auto& e : j.at("rejected")) r.rejected.push_back(rejection_from_json(e));
    for (const auto& s : j.at("skipped"))
      r.skipped.push_back({s.at("path").get<std::string>(), s.at("error").get<std::string>()});
    r.nonfinite_loss_images = j.at("nonfinite_loss_images").get<std::vector<std::string>>();
    r.stop_reason = j.at("stop_reason").get<std::string>();
    for (const auto& e : j.at("rounds")) r.rounds.push_back(round_summary_from_json(e, what));
    if (!j.at("cleaning").is_null()) r.cleaning = cleaning_figures_from_json(j.at("cleaning"), what);
    r.config = DetectorConfig::from_json(j.at("config"));
    r.model = j.at("model").get<std::string>();
    r.seconds = j.at("seconds").get<double>();
    r.feature_seconds = j.at("feature_seconds").get<double>();
    r.refine_seconds = j.at("refine_seconds").get<double>();
    if (j.contains("exported")) {
      const auto& x = j.at("exported");
      r.exported = CleanExport{x.at("folder").get<std::string>(), x.at("images").get<int64_t>(),
                               x.at("hardlinks").get<bool>()};
    }
    return r;
  } catch (const nlohmann::json::exception& e) {
    throw InputError(fmt::format("{}: malformed cleaning result ({})", what, e.what()));
  }
}

std::string rejected_csv(const CleanResult& r) {
  std::string csv = "path,score,round,threshold\n";
  for (const auto& e : r.rejected)
    csv += fmt::format("{},{},{},{}\n", csv_field(e.path),
                       std::isfinite(e.score) ? fmt::format("{:.6g}", e.score) : "inf", e.round,
                       std::isfinite(e.tau) ? fmt::format("{:.6g}", e.tau) : "");
  return csv;
}

void write_clean_result(const fs::path& dir, const CleanResult& r) {
  // Serialised before anything is written, clean.json last: it is what says the result is whole.
  const std::string csv = rejected_csv(r), doc = to_json(r).dump(1) + "\n";
  write_file_atomic(dir / "rejected.csv", csv);
  write_file_atomic(dir / "clean.json", doc);
}

CleanResult read_clean_result(const fs::path& dir) {
  const fs::path file = dir / "clean.json";
  return clean_result_from_json(read_json_file(file, uint64_t(256) << 20),
                                printable(file.string()));
}

bool is_clean_result(const fs::path& dir) {
  try {
    const auto j = read_json_file(dir / "clean.json", uint64_t(256) << 20);
    return j.is_object() && j.value("format", "") == kCleanFormat;
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace mirad
