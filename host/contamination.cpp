// Contamination protocol: seeded sampling of defect images, split building, manifest JSON.
#include "host/contamination.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>

#include "engine/error.h"
#include "engine/file_io.h"

namespace mirad {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Paths in manifests are relative to the dataset root, in generic ('/') form, so that the
// same manifest matches the same files on another machine or mount point.
std::string rel_key(const fs::path& p, const fs::path& root) {
  if (root.empty()) return p.lexically_normal().generic_string();
  return p.lexically_normal().lexically_relative(root.lexically_normal()).generic_string();
}

fs::path from_key(const std::string& key, const fs::path& root) {
  return root.empty() ? fs::path(key) : root / fs::path(key);
}

void sort_by_path(std::vector<Item>& items) {
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return a.path.generic_string() < b.path.generic_string();
  });
}

}  // namespace

uint64_t uniform_below(std::mt19937_64& rng, uint64_t bound) {
  CHECK_THROW(bound > 0);
  // 2^64 mod bound, computed in 64 bits as (2^64 - bound) mod bound.
  const uint64_t threshold = (0 - bound) % bound;
  for (;;) {
    const uint64_t x = rng();
    if (x >= threshold) return x % bound;
  }
}

std::vector<std::size_t> sample_without_replacement(std::size_t n, std::size_t k, uint64_t seed) {
  CHECK_THROW(k <= n);
  std::mt19937_64 rng(seed);
  std::vector<std::size_t> idx(n);
  std::iota(idx.begin(), idx.end(), std::size_t{0});
  for (std::size_t i = 0; i < k; ++i) {
    const std::size_t j = i + static_cast<std::size_t>(uniform_below(rng, n - i));
    std::swap(idx[i], idx[j]);
  }
  idx.resize(k);
  return idx;
}

std::size_t contamination_count(double ratio, std::size_t n_train) {
  CHECK_INPUT(std::isfinite(ratio) && ratio >= 0.0,
              "contamination ratio must be a finite number >= 0, got {}", ratio);
  return static_cast<std::size_t>(std::floor(ratio * static_cast<double>(n_train) + 1e-9));
}

ContaminatedDataset contaminate(const Dataset& clean, const ContaminationOptions& options) {
  // Candidates in the dataset's sorted order, so a seed names the same images everywhere.
  std::vector<const Item*> defects;
  for (const Item& it : clean.test)
    if (it.label == Label::defect) defects.push_back(&it);
  const std::size_t n =
      options.count ? *options.count : contamination_count(options.ratio, clean.train.size());
  CHECK_INPUT(n <= defects.size(),
              "{}: contamination needs {} defect images ({}), but the test split has only {}",
              clean.root.string(), n,
              options.count ? fmt::format("count {}", *options.count)
                            : fmt::format("ratio {} of {} training images", options.ratio,
                                          clean.train.size()),
              defects.size());

  ContaminationManifest m;
  m.layout = clean.layout;
  m.root = clean.root;
  m.seed = options.seed;
  m.ratio = options.count ? static_cast<double>(n) / std::max<std::size_t>(clean.train.size(), 1)
                          : options.ratio;
  m.requested_count = options.count;
  m.overlap = options.overlap;
  m.train_before = clean.train.size();
  m.test_before = clean.test.size();
  m.defects_available = defects.size();
  for (std::size_t i : sample_without_replacement(defects.size(), n, options.seed))
    m.moved.push_back(*defects[i]);
  sort_by_path(m.moved);
  m.train_after = m.train_before + n;
  m.test_after = options.overlap ? m.test_before : m.test_before - n;

  // Building through apply_manifest means a manifest read back goes down the very same path.
  Dataset d = apply_manifest(clean, m);
  return {std::move(d), std::move(m)};
}

Dataset apply_manifest(const Dataset& clean, const ContaminationManifest& m) {
  const std::string where = clean.root.string();
  CHECK_INPUT(clean.train.size() == m.train_before && clean.test.size() == m.test_before,
              "{}: the manifest was made from a dataset with {} train / {} test images, this one "
              "has {} / {}",
              where, m.train_before, m.test_before, clean.train.size(), clean.test.size());
  std::map<std::string, std::size_t> test_index;
  for (std::size_t i = 0; i < clean.test.size(); ++i)
    test_index.emplace(rel_key(clean.test[i].path, clean.root), i);

  Dataset d;
  d.layout = clean.layout;
  d.root = clean.root;
  d.train = clean.train;
  std::vector<bool> moved(clean.test.size(), false);
  for (const Item& it : m.moved) {
    const std::string key = rel_key(it.path, m.root);
    auto found = test_index.find(key);
    CHECK_INPUT(found != test_index.end() && clean.test[found->second].label == Label::defect,
                "{}: the manifest moves {}, which is not a defect image of the test split", where,
                key);
    CHECK_INPUT(!moved[found->second], "{}: the manifest moves {} twice", where, key);
    moved[found->second] = true;
    // The dataset's own item (not the manifest's copy), so masks and types stay consistent.
    d.train.push_back(clean.test[found->second]);
  }
  for (std::size_t i = 0; i < clean.test.size(); ++i)
    if (m.overlap || !moved[i]) d.test.push_back(clean.test[i]);
  sort_by_path(d.train);
  CHECK_INPUT(d.train.size() == m.train_after && d.test.size() == m.test_after,
              "{}: the manifest says {} train / {} test images after contamination, applying it "
              "gives {} / {}",
              where, m.train_after, m.test_after, d.train.size(), d.test.size());
  return d;
}

void write_manifest(const fs::path& path, const ContaminationManifest& m) {
  json moved = json::array();
  for (const Item& it : m.moved) {
    moved.push_back({{"path", rel_key(it.path, m.root)},
                     {"label", label_name(it.label)},
                     {"defect_type", it.defect_type},
                     {"mask_path", it.mask_path.empty() ? "" : rel_key(it.mask_path, m.root)}});
  }
  json j = {
      {"schema", "mirad.contamination"},
      {"schema_version", ContaminationManifest::kSchemaVersion},
      {"layout", m.layout},
      {"root", m.root.generic_string()},
      {"seed", m.seed},
      {"ratio", m.ratio},
      {"requested_count", m.requested_count ? json(*m.requested_count) : json(nullptr)},
      {"overlap", m.overlap},
      {"rng",
       "mt19937_64, rejection-sampled uniform_below, partial Fisher-Yates over the "
       "test split's defect images in path order"},
      {"counts",
       {{"train_before", m.train_before},
        {"test_before", m.test_before},
        {"defects_available", m.defects_available},
        {"moved", m.moved.size()},
        {"train_after", m.train_after},
        {"test_after", m.test_after}}},
      {"moved", moved},
  };
  write_file_atomic(path, j.dump(2) + "\n");
}

ContaminationManifest read_manifest(const fs::path& path) {
  std::ifstream in(path);
  CHECK_INPUT(in.good(), "{}: cannot open manifest", path.string());
  ContaminationManifest m;
  try {
    json j = json::parse(in);
    CHECK_INPUT(j.at("schema").get<std::string>() == "mirad.contamination",
                "not a contamination manifest (schema '{}')", j.at("schema").get<std::string>());
    const int version = j.at("schema_version").get<int>();
    CHECK_INPUT(version == ContaminationManifest::kSchemaVersion,
                "unsupported schema_version {} (this build reads {})", version,
                ContaminationManifest::kSchemaVersion);
    m.layout = j.at("layout").get<std::string>();
    m.root = fs::path(j.at("root").get<std::string>());
    m.seed = j.at("seed").get<uint64_t>();
    m.ratio = j.at("ratio").get<double>();
    if (!j.at("requested_count").is_null())
      m.requested_count = j.at("requested_count").get<std::size_t>();
    m.overlap = j.at("overlap").get<bool>();
    const json& c = j.at("counts");
    m.train_before = c.at("train_before").get<std::size_t>();
    m.test_before = c.at("test_before").get<std::size_t>();
    m.defects_available = c.at("defects_available").get<std::size_t>();
    m.train_after = c.at("train_after").get<std::size_t>();
    m.test_after = c.at("test_after").get<std::size_t>();
    for (const json& e : j.at("moved")) {
      Item it;
      it.path = from_key(e.at("path").get<std::string>(), m.root);
      it.label = parse_label(e.at("label").get<std::string>());
      it.defect_type = e.at("defect_type").get<std::string>();
      const std::string mask = e.at("mask_path").get<std::string>();
      if (!mask.empty()) it.mask_path = from_key(mask, m.root);
      m.moved.push_back(std::move(it));
    }
    CHECK_INPUT(m.moved.size() == c.at("moved").get<std::size_t>(),
                "counts.moved is {} but {} items are listed", c.at("moved").get<std::size_t>(),
                m.moved.size());
  } catch (const json::exception& e) {
    throw InputError(fmt::format("{}: malformed manifest ({})", path.string(), e.what()));
  } catch (const InputError& e) {
    throw InputError(fmt::format("{}: {}", path.string(), e.what()));
  }
  return m;
}

}  // namespace mirad
