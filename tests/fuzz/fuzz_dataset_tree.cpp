// libFuzzer target: dataset layout scanning (load_dataset for mvtec, ksdd2 and folder) of a
// small tree the input describes. First line: the layout. Every other line, "<kind> <path>"
// creates a file of that kind (dataset_files.h: p s m z j g e), "d <path>" a folder, and
// "l <path> <target>" a symbolic link (loops included). Paths are relative, without "..",
// so the tree stays in the scratch folder. A dataset that loads is then validated.
#include <sstream>

#include "dataset_files.h"
#include "fuzz_util.h"
#include "host/dataset.h"

using namespace mirad;
using namespace mirad::fuzz;

namespace {

bool inside(const fs::path& p) {
  if (p.empty() || p.is_absolute()) return false;
  for (const auto& part : p)
    if (part == "..") return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fs::path& dir = setup();
  const fs::path root = dir / "tree";
  reset_dir(root);

  std::istringstream in{std::string(as_text(data, size))};
  std::string layout, line;
  std::getline(in, layout);
  for (int n = 0; n < 64 && std::getline(in, line); ++n) {
    std::istringstream fields(line);
    std::string kind, path, target;
    fields >> kind >> path >> target;
    if (kind.size() != 1 || !inside(path)) continue;
    const fs::path at = root / path;
    std::error_code ec;
    fs::create_directories(at.parent_path(), ec);
    if (kind[0] == 'd') {
      fs::create_directories(at, ec);
    } else if (kind[0] == 'l') {
      if (inside(target)) fs::create_symlink(target, at, ec);
    } else if (!file_bytes(kind[0]).empty() || kind[0] == 'e') {
      // Not through a link or over a folder made earlier, nor under a file: skipped.
      if (!fs::exists(fs::symlink_status(at, ec)) && fs::is_directory(at.parent_path(), ec))
        write_file(at, file_bytes(kind[0]));
    }
  }
  expect_only_input_errors([&] {
    const Dataset d = load_dataset(layout, root);
    d.validate();
  });
  return 0;
}
