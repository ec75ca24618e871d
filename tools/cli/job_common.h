// Options and helpers shared by train, clean, predict and eval: the dataset (layout, optional
// contamination manifest), the config file with --set overrides, the thread budget, review
// lists (the terminal progress line is tools/cli/progress.h).
#pragma once

#include <CLI/CLI.hpp>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "engine/config/detector_config.h"
#include "engine/io/path_key.h"  // path_key: the key of contaminated_paths
#include "host/contamination.h"
#include "host/dataset.h"
#include "host/job_progress.h"
#include "tools/cli/progress.h"

namespace mirad::cli {

struct DataOptions {
  std::string data, layout = "auto", contamination;
};

struct RunOptions {
  std::string config, device, features, normalize;
  std::vector<std::string> set;  // key.path=value overrides
  std::string checkpoint;        // train/clean: resumable runs
  int threads = 0;
  uint64_t seed = 0;
  bool seed_given = false;
  bool strict = false, json = false;
};

void add_data_options(CLI::App* cmd, DataOptions& o, bool required = true);
void add_run_options(CLI::App* cmd, RunOptions& o);

// The dataset with the manifest's split applied (moved test defects join training). Layout
// "auto": MVTec when DIR/train/good exists, plain folders when DIR/good exists, else every
// image under DIR as one (nominally good) training set.
struct LoadedData {
  Dataset dataset;
  std::optional<ContaminationManifest> manifest;
  std::vector<std::filesystem::path> inputs;  // every input path, for overwrite checks
};
LoadedData load_data(const DataOptions& o);

// The config: defaults, then the --config file, then each --set, then --device / --seed.
// Unknown keys anywhere are errors.
DetectorConfig load_config(const RunOptions& o);

// train's and clean's options: the data, the run, and a person's review (--keep, --reject).
void add_training_options(CLI::App* cmd, DataOptions& data, RunOptions& run, std::string& keep,
                          std::string& reject);

// Paths of a list file: one per line, '#' comments and blank lines skipped, relative paths
// against the list's folder.
std::vector<std::filesystem::path> read_path_list(const std::filesystem::path& list);

// InputError when two of the (option, path) outputs are one path or one lies inside the other:
// `--checkpoint X --out X` would have the end of the run replace (or delete) the other's files.
// Empty paths are skipped. Checked before any work.
void refuse_overlapping_outputs(const std::vector<std::pair<std::string, std::string>>& outputs);

// Creates the missing parent folders of `path` (an output folder a subcommand is about to
// stage), or InputError naming the option and the system's reason ("Permission denied").
void create_parent_folders(const std::filesystem::path& path, const std::string& option);

// InputError unless `dir` is a folder this process can write into, or could be created (its
// nearest existing ancestor is a writable folder): for folders written only late in a run
// (--checkpoint, after the first round), checked before any work, with the system's reason.
void check_writable_folder(const std::filesystem::path& dir, const std::string& option);

// Truly contaminated training images (from the manifest), as path_key strings.
std::vector<std::string> contaminated_paths(const LoadedData& d);

}  // namespace mirad::cli
