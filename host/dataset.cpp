// Dataset layouts: directory scanning, KSDD2 mask-derived labels, list files, validation.
#include "host/dataset.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <set>
#include <system_error>

#include "core/error.h"
#include "engine/io/file_io.h"
#include "host/image.h"
#include "host/thread_pool.h"

namespace mirad {

namespace fs = std::filesystem;

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string trim(std::string_view s) {
  std::size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

void require_dir(const fs::path& dir, std::string_view what) {
  std::error_code ec;
  CHECK_INPUT(fs::is_directory(dir, ec), "{}: missing folder ({})", dir.string(), what);
}

bool is_hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

// Sorted subfolder names, skipping hidden ones (.git, .DS_Store folders and the like).
std::vector<std::string> subfolders(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory(ec) && !is_hidden(e.path())) names.push_back(e.path().filename().string());
  CHECK_INPUT(!ec, "{}: cannot list folder ({})", dir.string(), ec.message());
  std::sort(names.begin(), names.end());
  return names;
}

// Sorted image files (by extension) directly inside dir.
std::vector<fs::path> image_files(const fs::path& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file(ec) && !is_hidden(e.path()) && has_image_extension(e.path()))
      files.push_back(e.path());
  CHECK_INPUT(!ec, "{}: cannot list folder ({})", dir.string(), ec.message());
  std::sort(files.begin(), files.end(), [](const fs::path& a, const fs::path& b) {
    return a.generic_string() < b.generic_string();
  });
  return files;
}

void sort_items(std::vector<Item>& items) {
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return a.path.generic_string() < b.path.generic_string();
  });
}

void require_train(const Dataset& d) {
  CHECK_INPUT(!d.train.empty(), "{}: empty training set (no images found)", d.root.string());
}

// One split in the folder layout shared by MVTec's test/ and plain folders: good/ plus defect
// folders, with masks under gt_dir/<defect>/<stem>_mask.png when gt_dir exists.
std::vector<Item> scan_class_folders(const fs::path& dir, const fs::path& gt_dir,
                                     const std::set<std::string>& skip) {
  std::vector<Item> items;
  std::error_code ec;
  for (const std::string& cls : subfolders(dir)) {
    if (skip.count(cls)) continue;
    const bool good = cls == "good";
    const fs::path masks = gt_dir / cls;
    const bool has_masks = !good && !gt_dir.empty() && fs::is_directory(masks, ec);
    for (const fs::path& p : image_files(dir / cls)) {
      Item it{p, good ? Label::good : Label::defect, cls, {}};
      if (has_masks) {
        fs::path m = masks / (p.stem().string() + "_mask.png");
        // The ground-truth folder for this class exists, so a missing mask is a broken
        // dataset rather than a layout without masks.
        CHECK_INPUT(fs::is_regular_file(m, ec), "{}: missing mask for {}", m.string(), p.string());
        it.mask_path = m;
      }
      items.push_back(std::move(it));
    }
  }
  sort_items(items);
  return items;
}

// A mask with any non-zero pixel marks a defect image (KSDD2's only label source).
bool mask_has_defect(const fs::path& mask) {
  DecodeOptions opt;
  opt.color = ColorMode::gray;
  Image m = decode_image(mask, opt);
  const uint8_t* p = m.u8();
  return std::any_of(p, p + m.numel(), [](uint8_t v) { return v != 0; });
}

std::vector<Item> scan_ksdd2_split(const fs::path& dir, ThreadPool* pool) {
  require_dir(dir, "KSDD2 split");
  std::vector<fs::path> files = image_files(dir);
  // Pairs are matched on stem + lower-case extension: 10.PNG goes with 10_GT.png, as the
  // extension's case carries no meaning (the decoder reads the signature).
  std::map<std::string, fs::path> by_key;
  for (const auto& f : files) {
    const std::string key = f.stem().string() + lower(f.extension().string());
    auto [it, fresh] = by_key.emplace(key, f);
    CHECK_INPUT(fresh, "{} and {}: two files whose names differ only in the case of the extension",
                it->second.string(), f.string());
  }
  std::vector<Item> items;
  for (const auto& f : files) {
    const std::string stem = f.stem().string();
    const std::string ext = lower(f.extension().string());
    const bool is_mask = stem.size() > 3 && stem.ends_with("_GT");
    if (is_mask) {
      const std::string image_key = stem.substr(0, stem.size() - 3) + ext;
      CHECK_INPUT(by_key.count(image_key), "{}: mask without its image {}", f.string(),
                  (dir / image_key).string());
      continue;
    }
    auto mask = by_key.find(stem + "_GT" + ext);
    CHECK_INPUT(mask != by_key.end(), "{}: image without its mask {}", f.string(),
                (dir / (stem + "_GT" + f.extension().string())).string());
    items.push_back(Item{f, Label::good, "good", mask->second});
  }
  auto label_one = [&](std::size_t i) {
    if (mask_has_defect(items[i].mask_path)) {
      items[i].label = Label::defect;
      items[i].defect_type = "defect";
    }
  };
  if (pool) {
    pool->parallel_for(items.size(), label_one);
  } else {
    for (std::size_t i = 0; i < items.size(); ++i) label_one(i);
  }
  sort_items(items);
  return items;
}

// require_regular_file, with the list file and line in front of its message.
void require_listed_file(const fs::path& path, const fs::path& list, int line_no) {
  try {
    require_regular_file(path);
  } catch (const InputError& e) {
    throw InputError(fmt::format("{}:{}: {}", list.string(), line_no, e.what()));
  }
}

std::vector<Item> read_list(const fs::path& list) {
  // A FIFO or device as the list would block or never end.
  require_regular_file(list);
  std::ifstream in(list);
  CHECK_INPUT(in.good(), "{}: cannot open list file", list.string());
  const fs::path base = list.parent_path();
  auto resolve = [&](const std::string& s) {
    fs::path p(s);
    return p.is_absolute() ? p : base / p;
  };
  std::vector<Item> items;
  std::set<std::string> seen;
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    const std::string t = trim(line);
    if (t.empty() || t[0] == '#') continue;
    std::vector<std::string> fields;
    std::size_t start = 0;
    for (;;) {
      std::size_t comma = t.find(',', start);
      fields.push_back(trim(std::string_view(t).substr(start, comma - start)));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    CHECK_INPUT(fields.size() <= 4 && !fields[0].empty(),
                "{}:{}: expected path[,label[,defect_type[,mask_path]]], got '{}'", list.string(),
                line_no, t);
    Item it;
    it.path = resolve(fields[0]);
    if (fields.size() > 1 && !fields[1].empty()) {
      try {
        it.label = parse_label(fields[1]);
      } catch (const InputError& e) {
        throw InputError(fmt::format("{}:{}: {}", list.string(), line_no, e.what()));
      }
    }
    it.defect_type = it.label == Label::good ? "good" : "defect";
    if (fields.size() > 2 && !fields[2].empty()) it.defect_type = fields[2];
    if (fields.size() > 3 && !fields[3].empty()) it.mask_path = resolve(fields[3]);
    // The system's reason, not just "no such file": a symlink loop or a FIFO says so.
    require_listed_file(it.path, list, line_no);
    if (!it.mask_path.empty()) require_listed_file(it.mask_path, list, line_no);
    CHECK_INPUT(seen.insert(it.path.lexically_normal().generic_string()).second,
                "{}:{}: {} is listed twice", list.string(), line_no, it.path.string());
    items.push_back(std::move(it));
  }
  sort_items(items);
  return items;
}

}  // namespace

const char* label_name(Label label) {
  return label == Label::good ? "good" : "defect";
}

Label parse_label(std::string_view text) {
  const std::string t = lower(trim(text));
  if (t == "good" || t == "normal" || t == "ok" || t == "0") return Label::good;
  if (t == "defect" || t == "anomaly" || t == "bad" || t == "ng" || t == "1") return Label::defect;
  throw InputError(fmt::format("unknown label '{}' (use good or defect)", text));
}

bool has_image_extension(const fs::path& path) {
  const std::string ext = lower(path.extension().string());
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

std::size_t Dataset::count(const std::vector<Item>& split, Label label) const {
  return static_cast<std::size_t>(
      std::count_if(split.begin(), split.end(), [&](const Item& i) { return i.label == label; }));
}

void validate_item(const Item& item) {
  ImageInfo img = read_image_info(item.path);
  if (item.mask_path.empty()) return;
  ImageInfo mask = read_image_info(item.mask_path);
  CHECK_INPUT(mask.width == img.width && mask.height == img.height,
              "{}: mask is {}x{} but its image {} is {}x{}", item.mask_path.string(), mask.width,
              mask.height, item.path.string(), img.width, img.height);
}

void Dataset::validate(ThreadPool* pool) const {
  CHECK_INPUT(!train.empty(), "{}: empty training set", root.string());
  std::vector<const Item*> all;
  for (const Item& i : train) all.push_back(&i);
  for (const Item& i : test) all.push_back(&i);
  // One slot per item, so that workers never share a string and the report keeps item order.
  std::vector<std::string> problems(all.size());
  auto check = [&](std::size_t i) {
    try {
      validate_item(*all[i]);
    } catch (const InputError& e) {
      problems[i] = e.what();
    }
  };
  if (pool) {
    pool->parallel_for(all.size(), check);
  } else {
    for (std::size_t i = 0; i < all.size(); ++i) check(i);
  }
  std::vector<std::string> found;
  for (auto& p : problems)
    if (!p.empty()) found.push_back(std::move(p));
  if (found.empty()) return;
  constexpr std::size_t kShown = 20;
  std::string msg = fmt::format("dataset {}: {} of {} items have problems:", root.string(),
                                found.size(), all.size());
  for (std::size_t i = 0; i < std::min(found.size(), kShown); ++i) msg += "\n  " + found[i];
  if (found.size() > kShown) msg += fmt::format("\n  ... and {} more", found.size() - kShown);
  throw InputError(msg);
}

Dataset load_mvtec(const fs::path& category_dir) {
  Dataset d;
  d.layout = "mvtec";
  d.root = category_dir;
  require_dir(category_dir, "MVTec AD category");
  require_dir(category_dir / "train" / "good", "MVTec AD training images");
  require_dir(category_dir / "test", "MVTec AD test images");
  for (const fs::path& p : image_files(category_dir / "train" / "good"))
    d.train.push_back(Item{p, Label::good, "good", {}});
  require_train(d);
  std::error_code ec;
  const fs::path gt = category_dir / "ground_truth";
  d.test =
      scan_class_folders(category_dir / "test", fs::is_directory(gt, ec) ? gt : fs::path{}, {});
  return d;
}

Dataset load_ksdd2(const fs::path& root, ThreadPool* pool) {
  Dataset d;
  d.layout = "ksdd2";
  d.root = root;
  require_dir(root, "KSDD2 root");
  d.train = scan_ksdd2_split(root / "train", pool);
  d.test = scan_ksdd2_split(root / "test", pool);
  require_train(d);
  return d;
}

Dataset load_folder(const fs::path& root) {
  Dataset d;
  d.layout = "folder";
  d.root = root;
  require_dir(root, "dataset root");
  std::error_code ec;
  auto scan_split = [&](const fs::path& dir) {
    require_dir(dir / "good", "good images");
    // Loose images beside good/ would otherwise be silently left out of both splits.
    std::vector<fs::path> loose = image_files(dir);
    if (!loose.empty())
      throw InputError(fmt::format("{}: image outside good/ and the defect folders of {}",
                                   loose[0].string(), dir.string()));
    const fs::path gt = dir / "ground_truth";
    const bool has_gt = fs::is_directory(gt, ec);
    return scan_class_folders(dir, has_gt ? gt : fs::path{}, {"ground_truth", "train", "test"});
  };
  if (fs::is_directory(root / "train", ec)) {
    d.train = scan_split(root / "train");
    if (fs::is_directory(root / "test", ec)) d.test = scan_split(root / "test");
  } else {
    d.train = scan_split(root);
  }
  require_train(d);
  return d;
}

Dataset load_list(const fs::path& train_list, const fs::path& test_list) {
  Dataset d;
  d.layout = "list";
  d.root = train_list.parent_path();
  d.train = read_list(train_list);
  if (!test_list.empty()) d.test = read_list(test_list);
  CHECK_INPUT(!d.train.empty(), "{}: empty training set (no items in the list)",
              train_list.string());
  return d;
}

Dataset load_dataset(std::string_view layout, const fs::path& root, ThreadPool* pool) {
  if (layout == "mvtec") return load_mvtec(root);
  if (layout == "ksdd2") return load_ksdd2(root, pool);
  if (layout == "folder") return load_folder(root);
  if (layout == "list") return load_list(root);
  throw InputError(
      fmt::format("unknown dataset layout '{}' (known: mvtec, ksdd2, folder, list)", layout));
}

}  // namespace mirad
