// Dataset layouts (MVTec AD, KSDD2, plain folders, list files) as sorted train/test item lists.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace mirad {

class ThreadPool;

enum class Label { good, defect };

const char* label_name(Label label);
// Accepts good/normal/ok/0 and defect/anomaly/bad/ng/1 (case-insensitive); InputError otherwise.
Label parse_label(std::string_view text);

struct Item {
  std::filesystem::path path;
  Label label = Label::good;
  // "good" for good items; otherwise the defect class (MVTec folder name, "defect" for KSDD2).
  std::string defect_type = "good";
  std::filesystem::path mask_path;  // empty when the layout has no mask for this item

  friend bool operator==(const Item&, const Item&) = default;
};

// Both splits are sorted by path (byte-wise on the generic form), so item order, and
// everything seeded from it, is the same on every machine and file system.
struct Dataset {
  std::string layout;          // "mvtec", "ksdd2", "folder" or "list"
  std::filesystem::path root;  // what paths in manifests are written relative to
  std::vector<Item> train, test;

  std::size_t count(const std::vector<Item>& split, Label label) const;
  // Reads the header of every image and mask (not the pixels): InputError listing every file
  // that is missing, unreadable or not an image, and every mask whose size differs from its
  // image. With a pool the headers are read in parallel.
  void validate(ThreadPool* pool = nullptr) const;
};

// The lazy form of validate() for one item, for pipelines that touch items one at a time.
void validate_item(const Item& item);

// MVTec AD, one category: <dir>/train/good, <dir>/test/<good|defect>/,
// <dir>/ground_truth/<defect>/<stem>_mask.png. A defect folder without a ground_truth folder
// gets no masks; a ground_truth folder that lacks one image's mask is an error.
Dataset load_mvtec(const std::filesystem::path& category_dir);

// KolektorSDD2: <root>/train and <root>/test, each holding <id>.png with its mask <id>_GT.png
// (the extensions' case may differ: 10.PNG pairs with 10_GT.png).
// The label comes from the mask (all zero = good), so every mask is decoded; with a pool, in
// parallel. Every image needs its mask and every mask its image.
Dataset load_ksdd2(const std::filesystem::path& root, ThreadPool* pool = nullptr);

// Plain folders. Either <root>/train/ (and optionally <root>/test/) each laid out as below, or
// <root> itself laid out as below and taken as the training split:
//   good/            good images (required)
//   <defect>/        any other folder: defect images of that type
//   ground_truth/    optional, MVTec style: ground_truth/<defect>/<stem>_mask.png
Dataset load_folder(const std::filesystem::path& root);

// List files, one item per line: path[,label[,defect_type[,mask_path]]]. Relative paths are
// relative to the list file's folder; blank lines and lines starting with '#' are skipped; the
// label defaults to good (a folder to clean is nominally all good). Missing files and duplicate
// paths are errors naming the list file and line.
Dataset load_list(const std::filesystem::path& train_list,
                  const std::filesystem::path& test_list = {});

// Dispatches on a layout name: "mvtec", "ksdd2", "folder" (root is a folder) or "list" (root
// is the training list file).
Dataset load_dataset(std::string_view layout, const std::filesystem::path& root,
                     ThreadPool* pool = nullptr);

// True for the extensions the directory layouts pick up (.png, .jpg, .jpeg, any case). The
// decoder itself goes by the file's signature, not this.
bool has_image_extension(const std::filesystem::path& path);

}  // namespace mirad
