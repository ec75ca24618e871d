// metrics_probe: runs engine/metrics on JSON cases from stdin and prints JSON results, so that
// tests/python/test_metrics_reference.py can compare it with scikit-learn and scipy.
//
// Input:  {"cases": [{"op": "...", ...}, ...]}   Output: {"results": [{...}, ...]}
// Ops and their fields:
//   auroc      scores, labels                        -> {auroc}
//   f1_max     scores, labels                        -> {f1, threshold, precision, recall}
//   f1_at      scores, labels, threshold             -> {f1, threshold, precision, recall}
//   pixel      images: [{height, width, map, mask}], max_fpr
//                                                    -> {auroc, aupro, n_pixels, n_good_pixels,
//                                                        n_components, pixel_auroc, aupro_alone}
//   components height, width, mask                   -> {n, labels}
//   cleaning   rejected, contaminated, n_total       -> {tp, fp, fn, tn, precision, recall, f1,
//                                                        false_rejections, false_rejection_rate}
// JSON has no NaN or Inf: a score may be the string "nan", "inf" or "-inf". An InputError gives
// {"error": message} for that case; the program exits 0 unless its input is malformed.
#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.h"
#include "engine/detector/metrics.h"

namespace {

using nlohmann::json;
namespace m = mirad::metrics;

double number(const json& v) {
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s == "nan") return std::numeric_limits<double>::quiet_NaN();
    if (s == "inf") return std::numeric_limits<double>::infinity();
    if (s == "-inf") return -std::numeric_limits<double>::infinity();
    throw std::runtime_error("metrics_probe: bad number string '" + s + "'");
  }
  return v.get<double>();
}

std::vector<double> numbers(const json& a) {
  std::vector<double> out;
  for (const json& v : a) out.push_back(number(v));
  return out;
}

std::vector<uint8_t> bytes(const json& a) {
  return a.get<std::vector<uint8_t>>();
}

// JSON cannot carry +/-Inf either: write them back as strings.
json out_number(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  return x;
}

json f1_json(const m::F1& r) {
  return {{"f1", r.f1},
          {"threshold", out_number(r.threshold)},
          {"precision", r.precision},
          {"recall", r.recall}};
}

json pixel_case(const json& c) {
  std::vector<std::vector<float>> maps;
  std::vector<std::vector<uint8_t>> masks;
  std::vector<m::MapRef> refs;
  for (const json& im : c.at("images")) {
    std::vector<float> map;
    for (double x : numbers(im.at("map"))) map.push_back(float(x));
    maps.push_back(std::move(map));
    masks.push_back(bytes(im.at("mask")));
  }
  for (size_t i = 0; i < maps.size(); ++i) {
    const json& im = c.at("images")[i];
    const int64_t h = im.at("height"), w = im.at("width");
    if (int64_t(maps[i].size()) != h * w || int64_t(masks[i].size()) != h * w)
      throw std::runtime_error("metrics_probe: image size does not match height x width");
    refs.push_back({maps[i].data(), masks[i].data(), h, w});
  }
  const double max_fpr = c.value("max_fpr", 0.3);
  const m::PixelMetrics r = m::pixel_metrics(refs, max_fpr);
  return {{"auroc", r.auroc},
          {"aupro", r.aupro},
          {"n_pixels", r.n_pixels},
          {"n_good_pixels", r.n_good_pixels},
          {"n_components", r.n_components},
          {"pixel_auroc", m::pixel_auroc(refs)},
          {"aupro_alone", m::aupro(refs, max_fpr)}};
}

json run_case(const json& c) {
  const std::string op = c.at("op");
  if (op == "auroc") return {{"auroc", m::auroc(numbers(c.at("scores")), bytes(c.at("labels")))}};
  if (op == "f1_max") return f1_json(m::f1_max(numbers(c.at("scores")), bytes(c.at("labels"))));
  if (op == "f1_at")
    return f1_json(
        m::f1_at(numbers(c.at("scores")), bytes(c.at("labels")), number(c.at("threshold"))));
  if (op == "pixel") return pixel_case(c);
  if (op == "components") {
    const int64_t h = c.at("height"), w = c.at("width");
    const std::vector<uint8_t> mask = bytes(c.at("mask"));
    if (int64_t(mask.size()) != h * w)
      throw std::runtime_error("metrics_probe: mask size does not match height x width");
    std::vector<int32_t> labels(size_t(h * w));
    const int64_t n = m::label_components_8(mask.data(), h, w, labels.data());
    return {{"n", n}, {"labels", labels}};
  }
  if (op == "cleaning") {
    const m::Cleaning r = m::cleaning(c.at("rejected").get<std::vector<int64_t>>(),
                                      c.at("contaminated").get<std::vector<int64_t>>(),
                                      c.at("n_total").get<int64_t>());
    return {{"tp", r.tp},
            {"fp", r.fp},
            {"fn", r.fn},
            {"tn", r.tn},
            {"precision", r.precision},
            {"recall", r.recall},
            {"f1", r.f1},
            {"false_rejections", r.false_rejections()},
            {"false_rejection_rate", r.false_rejection_rate}};
  }
  throw std::runtime_error("metrics_probe: unknown op '" + op + "'");
}

}  // namespace

int main() {
  try {
    const json input = json::parse(std::cin);
    json results = json::array();
    for (const json& c : input.at("cases")) {
      try {
        results.push_back(run_case(c));
      } catch (const mirad::InputError& e) {
        results.push_back({{"error", e.what()}});
      }
    }
    // dump() writes doubles with enough digits to read back the same value.
    std::cout << json{{"results", results}}.dump() << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 2;
  }
}
