// Contamination protocol: seeded sampling of defect images, split building, manifest JSON.
#include "host/contamination.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>

#include "core/error.h"
#include "engine/io/file_io.h"
#include "engine/io/json_io.h"

namespace mirad {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Written into every manifest and required by read_manifest: a seed reproduces a split only
// under the same sampler.
constexpr const char* kRngDescription =
    "mt19937_64, rejection-sampled uniform_below, partial Fisher-Yates over the test split's "
    "defect images in path order";

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
  const double n = std::floor(ratio * static_cast<double>(n_train) + 1e-9);
  // A manifest's ratio of 1e300 asks for more images than a size_t counts, and casting such a
  // double is undefined behaviour (UBSan, found by tests/fuzz/fuzz_manifest): refuse it here.
  CHECK_INPUT(n < 0x1p64, "contamination ratio {} of {} training images asks for {} images", ratio,
              n_train, n);
  return static_cast<std::size_t>(n);
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
                printable(key));
    CHECK_INPUT(!moved[found->second], "{}: the manifest moves {} twice", where, printable(key));
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
  // JSON strings must be UTF-8; refusing here names the file, where dump() would throw a
  // type_error (an "internal error") with no name.
  require_utf8_path(m.root, "contamination manifest");
  for (const Item& it : m.moved) {
    require_utf8_path(it.path, "contamination manifest");
    require_utf8_path(it.mask_path, "contamination manifest");
    CHECK_INPUT(is_valid_utf8(it.defect_type),
                "contamination manifest: defect type '{}' of {} is not valid UTF-8",
                printable(it.defect_type), printable(it.path.string()));
  }
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
      {"rng", kRngDescription},
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

namespace {

// Field accessors for read_manifest: each names the field (and item) it refuses, and takes
// only the JSON type the writer produces, so that "seed": -1 or 1.5 is an error rather than a
// wrapped or truncated number.
const json& field(const json& obj, const std::string& key, const std::string& where) {
  CHECK_INPUT(obj.is_object(), "{} must be an object", where);
  auto it = obj.find(key);
  CHECK_INPUT(it != obj.end(), "missing '{}'{}", key, where.empty() ? "" : " in " + where);
  return *it;
}

std::string name_of(const std::string& key, const std::string& where) {
  return where.empty() ? key : where + "." + key;
}

uint64_t unsigned_field(const json& obj, const std::string& key, const std::string& where = "") {
  const json& v = field(obj, key, where);
  // Integers below 2^64 only: 2^64 itself parses as a float, and get<size_t>() made it 0.
  CHECK_INPUT(v.is_number_unsigned(), "{} must be a non-negative integer below 2^64, got {}",
              name_of(key, where), json_excerpt(v));
  return v.get<uint64_t>();
}

std::string string_field(const json& obj, const std::string& key, const std::string& where = "") {
  const json& v = field(obj, key, where);
  CHECK_INPUT(v.is_string(), "{} must be a string, got {}", name_of(key, where), json_excerpt(v));
  std::string s = v.get<std::string>();
  // A NUL cannot be in a path, and would cut every message that prints this one short.
  CHECK_INPUT(s.find('\0') == std::string::npos, "{} contains a NUL byte: '{}'",
              name_of(key, where), printable(s));
  return s;
}

// A path as the writer stores it: relative to the root (or, for list layouts, whatever the
// list named); empty only for a missing mask.
std::string path_field(const json& obj, const std::string& key, const std::string& where,
                       bool may_be_empty) {
  std::string s = string_field(obj, key, where);
  CHECK_INPUT(may_be_empty || !s.empty(), "{} must not be empty", name_of(key, where));
  return s;
}

void only_keys(const json& obj, std::initializer_list<const char*> keys, const std::string& where) {
  for (auto it = obj.begin(); it != obj.end(); ++it)
    CHECK_INPUT(std::any_of(keys.begin(), keys.end(), [&](const char* k) { return it.key() == k; }),
                "unknown field '{}'{}", printable(it.key()), where.empty() ? "" : " in " + where);
}

std::string describe_item(const std::string& path, const std::string& type,
                          const std::string& mask) {
  return fmt::format("{} ({}{})", printable(path), printable(type),
                     mask.empty() ? "" : ", mask " + printable(mask));
}

}  // namespace

ContaminationManifest read_manifest(const fs::path& path) {
  ContaminationManifest m;
  try {
    const json j =
        parse_json_bounded(read_file_text(path, kMaxManifestBytes), "malformed manifest");
    CHECK_INPUT(j.is_object(), "malformed manifest (not a JSON object)");
    CHECK_INPUT(string_field(j, "schema") == "mirad.contamination",
                "not a contamination manifest (schema '{}')", printable(string_field(j, "schema")));
    const uint64_t version = unsigned_field(j, "schema_version");
    CHECK_INPUT(version == ContaminationManifest::kSchemaVersion,
                "unsupported schema_version {} (this build reads {})", version,
                ContaminationManifest::kSchemaVersion);
    only_keys(j,
              {"schema", "schema_version", "layout", "root", "seed", "ratio", "requested_count",
               "overlap", "rng", "counts", "moved"},
              "");
    m.layout = string_field(j, "layout");
    CHECK_INPUT(
        m.layout == "mvtec" || m.layout == "ksdd2" || m.layout == "folder" || m.layout == "list",
        "unknown layout '{}' (known: mvtec, ksdd2, folder, list)", printable(m.layout));
    m.root = fs::path(string_field(j, "root"));
    m.seed = unsigned_field(j, "seed");
    const json& ratio = field(j, "ratio", "");
    CHECK_INPUT(ratio.is_number() && std::isfinite(ratio.get<double>()) && ratio.get<double>() >= 0,
                "ratio must be a finite number >= 0, got {}", json_excerpt(ratio));
    m.ratio = ratio.get<double>();
    if (!field(j, "requested_count", "").is_null())
      m.requested_count = unsigned_field(j, "requested_count");
    const json& overlap = field(j, "overlap", "");
    CHECK_INPUT(overlap.is_boolean(), "overlap must be true or false, got {}",
                json_excerpt(overlap));
    m.overlap = overlap.get<bool>();
    CHECK_INPUT(string_field(j, "rng") == kRngDescription,
                "rng '{}' is not the sampler this build uses ('{}'): the seed would not give "
                "the same draw",
                printable(string_field(j, "rng")), kRngDescription);

    const json& c = field(j, "counts", "");
    only_keys(
        c,
        {"train_before", "test_before", "defects_available", "moved", "train_after", "test_after"},
        "counts");
    m.train_before = unsigned_field(c, "train_before", "counts");
    m.test_before = unsigned_field(c, "test_before", "counts");
    m.defects_available = unsigned_field(c, "defects_available", "counts");
    m.train_after = unsigned_field(c, "train_after", "counts");
    m.test_after = unsigned_field(c, "test_after", "counts");
    const uint64_t n_moved = unsigned_field(c, "moved", "counts");

    const json& moved = field(j, "moved", "");
    CHECK_INPUT(moved.is_array(), "moved must be an array, got {}", json_excerpt(moved));
    for (std::size_t i = 0; i < moved.size(); ++i) {
      const std::string where = fmt::format("moved[{}]", i);
      const json& e = moved[i];
      CHECK_INPUT(e.is_object(), "{} must be an object, got {}", where, json_excerpt(e));
      only_keys(e, {"path", "label", "defect_type", "mask_path"}, where);
      Item it;
      it.path = from_key(path_field(e, "path", where, false), m.root);
      const std::string label = string_field(e, "label", where);
      CHECK_INPUT(label == "defect",
                  "{}.label must be \"defect\" (only defect images are moved), "
                  "got '{}'",
                  where, printable(label));
      it.label = Label::defect;
      it.defect_type = string_field(e, "defect_type", where);
      const std::string mask = path_field(e, "mask_path", where, true);
      if (!mask.empty()) it.mask_path = from_key(mask, m.root);
      m.moved.push_back(std::move(it));
    }
    // The counts must agree with each other and with the list; --check compares them with
    // a fresh draw too, but a self-contradicting manifest is refused here, by name.
    CHECK_INPUT(n_moved == m.moved.size(), "counts.moved is {} but {} items are listed", n_moved,
                m.moved.size());
    CHECK_INPUT(m.defects_available <= m.test_before && n_moved <= m.defects_available,
                "counts: {} moved of {} defect images available in a test split of {}", n_moved,
                m.defects_available, m.test_before);
    CHECK_INPUT(m.train_after == m.train_before + n_moved &&
                    m.test_after == (m.overlap ? m.test_before : m.test_before - n_moved),
                "counts: {} train / {} test before and {} moved{} cannot give {} / {} after",
                m.train_before, m.test_before, n_moved, m.overlap ? " (overlap)" : "",
                m.train_after, m.test_after);
  } catch (const InputError& e) {
    throw InputError(fmt::format("{}: {}", path.string(), e.what()));
  }
  return m;
}

ContaminatedDataset check_manifest(const Dataset& clean, const ContaminationManifest& m) {
  const std::string where = clean.root.string();
  CHECK_INPUT(m.layout == clean.layout,
              "{}: the manifest is for the {} layout, the dataset was read as {}", where, m.layout,
              clean.layout);
  // The root is recorded, not used (paths are relative), so a moved dataset still checks; a
  // root naming another folder that exists is a manifest for a different dataset.
  std::error_code ec;
  const bool same_root = m.root.lexically_normal() == clean.root.lexically_normal() ||
                         fs::equivalent(m.root, clean.root, ec);
  CHECK_INPUT(same_root || !fs::exists(m.root, ec),
              "{}: the manifest was made from the dataset at {}, which is another folder", where,
              printable(m.root.string()));

  ContaminationOptions o;
  o.seed = m.seed;
  o.overlap = m.overlap;
  if (m.requested_count)
    o.count = static_cast<std::size_t>(*m.requested_count);
  else
    o.ratio = m.ratio;
  ContaminatedDataset redo = contaminate(clean, o);
  const ContaminationManifest& r = redo.manifest;
  const std::string drawn = m.requested_count
                                ? fmt::format("seed {}, count {}", m.seed, *m.requested_count)
                                : fmt::format("seed {}, ratio {}", m.seed, m.ratio);
  auto same = [&](const char* what, auto listed, auto redrawn) {
    CHECK_INPUT(listed == redrawn,
                "{}: the manifest says {} = {}, but re-drawing with {} gives {}: it does not "
                "describe this dataset's split",
                where, what, listed, drawn, redrawn);
  };
  same("ratio", m.ratio, r.ratio);
  same("counts.train_before", m.train_before, r.train_before);
  same("counts.test_before", m.test_before, r.test_before);
  same("counts.defects_available", m.defects_available, r.defects_available);
  same("counts.moved", m.moved.size(), r.moved.size());
  same("counts.train_after", m.train_after, r.train_after);
  same("counts.test_after", m.test_after, r.test_after);
  for (std::size_t i = 0; i < m.moved.size(); ++i) {
    const Item &a = m.moved[i], &b = r.moved[i];
    const std::string a_path = rel_key(a.path, m.root), b_path = rel_key(b.path, clean.root);
    const std::string a_mask = a.mask_path.empty() ? "" : rel_key(a.mask_path, m.root);
    const std::string b_mask = b.mask_path.empty() ? "" : rel_key(b.mask_path, clean.root);
    CHECK_INPUT(a_path == b_path && a.defect_type == b.defect_type && a_mask == b_mask,
                "{}: the manifest's moved[{}] is {}, but re-drawing with {} gives {}: it does "
                "not describe this dataset's split",
                where, i, describe_item(a_path, a.defect_type, a_mask), drawn,
                describe_item(b_path, b.defect_type, b_mask));
  }
  return redo;
}

}  // namespace mirad
